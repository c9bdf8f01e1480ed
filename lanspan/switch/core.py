"""The VLAN-aware switch of one node: every segment one 802.1Q switch across sites.

Sans-IO. The node feeds it frames read from local ports (`from_port`) and
frames received from peers (`from_peer`), each with the current time, and
gets back a `Forward`: the frame's segment, the frame as it travels in the
mesh (untagged), the exact bytes to write to each local port, and the peers
to send it to. Dropped frames return None and are counted in `drops` under
a named reason; notable happenings (MAC moves and flaps, a port hitting its
MAC limit, a flood storm) queue up as `SwitchEvent`s (kinds: `SwitchEventKind`) for the node to log,
taken with `take_outputs()`. Shape of every core object: inputs carry `now`,
`next_timer()`, `handle_timer(now)`, `take_outputs()`.

Rules, in the order they are applied to a frame from a local port:

1. The port must exist (`switch.unknown_port`), the header must parse (`ethernet.short_frame`,
   `ethernet.short_tagged_frame`).
2. Classification into a segment. Access and host ports: untagged frames (or
   priority-tagged, VID 0) belong to the port's segment; any other tagged
   frame, or a frame whose EtherType is a VLAN TPID, is dropped
   (`switch.tagged_on_access`) so a guest cannot reach another segment by tagging.
   Trunk ports: an untagged or priority-tagged frame belongs to the native
   VLAN (`switch.vlan_not_allowed` if there is none); a tagged frame to its VLAN if
   the port allows it (`switch.vlan_not_allowed` otherwise). A VLAN the port allows
   but whose segment this node may not carry: `switch.segment_not_allowed`. The
   outer tag is removed: inside the mesh frames travel untagged with a VNI;
   an inner (QinQ) tag behind it stays untouched.
3. Learning: the source MAC must be unicast and not zero (`switch.bad_src_mac`); a
   MAC pinned by a static entry elsewhere is refused
   (`switch.static_mac_violation`); a new MAC beyond the port's `switch.mac_limit` is
   refused (`switch.mac_limit`). MAC mobility, the one rule: a learned MAC seen
   behind another port or peer moves there at once, unless
   - it is pinned: a static entry, or the MAC of a host port (explicit in the
     file, or derived by `host_port_mac` from the shared file, so every node
     knows it): pinned MACs never move, frames sourcing them elsewhere are
     `switch.static_mac_violation` (no peer or guest takes over another node's
     host-port MAC);
   - it is held: a MAC seen at a new location more than `flap_moves` times within
     `flap_window` seconds flaps (reported once per window); the move that makes
     it flap is refused and the MAC stays where it was for `flap_hold` seconds;
     frames sourcing it elsewhere meanwhile are `switch.mac_held`;
   - the new location is at its MAC limit (`switch.mac_limit`, `switch.peer_mac_limit`).
   Every sighting at a new location counts in `mac_moves` (refused ones too).
   An ARP frame also teaches its sender's IPv4 binding (`lanspan.switch.arp`), a
   neighbour advertisement its target's IPv6 one (`lanspan.switch.nd`), from a
   local port or a peer; a broadcast ARP request or a multicast neighbour
   solicitation from a local port for an address bound to a MAC known elsewhere
   (behind a peer that is up, or another port), from an asker whose own address
   is bound to its MAC already (its request tells no one anything new), is
   answered on the port with the owner's reply and goes no further
   (`arp_suppressed`, `nd_suppressed`): ARP and ND suppression, as EVPN does
   them. The fast path never keeps an answer for an ARP or ND frame, nor gives
   one to an ND frame: each is read.
4. Forwarding: unicast to a known MAC goes to exactly that port or peer
   (`switch.same_port` if that is where it came from); anything else (broadcast,
   multicast, unknown unicast) is flooded to the segment's other local ports
   and to the peers that carry the segment, are up and have somewhere to put it
   (a port in the segment, one of its gateway addresses, or a trusted site: a
   peer never passes a mesh frame on to another peer), within the ingress
   port's flood rate (`switch.flood_rate`). Unknown unicast reaches the peers
   with every frame for UNKNOWN_UNICAST_WINDOW after its destination is first
   unknown, then at most once a second per destination MAC, and at once the peers
   that came up since (`switch.unknown_unicast` for the rest; the local ports get
   every frame).

Frames from peers: the peer must exist (`switch.unknown_peer`), the VNI must be a
segment (`switch.unknown_vni`) this node carries (`switch.segment_not_allowed`) and the
peer carries (`switch.peer_segment_not_allowed`); learning as above, against a
per-peer bound (`switch.peer_mac_limit`); then split horizon: such a frame is
delivered to local ports only, never to another peer (`switch.split_horizon` for
unicast to a MAC behind another peer, `switch.same_peer` for one behind the sender).

Peers: every peer starts down (never flooded to, nor sent unicast: a static
MAC behind a down peer is dropped as `switch.peer_down`); frames from a peer are
accepted in any state; a peer set down loses every MAC learned behind it.

Held floods: a broadcast or multicast frame from a local port (`from_port(...,
hold=True)`) that some peers of its segment missed because they were down is
kept for FLOOD_HOLD seconds (at most FLOOD_HOLD_MAX per segment, the oldest
go first); a peer that comes up gets those it missed (`take_held`), once. At a
cold start or after an outage a guest's ARP request sent while the session was
coming up then arrives with the session, instead of the guest's retry a second
later (its kernel's `retrans_time_ms`; issue 10).

Egress tagging: a trunk port gets the frame tagged with the segment's VLAN,
except on its native VLAN where it leaves untagged, as on access and host
ports. A mesh frame that itself starts with a VLAN tag (the inner tag of a
QinQ frame) is written only where it gets an outer tag: never out of an
untagged port, where its inner tag would become the outer one (VLAN hopping
by double tagging). Such skipped outputs count as `switch.inner_tag_on_untagged_port`.

Drop reasons (`Switch.drops`), each `switch.<name>` (docs/drops.md): unknown_port,
unknown_peer, unknown_vni, vlan_not_allowed, segment_not_allowed,
peer_segment_not_allowed, tagged_on_access, bad_src_mac, static_mac_violation,
mac_limit, peer_mac_limit, mac_held, same_port, same_peer, split_horizon, peer_down,
flood_rate, unknown_unicast, inner_tag_on_untagged_port (per skipped output, not per
frame);
plus the `ethernet.*` reasons of a header that does not parse.
Counters (`Switch.counters`): learned, aged, flushed, mac_moves, mac_flaps,
unicast, flooded, no_destination (accepted, nowhere to go), events_dropped,
flood_held (floods kept for peers that were down), flood_held_sent (held floods
handed to a peer that came up), arp_suppressed and nd_suppressed (ARP requests
and neighbour solicitations answered here).
A storm (flood rate limit engaged on a port) is reported once, and ends when
the port's bucket has refilled.
"""

