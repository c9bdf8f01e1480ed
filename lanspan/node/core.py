"""The node: sessions + switch + paths, the one place that decides.

Inputs are frames read from local ports (with their 10-byte virtio_net_hdr)
and datagrams read from the UDP socket; outputs are datagram batches to
send and frames to write, taken by the adapter after each round. Nothing
here touches a socket or a clock: `now` comes with every call.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv6Address
from typing import Any, Literal

from lanspan.addr import Addr, Relay, Target, format_target
from lanspan.config.model import Endpoint, HostPort, Network, Node, Timers
from lanspan.errors import BadPacket
from lanspan.node.paths import PathEvent, PeerPaths
from lanspan.node.reassembly import Reassembler
from lanspan.node.status import (
    Counts,
    MacRow,
    NodeStatus,
    PathStatus,
    PeerStatus,
    PortStatus,
    SegmentStatus,
)
from lanspan.session import Delivered, SessionEvent, SessionTable, Transmit
from lanspan.switch import Switch
from lanspan.wire import control, payload, vnet

ZERO_VNET = bytes(vnet.VNET_HDR_LEN)
# Where the agent contains a failure (drop reason agent.internal_error_<where>).
InternalError = Literal["datagram", "frame", "timer", "control", "reload", "output", "read"]
# UDP payload above IP + UDP headers, and what a transport message adds.
_IP_UDP_OVERHEAD = {4: 28, 6: 48}
_TRANSPORT_OVERHEAD = 32
# Reachability gossip: at most one REACH per interval (damping), a refresh every
# REACH_REFRESH, and what a relay said is forgotten after REACH_EXPIRY.
REACH_INTERVAL = 1.0
REACH_REFRESH = 5.0
REACH_EXPIRY = 15.0
# More than this many immediate "newly reachable" REACHes in the window: back to the interval.
REACH_FLAP_LIMIT = 3
REACH_FLAP_WINDOW = 10.0
# Relay paths kept (and probed) per peer: the best few by estimated RTT, not all N.
MAX_RELAYS = 3


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One line for the log: a state change somewhere in the node."""

    kind: str
    fields: dict[str, Any]


@dataclass(slots=True)
class _Traffic:
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_frames: int = 0
    tx_frames: int = 0


def endpoint_addr(e: Endpoint) -> Addr:
    return (str(e.host), e.port)


def host_port_mac(node: str, port: HostPort) -> bytes:
    """A stable locally administered MAC, so peers' ARP caches survive restarts."""
    if port.mac is not None:
        return port.mac
    digest = bytearray(hashlib.blake2s(f"{node}/{port.segment}".encode(), digest_size=6).digest())
    digest[0] = (digest[0] & 0xFC) | 0x02
    return bytes(digest)


