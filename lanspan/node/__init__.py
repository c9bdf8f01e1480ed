"""lanspan.node: the composing core, the one place that decides (sans-IO).

- `core.NodeCore`: sessions + switch + paths + relays + reassembly. The shape of
  every core object: inputs carry `now`, `next_timer()`, `handle_timer(now)`,
  outputs taken with `take_outputs()` (`outputs.Send`, `Write`, `Log`). Its
  state is private; the agent reads it through `status`, `mac_rows`,
  `drop_counts`, `peer_count`, `network` and `count_internal_error`.
- `paths.PeerPaths`: per-peer underlay paths (direct `Addr` or `Relay`).
- `relays`: reach gossip (what we offer to relay, damped) and the relay
  offers we hold (relay paths per peer).
- `reload`: what a new network file changes (`check_reload`, `plan_reload`).
- `reassembly.Reassembler`: fragments back into superframes.
- `status`: the typed status (frozen dataclasses) that control/ renders.
Drop reasons: docs/drops.md.
"""

from lanspan.node.core import NodeCore, endpoint_addr, host_port_mac
from lanspan.node.outputs import Log, NodeOutput, Send, Write

__all__ = ["Log", "NodeCore", "NodeOutput", "Send", "Write", "endpoint_addr", "host_port_mac"]