from __future__ import annotations

import collections
import hashlib
from collections import Counter, OrderedDict, deque
from dataclasses import field
from enum import StrEnum
from typing import Final, Literal

from lanspan.config.model import HostPort, Network, Node, TrunkPort
from lanspan.errors import BadPacket
from lanspan.records import record
from lanspan.switch import arp, nd
from lanspan.switch.bindings import Bindings
from lanspan.switch.bucket import TokenBucket, flood_burst
from lanspan.wire.ethernet import TAG_TPIDS, format_mac, parse_untrusted, pop_tag, push_tag

__all__ = [
    "DEFAULT_FLAP_HOLD",
    "DEFAULT_FLAP_MOVES",
    "DEFAULT_FLAP_WINDOW",
    "FLOOD_HOLD",
    "FLOOD_HOLD_MAX",
    "Forward",
    "Location",
    "MacEntry",
    "PeerLocation",
    "PortLocation",
    "Switch",
    "SwitchEvent",
    "SwitchEventKind",
    "host_port_mac",
]

DEFAULT_FLAP_MOVES = 3  # moves within the window beyond which a MAC is flapping
DEFAULT_FLAP_WINDOW = 10.0  # seconds
DEFAULT_FLAP_HOLD = 10.0  # seconds a flapping MAC stays where it is
MAX_PENDING_EVENTS = 1024  # events beyond this, not yet taken, are counted and dropped
MAX_HOT = 4096  # fast-path answers kept; the cache is emptied when it is full
# Held floods (see the module docstring): a guest's kernel repeats an unanswered ARP
# or neighbour solicitation every second, so what is older than that has been sent
# again; the margin covers a retry that is late by a loop round or two.
FLOOD_HOLD = 1.5
FLOOD_HOLD_MAX = 256  # per segment
# Unknown unicast from a local port reaches every peer at most once per this many
# seconds per destination MAC (and at once every peer that came up since).
UNKNOWN_UNICAST_INTERVAL = 1.0
# ... except in the first this many seconds a destination is unknown: every frame then
# (the answer to the first is on its way; after a reload rebuilt the tables a ping's
# answer took 60 ms, and the frames behind it were lost).
UNKNOWN_UNICAST_WINDOW = 0.25
MAX_UNKNOWN = 4096  # destinations remembered for that; emptied when full
_ZERO_MAC = b"\x00" * 6
_LOCAL: Final = "local"  # static pin: this node, any local port


@record(frozen=True, slots=True)
class PortLocation:
    """A MAC behind a local port of this node."""

    port: str

    def __str__(self) -> str:
        return f"port:{self.port}"


@record(frozen=True, slots=True)
class PeerLocation:
    """A MAC behind a peer node."""

    peer: str

    def __str__(self) -> str:
        return f"peer:{self.peer}"


Location = PortLocation | PeerLocation


@record(frozen=True, slots=True)
class Forward:
    """Where one accepted frame goes."""

    vni: int  # segment of the frame
    frame: bytes  # untagged frame as it travels in the mesh
    ports: tuple[tuple[str, bytes], ...]  # local port name -> exact bytes to write
    peers: tuple[str, ...]  # peer node names to send (vni, frame) to
    flooded: bool = False  # a flood (broadcast, multicast, unknown unicast), not a unicast


@record(frozen=True, slots=True)
class MacEntry:
    """One row of `lanspan show macs`."""

    segment: str
    vlan: int
    mac: str  # "02:aa:00:00:00:01"
    where: Location
    static: bool
    age: float  # seconds since last seen; 0 for static entries


class SwitchEventKind(StrEnum):
    """What a `SwitchEvent` reports; the value is the log line's kind."""

    MAC_MOVE = "mac_move"  # a learned MAC moved to another port or peer
    MAC_FLAP = "mac_flap"  # it moved more than flap_moves times within flap_window
    MAC_LIMIT = "switch.mac_limit"  # a port or peer reached its learned-MAC limit
    STORM = "storm"  # a port's flood rate limit engaged


@record(frozen=True, slots=True)
class SwitchEvent:
    """Something worth one log line."""

    kind: SwitchEventKind
    segment: str
    mac: str
    detail: str


@record(slots=True)
class _Held:
    """A flood some of the segment's peers missed (down), kept for them (FLOOD_HOLD)."""

    at: float
    frame: bytes  # untagged, as it travels in the mesh
    reached: tuple[str, ...]  # the peers it was flooded to
    given: set[str] | None = None  # peers it was handed to as they came up


@record(frozen=True, slots=True)
class _Seg:
    name: str
    vlan: int
    vni: int
    # local ports of the segment: (name, VLAN id to tag with, or None for untagged)
    ports: tuple[tuple[str, int | None], ...]
    peers: tuple[str, ...]  # peers that carry the segment, in network-file order


@record(slots=True)
class _Port:
    name: str
    where: PortLocation
    trunk: bool
    segment: _Seg | None  # access/host: its segment, None if this node may not carry it
    segment_ok: bool  # access/host: False when the segment is not allowed
    vlans: dict[int, _Seg | None]  # trunk: allowed VID -> segment (None: not carried)
    native: _Seg | None
    native_vid: int | None
    mac_limit: int
    bucket: TokenBucket
    storm: bool = False  # flood rate limit currently engaged
    limit_reported: bool = False  # mac_limit event logged, not yet back under the limit


