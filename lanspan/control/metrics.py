"""Prometheus metrics: a pure renderer of the `show` document and a tiny HTTP server.

`render_prometheus` produces text exposition format 0.0.4 from the typed
status (through its JSON document, so that a document from another agent
renders the same). Every family has
HELP and TYPE lines, names start with ``lanspan_`` and carry their unit
(``_bytes_total``, ``_seconds``, ``_ratio``); counters end in ``_total``.

`MetricsServer` answers ``GET /metrics`` over HTTP/1.0 on the agent's own
selector: non-blocking, bounded buffers, one response per connection, no
threads. Bind it to loopback unless the scraper is elsewhere: the metrics
name peers and endpoints.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
from collections.abc import Mapping
from dataclasses import field

from lanspan.control._conn import Conn, Listener
from lanspan.control.document import status_json
from lanspan.control.server import StatusSource
from lanspan.node.status import NodeStatus
from lanspan.records import record

__all__ = ["CONTENT_TYPE", "MetricsServer", "parse_addr", "render_prometheus"]

log = logging.getLogger("lanspan.control.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HTTP_REQUEST = 8192
MAX_METRICS_CLIENTS = 16


@record
class _Family:
    name: str
    kind: str  # "counter" | "gauge"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _fmt_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


class _Registry:
    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def add(
        self, name: str, kind: str, help: str, labels: Mapping[str, str], value: object
    ) -> None:
        v = _number(value)
        if v is None:
            return
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = _Family(name, kind, help)
        fam.samples.append((dict(labels), v))

    def render(self) -> str:
        out: list[str] = []
        for fam in self.families.values():
            out.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
            out.append(f"# TYPE {fam.name} {fam.kind}")
            for labels, v in fam.samples:
                if labels:
                    inner = ",".join(f'{k}="{_escape_label(lv)}"' for k, lv in labels.items())
                    out.append(f"{fam.name}{{{inner}}} {_fmt_value(v)}")
                else:
                    out.append(f"{fam.name} {_fmt_value(v)}")
        return "\n".join(out) + "\n" if out else ""


def _dicts(value: object) -> list[Mapping[str, object]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _s(value: object) -> str:
    return "" if value is None else str(value)


def _ms_to_s(value: object) -> float | None:
    v = _number(value)
    return None if v is None or isinstance(value, bool) else v / 1000.0


def render_prometheus(status: NodeStatus | Mapping[str, object]) -> str:
    """The typed status (or its JSON document) as Prometheus text exposition format 0.0.4."""
    doc = status_json(status) if isinstance(status, NodeStatus) else status
    r = _Registry()
    _node_metrics(r, doc)
    _segment_metrics(r, doc)
    _port_metrics(r, doc)
    for p in _dicts(doc.get("peers")):
        _peer_metrics(r, p)
    _count_metrics(r, doc)
    _gateway_metrics(r, doc)
    return r.render()


def _gateway_metrics(r: _Registry, doc: Mapping[str, object]) -> None:
    """On a gateway node: each VRRP instance's state, and the DHCP leases served."""
    gw = doc.get("gateways")
    if not isinstance(gw, Mapping):
        return
    for i in _dicts(gw.get("instances")):
        lab = {"instance": _s(i.get("name")), "where": _s(i.get("where"))}
        for state in ("master", "backup", "fault"):
            r.add(
                "lanspan_vrrp_state",
                "gauge",
                "1 for the VRRP instance's current state (master, backup, fault).",
                {**lab, "state": state},
                i.get("state") == state,
            )
        r.add(
            "lanspan_vrrp_state_since_seconds",
            "gauge",
            "Wall-clock time of the instance's last state change.",
            lab,
            i.get("since"),
        )
    leases: dict[str, int] = {}
    for x in _dicts(gw.get("leases")):
        seg = _s(x.get("segment"))
        leases[seg] = leases.get(seg, 0) + 1
    for seg in sorted(set(leases) | {_s(s) for s in _list(gw.get("serving"))}):
        r.add(
            "lanspan_dhcp_leases",
            "gauge",
            "DHCP leases this node serves on the segment.",
            {"segment": seg},
            leases.get(seg, 0),
        )