class NodeCore:
    def __init__(
        self,
        network: Network,
        name: str,
        private_key: bytes,
        *,
        random_bytes: Callable[[int], bytes],
        wall_time: Callable[[], float],
        now: float,
        underlay_mtu: int = 1500,
    ) -> None:
        self.network = network
        self.me: Node = network.node(name)
        self.started = now
        self.sessions = SessionTable(
            private_key, cipher=network.cipher, random_bytes=random_bytes, wall_time=wall_time
        )
        self.switch = Switch(network, name)
        self.reassembly = Reassembler()
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.peers: dict[str, Node] = {}
        self.paths: dict[str, PeerPaths] = {}
        self.traffic: dict[str, _Traffic] = {}
        self.port_traffic: dict[str, _Traffic] = {p.name: _Traffic() for p in self.me.ports}
        self._up: set[str] = set()
        self._frag_id = 0
        v6 = any(isinstance(e.host, IPv6Address) for n in network.nodes for e in n.endpoints)
        self.max_plaintext = underlay_mtu - _IP_UDP_OVERHEAD[6 if v6 else 4] - _TRANSPORT_OVERHEAD
        # A relayed datagram is sealed once more, inside a RELAY control message.
        longest = max(len(n.name.encode()) for n in network.nodes)
        self.max_relayed_plaintext = self.max_plaintext - (
            _TRANSPORT_OVERHEAD + payload.HEADER_LEN + 2 + longest
        )
        self.reach: dict[str, tuple[dict[str, int], float]] = {}  # relay -> (peer -> rtt µs)
        self._reach_sent: dict[str, int] = {}
        self._reach_sent_at = -1e9
        self._reach_growth: deque[float] = deque()
        self._sends: list[tuple[Addr, list[bytes]]] = []
        self._writes: list[tuple[str, bytes]] = []
        self._log: list[LogEvent] = []
        self._next_probe = now
        for node in network.nodes:
            if node.name != name:
                self._add_peer(node, now)

    # -- peers ---------------------------------------------------------------

    def _add_peer(self, node: Node, now: float) -> None:
        self.peers[node.name] = node
        self.paths[node.name] = PeerPaths([endpoint_addr(e) for e in node.endpoints], self.timers)
        self.traffic[node.name] = _Traffic()
        keepalive = self.timers.keepalive if not node.endpoints or not self.me.endpoints else None
        self.sessions.add_peer(node.name, node.public_key, persistent_keepalive=keepalive)
        if node.endpoints:
            self.sessions.initiate(node.name, now)

    def _remove_peer(self, name: str, now: float) -> None:
        self.sessions.remove_peer(name)
        self._drain_sessions(now)
        self.reassembly.forget(name)
        del self.peers[name], self.paths[name], self.traffic[name]

    @property
    def timers(self) -> Timers:
        return self.network.timers

    def check_reload(self, new: Network) -> None:
        """Raise ValueError when `new` cannot be applied without a restart."""
        if self.me.name not in {n.name for n in new.nodes}:
            raise ValueError(f"node {self.me.name!r} is no longer in the network file")
        mine = new.node(self.me.name)
        restart = {
            "network name": (self.network.name, new.name),
            "port": (self.network.port, new.port),
            "cipher": (self.network.cipher, new.cipher),
            "listen_port": (self.me.listen_port, mine.listen_port),
            "public_key": (self.me.public_key, mine.public_key),
        }
        for what, (old, now_) in restart.items():
            if old != now_:
                raise ValueError(f"{what} changed: restart the agent to apply it")
        for seg in self.network.segments:
            if seg.name in {s.name for s in new.segments}:
                n = new.segment(seg.name)
                if (n.vlan, n.vni) != (seg.vlan, seg.vni):
                    raise ValueError(f"segment {seg.name!r} changed VLAN/VNI: restart to apply")

    def reconfigure(self, new: Network, now: float) -> list[str]:
        """Apply a validated new network file; sessions of unchanged peers stay up."""
        self.check_reload(new)
        changes: list[str] = []
        old_peers = {n.name: n for n in self.network.nodes if n.name != self.me.name}
        new_peers = {n.name: n for n in new.nodes if n.name != self.me.name}
        old_network = self.network
        self.network, self.me = new, new.node(self.me.name)
        for name in old_peers.keys() - new_peers.keys():
            self._remove_peer(name, now)
            changes.append(f"peer {name} removed")
        for name, node in new_peers.items():
            old = old_peers.get(name)
            if old is None:
                self._add_peer(node, now)
                changes.append(f"peer {name} added")
            elif old.public_key != node.public_key:
                self._remove_peer(name, now)
                self._add_peer(node, now)
                changes.append(f"peer {name} key changed: new session")
            else:
                self.peers[name] = node
                if old.endpoints != node.endpoints:
                    self.paths[name].set_endpoints([endpoint_addr(e) for e in node.endpoints])
                    changes.append(f"peer {name} endpoints now {[str(e) for e in node.endpoints]}")
                if old.segments != node.segments:
                    changes.append(f"peer {name} segments now {list(node.segments)}")
        old_segments = {s.name for s in old_network.segments}
        new_segments = {s.name for s in new.segments}
        changes += [f"segment {n} added" for n in sorted(new_segments - old_segments)]
        changes += [f"segment {n} removed" for n in sorted(old_segments - new_segments)]
        if old_network.timers != new.timers:
            for paths in self.paths.values():
                paths.timers = new.timers
            changes.append(f"timers now {new.timers}")
        if _switch_view(old_network, self.me.name) != _switch_view(new, self.me.name):
            # Rebuilt from the new file; learned MACs are relearned from traffic
            # (unknown unicast is flooded meanwhile, nothing is dropped).
            self.switch = Switch(new, self.me.name)
            for peer in self._up:
                self.switch.set_peer_up(peer, True)
            changes.append("switch rebuilt: MAC tables relearn")
        self.port_traffic = {
            p.name: self.port_traffic.get(p.name, _Traffic()) for p in self.me.ports
        }
        return changes

    # -- inputs ----------------------------------------------------------------

    def frame_from_port(self, port: str, data: bytes, now: float) -> None:
        """A frame read from a local port: 10-byte vnet header, then the frame."""
        hdr, frame = data[: vnet.VNET_HDR_LEN], data[vnet.VNET_HDR_LEN :]
        t = self.port_traffic.get(port)
        if t is not None:
            t.rx_frames += 1
            t.rx_bytes += len(frame)
        fwd = self.switch.from_port(port, frame, now)
        if fwd is None:
            return
        plain = hdr == ZERO_VNET
        # every header first, then the writes: a fan-out is never cut half-way
        outs = [
            (p, hdr if plain else _shift(hdr, len(out) - len(frame)), out) for p, out in fwd.ports
        ]
        for out_port, out_hdr, out in outs:
            self._write(out_port, out_hdr, out)
        if not fwd.peers:
            return
        built: dict[int, list[bytes]] = {}
        for peer in fwd.peers:
            tr = self.traffic[peer]
            tr.tx_frames += 1
            tr.tx_bytes += len(fwd.frame)
            dest = self.paths[peer].destination()
            relayed = isinstance(dest, Relay)
            limit = self.max_relayed_plaintext if relayed else self.max_plaintext
            payloads = built.get(limit)
            if payloads is None:
                payloads = built[limit] = self._payloads(fwd.vni, fwd.frame, hdr, frame, limit)
            self._seal_and_send(peer, payloads, now)

    def _payloads(self, vni: int, out: bytes, hdr: bytes, frame: bytes, limit: int) -> list[bytes]:
        """Payloads carrying `out` (the mesh form of `frame`), fragmented to fit `limit`."""
        if hdr == ZERO_VNET and len(out) + payload.HEADER_LEN <= limit:
            return [payload.build_frame(vni, out)]
        mesh_hdr = None if hdr == ZERO_VNET else _shift(hdr, len(out) - len(frame))
        body = out if mesh_hdr is None else mesh_hdr + out
        if len(body) + payload.HEADER_LEN <= limit:
            return [payload.build_frame(vni, out, mesh_hdr)]
        self._frag_id = (self._frag_id + 1) & 0xFFFF
        return payload.build_fragments(vni, body, mesh_hdr is not None, self._frag_id, limit)

    def datagram(self, data: bytes, src: Addr, now: float) -> bool:
        """A datagram from the UDP socket; anything bad is dropped and counted.

        True when it authenticated (a handshake or transport message from a
        peer), so the adapter may trust `src` as that peer's address.
        """
        got = self.sessions.receive(data, src, now)
        if got is None:
            return False
        self._delivered(got, now)
        return True

    def _delivered(self, got: Delivered, now: float) -> None:
        paths = self.paths.get(got.peer)
        if paths is None:
            return
        paths.seen(got.src, now)
        if not got.payload:
            return  # keepalive
        try:
            p = payload.parse_untrusted(got.payload)
            if p.is_control:
                self._control(got.peer, p.body, got.src, now)
                return
            if p.is_fragment:
                whole = self.reassembly.add(got.peer, p, now)
                if whole is None:
                    return
                p = whole
            if p.has_offload:
                hdr, frame = p.body[: vnet.VNET_HDR_LEN], p.body[vnet.VNET_HDR_LEN :]
                vnet.validate_untrusted(vnet.parse_untrusted(hdr), len(frame))
            else:
                hdr, frame = ZERO_VNET, p.body
        except BadPacket as e:
            self.drops[e.reason] += 1
            return
        tr = self.traffic[got.peer]
        tr.rx_frames += 1
        tr.rx_bytes += len(frame)
        fwd = self.switch.from_peer(got.peer, p.vni, frame, now)
        if fwd is None:
            return
        plain = hdr == ZERO_VNET
        # every header first, then the writes: a fan-out is never cut half-way
        outs = [
            (p, hdr if plain else _shift(hdr, len(out) - len(frame)), out) for p, out in fwd.ports
        ]
        for out_port, out_hdr, out in outs:
            self._write(out_port, out_hdr, out)

    def _control(self, peer: str, body: bytes, src: Target, now: float) -> None:
        msg = control.parse_untrusted(body)
        if isinstance(msg, control.Probe):
            if msg.ack:
                self.paths[peer].ack(msg, now)
            else:
                reply = payload.build_control(control.build_probe(replace(msg, ack=True)))
                self._emit(peer, src, self.sessions.seal_many(peer, [reply], now), now)
        elif isinstance(msg, control.Relay):
            if msg.delivered:
                self._relayed_to_us(peer, msg, now)
            else:
                self._relay(peer, msg, now)
        else:
            self.reach[peer] = ({n: rtt for n, rtt in msg.peers if n in self.peers}, now)
            self._update_relays(now)

    def _relay(self, origin: str, msg: control.Relay, now: float) -> None:
        """Forward a sealed datagram from `origin` to `msg.node`: one hop, direct only."""
        dest = msg.node
        if not self.me.relay:
            self.drops["relay.refused"] += 1
            return
        if dest not in self.peers or dest == origin:
            self.drops["relay.unknown_node"] += 1
            return
        addr = self.paths[dest].destination()
        if dest not in self._up or addr is None or isinstance(addr, Relay):
            # Never through another relay: this is what makes relay loops impossible.
            self.drops["relay.no_direct_path"] += 1
            return
        body = payload.build_control(control.build_relay(control.Relay(True, origin, msg.inner)))
        sealed = self.sessions.seal(dest, body, now)
        if sealed is not None:
            self.counters["relayed"] += 1
            self._sends.append((addr, [sealed]))

    def _relayed_to_us(self, via: str, msg: control.Relay, now: float) -> None:
        if msg.node not in self.peers or msg.node == via:
            self.drops["relay.unknown_node"] += 1
            return
        got = self.sessions.receive(msg.inner, Relay(via), now)
        if got is None:
            return
        if got.peer != msg.node:
            self.drops["relay.origin_mismatch"] += 1
            return
        self._delivered(got, now)

    # -- outputs ---------------------------------------------------------------

    def _write(self, port: str, hdr: bytes, frame: bytes) -> None:
        t = self.port_traffic.get(port)
        if t is not None:
            t.tx_frames += 1
            t.tx_bytes += len(frame)
        self._writes.append((port, hdr + frame))

    def _seal_and_send(self, peer: str, payloads: list[bytes], now: float) -> None:
        sealed = self.sessions.seal_many(peer, payloads, now)
        if sealed is None:
            return  # queued by the session until the handshake completes
        self._emit(peer, self.paths[peer].destination(), sealed, now)

    def _emit(
        self, peer: str | None, dest: Target | None, sealed: list[bytes] | None, now: float
    ) -> None:
        """Send datagrams sealed for `peer` to `dest`, wrapping them for a relay path."""
        if not sealed:
            return
        if dest is None:
            self.drops["node.no_endpoint"] += len(sealed)
            return
        if not isinstance(dest, Relay):
            self._sends.append((dest, sealed))
            return
        relay = dest.node
        hop = self.paths[relay].destination() if relay in self.paths else None
        if peer is None or hop is None or isinstance(hop, Relay):
            self.drops["relay.unusable"] += len(sealed)
            return
        wrapped = [
            payload.build_control(control.build_relay(control.Relay(False, peer, d)))
            for d in sealed
        ]
        outer = self.sessions.seal_many(relay, wrapped, now)
        if outer is not None:
            self._sends.append((hop, outer))

    def _drain_sessions(self, now: float) -> None:
        for action in self.sessions.take_outputs():
            if isinstance(action, Transmit):
                if action.to is not None:
                    self._emit(action.peer, action.to, [action.data], now)
                elif action.peer is not None and action.peer in self.paths:
                    targets = self.paths[action.peer].candidates()
                    if not targets:
                        self.drops["node.no_endpoint"] += 1
                    for addr in targets:
                        self._emit(action.peer, addr, [action.data], now)
            elif isinstance(action, SessionEvent):
                self._session_event(action)

    def _session_event(self, ev: SessionEvent) -> None:
        self._log.append(LogEvent(f"session_{ev.kind}", {"peer": ev.peer, "detail": ev.detail}))
        if ev.kind == "up":
            if ev.peer not in self._up:
                self._up.add(ev.peer)
                self.switch.set_peer_up(ev.peer, True)
        elif ev.kind == "down" and ev.peer in self._up:
            self._up.discard(ev.peer)
            self.switch.set_peer_up(ev.peer, False)
            self.reassembly.forget(ev.peer)
            self.reach.pop(ev.peer, None)

    def take_sends(self) -> list[tuple[Addr, list[bytes]]]:
        """Datagram batches to send; each batch is equal-sized but for its last."""
        sends, self._sends = self._sends, []
        return sends

    def take_writes(self) -> list[tuple[str, bytes]]:
        writes, self._writes = self._writes, []
        return writes

    def take_log(self) -> list[LogEvent]:
        for peer, paths in self.paths.items():
            for pe in paths.take_outputs():
                self._log.append(_path_log(peer, pe))
        for sw in self.switch.take_events():
            self._log.append(
                LogEvent(sw.kind, {"segment": sw.segment, "mac": sw.mac, "detail": sw.detail})
            )
        log, self._log = self._log, []
        return log

    def flush(self, now: float) -> None:
        """End of a round: turn what the sessions decided into sends and events."""
        self._drain_sessions(now)

    # -- timers ----------------------------------------------------------------

    def next_timer(self) -> float:
        deadlines = [self._next_probe]
        for t in (
            self.sessions.next_timer(),
            self.switch.next_timer(),
            self.reassembly.next_timer(),
        ):
            if t is not None:
                deadlines.append(t)
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        self.sessions.handle_timer(now)
        self.switch.handle_timer(now)
        self.reassembly.handle_timer(now)
        if now >= self._next_probe:
            self._next_probe = now + self.timers.probe_interval
            self._probe(now)
        self._drain_sessions(now)

    def _probe(self, now: float) -> None:
        for peer, paths in self.paths.items():
            paths.check(now)
            if peer not in self._up:
                continue
            for addr, probe in paths.probes(now):
                body = payload.build_control(control.build_probe(probe))
                self._emit(peer, addr, self.sessions.seal_many(peer, [body], now), now)
        self._update_relays(now)
        self._gossip(now)

    def _direct_reach(self) -> dict[str, int]:
        """Peers we reach over an up, direct path, with RTT in µs: what we offer to relay."""
        out = {}
        for peer in self._up:
            active = self.paths[peer].active
            if active is not None and active.up and active.relay is None:
                out[peer] = round((active.rtt or 0.0) * 1e6)
        return out

    def _gossip(self, now: float) -> None:
        if not self.me.relay:
            return
        reach = self._direct_reach()
        since = now - self._reach_sent_at
        # Good news goes out at once (a peer newly reachable), unless growth itself
        # flaps; losses and RTT changes wait for the interval: one flapping link
        # cannot make a storm. RTT wiggles alone only ride on the refresh.
        grew = not reach.keys() <= self._reach_sent.keys()
        while self._reach_growth and now - self._reach_growth[0] > REACH_FLAP_WINDOW:
            self._reach_growth.popleft()
        urgent = grew and len(self._reach_growth) < REACH_FLAP_LIMIT
        if not urgent and since < REACH_INTERVAL:
            return
        if reach.keys() == self._reach_sent.keys() and since < REACH_REFRESH:
            return
        if urgent:
            self._reach_growth.append(now)
        self._reach_sent, self._reach_sent_at = reach, now
        for peer in self._up:
            listed = tuple((n, rtt) for n, rtt in sorted(reach.items()) if n != peer)
            body = payload.build_control(control.build_reach(control.Reach(listed)))
            sealed = self.sessions.seal_many(peer, [body], now)
            self._emit(peer, self.paths[peer].destination(), sealed, now)

    def _update_relays(self, now: float) -> None:
        """Offer, for each peer, a relay path through every relay that reaches it."""
        for relay in [r for r, (_, at) in self.reach.items() if now - at > REACH_EXPIRY]:
            del self.reach[relay]
        usable = {
            r: peers
            for r, (peers, _) in self.reach.items()
            if r in self._up and self.peers[r].relay and self._direct(r)
        }
        for peer, paths in self.paths.items():
            offers = [
                (self._rtt_us(r) + peers[peer], r)
                for r, peers in usable.items()
                if peer in peers and r != peer
            ]
            # Keep relays still on offer (their probe history), fill up with the best new ones.
            relays = {r for r in paths.relays() if r in {o for _, o in offers}}
            for _, r in sorted(offers):
                if len(relays) >= MAX_RELAYS:
                    break
                relays.add(r)
            if paths.set_relays(relays) and peer not in self._up:
                self.sessions.retry_soon(peer, now)  # the handshake can go that way now

    def _rtt_us(self, peer: str) -> int:
        active = self.paths[peer].active
        return round((active.rtt or 0.0) * 1e6) if active is not None else 0

    def _direct(self, peer: str) -> bool:
        active = self.paths[peer].active
        return active is not None and active.relay is None

    # -- view ------------------------------------------------------------------

    def count_internal_error(self, where: InternalError) -> int:
        """Count one event dropped by a lanspan bug in the agent; returns the new total."""
        self.drops[
            "agent.internal_error_datagram"
            if where == "datagram"
            else "agent.internal_error_frame"
            if where == "frame"
            else "agent.internal_error_timer"
            if where == "timer"
            else "agent.internal_error_control"
            if where == "control"
            else "agent.internal_error_reload"
            if where == "reload"
            else "agent.internal_error_output"
            if where == "output"
            else "agent.internal_error_read"
        ] += 1
        return self.drops[f"agent.internal_error_{where}"]

    def drop_counts(self) -> Counter[str]:
        """Every dropped datagram or frame so far, by reason, from every layer."""
        drops: Counter[str] = Counter()
        for c in (self.drops, self.sessions.drops, self.switch.drops, self.reassembly.drops):
            drops.update(c)
        return drops

    def peer_count(self) -> int:
        return len(self.peers)

    def mac_rows(self, segment: str | None, now: float) -> list[MacRow]:
        """MAC table rows (static and learned), all segments when `segment` is None."""
        return [
            MacRow(e.segment, e.vlan, e.mac, e.where, e.static, round(e.age, 1))
            for e in self.switch.mac_table(segment, now)
        ]

    def status(self, now: float) -> NodeStatus:
        macs = Counter(e.segment for e in self.switch.mac_table())
        return NodeStatus(
            node=self.me.name,
            network=self.network.name,
            public_key=base64.b64encode(self.sessions.public_key).decode(),
            listen_port=self.me.listen_port or self.network.port,
            uptime_s=round(now - self.started, 3),
            segments=tuple(
                SegmentStatus(s.name, s.vlan, s.vni, s.mtu, macs[s.name])
                for s in self.network.segments
                if s.name in self.me.segments
            ),
            ports=tuple(self._port_status(p.name) for p in self.me.ports),
            peers=tuple(self._peer_status(name, now) for name in self.peers),
            drops=Counts.of(self.drop_counts()),
            counters=Counts.of(self.counters + self.switch.counters),
        )

    def _port_status(self, name: str) -> PortStatus:
        p = self.me.port(name)
        if p.kind == "trunk":
            segs = tuple(self.network.segment_by_vlan(v).name for v in p.vlans)
        else:
            segs = (p.segment,)
        t = self.port_traffic[name]
        return PortStatus(
            name=p.name,
            kind=p.kind,
            device=p.device,
            segments=segs,
            rx_frames=t.rx_frames,
            tx_frames=t.tx_frames,
            rx_bytes=t.rx_bytes,
            tx_bytes=t.tx_bytes,
        )

    def _peer_status(self, name: str, now: float) -> PeerStatus:
        st = self.sessions.status(name)
        paths = self.paths[name]
        active = paths.active
        t = self.traffic[name]
        state: Literal["up", "handshaking", "down"] = (
            "up" if st.established else ("handshaking" if paths.paths else "down")
        )
        return PeerStatus(
            name=name,
            public_key=base64.b64encode(self.peers[name].public_key).decode(),
            session=state,
            endpoint=format_target(active.target) if active else None,
            via=active.relay if active else None,
            last_handshake_age=(
                round(now - st.last_handshake, 3) if st.last_handshake is not None else None
            ),
            rtt_ms=_ms(active.rtt) if active else None,
            loss=round(active.loss, 3) if active else None,
            rx_bytes=t.rx_bytes,
            tx_bytes=t.tx_bytes,
            rx_frames=t.rx_frames,
            tx_frames=t.tx_frames,
            paths=tuple(
                PathStatus(
                    endpoint=format_target(p.target),
                    state="up" if p.up else "down",
                    rtt_ms=_ms(p.rtt),
                    loss=round(p.loss, 3),
                    active=p is active,
                    learned=not p.configured,
                )
                for p in paths.paths
            ),
        )


def _switch_view(network: Network, me: str) -> tuple[object, ...]:
    """What the switch is built from: when it is unchanged, a reload keeps the MAC tables."""
    return (
        network.segments,
        network.static_macs,
        network.mac_ageing,
        network.node(me).ports,
        tuple(sorted((n.name, n.segments, n.ports) for n in network.nodes)),
    )


def _shift(hdr: bytes, delta: int) -> bytes:
    if delta == 0:
        return hdr
    return vnet.build(vnet.parse_untrusted(hdr).shifted(delta))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _path_log(peer: str, pe: PathEvent) -> LogEvent:
    return LogEvent(pe.kind, {"peer": peer, "path": format_target(pe.target), "detail": pe.detail})