@record(slots=True)
class _Peer:
    name: str
    where: PeerLocation
    vnis: frozenset[int]  # segments both ends carry
    mac_limit: int
    up: bool
    limit_reported: bool = False
    up_seq: int = 0  # `Switch._up_seq` when it last came up
    sinks: frozenset[int] = frozenset()  # segments where a flood has somewhere to go there


@record(slots=True)
class _Learned:
    where: Location
    seen: float


@record(slots=True)
class _HotOut:
    """A fast-path answer for a frame from a local port (see `Switch._hot_out`)."""

    gen: int
    key: tuple[int, bytes]  # the source's learned entry, refreshed on every use
    src: _Learned
    vni: int
    peers: tuple[str, ...]
    v6: bool  # IPv6: an ND message among such frames is read, not answered here


@record(slots=True)
class _HotIn:
    """A fast-path answer for a frame from a peer (see `Switch._hot_in`)."""

    gen: int
    key: tuple[int, bytes]
    src: _Learned
    port: str
    vid: int | None  # the tag pushed on the way out, if the port wants one
    v6: bool


@record(slots=True)
class _Moves:
    times: deque[float] = field(default_factory=deque)  # bounded: maxlen flap_moves + 1
    flap_reported_at: float | None = None
    held_until: float = float("-inf")  # after a flap: stays where it is until then