def _node_metrics(r: _Registry, doc: Mapping[str, object]) -> None:
    r.add(
        "lanspan_info",
        "gauge",
        "Constant 1, labelled with the agent's network, node, public key and port.",
        {
            "network": _s(doc.get("network")),
            "node": _s(doc.get("node")),
            "public_key": _s(doc.get("public_key")),
            "listen_port": _s(doc.get("listen_port")),
        },
        1,
    )
    r.add(
        "lanspan_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        {},
        doc.get("uptime_s"),
    )


def _segment_metrics(r: _Registry, doc: Mapping[str, object]) -> None:
    for s in _dicts(doc.get("segments")):
        seg = {"segment": _s(s.get("name"))}
        r.add(
            "lanspan_segment_info",
            "gauge",
            "Constant 1 per segment this node carries, labelled with VLAN id and VNI.",
            {**seg, "vlan": _s(s.get("vlan")), "vni": _s(s.get("vni"))},
            1,
        )
        if s.get("plane") is not None:
            r.add(
                "lanspan_segment_plane",
                "gauge",
                "Constant 1 per segment, labelled with the data plane carrying it on this "
                "node: kernel (bridge and plain VXLAN inside a trusted site) or userspace.",
                {**seg, "plane": _s(s.get("plane"))},
                1,
            )
        r.add(
            "lanspan_segment_mtu_bytes",
            "gauge",
            "MTU guests use on the segment.",
            seg,
            s.get("mtu"),
        )
        r.add(
            "lanspan_segment_macs",
            "gauge",
            "MAC addresses currently known on the segment.",
            seg,
            s.get("macs"),
        )


def _port_metrics(r: _Registry, doc: Mapping[str, object]) -> None:
    for p in _dicts(doc.get("ports")):
        lab = {"port": _s(p.get("name")), "kind": _s(p.get("kind")), "device": _s(p.get("device"))}
        for d, word in (("rx", "received from"), ("tx", "sent to")):
            r.add(
                f"lanspan_port_{d}_frames_total",
                "counter",
                f"Frames {word} the local port.",
                lab,
                p.get(f"{d}_frames"),
            )
            r.add(
                f"lanspan_port_{d}_bytes_total",
                "counter",
                f"Bytes {word} the local port.",
                lab,
                p.get(f"{d}_bytes"),
            )


def _peer_metrics(r: _Registry, p: Mapping[str, object]) -> None:
    peer = {"peer": _s(p.get("name"))}
    for x in _dicts(p.get("segments")):
        r.add(
            "lanspan_peer_segment_plane",
            "gauge",
            "Constant 1 per segment shared with the peer, labelled with what carries it "
            "there: kernel_vxlan (plain VXLAN, same trusted site) or mesh (encrypted).",
            {**peer, "segment": _s(x.get("segment")), "plane": _s(x.get("plane"))},
            1,
        )
    r.add(
        "lanspan_peer_up",
        "gauge",
        "1 when the encrypted session with the peer is established.",
        peer,
        p.get("session") == "up",
    )
    r.add(
        "lanspan_peer_relayed",
        "gauge",
        "1 when traffic to the peer goes through a relay node.",
        peer,
        bool(p.get("via")),
    )
    r.add(
        "lanspan_peer_last_handshake_age_seconds",
        "gauge",
        "Seconds since the last completed handshake with the peer.",
        peer,
        p.get("last_handshake_age"),
    )
    r.add(
        "lanspan_peer_rtt_seconds",
        "gauge",
        "Round-trip time on the active path.",
        peer,
        _ms_to_s(p.get("rtt_ms")),
    )
    r.add(
        "lanspan_peer_loss_ratio",
        "gauge",
        "Probe loss on the active path, 0 to 1.",
        peer,
        p.get("loss"),
    )
    for d, word in (("rx", "received from"), ("tx", "sent to")):
        r.add(
            f"lanspan_peer_{d}_bytes_total",
            "counter",
            f"Bytes {word} the peer.",
            peer,
            p.get(f"{d}_bytes"),
        )
        r.add(
            f"lanspan_peer_{d}_frames_total",
            "counter",
            f"Frames {word} the peer.",
            peer,
            p.get(f"{d}_frames"),
        )
    for path in _dicts(p.get("paths")):
        lab = {**peer, "endpoint": _s(path.get("endpoint"))}
        r.add(
            "lanspan_path_up",
            "gauge",
            "1 when the underlay path to the peer answers probes.",
            lab,
            path.get("state") == "up",
        )
        r.add(
            "lanspan_path_active",
            "gauge",
            "1 for the path currently carrying the peer's traffic.",
            lab,
            bool(path.get("active")),
        )
        r.add(
            "lanspan_path_rtt_seconds",
            "gauge",
            "Round-trip time measured by probes on the path.",
            lab,
            _ms_to_s(path.get("rtt_ms")),
        )
        r.add(
            "lanspan_path_loss_ratio",
            "gauge",
            "Probe loss on the path, 0 to 1.",
            lab,
            path.get("loss"),
        )


