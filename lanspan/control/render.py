"""Human renderings of the typed status and MAC rows, or their JSON documents (pure).

`lanspan show` receives the JSON document from the agent; a typed
`NodeStatus` is rendered through the same document (`control.document`).

In the spirit of `wg show`: a header block for the node, aligned tables for
segments and ports, one block per peer. Missing keys render as "-" so that
an older or newer agent never makes `lanspan show` crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typed input goes through control.document, imported when given
    from lanspan.node.status import MacRow, NodeStatus

__all__ = [
    "fmt_age",
    "fmt_bytes",
    "fmt_duration",
    "fmt_loss",
    "fmt_rtt",
    "render_macs",
    "render_status",
    "table",
]

_DASH = "-"
_KNOWN_TOP = {
    "node",
    "network",
    "public_key",
    "listen_port",
    "uptime_s",
    "segments",
    "ports",
    "peers",
    "drops",
    "counters",
    "gateways",
    "kernel_filter",
}


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: object) -> str:
    if value is None:
        return _DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_str(v) for v in value) if value else _DASH
    return str(value)


def fmt_bytes(value: object) -> str:
    """1023 -> "1023 B", 1536 -> "1.50 KiB" (binary units, like `wg show`)."""
    n = _num(value)
    if n is None:
        return _DASH
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}"
    raise AssertionError("unreachable")


def fmt_duration(value: object) -> str:
    """Seconds as "42s", "3m 07s", "2h 05m", "4d 03h"."""
    n = _num(value)
    if n is None or n < 0:
        return _DASH
    s = int(n)
    if s < 60:
        return f"{n:.0f}s" if n >= 10 else f"{n:.1f}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def fmt_age(value: object) -> str:
    """A handshake age: "4.2s ago", or "never"."""
    if value is None:
        return "never"
    d = fmt_duration(value)
    return d if d == _DASH else f"{d} ago"


def fmt_rtt(value: object) -> str:
    n = _num(value)
    if n is None:
        return _DASH
    return f"{n:.2f} ms" if n < 100 else f"{n:.0f} ms"


def fmt_loss(value: object) -> str:
    n = _num(value)
    if n is None:
        return _DASH
    return f"{n * 100:.1f}%"


def fmt_count(value: object) -> str:
    n = _num(value)
    if n is None:
        return _DASH
    return str(int(n)) if n == int(n) else str(value)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: frozenset[int] = frozenset(),
    indent: str = "  ",
) -> list[str]:
    """Aligned columns, two spaces apart; columns in `right` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _dicts(value: object) -> list[Mapping[str, object]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _counts(title: str, value: object) -> list[str]:
    if not isinstance(value, Mapping):
        return []
    nonzero = [(str(k), v) for k, v in value.items() if v]
    if not nonzero:
        return [f"{title}: none"]
    lines = [f"{title}:"]
    width = max(len(k) for k, _ in nonzero)
    lines += [f"  {k.ljust(width)}  {fmt_count(v)}" for k, v in nonzero]
    return lines


def _segments(doc: Mapping[str, object]) -> list[str]:
    segs = _dicts(doc.get("segments"))
    if not segs:
        return ["segments: none"]
    rows = [
        [
            _str(s.get("name")),
            _str(s.get("vlan")),
            _str(s.get("vni")),
            _str(s.get("mtu")),
            _str(s.get("macs")),
        ]
        for s in segs
    ]
    headers = ["NAME", "VLAN", "VNI", "MTU", "MACS"]
    if any("plane" in s for s in segs):  # an older agent does not say
        headers.append("PLANE")
        for row, s in zip(rows, segs, strict=True):
            row.append(_str(s.get("plane")))
    lines = ["segments:", *table(headers, rows, frozenset({1, 2, 3, 4}))]
    # Why a segment of a trusted site stays in userspace (or what the kernel carries).
    lines += [
        f"  {_str(s.get('name'))}: {_str(s.get('plane'))} data plane — {s['plane_reason']}"
        for s in segs
        if s.get("plane_reason")
    ]
    return lines


def _ports(doc: Mapping[str, object]) -> list[str]:
    ports = _dicts(doc.get("ports"))
    if not ports:
        return ["ports: none"]
    rows = [
        [
            _str(p.get("name")),
            _str(p.get("kind")),
            _str(p.get("device")),
            _str(p.get("segments")),
            fmt_count(p.get("rx_frames")),
            fmt_bytes(p.get("rx_bytes")),
            fmt_count(p.get("tx_frames")),
            fmt_bytes(p.get("tx_bytes")),
        ]
        for p in ports
    ]
    headers = ["NAME", "KIND", "DEVICE", "SEGMENTS", "RX FRAMES", "RX", "TX FRAMES", "TX"]
    return ["ports:", *table(headers, rows, frozenset({4, 5, 6, 7}))]


def _peer(p: Mapping[str, object]) -> list[str]:
    lines = [f"peer: {_str(p.get('name'))}"]
    fields: list[tuple[str, str]] = [
        ("public key", _str(p.get("public_key"))),
        ("session", _str(p.get("session"))),
        ("endpoint", _str(p.get("endpoint"))),
    ]
    if p.get("via"):
        fields.append(("via", _str(p.get("via"))))
    fields += [
        ("latest handshake", fmt_age(p.get("last_handshake_age"))),
        ("rtt", f"{fmt_rtt(p.get('rtt_ms'))}, loss {fmt_loss(p.get('loss'))}"),
        (
            "transfer",
            f"{fmt_bytes(p.get('rx_bytes'))} received, {fmt_bytes(p.get('tx_bytes'))} sent "
            f"({fmt_count(p.get('rx_frames'))} / {fmt_count(p.get('tx_frames'))} frames)",
        ),
    ]
    planes = [
        f"{_str(x.get('segment'))} "
        + (f"kernel vxlan {_str(x.get('vtep'))}" if x.get("plane") == "kernel_vxlan" else "mesh")
        for x in _dicts(p.get("segments"))
    ]
    if planes:  # per shared segment: plain VXLAN in the site's kernel, or the encrypted mesh
        fields.append(("segments", ", ".join(planes)))
    lines += [f"  {k}: {v}" for k, v in fields]
    paths = _dicts(p.get("paths"))
    if paths:
        rows = [
            [
                "*" if path.get("active") else " ",
                _str(path.get("endpoint")),
                _str(path.get("state")),
                fmt_rtt(path.get("rtt_ms")),
                fmt_loss(path.get("loss")),
                "learned" if path.get("learned") else "",
            ]
            for path in paths
        ]
        lines.append("  paths:")
        lines += table(["", "ENDPOINT", "STATE", "RTT", "LOSS", ""], rows, frozenset({3, 4}), "   ")
    return lines


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _gateways(doc: Mapping[str, object]) -> list[str]:
    """VRRP instances (state, since) and the DHCP leases served, on a gateway node."""
    gw = doc.get("gateways")
    if not isinstance(gw, Mapping):
        return []
    rows = [
        [
            _str(i.get("name")),
            _str(i.get("where")),
            " ".join(_str(a) for a in _list(i.get("addresses"))),
            _str(i.get("priority")),
            _str(i.get("state")),
            _str(i.get("since")),
        ]
        for i in _dicts(gw.get("instances"))
    ]
    lines = ["gateways:", *table(["NAME", "WHERE", "ADDRESSES", "PRIO", "STATE", "SINCE"], rows)]
    keys = ("segment", "mac", "address", "hostname")
    leases = [[_str(x.get(k)) for k in keys] for x in _dicts(gw.get("leases"))]
    if leases:
        lines += ["  leases:", *table([k.upper() for k in keys], leases, indent="   ")]
    lines += [f"  warning: {_str(w)}" for w in _list(gw.get("warnings"))]
    return lines


def render_status(status: NodeStatus | Mapping[str, object]) -> str:
    """The `lanspan show` text for one agent's typed status or its JSON document."""
    if isinstance(status, Mapping):
        doc = status
    else:
        from lanspan.control.document import status_json

        doc = status_json(status)
    header = [
        f"network: {_str(doc.get('network'))}",
        f"  node: {_str(doc.get('node'))}",
        f"  public key: {_str(doc.get('public_key'))}",
        f"  listening port: {_str(doc.get('listen_port'))}",
        f"  uptime: {fmt_duration(doc.get('uptime_s'))}",
    ]
    for key in sorted(k for k in doc if k not in _KNOWN_TOP):  # e.g. "udp": {"gso": true}
        value = doc[key]
        if isinstance(value, Mapping):
            text = " ".join(f"{k}={_str(v)}" for k, v in value.items())
        else:
            text = _str(value)
        header.append(f"  {key}: {text}")
    kf = doc.get("kernel_filter")
    if isinstance(kf, Mapping):
        prefix = kf.get("receiver_prefix")
        checked = f"receiver prefix {_str(prefix)}" if prefix else "no receiver check"
        header.append(f"  kernel filter: {_str(kf.get('table'))} ({checked})")
    blocks = [header, _segments(doc), _ports(doc)]
    if gateways := _gateways(doc):
        blocks.append(gateways)
    peers = _dicts(doc.get("peers"))
    blocks += [_peer(p) for p in peers] if peers else [["peers: none"]]
    tail = _counts("drops", doc.get("drops"))
    if isinstance(kf, Mapping):
        tail += _counts("kernel drops", kf.get("drops"))
    tail += _counts("counters", doc.get("counters"))
    if tail:
        blocks.append(tail)
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def render_macs(rows: Sequence[MacRow] | Sequence[Mapping[str, object]]) -> str:
    """The `lanspan show macs` table; typed rows or rows as in docs/control-api.md."""
    docs: list[Mapping[str, object]] = []
    for r in rows:
        if isinstance(r, Mapping):
            docs.append(r)
        else:
            from lanspan.control.document import mac_rows_json

            docs.append(mac_rows_json([r])[0])
    rows = docs
    if not rows:
        return "no MAC addresses learned\n"
    out = []
    for r in rows:
        where = r.get("where")
        if where is None:
            if r.get("port") is not None:
                where = f"port {r['port']}"
            elif r.get("peer") is not None:
                where = f"peer {r['peer']}"
        age = r.get("age", r.get("age_s"))
        out.append(
            [
                _str(r.get("segment")),
                _str(r.get("vlan")),
                _str(r.get("mac")),
                _str(where),
                "static" if r.get("static") else "learned",
                _DASH if r.get("static") or age is None else fmt_duration(age),
            ]
        )
    lines = table(["SEGMENT", "VLAN", "MAC", "WHERE", "TYPE", "AGE"], out, frozenset({1, 5}), "")
    return "\n".join(lines) + "\n"