class Switch:
    """The forwarding logic of one node. See the module docstring for the rules.

    Every peer starts down (not flooded to) unless `peers_up`; the node calls
    `set_peer_up(peer, True)` when a session with it is up and
    `set_peer_up(peer, False)` when it loses it. Frames from a peer are
    accepted whatever its state.
    """

    drops: collections.Counter[str]
    counters: collections.Counter[str]

    def __init__(
        self,
        network: Network,
        node: str,
        *,
        flap_moves: int = DEFAULT_FLAP_MOVES,
        flap_window: float = DEFAULT_FLAP_WINDOW,
        flap_hold: float = DEFAULT_FLAP_HOLD,
        peers_up: bool = False,
    ) -> None:
        me = network.node(node)
        self.network = network
        self.node = node
        self.ageing = network.mac_ageing
        self.flap_moves = flap_moves
        self.flap_window = flap_window
        self.flap_hold = flap_hold
        self.drops = collections.Counter()
        self.counters = collections.Counter()
        self._now = 0.0
        self._events: list[SwitchEvent] = []

        mine = set(me.segments)
        known = {s.name for s in network.segments}
        self._vni_all = {s.vni for s in network.segments}

        # peers: every other node, with the segments both ends carry
        self._peers: dict[str, _Peer] = {}
        for n in network.nodes:
            if n.name == node:
                continue
            shared = frozenset(
                network.segment(s).vni for s in n.segments if s in mine and s in known
            )
            # A full mesh: a peer only sources MACs from its own ports, which it
            # bounds by their limits. Twice that absorbs ageing skew between ends.
            bound = 2 * max(1, sum(p.mac_limit for p in n.ports))
            self._peers[n.name] = _Peer(
                n.name, PeerLocation(n.name), shared, bound, peers_up,
                sinks=shared & _flood_sinks(network, n),
            )  # fmt: skip

        # segments this node carries, with their local ports and peers
        self._segs: dict[int, _Seg] = {}
        seg_ports: dict[str, list[tuple[str, int | None]]] = {name: [] for name in mine}
        for p in me.ports:
            if isinstance(p, TrunkPort):
                for vid in _trunk_vids(p):
                    sname = _segment_by_vlan(network, vid)
                    if sname is not None and sname in mine:
                        seg_ports[sname].append((p.name, None if vid == p.native_vlan else vid))
            elif p.segment in mine:
                seg_ports[p.segment].append((p.name, None))
        for s in network.segments:
            if s.name not in mine:
                continue
            carriers = tuple(name for name, peer in self._peers.items() if s.vni in peer.vnis)
            self._segs[s.vni] = _Seg(s.name, s.vlan, s.vni, tuple(seg_ports[s.name]), carriers)
        by_name = {s.name: s for s in self._segs.values()}

        self._ports: dict[str, _Port] = {}
        for p in me.ports:
            bucket = TokenBucket(p.flood_rate, flood_burst(p.flood_rate))
            if isinstance(p, TrunkPort):
                vlans: dict[int, _Seg | None] = {}
                for vid in _trunk_vids(p):
                    sname = _segment_by_vlan(network, vid)
                    if sname is not None:
                        vlans[vid] = by_name.get(sname)
                native = None if p.native_vlan is None else vlans.get(p.native_vlan)
                self._ports[p.name] = _Port(
                    p.name, PortLocation(p.name), True, None, False, vlans, native,
                    p.native_vlan, p.mac_limit, bucket,
                )  # fmt: skip
            else:
                seg = by_name.get(p.segment)
                self._ports[p.name] = _Port(
                    p.name, PortLocation(p.name), False, seg, seg is not None, {}, None,
                    None, p.mac_limit, bucket,
                )  # fmt: skip

        # static MACs: pins (who may source the MAC) and locations (where it is)
        self._pins: dict[tuple[int, bytes], Location | Literal["local"]] = {}
        self._static: dict[tuple[int, bytes], Location] = {}
        statics = [(m.segment, m.mac, m.node, m.port) for m in network.static_macs]
        for n in network.nodes:
            for p in n.ports:
                if isinstance(p, HostPort):  # its MAC is known to all: pinned everywhere
                    statics.append((p.segment, host_port_mac(n.name, p), n.name, p.name))
        for seg_name, mac, owner, port in statics:
            seg = by_name.get(seg_name)
            if seg is None:
                continue
            key = (seg.vni, bytes(mac))
            if owner != node:
                peer_at = PeerLocation(owner)
                self._pins[key] = peer_at
                if owner in seg.peers:
                    self._static[key] = peer_at
            elif port is None:
                self._pins[key] = _LOCAL
            else:
                port_at = PortLocation(port)
                self._pins[key] = port_at
                if any(name == port for name, _ in seg.ports):
                    self._static[key] = port_at

        self._flood_peers: dict[int, tuple[str, ...]] = {}
        self._sink_peers: dict[int, tuple[str, ...]] = {}  # up or down (held floods)
        self._refresh_flood_peers()
        self._held: dict[int, deque[_Held]] = {
            vni: deque(maxlen=FLOOD_HOLD_MAX) for vni in self._segs
        }
        # Unknown unicast destinations: (vni, dst) -> (when flooded to every peer, the
        # `_up_seq` then, since when unknown); `_up_seq` counts peers coming up.
        self._unknown: dict[tuple[int, bytes], tuple[float, int, float]] = {}
        self._up_seq = 0
        # dynamic entries in least-recently-seen order (ageing pops from the front)
        self._table: OrderedDict[tuple[int, bytes], _Learned] = OrderedDict()
        # No learned entry ages out before this (a lower bound of the oldest's expiry:
        # a refresh only moves it later), so a frame calls `_expire` only when one may.
        self._expire_at = float("inf")
        self._by_where: dict[Location, set[tuple[int, bytes]]] = collections.defaultdict(set)
        self._moves: dict[tuple[int, bytes], _Moves] = {}
        # The fast path: answers of the rules above for a lone unicast frame, by
        # (port or peer, VNI, the frame's first 14 bytes: dst, src, EtherType).
        # Each holds the generation it was computed in; every change that could
        # alter an answer (a MAC learned, moved, forgotten or aged, a peer up or
        # down) bumps `_gen`, so a stale answer is never used. Structure
        # (ports, segments, static entries) only changes with a new Switch.
        self._gen = 0
        # ARP and ND suppression (rule 3, lanspan.switch.arp, .nd): address -> MAC.
        self._bindings = Bindings(self.ageing)
        self._hot_out: dict[tuple[str, bytes], _HotOut] = {}
        self._hot_in: dict[tuple[str, int, bytes], _HotIn] = {}

    # ------------------------------------------------------------------ input

    def hot_out(self, port: str, frame: bytes, now: float) -> tuple[int, tuple[str, ...]] | None:
        """`from_port`'s answer from its hot cache, as (vni, peers), when that answer is
        all `from_port` would do (the entry current, no ageing due); None, and nothing
        done, otherwise: the caller then asks `from_port`. The node's fast path."""
        hot = self._hot_out.get((port, frame[:14]))
        if hot is None or not self._hot_hit(hot, frame, now):
            return None
        return hot.vni, hot.peers

    def hot_in(self, peer: str, vni: int, frame: bytes, now: float) -> tuple[str, bytes] | None:
        """`from_peer`'s answer from its hot cache, as (port, bytes to write), likewise
        (None, and nothing done: ask `from_peer`)."""
        hot = self._hot_in.get((peer, vni, frame[:14]))
        if hot is None or not self._hot_hit(hot, frame, now):
            return None
        return hot.port, frame if hot.vid is None else push_tag(frame, hot.vid)

    def _hot_hit(self, hot: _HotOut | _HotIn, frame: bytes, now: float) -> bool:
        """Whether `hot` is current with no ageing due (and `frame` no ND message); if
        so, used: as the full path would (the source refreshed, the unicast counted)."""
        if now >= self._expire_at or hot.gen != self._gen or (hot.v6 and _maybe_nd(frame)):
            return False
        self._now = now
        hot.src.seen = now
        self._table.move_to_end(hot.key)
        self.counters["unicast"] += 1
        return True

    def from_port(self, port: str, frame: bytes, now: float, hold: bool = False) -> Forward | None:
        """A frame read from local port `port` (802.1Q-tagged on trunks).

        `hold`: a broadcast or multicast flood that peers of the segment miss
        (down) is kept for them (`take_held`); the node asks it for frames it can
        send again as they are (no offload metadata).
        """
        self._now = now
        hot = self._hot_out.get((port, frame[:14]))
        if hot is not None:
            if now >= self._expire_at:
                self._expire(now)
            if hot.gen == self._gen and not (hot.v6 and _maybe_nd(frame)):
                e = hot.src  # what the rules below would answer, and do
                e.seen = now
                self._table.move_to_end(hot.key)
                self.counters["unicast"] += 1
                return Forward(hot.vni, frame, (), hot.peers)
        p = self._ports.get(port)
        if p is None:
            self.drops["switch.unknown_port"] += 1
            return None
        try:
            h = parse_untrusted(frame)
        except BadPacket as e:
            self.drops[e.reason] += 1
            return None
        vid = h.vlan
        seg: _Seg | None
        if p.trunk:
            if vid is None or vid == 0:
                if p.native_vid is None:
                    self.drops["switch.vlan_not_allowed"] += 1
                    return None
                seg = p.native
            elif vid in p.vlans:
                seg = p.vlans[vid]
            else:
                self.drops["switch.vlan_not_allowed"] += 1
                return None
            if seg is None:
                self.drops["switch.segment_not_allowed"] += 1
                return None
        else:
            if (vid is not None and vid != 0) or h.ethertype in TAG_TPIDS:
                self.drops["switch.tagged_on_access"] += 1
                return None
            seg = p.segment
            if seg is None:
                self.drops["switch.segment_not_allowed"] += 1
                return None
        mesh = frame if vid is None else pop_tag(frame)
        inner_tagged = h.ethertype in TAG_TPIDS

        if now >= self._expire_at:
            self._expire(now)
        if not self._learn(seg, h.src, p.where, now, p.mac_limit, p):
            return None
        answer = None
        if h.ethertype == arp.ARP_ETHERTYPE:
            # broadcast requests only: a unicast one is the asker checking on the owner
            answer = self._arp(seg, mesh, h.src, p.where, now, hold and bool(h.dst[0] & 1))
        elif h.ethertype == nd.IPV6_ETHERTYPE and _maybe_nd(mesh):
            answer = self._nd(seg, mesh, h.src, p.where, now, hold)
        if answer is not None:
            out = answer if vid is None or vid == 0 else push_tag(answer, vid)
            return Forward(seg.vni, answer, ((p.name, out),), ())

        dst = h.dst
        if not dst[0] & 1:
            where = self._lookup(seg.vni, dst)
            if where is not None:
                if where == p.where:
                    self.drops["switch.same_port"] += 1
                    return None
                fwd = self._unicast(seg, mesh, inner_tagged, where)
                if fwd is not None and fwd.peers and vid is None and not _read_always(mesh):
                    self._remember_out(port, frame, seg.vni, h.src, p.where, fwd.peers)
                return fwd
        # flood: broadcast, multicast, unknown unicast
        if not p.bucket.take(now):
            self.drops["switch.flood_rate"] += 1
            if not p.storm:
                p.storm = True
                self._event(
                    SwitchEventKind.STORM, seg.name, h.src,
                    f"port {p.name}: floods above {p.bucket.rate:g}/s, dropping the excess",
                )  # fmt: skip
            return None
        if p.storm and p.bucket.tokens >= p.bucket.burst - 1.0:
            p.storm = False  # the bucket refilled: the storm is over
        ports = self._egress(seg, mesh, inner_tagged, p.name)
        peers = self._flood_peers[seg.vni]
        if hold and dst[0] & 1 and len(peers) < len(self._sink_peers[seg.vni]):
            self._hold(seg.vni, mesh, peers, now)
        if peers and not dst[0] & 1:
            peers = self._unknown_unicast_peers(seg.vni, dst, peers, now)
        if not ports and not peers:
            self.counters["no_destination"] += 1
            return None
        self.counters["flooded"] += 1
        return Forward(seg.vni, mesh, ports, peers, True)

    def _arp(
        self, seg: _Seg, mesh: bytes, src: bytes, came: Location, now: float, answer: bool
    ) -> bytes | None:
        """Learn the binding an ARP frame from `came` shows; with `answer`, the reply to
        a request this node can give itself (`lanspan.switch.arp`), or None: forward it."""
        a = arp.parse_arp(mesh)
        if a is None:
            return None
        known = self._knows(seg.vni, a.sender_ip, src, now)
        if arp.teaches(a, src):
            self._bindings.learn(seg.vni, a.sender_ip, src, now, where=came)
        if not answer or not known or not arp.answerable(a):
            return None
        bound = self._bound(seg.vni, a.target_ip, src, came, now)
        if bound is None:
            return None
        self.counters["arp_suppressed"] += 1
        return arp.arp_reply(a, bound[0])

    def _nd(
        self, seg: _Seg, mesh: bytes, src: bytes, came: Location, now: float, answer: bool
    ) -> bytes | None:
        """`_arp` for IPv6 neighbour discovery (`lanspan.switch.nd`)."""
        m = nd.parse_nd(mesh)
        if m is None:
            return None
        if m.kind == nd.ADVERTISEMENT and m.lladdr in (None, src):
            self._bindings.learn(seg.vni, m.target, src, now, m.router, came)
        if not answer or not nd.answerable(m, mesh[:6]):
            return None
        if not self._knows(seg.vni, m.source, src, now) or m.lladdr not in (None, src):
            return None
        bound = self._bound(seg.vni, m.target, src, came, now)
        if bound is None:
            return None
        self.counters["nd_suppressed"] += 1
        return nd.advert_reply(m, src, bound[0], bound[1])

    def _knows(self, vni: int, ip: bytes, mac: bytes, now: float) -> bool:
        """Whether the asker's own address is bound to its MAC already. A request also
        tells every guest that hears it where its sender is (their caches follow it):
        a guest that took another MAC (a migrated VM, without a gratuitous ARP) was
        answered from our bindings, its request went nowhere, and its peers kept
        replying to its old MAC. Only a request that tells nothing new is answered."""
        bound = self._bindings.get(vni, ip, now)
        return bound is not None and bound[0] == mac

    def _bound(
        self, vni: int, ip: bytes, asker: bytes, came: Location, now: float
    ) -> tuple[bytes, bool] | None:
        """The binding of `ip` an answer to `asker` (from `came`) may use: fresh, not the
        asker's own, its MAC known elsewhere than `came` (behind a peer that is up) and
        still where it was when it spoke for `ip`: a MAC that moved since may belong to
        another guest now (a migrated VM moved back: the conformance test's a3, whose
        address kept naming the MAC it had borrowed)."""
        bound = self._bindings.get(vni, ip, now)
        if bound is None or bound[0] == asker:
            return None
        where = self._lookup(vni, bound[0])
        if where is None or where == came or where != bound[2]:
            return None
        if isinstance(where, PeerLocation) and not self._peers[where.peer].up:
            return None
        return bound[0], bound[1]

    def _unknown_unicast_peers(
        self, vni: int, dst: bytes, peers: tuple[str, ...], now: float
    ) -> tuple[str, ...]:
        """The peers a unicast frame to `dst`, a MAC nobody has taught us, goes to.

        Every peer with every frame for UNKNOWN_UNICAST_WINDOW after `dst` is first
        unknown, then at most once per UNKNOWN_UNICAST_INTERVAL per destination; in
        between only the peers that came up since (they have not had one yet): the
        frame that reached the peer behind `dst` brings the answer that teaches us
        where it is. Until then a local sender's every frame went to every peer,
        each sealed and sent there and opened and written to the guests behind it,
        who drop it: after a cold start of 100 nodes on 2 cores, the lab's probers
        (50 pings a second to each of ~10 guests whose MACs their kernels still knew)
        made each guest node flood ~500 frames a second to up to 99 peers, and the
        mesh did not converge (issue 10). The rest count as switch.unknown_unicast.
        """
        key = (vni, dst)
        last = self._unknown.get(key)
        if last is None or now < last[2]:
            if last is None and len(self._unknown) >= MAX_UNKNOWN:
                self._unknown.clear()
            self._unknown[key] = (now, self._up_seq, now)
            return peers
        at, seq, since = last
        if now - since < UNKNOWN_UNICAST_WINDOW or now - at >= UNKNOWN_UNICAST_INTERVAL:
            self._unknown[key] = (now, self._up_seq, since)
            return peers
        if seq == self._up_seq:
            self.drops["switch.unknown_unicast"] += 1
            return ()
        self._unknown[key] = (at, self._up_seq, since)
        fresh = tuple(p for p in peers if self._peers[p].up_seq > seq)
        if len(fresh) < len(peers):
            self.drops["switch.unknown_unicast"] += 1
        return fresh

    def from_peer(self, peer: str, vni: int, frame: bytes, now: float) -> Forward | None:
        """A frame peer `peer` sent in segment `vni`; delivered to local ports only."""
        self._now = now
        hot = self._hot_in.get((peer, vni, frame[:14]))
        if hot is not None:
            if now >= self._expire_at:
                self._expire(now)
            if hot.gen == self._gen and not (hot.v6 and _maybe_nd(frame)):
                e = hot.src  # what the rules below would answer, and do
                e.seen = now
                self._table.move_to_end(hot.key)
                self.counters["unicast"] += 1
                out = frame if hot.vid is None else push_tag(frame, hot.vid)
                return Forward(vni, frame, ((hot.port, out),), ())
        pr = self._peers.get(peer)
        if pr is None:
            self.drops["switch.unknown_peer"] += 1
            return None
        seg = self._segs.get(vni)
        if seg is None:
            self.drops[
                "switch.segment_not_allowed" if vni in self._vni_all else "switch.unknown_vni"
            ] += 1
            return None
        if vni not in pr.vnis:
            self.drops["switch.peer_segment_not_allowed"] += 1
            return None
        try:
            h = parse_untrusted(frame)
        except BadPacket as e:
            self.drops[e.reason] += 1
            return None
        inner_tagged = h.vlan is not None or h.ethertype in TAG_TPIDS

        if now >= self._expire_at:
            self._expire(now)
        if not self._learn(seg, h.src, pr.where, now, pr.mac_limit, pr):
            return None
        if h.ethertype == arp.ARP_ETHERTYPE:
            self._arp(seg, frame, h.src, pr.where, now, False)
        elif h.ethertype == nd.IPV6_ETHERTYPE and _maybe_nd(frame):
            self._nd(seg, frame, h.src, pr.where, now, False)

        dst = h.dst
        if not dst[0] & 1:
            where = self._lookup(vni, dst)
            if where is not None:
                if where == pr.where:
                    self.drops["switch.same_peer"] += 1
                    return None
                if isinstance(where, PeerLocation):
                    self.drops["switch.split_horizon"] += 1
                    return None
                fwd = self._unicast(seg, frame, inner_tagged, where)
                # (a short tagged frame must not hit; ARP must be read: bindings)
                if fwd is not None and h.vlan is None and not _read_always(frame):
                    self._remember_in(peer, vni, frame, h.src, pr.where, where, seg)
                return fwd
        ports = self._egress(seg, frame, inner_tagged, None)
        if not ports:
            self.counters["no_destination"] += 1
            return None
        self.counters["flooded"] += 1
        return Forward(vni, frame, ports, (), True)

    def _hold(self, vni: int, frame: bytes, reached: tuple[str, ...], now: float) -> None:
        held = self._held[vni]
        _expire_held(held, now)
        held.append(_Held(now, frame, reached))  # full: the oldest goes (maxlen)
        self.counters["flood_held"] += 1

    def take_held(self, peer: str, now: float) -> list[tuple[int, bytes]]:
        """(vni, mesh frame) of the held floods `peer` missed, oldest first per segment:
        for a peer that just came up (`set_peer_up`), each handed to it once."""
        pr = self._peers[peer]  # KeyError: not a peer of this node (our caller's bug)
        if not pr.up:
            return []
        out: list[tuple[int, bytes]] = []
        for vni, held in self._held.items():
            if vni not in pr.sinks or not held:
                continue
            _expire_held(held, now)
            for h in held:
                if peer in h.reached or (h.given is not None and peer in h.given):
                    continue
                if h.given is None:
                    h.given = set()
                h.given.add(peer)
                out.append((vni, h.frame))
        self.counters["flood_held_sent"] += len(out)
        return out

    # ------------------------------------------------------------ management

    def set_peer_up(self, peer: str, up: bool) -> None:
        """Peers that are down are not flooded to; MACs learned behind one are flushed."""
        pr = self._peers[peer]  # KeyError: not a peer of this node (our caller's bug)
        self._gen += 1
        if pr.up != up:
            pr.up = up
            if up:
                self._up_seq += 1
                pr.up_seq = self._up_seq
            self._refresh_flood_peers()
        if not up:  # also when already down: frames from a down peer are learned
            for key in list(self._by_where.get(pr.where, ())):
                self._forget(key)
                self.counters["flushed"] += 1

    def mac_table(self, segment: str | None = None, now: float | None = None) -> list[MacEntry]:
        """Static and learned entries, by segment then MAC; `now` defaults to the last input's."""
        t = self._now if now is None else now
        rows: list[MacEntry] = []
        for (vni, mac), where in self._static.items():
            s = self._segs[vni]
            if segment is None or s.name == segment:
                rows.append(MacEntry(s.name, s.vlan, format_mac(mac), where, True, 0.0))
        for (vni, mac), e in self._table.items():
            s = self._segs[vni]
            if (segment is None or s.name == segment) and e.seen + self.ageing > t:
                age = max(0.0, t - e.seen)
                rows.append(MacEntry(s.name, s.vlan, format_mac(mac), e.where, False, age))
        rows.sort(key=lambda r: (r.segment, r.mac))
        return rows

    def mac_counts(self) -> Counter[str]:
        """Entries per segment name, as many as `mac_table()` lists (without making them:
        every status asks)."""
        t, ageing = self._now, self.ageing
        by_vni = Counter(vni for vni, _ in self._static)
        by_vni.update(vni for (vni, _), e in self._table.items() if e.seen + ageing > t)
        return Counter({self._segs[vni].name: n for vni, n in by_vni.items()})

    def take_outputs(self) -> list[SwitchEvent]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def next_timer(self) -> float | None:
        """When the oldest learned MAC ages out; None with no learned MAC."""
        oldest = next(iter(self._table.values()), None)
        return None if oldest is None else oldest.seen + self.ageing

    def handle_timer(self, now: float) -> None:
        self._now = now
        self._expire(now)
        # forget move histories that fell out of their window
        stale = [
            k
            for k, m in self._moves.items()
            if (not m.times or m.times[-1] + self.flap_window < now)
            and (m.flap_reported_at is None or m.flap_reported_at + self.flap_window < now)
            and m.held_until < now
        ]
        for k in stale:
            del self._moves[k]

    # ------------------------------------------------------------- internals

    def _remember_out(
        self,
        port: str,
        frame: bytes,
        vni: int,
        src: bytes,
        where: Location,
        peers: tuple[str, ...],
    ) -> None:
        """Keep the answer for frames like `frame` from `port`: unicast to `peers`."""
        key = (vni, src)
        e = self._table.get(key)
        if e is None or e.where != where or key in self._pins:
            return  # a static source: the rules above stay in charge
        hot = self._hot_out
        if len(hot) >= MAX_HOT:
            hot.clear()
        hot[port, frame[:14]] = _HotOut(self._gen, key, e, vni, peers, frame[12:14] == _V6)

    def _remember_in(
        self,
        peer: str,
        vni: int,
        frame: bytes,
        src: bytes,
        where: Location,
        dst: Location,
        seg: _Seg,
    ) -> None:
        """Keep the answer for frames like `frame` from `peer` in `vni`: to port `dst`."""
        key = (vni, src)
        e = self._table.get(key)
        if e is None or e.where != where or key in self._pins:
            return
        assert isinstance(dst, PortLocation)
        vid = next(v for name, v in seg.ports if name == dst.port)
        hot = self._hot_in
        if len(hot) >= MAX_HOT:
            hot.clear()
        hot[peer, vni, frame[:14]] = _HotIn(self._gen, key, e, dst.port, vid, frame[12:14] == _V6)

    def _refresh_flood_peers(self) -> None:
        for vni, s in self._segs.items():
            sinks = self._sink_peers[vni] = tuple(p for p in s.peers if vni in self._peers[p].sinks)
            self._flood_peers[vni] = tuple(p for p in sinks if self._peers[p].up)

    def _lookup(self, vni: int, mac: bytes) -> Location | None:
        key = (vni, mac)
        where = self._static.get(key)
        if where is not None:
            return where
        e = self._table.get(key)
        return None if e is None else e.where

    def _unicast(
        self, seg: _Seg, frame: bytes, inner_tagged: bool, where: Location
    ) -> Forward | None:
        if isinstance(where, PeerLocation):
            if not self._peers[where.peer].up:  # a static entry: learned ones are flushed
                self.drops["switch.peer_down"] += 1
                return None
            self.counters["unicast"] += 1
            return Forward(seg.vni, frame, (), (where.peer,))
        name = where.port
        for pname, vid in seg.ports:
            if pname == name:
                if vid is None:
                    if inner_tagged:
                        self.drops["switch.inner_tag_on_untagged_port"] += 1
                        return None
                    out = frame
                else:
                    out = push_tag(frame, vid)
                self.counters["unicast"] += 1
                return Forward(seg.vni, frame, ((name, out),), ())
        # a static entry for a port that does not carry the segment is never installed
        raise AssertionError(f"{where} not in segment {seg.name}")  # pragma: no cover

    def _egress(
        self, seg: _Seg, frame: bytes, inner_tagged: bool, exclude: str | None
    ) -> tuple[tuple[str, bytes], ...]:
        out: list[tuple[str, bytes]] = []
        tagged: bytes | None = None
        for name, vid in seg.ports:
            if name == exclude:
                continue
            if vid is None:
                if inner_tagged:
                    self.drops["switch.inner_tag_on_untagged_port"] += 1
                    continue
                out.append((name, frame))
            else:
                if tagged is None:
                    tagged = push_tag(frame, vid)
                out.append((name, tagged))
        return tuple(out)

    def _learn(
        self,
        seg: _Seg,
        src: bytes,
        where: Location,
        now: float,
        limit: int,
        owner: _Port | _Peer,
    ) -> bool:
        """Learn `src` behind `where`; False (counted) when the frame must be dropped."""
        if src[0] & 1 or src == _ZERO_MAC:
            self.drops["switch.bad_src_mac"] += 1
            return False
        key = (seg.vni, src)
        pin = self._pins.get(key)
        if pin is not None:
            if pin == where:
                return True  # a static entry: nothing to learn, never moves
            if pin != _LOCAL or isinstance(where, PeerLocation):
                self.drops["switch.static_mac_violation"] += 1
                return False
        table = self._table
        e = table.get(key)
        if e is not None and e.where == where:
            e.seen = now
            table.move_to_end(key)
            return True
        mine = self._by_where[where]
        if len(mine) >= limit:
            peer = isinstance(where, PeerLocation)
            self.drops["switch.peer_mac_limit" if peer else "switch.mac_limit"] += 1
            if not owner.limit_reported:
                owner.limit_reported = True
                self._event(
                    SwitchEventKind.MAC_LIMIT, seg.name, format_mac(src),
                    f"{where} holds {len(mine)} learned MACs (limit {limit}); new ones dropped",
                )  # fmt: skip
            return False
        self._gen += 1
        if e is None:
            table[key] = _Learned(where, now)
            self._unknown.pop(key, None)  # known now: a later loss of it starts afresh
            if now + self.ageing < self._expire_at:
                self._expire_at = now + self.ageing
            self.counters["learned"] += 1
        else:
            old = e.where
            if self._moved(seg, key, old, where, now):
                self.drops["switch.mac_held"] += 1
                return False
            self._unindex(key, old)
            e.where = where
            e.seen = now
            table.move_to_end(key)
        mine.add(key)
        return True

    def _moved(
        self, seg: _Seg, key: tuple[int, bytes], old: Location, new: Location, now: float
    ) -> bool:
        """Count and report a move of `key` from `old` to `new`; True when the MAC is
        held at `old` (it flaps: the move is refused for `flap_hold` seconds)."""
        self.counters["mac_moves"] += 1
        m = self._moves.get(key)
        if m is None:
            m = self._moves[key] = _Moves(deque(maxlen=self.flap_moves + 1))
        if m.held_until > now:
            return True
        m.times.append(now)
        while m.times and m.times[0] + self.flap_window < now:
            m.times.popleft()
        flapping = m.flap_reported_at is not None and m.flap_reported_at + self.flap_window >= now
        mac = format_mac(key[1])
        if len(m.times) > self.flap_moves and not flapping:
            m.flap_reported_at = now
            m.held_until = now + self.flap_hold
            self.counters["mac_flaps"] += 1
            self._event(
                SwitchEventKind.MAC_FLAP, seg.name, mac,
                f"flapping between {old} and {new}: {len(m.times)} moves in "
                f"{self.flap_window:g} s; held at {old} for {self.flap_hold:g} s",
            )  # fmt: skip
            return True
        if not flapping:
            self._event(SwitchEventKind.MAC_MOVE, seg.name, mac, f"{old} -> {new}")
        return False

    def _unindex(self, key: tuple[int, bytes], where: Location) -> None:
        keys = self._by_where.get(where)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_where[where]
        owner: _Port | _Peer | None = (
            self._peers.get(where.peer)
            if isinstance(where, PeerLocation)
            else self._ports.get(where.port)
        )
        if owner is not None and len(keys or ()) < owner.mac_limit:
            owner.limit_reported = False

    def _forget(self, key: tuple[int, bytes]) -> None:
        self._gen += 1
        e = self._table.pop(key)
        self._unindex(key, e.where)
        self._moves.pop(key, None)

    def _expire(self, now: float) -> None:
        table = self._table
        ageing = self.ageing
        while table:
            key, e = next(iter(table.items()))
            if e.seen + ageing > now:
                self._expire_at = e.seen + ageing
                return
            self._forget(key)
            self.counters["aged"] += 1
        self._expire_at = float("inf")

    def _event(self, kind: SwitchEventKind, segment: str, mac: bytes | str, detail: str) -> None:
        if len(self._events) >= MAX_PENDING_EVENTS:
            self.counters["events_dropped"] += 1
            return
        text = mac if isinstance(mac, str) else format_mac(mac)
        self._events.append(SwitchEvent(kind, segment, text, detail))