def _count_metrics(r: _Registry, doc: Mapping[str, object]) -> None:
    for key, name, help, label in (
        ("drops", "lanspan_drops_total", "Packets and frames dropped, by reason.", "reason"),
        ("counters", "lanspan_events_total", "Agent event counters, by event name.", "event"),
    ):
        counts = doc.get(key)
        if isinstance(counts, Mapping):
            for k, n in sorted(counts.items()):
                r.add(name, "counter", help, {label: str(k)}, n)
    kf = doc.get("kernel_filter")
    drops = kf.get("drops") if isinstance(kf, Mapping) else None
    if isinstance(drops, Mapping):
        for k, n in sorted(drops.items()):
            r.add(
                "lanspan_kernel_drops_total",
                "counter",
                "Datagrams the agent's nftables filter dropped in the kernel, by reason.",
                {"reason": str(k)},
                n,
            )


def parse_addr(addr: str) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """``127.0.0.1:9474``, ``[::1]:9474``, ``localhost:9474`` or ``:9474`` (all IPv4)."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) < 65536:
        raise ValueError(f"metrics address {addr!r}: expected HOST:PORT like 127.0.0.1:9474")
    port = int(port_s)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "":
        host = "0.0.0.0"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ValueError(f"metrics address {addr!r}: cannot resolve {host!r}: {e}") from e
        family, _, _, _, sockaddr = infos[0]
        return family, (str(sockaddr[0]), port)
    if ip.version == 6:
        return socket.AF_INET6, (str(ip), port)
    return socket.AF_INET, (str(ip), port)


def _response(status: str, body: bytes, content_type: str, head: bool = False) -> bytes:
    headers = (
        f"HTTP/1.0 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode()
    return headers if head else headers + body


class MetricsServer(Listener):
    """``GET /metrics`` on `addr`, served from `source.status()` on the agent's selector."""

    def __init__(self, addr: str, source: StatusSource) -> None:
        family, sockaddr = parse_addr(addr)
        self._source = source
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(16)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"cannot listen for metrics on {addr}: {e.strerror}") from e
        super().__init__(
            sock,
            logger=log,
            max_clients=MAX_METRICS_CLIENTS,
            max_in=MAX_HTTP_REQUEST,
            max_out=64 * 1024 * 1024,
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); useful with port 0."""
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    def _on_data(self, conn: Conn) -> None:
        if conn.close_when_flushed:
            conn.inbuf.clear()  # one request per connection; ignore the rest
            return
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0:
            if len(conn.inbuf) > MAX_HTTP_REQUEST:
                conn.close_when_flushed = True
                conn.inbuf.clear()
                conn.send(_response("431 Request Header Fields Too Large", b"", "text/plain"))
            return
        request_line = bytes(conn.inbuf[: conn.inbuf.find(b"\n")]).decode("latin-1").strip()
        conn.inbuf.clear()
        conn.close_when_flushed = True
        conn.send(self._answer(request_line))

    def _answer(self, request_line: str) -> bytes:
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response("400 Bad Request", b"bad request\n", "text/plain")
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"only GET\n", "text/plain")
        head = method == "HEAD"
        path = target.split("?", 1)[0]
        if path == "/":
            body = b'<html><body><a href="/metrics">/metrics</a></body></html>\n'
            return _response("200 OK", body, "text/html; charset=utf-8", head)
        if path != "/metrics":
            return _response("404 Not Found", b"not found; try /metrics\n", "text/plain", head)
        try:
            body = render_prometheus(self._source.status()).encode()
        except Exception:
            log.exception("metrics: building the status document failed")
            return _response("500 Internal Server Error", b"status failed\n", "text/plain", head)
        return _response("200 OK", body, CONTENT_TYPE, head)
