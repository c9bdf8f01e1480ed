"""lanspan.node: the composing core, the one place that decides (sans-IO).

- `core.NodeCore`: sessions + switch + paths + relays + reassembly; inputs
  carry `now`; the agent reads its state only through its methods
  (`status`, `mac_rows`, `drop_counts`, `peer_count`, `count_internal_error`).
- `paths.PeerPaths`: per-peer underlay paths (direct `Addr` or `Relay`).
- `reassembly.Reassembler`: fragments back into superframes.
- `status`: the typed status (frozen dataclasses) that control/ renders.
Drop reasons: docs/drops.md.
"""