def host_port_mac(node: str, port: HostPort) -> bytes:
    """A host port's MAC: the one in the file, else a stable locally administered one
    derived from node and segment (so peers' ARP caches survive restarts). Every node
    computes it from the shared file, so every switch pins it to its owner."""
    if port.mac is not None:
        return port.mac
    digest = bytearray(hashlib.blake2s(f"{node}/{port.segment}".encode(), digest_size=6).digest())
    digest[0] = (digest[0] & 0xFC) | 0x02
    return bytes(digest)


def _flood_sinks(network: Network, n: Node) -> frozenset[int]:
    """The segments (VNIs) in which node `n` can deliver a flood: it has a port carrying
    the segment, holds one of its gateway or floating addresses, or sits in a trusted
    site (where its kernel plane may bridge the segment to the site's other members).

    A peer delivers what it gets from the mesh to its own ports only (split horizon),
    so a flood sent to a node with none in the segment is sealed, sent, opened and
    dropped for nothing: in the 100-node lab 20 nodes have guests, and every guest's
    ARP and unknown unicast went to all 99 peers (issue 10's cold start).
    """
    vnis = {s.name: s.vni for s in network.segments}
    by_vlan = {s.vlan: s.vni for s in network.segments}
    if network.site(n.site).trusted:
        return frozenset(vnis[s] for s in n.segments if s in vnis)
    out: set[int] = set()
    for p in n.ports:
        if isinstance(p, TrunkPort):
            out.update(by_vlan[v] for v in _trunk_vids(p) if v in by_vlan)
        elif p.segment in vnis:
            out.add(vnis[p.segment])
    held = [(g.segment, g.nodes) for g in network.gateways]
    held += [(f.segment, f.nodes) for f in network.floating if f.segment is not None]
    for segment, nodes in held:
        if n.name in nodes and segment in vnis:
            out.add(vnis[segment])
    return frozenset(out)


def _trunk_vids(port: TrunkPort) -> tuple[int, ...]:
    """The VLAN ids a trunk accepts: its list plus the native VLAN, each once."""
    native = () if port.native_vlan is None else (port.native_vlan,)
    return tuple(dict.fromkeys((*port.vlans, *native)))


def _segment_by_vlan(network: Network, vid: int) -> str | None:
    try:
        return network.segment_by_vlan(vid).name
    except KeyError:
        return None


def _expire_held(held: deque[_Held], now: float) -> None:
    limit = now - FLOOD_HOLD
    while held and held[0].at < limit:
        held.popleft()


def _maybe_nd(frame: bytes) -> bool:
    """A cheap first look: IPv6 carrying ICMPv6 of a neighbour discovery type."""
    return len(frame) > 54 and frame[20] == nd.ICMPV6 and frame[54] in _ND_TYPES


_ND_TYPES: Final = frozenset((nd.SOLICITATION, nd.ADVERTISEMENT))
_V6: Final = b"\x86\xdd"


def _read_always(frame: bytes) -> bool:
    """Frames the fast path must not keep answers for: ARP and ND teach bindings."""
    et = frame[12:14]
    return et == b"\x08\x06" or (et == _V6 and _maybe_nd(frame))
