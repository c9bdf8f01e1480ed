"""The node: sessions + switch + paths + relays, the one place that decides.

Inputs are frames read from local ports (with their 10-byte virtio_net_hdr)
and datagrams read from the UDP socket, each with `now`; `next_timer()` says
when `handle_timer(now)` is due. Outputs (`Send`, `Write`, `Log`) are taken
with `take_outputs()` after each round. Nothing here touches a socket or a
clock. Relays and reach gossip live in `relays.py`, reload in `reload.py`;
the core's state is private: the agent uses only the methods below.
"""

from __future__ import annotations

import base64
import functools
import heapq
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Literal

from lanspan.addr import Addr, Relay, Target, format_target
from lanspan.config.model import Endpoint, Network, Node, Timers
from lanspan.errors import BadPacket
from lanspan.node.outputs import Log, NodeOutput, Send, Write
from lanspan.node.paths import RELAY_HANDSHAKE_AFTER, Path, PathEvent, PathEventKind, PeerPaths
from lanspan.node.reassembly import Reassembler
from lanspan.node.relays import (
    MAX_RELAYS,
    NATD_FIRST_GAP,
    REACH_FIRST_GAP,
    REACH_INTERVAL,
    ReachGossip,
    ReachParts,
    ReachTable,
    ReachTimes,
    relay_request,
    relayed,
)
from lanspan.node.reload import check_reload, plan_reload
from lanspan.session import (
    RETRY_MAX,
    RETRY_MAX_BEHIND_NAT,
    Delivered,
    SessionEvent,
    SessionTable,
    Transmit,
)
from lanspan.switch import Forward, Switch, host_port_mac
from lanspan.wire import control, parity, payload, tcpseg, vnet

if TYPE_CHECKING:  # built only when asked (`status`, `mac_rows`): not at an agent's start
    from lanspan.node.status import (
        MacRow,
        NodeStatus,
        PathStatus,
        PeerSegment,
        PeerStatus,
        PortStatus,
    )

__all__ = ["PARITY_GROUP", "NodeCore", "TcpSegmentation", "endpoint_addr", "host_port_mac"]

ZERO_VNET = bytes(vnet.VNET_HDR_LEN)
_WHOLE_OFFLOAD = payload.FLAG_I | payload.FLAG_O  # a whole frame behind a vnet header
_CONTROL_OR_FRAGMENT = payload.FLAG_C | payload.FLAG_F
# A payload `datagram_to_port` may write at once: a whole frame without offload metadata.
_FAST_IN_FLAGS = _CONTROL_OR_FRAGMENT | payload.FLAG_O
# Where the agent contains a failure (drop reason agent.internal_error_<where>).
# How superframes to a peer travel (`NodeCore._split_for`): "parity" (the default) as
# fragments and, while the peer shows loss, parity payloads after them; "loss" as TCP
# segments while the peer shows loss; "always" / "never" as segments / fragments
# whatever the loss. bench/README.md has the figures that chose the default.
TcpSegmentation = Literal["loss", "always", "never", "parity"]
# What `_split_for` decides for a superframe: fragments, TCP segments, fragments
# followed by their parity (one per PARITY_GROUP fragments, interleaved).
_FRAGMENTS, _SEGMENTS, _PARITY = 0, 1, 2
PARITY_GROUP = 5
InternalError = Literal["datagram", "frame", "timer", "control", "reload", "output", "read"]
# UDP payload above IP + UDP headers, and what a transport message adds.
_IP_UDP_OVERHEAD = {4: 28, 6: 48}
_TRANSPORT_OVERHEAD = 32
# Liveness costs what traffic costs. A peer that carried data (sent or received)
# in the last BUSY_WINDOW seconds is probed every `timers.probe_interval` (failover
# within a second); an idle one every IDLE_PROBE_INTERVAL +- IDLE_JITTER (spread so
# that peers are not probed in bursts), and only on paths with no sign of life for
# IDLE_QUIET of that (the peer's own probe, answered, keeps both ends' path alive:
# mostly one end of a pair asks; IDLE_QUIET is past the jitter, 1 + IDLE_JITTER, or
# both ends ask: at 0.75 they did for most pairs, 9.2 probe exchanges a second at
# 100 nodes where one end is 5.6). The first frame to an idle peer probes it at once.
# With many peers the interval grows so that idle probing stays within
# IDLE_PROBES_PER_SECOND for the node (issue 10: 100 agents x 99 peers every 4 s
# took both cores of the machine they shared; at 10 a second, every 9.9 s, an idle
# agent used 0.8-1.0 % of a core; at 5, every 19.8 s, with the REACH refreshes
# scaled alike, 0.50-0.67 %). At most IDLE_PROBE_MAX, under 25 s with the jitter
# (WireGuard's advice for a NAT'd peer's keepalive), so that NAT mappings stay.
BUSY_WINDOW = 5.0
# A probe timer handled this late means the machine, not a path, is slow: for
# OVERLOAD_HOLD seconds a busy peer's late answer no longer gets its relays probed at
# the fast rate (a relay probe costs four hops). On 100 agents sharing 2 cores, a cold
# start with guests pinging kept every busy peer's three relays probed five times a
# second; the overload outlived the guests' traffic (issue 10). Relays are still
# probed once a peer has no direct path up.
OVERLOAD_LATE = 0.5
OVERLOAD_HOLD = 10.0
# While overloaded, answers take what the machine takes, not what the path does: a
# path is declared down, a probe lost, a direct path "tried" (relays probed) only
# after OVERLOAD_SLACK_FACTOR x the worst lateness of this node's timers in the
# episode (a relayed probe crosses four queues), at most OVERLOAD_PATIENCE_MAX. At a
# 100-node cold start on 2 cores the median direct RTT at path_up was 1.5 s against
# a 0.6 s deadline: direct paths flapped, and each flap probed three relays whose
# answers came 3 s later, for pairs whose direct path worked (issue 10).
OVERLOAD_SLACK_FACTOR = 4.0
OVERLOAD_PATIENCE_MAX = 5.0
# A peer reached over an up direct path needs its relays only on standby: the
# relays' offers that change its candidates are folded in at most once per
# RELAY_CHOICE_DELAY (a peer with no direct path up, or no session, at once). At a
# cold start every relay's offer grows every REACH news gap, so each node chose
# relays for each peer once per relay that offered it: ~1 000 000 choices (N^3) at
# 100 nodes, a quarter of a sans-IO cold start's CPU under cProfile (issue 10).
RELAY_CHOICE_DELAY = 1.0
# A peer with endpoints and no session is dialed directly first; its handshakes go
# through relays only from RELAY_HANDSHAKE_AFTER on. Offers that change its
# candidates are folded in at most once per RELAY_DIAL_DELAY (less than that), not
# once per REACH: at a sans-IO cold start of 100 nodes 150 000 of 175 000 relay
# choices were such peers', one per relay newly offering them (issue 10).
RELAY_DIAL_DELAY = RELAY_HANDSHAKE_AFTER / 2
IDLE_PROBE_INTERVAL = 4.0
IDLE_PROBES_PER_SECOND = 5.0  # the node's budget: idle probing starts to grow at 20 peers
IDLE_PROBE_MAX = 20.0  # past 100 peers the budget grows instead
IDLE_QUIET = 1.3
IDLE_JITTER = 0.25  # fraction of the interval, either way
# Idle probes are due on a grid of this many seconds (rounded up): the peers due in
# one slot share one timer round, so 99 idle peers wake the agent ~4 times a second
# for their probes instead of ~25 (fast probing of busy peers is not rounded). Each
# node's grid has its own random phase: the monotonic clock is the machine's, and on
# one grid 100 agents of a lab woke in the same instant 4 times a second (50-80
# runnable at once on 2 cores; a control answer waited ~100 ms behind them, issue 10).
IDLE_GRID = 0.25
# ... or a sixteenth of the idle interval if that is longer: at 100 nodes (a 19.8 s
# interval) 1.24 s, and ~0.8 rounds a second instead of 4 for the same probes (each
# round a wake-up: ~0.5 ms of CPU on a shared 2-core machine, issue 10).
IDLE_GRID_SLOTS = 16
_NEVER = float("-inf")
# A busy peer's paths are checked this long after the active one's deadline (`check`
# judges "silent for longer than"), and no sooner.
_DEADLINE_STEP = 0.001
# With tcp_segmentation "loss", a peer whose active path lost a probe gets TCP
# segments for this long after the last loss seen: the probe window (20 probes)
# shows 1 % loss only now and then, and between two sightings superframes would
# be lost whole again.
LOSSY_HOLD = 60.0
# TCP flows whose highest sequence number sent is kept, to see their retransmissions
MAX_TCP_FLOWS = 1024


class _Traffic:
    __slots__ = ("rx_bytes", "rx_frames", "tx_bytes", "tx_frames")

    def __init__(self) -> None:
        self.rx_bytes = self.tx_bytes = self.rx_frames = self.tx_frames = 0


def _dial_order(nodes: Sequence[Node], me: str) -> list[Node]:
    """The peers in the order a node adds and dials them: the file's, starting after `me`
    and wrapping around. The initiation budget sends the first few at once and the rest
    at its rate, so in the file's order every node dialed the first nodes of the file
    first and two nodes late in it waited for each other's turn (a 32-node cold start:
    their sessions up ~1.1 s after the start, the first nodes' by ~0.5 s). Rotated, of
    any two nodes one has the other in the first half of its order."""
    at = next(i for i, n in enumerate(nodes) if n.name == me)
    return [*nodes[at + 1 :], *nodes[:at]]


def endpoint_addr(e: Endpoint) -> Addr:
    return (str(e.host), e.port)


class NodeCore:
    """One node's decisions. Public surface: the inputs (`frame_from_port`,
    `datagram`, `handle_timer`, `reconfigure`), `next_timer`, `take_outputs`,
    and the views (`status`, `mac_rows`, `drop_counts`, `peer_count`,
    `network`, `check_reload`, `count_internal_error`)."""

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
        index_prefix: int | None = None,
        tcp_segmentation: TcpSegmentation = "parity",
        parity_group: int = PARITY_GROUP,
    ) -> None:
        self._network = network
        self._me: Node = network.node(name)
        self._started = now
        self._sessions = SessionTable(
            private_key,
            cipher=network.cipher,
            random_bytes=random_bytes,
            wall_time=wall_time,
            index_prefix=index_prefix,
            retry_max=RETRY_MAX if self._me.endpoints else RETRY_MAX_BEHIND_NAT,
        )
        self._sessions.dialable = self._dialable
        self._switch = Switch(network, name)
        self._reassembly = Reassembler()
        self._tcp_segmentation = tcp_segmentation
        self._watch_loss = tcp_segmentation in ("loss", "parity")
        self._parity_group = parity_group
        self._lossy_until: dict[str, float] = {}  # peer -> segments until then ("loss")
        self._tcp_sent: dict[tuple[str, bytes], int] = {}  # (peer, TCP ports) -> next seq
        # Fragments of one superframe, in order, from the last GRO batches (`datagrams`):
        # a superframe larger than one GRO buffer spans two. Anything else from the
        # wire hands them to the reassembler first, so order is kept.
        self._run: list[tuple[Delivered, payload.Payload]] = []
        self._drops: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        self._peers: dict[str, Node] = {}
        self._paths: dict[str, PeerPaths] = {}
        self._traffic: dict[str, _Traffic] = {}
        self._port_traffic: dict[str, _Traffic] = {p.name: _Traffic() for p in self._me.ports}
        self._up: set[str] = set()
        self._frag_id = 0
        v6 = any(isinstance(e.host, IPv6Address) for n in network.nodes for e in n.endpoints)
        self._max_plaintext = underlay_mtu - _IP_UDP_OVERHEAD[6 if v6 else 4] - _TRANSPORT_OVERHEAD
        # A relayed datagram is sealed once more, inside a RELAY control message.
        longest = max(len(n.name.encode()) for n in network.nodes)
        self._max_relayed_plaintext = self._max_plaintext - (
            _TRANSPORT_OVERHEAD + payload.HEADER_LEN + 2 + longest
        )
        self._reach_times = ReachTimes.of(len(network.nodes))
        self._reach = ReachTable(self._reach_times.expiry)
        # Our offer's rounds, by audience: a peer with endpoints dials every peer it
        # needs (one behind NAT dials it), so what we newly reach is only standby
        # relays to it and waits for `change_interval`; a peer behind NAT reaches
        # another one behind NAT only through relays, so those are news to it. All
        # news to all 99 peers was ~78 000 REACH in a 100-node cold start, a third of
        # the agents' ~215 000 datagrams while both cores were saturated (issue 10).
        self._gossip_state = ReachGossip()  # to peers with endpoints
        self._natd_gossip = ReachGossip(NATD_FIRST_GAP)  # to peers behind NAT
        self._out: list[NodeOutput] = []
        self._random_bytes = random_bytes
        self._grid_phase = int.from_bytes(random_bytes(2), "little") / 65536  # of the grid
        # Probes are scheduled per peer: a heap of (due, peer), entries that no longer
        # match _probe_at are stale and skipped. Nothing scans every peer when idle.
        self._probe_at: dict[str, float] = {}
        self._probe_heap: list[tuple[float, str]] = []
        self._busy_until: dict[str, float] = {}
        self._overloaded_until = _NEVER  # see OVERLOAD_LATE
        self._overload_slack = 0.0  # the episode's worst timer lateness (OVERLOAD_SLACK_FACTOR)
        self._fast_since: dict[str, float] = {}
        self._gossip_at = now
        self._sweep_at = now  # expired offers, late refreshes: on the gossip's grid
        # Peers with a session and a direct path up, as their last path or session
        # event left them: relays on standby (`_choose_relays`).
        self._standby: set[str] = set()
        self._relays_due: set[str] = set()  # their relay choice waits for _relays_at
        self._relays_at = float("inf")
        self._dial_due: set[str] = set()  # peers we dial: their choice waits for _dial_at
        self._dial_at = float("inf")
        self.relay_choices = 0  # peers whose relays were chosen, for tests
        self._told_at: dict[str, float] = {}  # peer -> our offer sent to it alone (_tell_reach)
        self._refreshed_at: dict[str, float] = {}  # peer -> our whole offer last sent to it
        # What we offer to relay (`_direct_reach`), kept current peer by peer: each
        # peer's entry is recomputed when its session, paths or RTT change. A scan of
        # every peer per gossip round and per offer was 8 % of a sans-IO 100-node cold
        # start's CPU, gossip running after every round with path events (issue 10).
        self._offer: dict[str, int] = {}
        self._reach_parts = ReachParts(limit=_reach_limit(len(network.nodes)))
        self._reach_gen = 0  # told apart by receivers of REACH_PARTs (wraps at 256)
        # Data plane per segment, told to the other members of this node's site
        # (PLANES, lanspan/wire/control.py) until each has it; what each said last.
        self._planes: tuple[tuple[str, str], ...] = ()
        self._planes_acked: set[str] = set()
        self._planes_heard: dict[str, tuple[tuple[str, str], ...]] = {}
        for node in _dial_order(network.nodes, name):
            self._add_peer(node, now)
        self._drain_sessions(now)

    # -- peers ---------------------------------------------------------------

    def _add_peer(self, node: Node, now: float) -> None:
        self._peers[node.name] = node
        self._reach_parts.limit = _reach_limit(len(self._peers) + 1)
        self._paths[node.name] = PeerPaths([endpoint_addr(e) for e in node.endpoints], self.timers)
        self._traffic[node.name] = _Traffic()
        keepalive = self.timers.keepalive if not node.endpoints or not self._me.endpoints else None
        self._sessions.add_peer(node.name, node.public_key, persistent_keepalive=keepalive)
        if node.endpoints:
            # Behind NAT, every handshake with a peer that has endpoints is ours to make
            # (the peer cannot dial us): each brings its own token, so our first wave
            # reaches them all at once, not 9 and the rest at the budget's rate while
            # they reach us through relays (issue 10: 100 agents restarted at once
            # relayed 39 200 datagrams against 48 900, mean of five cold starts each).
            self._sessions.initiate(node.name, now, own_token=not self._me.endpoints)
        self._schedule(node.name, self._idle_due(now))

    def _remove_peer(self, name: str, now: float) -> None:
        self._sessions.remove_peer(name)
        self._drain_sessions(now)
        self._reassembly.forget(name)
        self._reach_parts.forget(name)
        changed = self._reach.forget(name)
        self._reach.candidates.pop(name, None)
        del self._peers[name], self._paths[name], self._traffic[name]
        self._probe_at.pop(name, None)
        self._lossy_until.pop(name, None)
        for key in [k for k in self._tcp_sent if k[0] == name]:
            del self._tcp_sent[key]
        self._busy_until.pop(name, None)
        self._fast_since.pop(name, None)
        self._told_at.pop(name, None)
        self._refreshed_at.pop(name, None)
        self._offer.pop(name, None)
        self._planes_acked.discard(name)
        self._planes_heard.pop(name, None)
        self._standby.discard(name)
        self._relays_due.discard(name)
        self._dial_due.discard(name)
        self._choose_relays(changed, now)

    def set_planes(self, planes: Mapping[str, str]) -> None:
        """The data plane ("userspace" or "kernel") of each of this node's segments.

        Told to every other member of this node's site once its session is up,
        again on each probe round until that member answers (PLANES with ack);
        what a member says arrives as a ``peer_planes`` Log output.
        """
        self._planes = tuple(sorted(planes.items()))
        self._planes_acked.clear()

    def _site_member(self, peer: str) -> bool:
        return self._peers[peer].site == self._me.site

    def _send_planes(self, peer: str, now: float, ack: bool = False) -> None:
        if not ack and (not self._planes or peer in self._planes_acked):
            return
        body = payload.build_control(control.build_planes(control.Planes(ack, self._planes)))
        self._emit(
            peer, self._paths[peer].destination(), self._sessions.seal_many(peer, [body], now), now
        )

    def _heard_planes(self, peer: str, msg: control.Planes, now: float) -> None:
        if not self._site_member(peer):
            self._drops["node.planes_outside_site"] += 1  # only site members' matter
            return
        if msg.ack:
            self._planes_acked.add(peer)
        else:
            self._send_planes(peer, now, ack=True)  # ours back: and we have theirs
        if self._planes_heard.get(peer) != msg.segments:
            self._planes_heard[peer] = msg.segments
            self._out.append(Log("peer_planes", {"peer": peer, "planes": dict(msg.segments)}))

    @property
    def network(self) -> Network:
        """The network file the node runs (read-only; change it with `reconfigure`)."""
        return self._network

    @property
    def timers(self) -> Timers:
        return self._network.timers

    def check_reload(self, new: Network) -> None:
        """Raise ValueError when `new` cannot be applied without a restart."""
        check_reload(self._network, self._me.name, new)

    def reconfigure(self, new: Network, now: float) -> list[str]:
        """Apply a validated new network file; sessions of unchanged peers stay up."""
        self.check_reload(new)
        plan = plan_reload(self._network, self._me.name, new)
        self._network, self._me = new, new.node(self._me.name)
        self._sessions.retry_max = RETRY_MAX if self._me.endpoints else RETRY_MAX_BEHIND_NAT
        for name in plan.removed:
            self._remove_peer(name, now)
        for change in plan.peers:
            name = change.node.name
            if change.kind == "add":
                self._add_peer(change.node, now)
            elif change.kind == "rekey":
                self._remove_peer(name, now)
                self._add_peer(change.node, now)
            else:
                self._peers[name] = change.node
                if change.endpoints_changed:
                    addrs = [endpoint_addr(e) for e in change.node.endpoints]
                    self._paths[name].set_endpoints(addrs)
                    self._offer_entry(name)
        if plan.timers_changed:
            for paths in self._paths.values():
                paths.timers = new.timers
        self._reach_times = ReachTimes.of(len(new.nodes))  # every node reloads the same file
        self._reach.expiry = self._reach_times.expiry
        if plan.rebuild_switch:
            self._switch = Switch(new, self._me.name)
            for peer in self._up:
                self._switch.set_peer_up(peer, True)
        self._port_traffic = {
            p.name: self._port_traffic.get(p.name, _Traffic()) for p in self._me.ports
        }
        self._drain_sessions(now)
        return plan.changes

    # -- inputs ----------------------------------------------------------------

    def frame_from_port(self, port: str, data: bytes, now: float) -> None:
        """A frame read from a local port: 10-byte vnet header, then the frame."""
        one = self.frame_to_peer(port, data, now)
        if one is not None:
            self._out.append(Send(one[0], [one[1]]))

    def frame_to_peer(self, port: str, data: bytes, now: float) -> tuple[Addr, bytes] | None:
        """`frame_from_port`, with the common case short: the adapter's fast path.

        When all the frame made is one datagram to one address (a plain unicast the
        switch answers from its hot cache, to a peer with a current keypair and a
        direct path, that fits one datagram, with nothing else to send), that
        datagram comes back as (address, datagram), for the caller to send at once
        (no `Send`, no `take_outputs`); every counter, timer and drop is as through
        `frame_from_port`. Otherwise None: the outputs wait in `take_outputs`.
        """
        hdr, frame = data[: vnet.VNET_HDR_LEN], data[vnet.VNET_HDR_LEN :]
        t = self._port_traffic.get(port)
        if t is not None:
            t.rx_frames += 1
            t.rx_bytes += len(frame)
        plain = hdr == ZERO_VNET
        if plain and not self._out:
            hot = self._switch.hot_out(port, frame, now)
            if hot is not None and len(hot[1]) == 1:
                return self._unicast_out(hot[0], hot[1][0], frame, now)
            if hot is not None:
                self._forward_out(Forward(hot[0], frame, (), hot[1]), hdr, frame, True, now)
                return None
        if not plain:
            # The kernel's header, but checked as a peer's would be: every later use
            # (a tag pushed or popped, the mesh form) must be able to shift it.
            try:
                vnet.validate_untrusted(vnet.parse_untrusted(hdr), len(frame))
            except BadPacket as e:
                self._drops[e.reason] += 1
                return None
        fwd = self._switch.from_port(port, frame, now, plain)
        if fwd is not None:
            self._forward_out(fwd, hdr, frame, plain, now)
        return None

    def _unicast_out(
        self, vni: int, peer: str, frame: bytes, now: float
    ) -> tuple[Addr, bytes] | None:
        """`_forward_out` of a plain unicast `frame` to one `peer`, the switch's hot answer
        (`frame_to_peer`): the one datagram when that is all it makes."""
        tr = self._traffic[peer]
        tr.tx_frames += 1
        tr.tx_bytes += len(frame)
        self._busy(peer, now)
        dest = self._paths[peer].destination()
        relayed_ = isinstance(dest, Relay)
        limit = self._max_relayed_plaintext if relayed_ else self._max_plaintext
        how = self._split_for(peer, now)
        sessions = self._sessions
        if isinstance(dest, Relay) or dest is None or len(frame) + payload.HEADER_LEN > limit:
            payloads = self._payloads(vni, frame, ZERO_VNET, frame, limit, how)
            self._seal_and_send(peer, payloads, now)
            self._drain_sessions(now)
            return None
        sealed = sessions.seal(peer, payload.build_frame(vni, frame), now)  # seal_many of one
        if sealed is not None and not self._out and not sessions.has_outputs():
            return dest, sealed
        if sealed is not None:
            self._emit(peer, dest, [sealed], now)
        self._drain_sessions(now)
        return None

    def _forward_out(self, fwd: Forward, hdr: bytes, frame: bytes, plain: bool, now: float) -> None:
        """Carry out the switch's answer `fwd` for a frame from a local port."""
        if fwd.ports:
            # every header first, then the writes: a fan-out is never cut half-way
            outs = [
                (p, hdr if plain else _shift(hdr, len(out) - len(frame)), out)
                for p, out in fwd.ports
            ]
            for out_port, out_hdr, out in outs:
                self._write(out_port, out_hdr, out)
        if not fwd.peers:
            return
        built: dict[tuple[int, int], list[bytes]] = {}
        mode_loss = self._watch_loss and not plain
        # Only unicast makes a peer busy (fast probing): a flood (ARP, ND, MLD,
        # unknown unicast) reaches every peer of the segment and would probe them all
        # fast for BUSY_WINDOW; the unicast that follows an ARP does it for the one.
        unicast = not fwd.flooded
        for peer in fwd.peers:
            tr = self._traffic[peer]
            tr.tx_frames += 1
            tr.tx_bytes += len(fwd.frame)
            if unicast:
                self._busy(peer, now)
            dest = self._paths[peer].destination()
            relayed_ = isinstance(dest, Relay)
            limit = self._max_relayed_plaintext if relayed_ else self._max_plaintext
            if mode_loss:
                self._watch_retransmits(peer, hdr, frame, now)
            how = self._split_for(peer, now)
            payloads = built.get((limit, how))
            if payloads is None:
                payloads = built[limit, how] = self._payloads(
                    fwd.vni, fwd.frame, hdr, frame, limit, how
                )
            self._seal_and_send(peer, payloads, now)
        self._drain_sessions(now)

    def _send_held(self, peer: str, now: float) -> None:
        """The floods `peer` missed while it was down (the switch held them: a guest's
        ARP sent while the session came up), sent now that it is up."""
        held = self._switch.take_held(peer, now)
        if not held:
            return
        relayed_ = isinstance(self._paths[peer].destination(), Relay)
        limit = self._max_relayed_plaintext if relayed_ else self._max_plaintext
        tr = self._traffic[peer]
        payloads: list[bytes] = []
        for vni, frame in held:
            tr.tx_frames += 1
            tr.tx_bytes += len(frame)
            payloads += self._payloads(vni, frame, ZERO_VNET, frame, limit)
        self._seal_and_send(peer, payloads, now)

    def _watch_retransmits(self, peer: str, hdr: bytes, frame: bytes, now: float) -> None:
        """A local TCP sender resending bytes it sent `peer` before saw a loss: the
        peer counts as lossy at once (probes show 1 % loss only after seconds)."""
        span = tcpseg.tcp_span(hdr, frame)
        if span is None:
            return
        ports, seq, size = span
        key = (peer, ports)
        sent = self._tcp_sent
        top = sent.get(key)
        end = (seq + size) & 0xFFFFFFFF
        if top is None or 0 < (end - top) & 0xFFFFFFFF < 0x80000000:
            if top is None and len(sent) >= MAX_TCP_FLOWS:
                sent.clear()  # forgetting costs at most one missed retransmission per flow
            sent[key] = end
        elif (top - end) & 0xFFFFFFFF < 0x80000000 and size:
            self._lossy_until[peer] = now + LOSSY_HOLD

    def _split_for(self, peer: str, now: float) -> int:
        """How superframes to `peer` travel: as fragments, as their TCP segments (one
        lost datagram then costs one segment, not a whole superframe), or as fragments
        with parity (one lost datagram per group is rebuilt)."""
        mode = self._tcp_segmentation
        if mode == "never":
            return _FRAGMENTS
        if mode == "always":
            return _SEGMENTS
        lossy = _SEGMENTS if mode == "loss" else _PARITY
        active = self._paths[peer].active
        if active is not None and active.results.any_lost():  # active.loss > 0.0
            self._lossy_until[peer] = now + LOSSY_HOLD
            return lossy
        until = self._lossy_until.get(peer)
        if until is None:
            return _FRAGMENTS
        if until > now:
            return lossy
        del self._lossy_until[peer]
        return _FRAGMENTS

    def _payloads(
        self, vni: int, out: bytes, hdr: bytes, frame: bytes, limit: int, how: int = _FRAGMENTS
    ) -> list[bytes]:
        """Payloads carrying `out` (the mesh form of `frame`), fragmented to fit `limit`;
        `how` _SEGMENTS: a TCP superframe as one payload per TCP segment; _PARITY: the
        fragments followed by their parity payloads."""
        if hdr == ZERO_VNET and len(out) + payload.HEADER_LEN <= limit:
            return [payload.build_frame(vni, out)]
        mesh_hdr = None if hdr == ZERO_VNET else _shift(hdr, len(out) - len(frame))
        body = out if mesh_hdr is None else mesh_hdr + out
        if len(body) + payload.HEADER_LEN <= limit:
            return [payload.build_frame(vni, out, mesh_hdr)]
        if how == _SEGMENTS and mesh_hdr is not None:
            segs = tcpseg.segment(
                vnet.parse_untrusted(mesh_hdr), out, limit - payload.HEADER_LEN - vnet.VNET_HDR_LEN
            )
            if segs is not None:
                self._counters["tcp_segmented"] += 1
                seg_hdr = segs.vnet.to_bytes()
                return [payload.build_frame(vni, f, seg_hdr) for f in segs.frames]
        self._counters["fragmented"] += 1
        self._frag_id = (self._frag_id + 1) & 0xFFFF
        # with parity: fragments 4 bytes shorter, so that a parity payload (its header
        # is 4 bytes longer) is as long as they are: the parities go in one UDP GSO send
        frag_limit = limit - payload.PARITY_HEADER_LEN
        chunk = frag_limit - payload.HEADER_LEN - payload.FRAG_HEADER_LEN
        if how != _PARITY or -(-len(body) // chunk) > payload.MAX_FRAGMENTS:
            return payload.build_fragments(vni, body, mesh_hdr is not None, self._frag_id, limit)
        offload = mesh_hdr is not None
        frags = payload.build_fragments(vni, body, offload, self._frag_id, frag_limit)
        count = len(frags)
        groups = parity.groups_for(count, self._parity_group)
        last = len(body) - (count - 1) * chunk
        frags += payload.build_parities(
            vni, offload, self._frag_id, count, last, parity.xors(body, chunk, groups)
        )
        self._counters["parity_sent"] += groups
        return frags

    def datagram(self, data: bytes, src: Addr, now: float) -> bool:
        """A datagram from the UDP socket; anything bad is dropped and counted.

        True when it authenticated (a handshake or transport message from a
        peer), so the adapter may trust `src` as that peer's address.
        """
        if self._run:
            self._broken_run(now)
        got = self._sessions.receive(data, src, now)
        if got is None:
            self._drain_sessions(now)
            return False
        self._delivered(got, now)
        self._drain_sessions(now)
        return True

    def datagram_to_port(self, data: bytes, src: Addr, now: float) -> tuple[str, bytes] | bool:
        """`datagram`, with the common case short: the adapter's fast path.

        When all the datagram made is one frame for one local port (a whole plain
        frame payload from a peer, which the switch answers from its hot cache,
        with nothing else to send), that write comes back as (port, vnet header +
        frame), for the caller to write at once (no `Write`, no `take_outputs`); it
        authenticated. Every counter, timer and drop is as through `datagram`.
        Otherwise what `datagram` returns (authenticated or not), the outputs
        waiting in `take_outputs`.
        """
        sessions = self._sessions
        if self._run or self._out or sessions.has_outputs():
            return self.datagram(data, src, now)
        got = sessions.receive(data, src, now)
        if got is None:
            self._drain_sessions(now)
            return False
        body = got.payload
        if not self._peer_seen(got, now) or not body:  # not a peer's, or a keepalive
            self._drain_sessions(now)
            return True
        try:
            p = payload.parse_untrusted(body)
        except BadPacket as e:
            self._drops[e.reason] += 1
            self._drain_sessions(now)
            return True
        peer = got.peer
        if not p.flags & _FAST_IN_FLAGS and not self._out and not sessions.has_outputs():
            frame = p.body
            hot = self._switch.hot_in(peer, p.vni, frame, now)
            if hot is not None:  # `_frame_payload` of a hot unicast, and `_write`
                tr = self._traffic[peer]
                tr.rx_frames += 1
                tr.rx_bytes += len(frame)
                self._busy(peer, now)
                port, out = hot
                t = self._port_traffic.get(port)
                if t is not None:
                    t.tx_frames += 1
                    t.tx_bytes += len(out)
                return port, ZERO_VNET + out
        if not p.flags & _CONTROL_OR_FRAGMENT:
            self._frame_payload(peer, p, now)
        else:
            self._parsed_from(got, p, now, False)
        self._drain_sessions(now)
        return True

    def datagrams(self, batch: list[bytes], src: Addr, now: float) -> bool:
        """`datagram` for each of `batch` (one GRO buffer: one sender), in order.

        The per-peer bookkeeping of a delivery (path seen, path events, the
        retry of a peer counted down) is done once per peer and batch, and the
        sessions' outputs are drained once; what each datagram carries is
        handled as `datagram` would. True when any authenticated.
        """
        got = self._sessions.receive_many(batch, src, now)
        seen: set[str] = set()
        run = self._run
        # whole frames with a vnet header, from one peer and segment, in a row: TCP
        # segments among them are joined back into superframes (tcpseg.coalesce)
        whole: list[tuple[str, payload.Payload]] = []
        for d in got:
            if d.peer not in seen:
                seen.add(d.peer)
                if not self._peer_seen(d, now):
                    continue
            elif d.peer not in self._paths:
                continue
            if not d.payload:
                continue
            try:
                p = payload.parse_untrusted(d.payload)
            except BadPacket as e:
                self._drops[e.reason] += 1
                continue
            if p.flags == _WHOLE_OFFLOAD:
                if run:
                    self._broken_run(now)
                    run = self._run
                if whole and (
                    whole[0][0] != d.peer
                    or whole[0][1].vni != p.vni
                    or whole[0][1].body[: vnet.VNET_HDR_LEN] != p.body[: vnet.VNET_HDR_LEN]
                ):
                    self._coalesced(whole, now)
                whole.append((d.peer, p))
                continue
            if whole:
                self._coalesced(whole, now)
            if p.is_fragment and self._extends(run, d, p):
                run.append((d, p))
                if len(run) == p.frag_count:
                    self._whole_run(run, now)
                    run = self._run = []
                continue
            if run:
                self._broken_run(now)
                run = self._run
            if p.is_fragment and p.frag_index == 0 and self._extends(run, d, p):
                run.append((d, p))
                if p.frag_count == 1:
                    self._whole_run(run, now)
                    run = self._run = []
                continue
            self._parsed_from(d, p, now, False)
        if whole:
            self._coalesced(whole, now)
        self._drain_sessions(now)
        return bool(got)

    def _coalesced(self, whole: list[tuple[str, payload.Payload]], now: float) -> None:
        """Whole frames of one peer and segment sharing one vnet header, in order: TCP
        segments joined into superframes (one write instead of one per segment)."""
        peer, p0 = whole[0]
        if len(whole) == 1:
            self._frame_payload(peer, p0, now)
        else:
            raw = p0.body[: vnet.VNET_HDR_LEN]
            try:
                hdr = vnet.parse_untrusted(raw)
            except BadPacket:  # too short: each is dropped by _frame_payload
                hdr = None
            if hdr is None:
                for _, p in whole:
                    self._frame_payload(peer, p, now)
            else:
                frames = [p.body[vnet.VNET_HDR_LEN :] for _, p in whole]
                for h, f in tcpseg.coalesce(hdr, frames):
                    body = raw + f if h is hdr else h.to_bytes() + f
                    self._frame_payload(peer, payload.Payload(p0.flags, p0.vni, body), now)
        whole.clear()

    def _extends(
        self, run: list[tuple[Delivered, payload.Payload]], d: Delivered, p: payload.Payload
    ) -> bool:
        """Whether fragment `p` is the next one of the superframe `run` holds (or
        starts one that nothing buffered in the reassembler shares an id with)."""
        if not run:
            return (
                p.frag_index == 0
                and not p.flags & payload.FLAG_P
                and not self._reassembly.has_pending(d.peer, p.frag_id)
            )
        d0, p0 = run[0]
        return (
            d.peer == d0.peer
            and p.frag_id == p0.frag_id
            and p.frag_index == len(run)
            and p.flags == p0.flags
            and p.vni == p0.vni
            and p.frag_count == p0.frag_count
        )

    def _whole_run(self, run: list[tuple[Delivered, payload.Payload]], now: float) -> None:
        """All fragments of a superframe, in order, in one batch: joined at once,
        as the reassembler would (without buffering them)."""
        d, p0 = run[0]
        if d.peer not in self._paths:  # removed by a reload since the run began
            return
        body = b"".join([p.body for _, p in run])
        if len(body) > payload.MAX_BODY:
            self._drops["reassembly.too_big"] += 1
            return
        self._reassembly.completed(d.peer, p0.frag_id)  # its parity, if any, is not needed
        self._frame_payload(d.peer, payload.Payload(p0.flags & ~payload.FLAG_F, p0.vni, body), now)

    def _broken_run(self, now: float) -> None:
        """The fragments of the run, followed by something else: to the reassembler."""
        run, self._run = self._run, []
        for d, p in run:
            if d.peer in self._paths:
                self._parsed_from(d, p, now, False)

    def _peer_seen(self, got: Delivered, now: float) -> bool:
        """A peer's datagram authenticated: its path is alive. False: not a peer of ours."""
        paths = self._paths.get(got.peer)
        if paths is None:
            return False
        if paths.seen(got.src, now):
            self._schedule(got.peer, now)  # a down path shows life: probe it now
        self._path_events(got.peer, now)
        if got.peer not in self._up:
            # A sign of life from a peer we count as down: retry its handshake now.
            self._sessions.retry_soon(got.peer, now)
        return True

    def _delivered(self, got: Delivered, now: float, *, relayed_: bool = False) -> None:
        """Authenticated plaintext from a peer; `relayed_` when it came through a relay."""
        if not self._peer_seen(got, now):
            return
        if not got.payload:
            return  # keepalive
        try:
            p = payload.parse_untrusted(got.payload)
        except BadPacket as e:
            self._drops[e.reason] += 1
            return
        if not p.flags & _CONTROL_OR_FRAGMENT:  # a whole frame, the common case
            self._frame_payload(got.peer, p, now)
            return
        self._parsed_from(got, p, now, relayed_)

    def _parsed_from(self, got: Delivered, p: payload.Payload, now: float, relayed_: bool) -> None:
        try:
            if p.is_control:
                self._control(got.peer, p.body, got.src, now, relayed_)
                return
            if p.is_fragment:
                self._reassembly.add(got.peer, p, now)
                done = self._reassembly.take_outputs()
                if not done:
                    return
                p = done[-1].payload
        except BadPacket as e:
            self._drops[e.reason] += 1
            return
        self._frame_payload(got.peer, p, now)

    def _frame_payload(self, peer: str, p: payload.Payload, now: float) -> None:
        """A whole frame payload from `peer` (reassembled if it came in fragments)."""
        try:
            if p.flags & payload.FLAG_O:  # p.has_offload, without a property call
                hdr, frame = p.body[: vnet.VNET_HDR_LEN], p.body[vnet.VNET_HDR_LEN :]
                vnet.validate_untrusted(vnet.parse_untrusted(hdr), len(frame))
            else:
                hdr, frame = ZERO_VNET, p.body
        except BadPacket as e:
            self._drops[e.reason] += 1
            return
        tr = self._traffic[peer]
        tr.rx_frames += 1
        tr.rx_bytes += len(frame)
        fwd = self._switch.from_peer(peer, p.vni, frame, now)
        if fwd is None:
            return
        if not fwd.flooded:  # unicast to a guest here (see frame_from_port)
            self._busy(peer, now)
        plain = hdr == ZERO_VNET
        # every header first, then the writes: a fan-out is never cut half-way
        outs = [
            (p, hdr if plain else _shift(hdr, len(out) - len(frame)), out) for p, out in fwd.ports
        ]
        for out_port, out_hdr, out in outs:
            self._write(out_port, out_hdr, out)

    def _control(
        self, peer: str, body: bytes, src: Target, now: float, relayed_: bool = False
    ) -> None:
        msg = control.parse_untrusted(body)
        if isinstance(msg, control.Relay) and relayed_:
            # A relayed datagram never causes another relay (nor a second delivery):
            # at most two hops, whatever a member crafts.
            self._drops["relay.nested"] += 1
            return
        if isinstance(msg, control.Probe):
            if msg.ack:
                self._paths[peer].ack(msg, now)
                self._offer_entry(peer)  # its RTT moved
                self._sessions.no_answer_owed(peer, now)  # an ack needs no keepalive
                self._path_events(peer, now)
            else:
                reply = payload.build_control(control.build_probe(replace(msg, ack=True)))
                bodies = [reply, *self._ride_reach(peer, now)]
                sealed = self._sessions.seal_many(peer, bodies, now, no_answer=True)
                self._emit(peer, src, sealed, now)
        elif isinstance(msg, control.Relay):
            if msg.delivered:
                self._relayed_to_us(peer, msg, now)
            else:
                self._relay(peer, msg, now)
        elif isinstance(msg, control.Planes):
            self._heard_planes(peer, msg, now)
        else:
            listed = msg.peers
            if isinstance(msg, control.ReachPart):
                whole = self._reach_parts.add(peer, msg)
                if whole is None:  # more parts to come: the last whole offer stands
                    self._sessions.no_answer_owed(peer, now)
                    return
                listed = whole
            # Keyed by our own name strings, not the parsed copies: 66 relays' offers
            # of 98 peers each held ~6 500 strings of their own (issue 10, RSS).
            peers, offered = self._peers, {}
            for n, rtt in listed:
                node = peers.get(n)
                if node is not None and n != peer:
                    offered[node.name] = rtt
            self._reach.offer(peer, offered, now)
            self._sync_relay(peer, now)
            self._sessions.no_answer_owed(peer, now)  # gossip: nothing owed back

    def _relay(self, origin: str, msg: control.Relay, now: float) -> None:
        """Forward a sealed datagram from `origin` to `msg.node`: one hop, direct only."""
        dest = msg.node
        if not self._me.relay:
            self._drops["relay.refused"] += 1
            return
        if dest not in self._peers or dest == origin:
            self._drops["relay.unknown_node"] += 1
            return
        addr = self._direct_hop(dest, now)
        if dest not in self._up or addr is None:
            # Never through another relay: this is what makes relay loops impossible.
            self._drops["relay.no_direct_path"] += 1
            return
        sealed = self._sessions.seal(dest, relayed(origin, msg.inner), now)
        if sealed is not None:
            self._counters["relayed"] += 1
            self._out.append(Send(addr, [sealed]))

    def _direct_hop(self, dest: str, now: float) -> Addr | None:
        """Where a datagram we relay to `dest` goes: its active path if direct, else the
        direct path it sent us something over most recently (within the keepalive
        interval). A NAT'd peer's learned address is proven by its traffic before any
        probe: with a relay path active meanwhile, the answer to an initiation it sent
        through us (relayed back the way it came) was refused and lost (cold start,
        tests/test_node_coldstart.py)."""
        hop = self._hop(dest)
        if hop is not None:
            return hop
        best: tuple[float, Addr] | None = None
        for p in self._paths[dest].paths:
            seen, target = p.last_seen, p.target
            if isinstance(target, Relay) or seen is None or now - seen > self.timers.keepalive:
                continue
            if best is None or seen > best[0]:
                best = (seen, target)
        return best[1] if best is not None else None

    def _relayed_to_us(self, via: str, msg: control.Relay, now: float) -> None:
        if msg.node not in self._peers or msg.node == via:
            self._drops["relay.unknown_node"] += 1
            return
        got = self._sessions.receive(msg.inner, Relay(via), now)
        # A reply without a peer (a cookie reply under load) goes back the way it came.
        self._drain_sessions(now, relayed_from=(via, msg.node))
        if got is None:
            return
        if got.peer != msg.node:
            self._drops["relay.origin_mismatch"] += 1
            return
        self._delivered(got, now, relayed_=True)

    # -- outputs ---------------------------------------------------------------

    def _write(self, port: str, hdr: bytes, frame: bytes) -> None:
        t = self._port_traffic.get(port)
        if t is not None:
            t.tx_frames += 1
            t.tx_bytes += len(frame)
        self._out.append(Write(port, hdr + frame))

    def _seal_and_send(self, peer: str, payloads: list[bytes], now: float) -> None:
        sealed = self._sessions.seal_many(peer, payloads, now)
        if sealed is None:
            return  # queued by the session until the handshake completes
        self._emit(peer, self._paths[peer].destination(), sealed, now)

    def _emit(
        self, peer: str | None, dest: Target | None, sealed: list[bytes] | None, now: float
    ) -> None:
        """Send datagrams sealed for `peer` to `dest`, wrapping them for a relay path."""
        if not sealed:
            return
        if dest is None:
            self._drops["node.no_endpoint"] += len(sealed)
            return
        if not isinstance(dest, Relay):
            self._out.append(Send(dest, sealed))
            return
        relay = dest.node
        hop = self._hop(relay) if relay in self._paths else None
        if peer is None or hop is None:
            self._drops["relay.unusable"] += len(sealed)
            return
        outer = self._sessions.seal_many(relay, [relay_request(peer, d) for d in sealed], now)
        if outer is not None:
            self._out.append(Send(hop, outer))

    def _dialable(self, peer: str) -> bool:
        """Something can carry a handshake to `peer` now: a direct path, or a relay
        path through a relay whose session is up (a relayed initiation rides in it)."""
        paths = self._paths.get(peer)
        if paths is None:
            return False
        return any(p.relay is None or p.relay in self._up for p in paths.paths)

    def _drain_sessions(self, now: float, relayed_from: tuple[str, str] | None = None) -> None:
        """Carry out what the sessions decided. `relayed_from` (relay, origin): we are
        handling a datagram `origin` sent through `relay`, so a reply to Relay(relay)
        that names no peer (a cookie reply) is for `origin`."""
        for action in self._sessions.take_outputs():
            if isinstance(action, Transmit):
                if action.to is not None:
                    peer = action.peer
                    if (
                        peer is None
                        and relayed_from is not None
                        and action.to == Relay(relayed_from[0])
                    ):
                        peer = relayed_from[1]
                    self._emit(peer, action.to, [action.data], now)
                elif action.peer is not None and action.peer in self._paths:
                    targets = self._paths[action.peer].candidates(now)
                    if not targets:
                        self._drops["node.no_endpoint"] += 1
                    for addr in targets:
                        self._emit(action.peer, addr, [action.data], now)
            elif isinstance(action, SessionEvent):
                self._session_event(action, now)

    def _session_event(self, ev: SessionEvent, now: float) -> None:
        self._out.append(Log(f"session_{ev.kind}", {"peer": ev.peer, "detail": ev.detail}))
        if ev.src is not None and ev.peer in self._paths:
            # The response's source: with no path active yet, what the new session sends
            # (its queue, our offer) goes there alone, not to every candidate: at a
            # 100-node cold start 4 of 10 such sends went to 2-4 paths, relays among
            # them, for ~7 000 replayed copies (issue 10).
            self._paths[ev.peer].seen(ev.src, now)
            self._path_events(ev.peer, now)
        if ev.kind == "up":
            if ev.peer not in self._up:
                self._up.add(ev.peer)
                self._offer_entry(ev.peer)
                if ev.src is not None and ev.rtt is not None:
                    self._paths[ev.peer].proven(ev.src, ev.rtt, now)  # no probe needed
                    self._path_events(ev.peer, now)
                self._switch.set_peer_up(ev.peer, True)
                self._send_held(ev.peer, now)
                self._schedule(ev.peer, now)  # probe its paths now: whole again
                self._tell_reach(ev.peer, now)
            else:
                # A rekey, or the peer restarted (a restart looks the same from here):
                # our offer rides on the answer to its next probe, which a restarted
                # peer sends at once (its first "up"). Told alone at every rekey, 99
                # peers every 120 s were 0.8 wake-ups a second of an idle agent.
                self._refreshed_at[ev.peer] = now - self._reach_times.ride  # due, not late
        elif ev.kind == "down" and ev.peer in self._up:
            self._up.discard(ev.peer)
            self._offer.pop(ev.peer, None)
            self._standby.discard(ev.peer)
            self._planes_acked.discard(ev.peer)  # told again once it is back
            self._switch.set_peer_up(ev.peer, False)
            self._reassembly.forget(ev.peer)
            self._reach_parts.forget(ev.peer)
            self._choose_relays(self._reach.forget(ev.peer), now)

    def _path_events(self, peer: str, now: float) -> None:
        events = self._paths[peer].take_outputs()
        if not events:
            return
        self._offer_entry(peer)
        for pe in events:
            self._out.append(_path_log(peer, pe))
        self._gossip_at = min(self._gossip_at, now)  # what we reach may have changed
        paths = self._paths[peer]
        if peer in self._up and paths.direct_up():
            self._standby.add(peer)
        elif peer in self._standby:
            self._standby.discard(peer)
            if peer in self._relays_due:
                self._choose_relays({peer}, now)  # its relays are needed now
        if (
            not self._me.endpoints
            and peer in self._up
            and any(pe.kind is PathEventKind.DOWN for pe in events)
            and not any(path.up for path in paths.paths)
        ):
            # Restarted? (see SessionTable.suspect) Only a node nobody can dial asks:
            # a restarted peer initiates to every node it can reach by itself, and on
            # a loaded machine (probes answered late) every public node suspecting
            # every peer was a handshake storm that kept the load up (issue 10).
            self._sessions.suspect(peer, now)
        if self._peers[peer].relay:
            self._sync_relay(peer, now)
            if any(pe.kind is PathEventKind.UP for pe in events):
                # A relay's path came back: peers it offers may be reachable again.
                for other in self._reach.offered_by(peer):
                    if other not in self._up and other in self._paths:
                        self._sessions.retry_soon(other, now)

    def _busy(self, peer: str, now: float) -> None:
        """`peer` carries data: fast probing now and for BUSY_WINDOW seconds."""
        until = self._busy_until.get(peer)
        if until is None or until <= now:  # was idle: probe at once
            self._fast_since[peer] = now
            self._schedule(peer, now)
        self._busy_until[peer] = now + BUSY_WINDOW

    def take_outputs(self) -> list[NodeOutput]:
        """Everything decided since the last call, in order: datagram batches to
        send (`Send`), frames to write (`Write`) and log lines (`Log`)."""
        for sw in self._switch.take_outputs():
            self._out.append(
                Log(sw.kind.value, {"segment": sw.segment, "mac": sw.mac, "detail": sw.detail})
            )
        out, self._out = self._out, []
        return out

    # -- timers ----------------------------------------------------------------

    def _idle_base(self) -> float:
        """The idle probe interval for this node's number of peers."""
        return min(
            IDLE_PROBE_MAX, max(IDLE_PROBE_INTERVAL, len(self._peers) / IDLE_PROBES_PER_SECOND)
        )

    def _idle_interval(self) -> float:
        unit = int.from_bytes(self._random_bytes(2), "little") / 65535  # 0..1
        return self._idle_base() * (1.0 + IDLE_JITTER * (2.0 * unit - 1.0))

    def _idle_due(self, now: float) -> float:
        """When an idle peer is probed next: an idle interval on, rounded up to the grid."""
        return self._on_grid(now + self._idle_interval())

    def _grid(self) -> float:
        """This node's idle grid: IDLE_GRID, or longer with many peers (IDLE_GRID_SLOTS)."""
        return max(IDLE_GRID, self._idle_base() / IDLE_GRID_SLOTS)

    def _on_grid(self, t: float) -> float:
        """`t` rounded up to this node's grid (`_grid`, its own phase)."""
        grid = self._grid()
        phase = self._grid_phase * grid
        return math.ceil((t - phase) / grid) * grid + phase

    def _schedule(self, peer: str, at: float) -> None:
        """Probe `peer` at `at`, or earlier if it already is."""
        due = self._probe_at.get(peer)
        if due is not None and due <= at:
            return
        self._probe_at[peer] = at
        heapq.heappush(self._probe_heap, (at, peer))

    def next_timer(self) -> float:
        heap, due = self._probe_heap, self._probe_at
        while heap and due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: rescheduled or removed
        best = min(self._gossip_at, self._relays_at, self._dial_at)
        if heap and heap[0][0] < best:
            best = heap[0][0]
        for t in (
            self._sessions.next_timer(),
            self._switch.next_timer(),
            self._reassembly.next_timer(),
        ):
            if t is not None and t < best:
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        if self._run:  # the rest of that superframe is late: the reassembler waits for it
            self._broken_run(now)
        self._sessions.handle_timer(now)
        self._switch.handle_timer(now)
        self._reassembly.handle_timer(now)
        heap, due = self._probe_heap, self._probe_at
        while heap and heap[0][0] <= now:
            at, peer = heapq.heappop(heap)
            if due.get(peer) == at:
                del due[peer]
                if now - at > OVERLOAD_LATE:
                    if now >= self._overloaded_until:
                        self._counters["overloaded"] += 1  # episodes
                        self._overload_slack = 0.0
                    self._overloaded_until = now + OVERLOAD_HOLD
                    self._overload_slack = max(self._overload_slack, now - at)
                self._probe_peer(peer, now)
        if now >= self._relays_at:
            due_now, self._relays_due, self._relays_at = self._relays_due, set(), float("inf")
            self._choose_relays(due_now, now, defer=False)
        if now >= self._dial_at:
            due_now, self._dial_due, self._dial_at = self._dial_due, set(), float("inf")
            self._choose_relays(due_now, now, defer=False)
        if now >= self._gossip_at:
            # on the idle probes' grid: one timer round for both
            self._gossip_at = self._on_grid(now + REACH_INTERVAL)
            # Expired offers and late refreshes on the grid only, not in every round a
            # path event brings the gossip forward: at a cold start that was ~30 rounds
            # a second, each a scan of every peer (issue 10).
            sweep = now >= self._sweep_at
            if sweep:
                self._sweep_at = self._gossip_at
                for relay in self._reach.expire(now):
                    self._sync_relay(relay, now)
            self._gossip(now)
            if sweep:
                self._late_refreshes(now)
        self._drain_sessions(now)

    def _probe_peer(self, peer: str, now: float) -> None:
        """Check one peer's paths and probe them at the rate its traffic asks for."""
        paths = self._paths[peer]
        busy = self._busy_until.get(peer, _NEVER) > now
        overloaded = now < self._overloaded_until
        patience = 0.0
        if overloaded:
            patience = min(OVERLOAD_PATIENCE_MAX, OVERLOAD_SLACK_FACTOR * self._overload_slack)
        if busy:
            due = now + self.timers.probe_interval
            dead, since = max(paths.dead_after, patience), self._fast_since.get(peer)
            paths.check(now, dead, since)
            # Checked at the deadline, not at the next probe after it: on the probe grid
            # a silent active path went down 0-1 probe interval late (a block's
            # failover took 0.61-0.80 s with the default timers; now dead_after, 0.6 s,
            # after the path's last sign of life).
            at = paths.dead_at(dead, since)
            if at is not None and now < at + _DEADLINE_STEP < due:
                due = at + _DEADLINE_STEP
        else:
            due = self._idle_due(now)
            self._busy_until.pop(peer, None)
            self._fast_since.pop(peer, None)
            longest = self._idle_base() * (1.0 + IDLE_JITTER) + self._grid()  # between probes
            slow = longest * self.timers.probe_multiplier
            paths.check(now, max(paths.dead_after, slow, patience))
        self._path_events(peer, now)
        if peer in self._up:
            # Relay paths only while they may be needed: no direct path up once the
            # direct ones had their chance, or a busy peer whose direct path shows
            # trouble (so failover finds them up) while this node keeps up.
            relays = (not paths.direct_up() and paths.direct_tried(now, patience)) or (
                busy and not overloaded and paths.direct_lossy(now)
            )
            quiet = None if busy else now - self._idle_base() * IDLE_QUIET
            probed = False
            for target, probe in paths.probes(now, relays=relays, quiet_since=quiet):
                body = payload.build_control(control.build_probe(probe))
                self._emit(peer, target, self._sessions.seal_many(peer, [body], now), now)
                probed = True
            if probed:  # the peer wakes for the probe: our offer's refresh, if due, too
                self._emit(peer, paths.destination(), self._seal_reach(peer, now), now)
            if self._site_member(peer):
                self._send_planes(peer, now)
        self._schedule(peer, due)

    def _direct_reach(self) -> dict[str, int]:
        """Peers we reach over an up, direct path, with RTT in µs: what we offer to
        relay (a copy: `ReachGossip` keeps what was sent)."""
        return dict(self._offer)

    def _offer_entry(self, peer: str) -> None:
        """Recompute `peer`'s entry of our offer: the RTT of its active path if that is
        up and direct, else of any up direct path (one held down after it came back is
        good enough to relay over: see `_hop`); none without a session or such a path."""
        rtt: float | None = None
        if peer in self._up:
            paths = self._paths[peer]
            active = paths.active
            if active is not None and active.up and active.relay is None:
                rtt = active.rtt or 0.0
            else:
                rtt = next((p.rtt or 0.0 for p in paths.paths if p.up and p.relay is None), None)
        if rtt is None:
            self._offer.pop(peer, None)
        else:
            self._offer[peer] = round(rtt * 1e6)

    def _gossip(self, now: float) -> None:
        if not self._me.relay:
            return
        reach = self._direct_reach()
        peers = self._peers
        natd = [p for p in self._up if not peers[p].endpoints]
        dialing = [p for p in self._up if peers[p].endpoints]
        news = {n for n in reach if not peers[n].endpoints}
        entries: list[tuple[str, bytes]] | None = None
        for state, audience, new in (
            (self._gossip_state, dialing, ()),
            (self._natd_gossip, natd, news),
        ):
            if not audience:
                continue
            if not state.due(reach, now, len(audience), new):
                if state.held_until is not None:
                    self._gossip_at = min(self._gossip_at, state.held_until)
                continue
            if entries is None:  # each entry encoded once; each peer's REACH is all but its own
                entries = [(n, control.reach_entry(n, rtt)) for n, rtt in sorted(reach.items())]
            self._reach_gen += 1
            for peer in audience:
                self._send_reach(peer, [e for n, e in entries if n != peer], now)

    def _send_reach(self, peer: str, listed: list[bytes], now: float) -> None:
        """Our offer to `peer`: one REACH, or REACH_PARTs when it does not fit one
        datagram (no answer is owed for any of them)."""
        bodies = self._reach_bodies(peer, listed, now)
        sealed = self._sessions.seal_many(peer, bodies, now, no_answer=True)
        self._emit(peer, self._paths[peer].destination(), sealed, now)

    def _reach_bodies(self, peer: str, listed: list[bytes], now: float) -> list[bytes]:
        """`listed` as REACH bodies for `peer`: its whole offer, so its refresh is done."""
        self._refreshed_at[peer] = now
        budget = self._max_plaintext - payload.HEADER_LEN
        return [
            payload.build_control(m)
            for m in control.build_reach_messages(listed, self._reach_gen, budget)
        ]

    def _ride_reach(self, peer: str, now: float) -> list[bytes]:
        """Our whole offer for `peer` if its refresh is due (`ReachTimes.ride`), as
        bodies to seal with what goes to `peer` anyway; [] otherwise."""
        ride = self._reach_times.ride
        if not self._me.relay or now - self._refreshed_at.get(peer, _NEVER) < ride:
            return []
        return self._offer_bodies(peer, now)

    def _offer_bodies(self, peer: str, now: float) -> list[bytes]:
        """Our whole offer, as it stands, for `peer` alone (a new generation)."""
        self._reach_gen += 1
        reach = sorted(self._offer.items())
        listed = [control.reach_entry(n, rtt) for n, rtt in reach if n != peer]
        return self._reach_bodies(peer, listed, now)

    def _seal_reach(self, peer: str, now: float) -> list[bytes] | None:
        bodies = self._ride_reach(peer, now)
        return self._sessions.seal_many(peer, bodies, now, no_answer=True) if bodies else None

    def _late_refreshes(self, now: float) -> None:
        """The refresh of a peer no probe or answer went to since `ReachTimes.late`
        (one that probes us and answers none of our probes, say): sent alone."""
        if not self._me.relay:
            return
        refreshed, late = self._refreshed_at, self._reach_times.late
        for peer in self._up:
            if now - refreshed.get(peer, _NEVER) >= late:
                self._emit(peer, self._paths[peer].destination(), self._seal_reach(peer, now), now)

    def _tell_reach(self, peer: str, now: float) -> None:
        """A session with `peer` came up (our start or its, seen from here): it gets
        our offer at once, whatever holds the gossip to everyone (`ReachGossip`'s
        damping, or nothing new to say). A restarted node knows no relay, and the peers
        it cannot dial (NAT'd) it reaches only through relays that told it so: issue
        10, chaos, a restarted hub's branches back 2.85 s after its restart while the
        relays' news of its return was damped. At most once per REACH_FIRST_GAP per
        peer; one REACH to that peer alone."""
        if not self._me.relay:
            return
        last = self._told_at.get(peer)
        if last is not None and now - last < REACH_FIRST_GAP:
            return
        self._told_at[peer] = now
        sealed = self._sessions.seal_many(peer, self._offer_bodies(peer, now), now, no_answer=True)
        self._emit(peer, self._paths[peer].destination(), sealed, now)

    def _relay_usable(self, relay: str) -> bool:
        return relay in self._up and self._peers[relay].relay and self._hop(relay) is not None

    def _sync_relay(self, relay: str, now: float) -> None:
        """Fold `relay`'s offer (or its withdrawal) into the peers it changes, only those."""
        self._choose_relays(self._reach.apply(relay, self._relay_usable(relay)), now)

    def _choose_relays(self, peers: set[str], now: float, defer: bool = True) -> None:
        """Relay paths for these peers: keep relays still on offer (their probe history),
        fill up to MAX_RELAYS with new ones, other sites first (`_new_relays`). With
        `defer`, a peer with a session and an up direct path waits RELAY_CHOICE_DELAY."""
        if defer and peers:
            standby = peers & self._standby  # set operations: a REACH changes ~N peers
            if standby:
                if not self._relays_due:
                    self._relays_at = now + RELAY_CHOICE_DELAY
                self._relays_due |= standby
                peers = peers - standby
            known, up = self._peers, self._up
            dialing = {p for p in peers if p not in up and p in known and known[p].endpoints}
            if dialing:
                if not self._dial_due:
                    self._dial_at = now + RELAY_DIAL_DELAY
                self._dial_due |= dialing
                peers = peers - dialing
        for peer in peers:
            paths = self._paths.get(peer)
            if paths is None:
                continue
            self._relays_due.discard(peer)
            self._dial_due.discard(peer)
            self.relay_choices += 1
            cands = self._reach.candidates.get(peer, {})
            relays = paths.relays() & cands.keys()
            self._make_room_outside(peer, relays, cands)
            if len(relays) < MAX_RELAYS and len(cands) > len(relays):
                relays |= self._new_relays(peer, relays, cands)
            paths.set_relays(relays)
            if cands and peer not in self._up:
                self._sessions.retry_soon(peer, now)  # a REACH names it: try that way now

    def _fate(self, peer: str) -> set[str]:
        """The sites whose fault can take our direct path to `peer` down: ours, its."""
        return {self._me.site, self._peers[peer].site}

    def _make_room_outside(self, peer: str, kept: set[str], cands: dict[str, int]) -> None:
        """Drop the farthest of a full set of `kept` relays that all share our or
        `peer`'s site while a relay outside both is on offer: the set fills as offers
        arrive (a site's own nodes first, at a cold start) and is kept while on offer."""
        if len(kept) < MAX_RELAYS:
            return
        fate, peers = self._fate(peer), self._peers
        if any(r not in peers or peers[r].site not in fate for r in kept):
            return  # the usual case: no scan of the offers
        if all(r in kept or r not in peers or peers[r].site in fate for r in cands):
            return
        kept.discard(max(kept, key=lambda r: (self._rtt_us(r) + cands[r], r)))

    def _new_relays(self, peer: str, kept: set[str], cands: dict[str, int]) -> set[str]:
        """Up to MAX_RELAYS - len(kept) more relays for `peer` out of `cands` (relay ->
        its RTT to `peer`, us): relays in a site other than ours and `peer`'s first, one
        per site, then by estimated RTT. A site's own nodes are the nearest relays, and
        the first a cut or block of the site takes with it: at 100 nodes a node's three
        relays to a blocked site were its site-mates, blocked too, and kept until their
        offers were withdrawn, ~10 s later (issue 10, bench/scale's block fault)."""
        fate = self._fate(peer)
        used = {self._peers[r].site for r in kept if r in self._peers}
        offers = sorted(
            (self._peers[r].site in fate, self._rtt_us(r) + rtt, r)
            for r, rtt in cands.items()
            if r not in kept and r in self._peers
        )
        picked: set[str] = set()
        room = MAX_RELAYS - len(kept)
        for diverse in (True, False):  # one per site first, then whatever is left
            for _, _, r in offers:
                if len(picked) >= room:
                    return picked
                r_site = self._peers[r].site
                if r not in picked and (not diverse or r_site not in used):
                    picked.add(r)
                    used.add(r_site)
        return picked

    def _rtt_us(self, peer: str) -> int:
        active = self._paths[peer].active
        return round((active.rtt or 0.0) * 1e6) if active is not None else 0

    def _hop(self, relay: str) -> Addr | None:
        """Where datagrams we send through `relay` go: its active path if direct, else
        an up direct path (one that came back but is held down: our own traffic to
        `relay` waits for it, a relay does not need to; chaos seed 1, episode 20: a
        branch pair 2.2 s without its only relay, the hold-down). None: no direct path."""
        paths = self._paths[relay]
        active = paths.active
        if active is not None and not isinstance(active.target, Relay):
            return active.target
        for p in paths.paths:
            target = p.target
            if p.up and not isinstance(target, Relay):
                return target
        return None

    # -- view ------------------------------------------------------------------

    def count_internal_error(self, where: InternalError) -> int:
        """Count one event dropped by a lanspan bug in the agent; returns the new total."""
        self._drops[
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
        return self._drops[f"agent.internal_error_{where}"]

    def drop_counts(self) -> Counter[str]:
        """Every dropped datagram or frame so far, by reason, from every layer."""
        drops: Counter[str] = Counter()
        for c in (self._drops, self._sessions.drops, self._switch.drops, self._reassembly.drops):
            drops.update(c)
        return drops

    def peer_count(self) -> int:
        return len(self._peers)

    def receiver_indexes(self) -> frozenset[int]:
        """Our live receiver indexes (each with the `index_prefix`, when one was given)."""
        return self._sessions.receiver_indexes()

    def mac_rows(self, segment: str | None, now: float) -> list[MacRow]:
        """MAC table rows (static and learned), all segments when `segment` is None."""
        from lanspan.node.status import MacRow

        return [
            MacRow(e.segment, e.vlan, e.mac, e.where, e.static, round(e.age, 1))
            for e in self._switch.mac_table(segment, now)
        ]

    def session_states(self) -> dict[str, Literal["up", "handshaking", "down"]]:
        """Each peer's `session` as `status` shows it, without the rest: what a lab or a
        monitor waiting for sessions asks, 100 agents at a time (issue 10)."""
        established, paths = self._sessions.handshake_state, self._paths
        return {name: _session_word(established(name)[0], paths[name]) for name in self._peers}

    def status(
        self, now: float, segments_of: Callable[[str], tuple[PeerSegment, ...]] | None = None
    ) -> NodeStatus:
        """The node's status; `segments_of(peer)`, if given, fills each peer's `segments`
        (the agent's data planes: the core does not know them)."""
        from lanspan.node.status import Counts, NodeStatus, PathStatus, PeerStatus, SegmentStatus

        macs = self._switch.mac_counts()
        return NodeStatus(
            node=self._me.name,
            network=self._network.name,
            public_key=base64.b64encode(self._sessions.public_key).decode(),
            listen_port=self._me.listen_port or self._network.port,
            uptime_s=round(now - self._started, 3),
            segments=tuple(
                SegmentStatus(s.name, s.vlan, s.vni, s.mtu, macs[s.name])
                for s in self._network.segments
                if s.name in self._me.segments
            ),
            ports=tuple(self._port_status(p.name) for p in self._me.ports),
            peers=tuple(  # in the file's order (they were added in `_dial_order`)
                self._peer_status(n.name, now, PeerStatus, PathStatus, segments_of)
                for n in self._network.nodes
                if n.name in self._peers
            ),
            drops=Counts.of(self.drop_counts()),
            counters=Counts.of(
                self._counters + self._switch.counters + self._reassembly.counters()
            ),
        )

    def _port_status(self, name: str) -> PortStatus:
        from lanspan.node.status import PortStatus

        p = self._me.port(name)
        if p.kind == "trunk":
            segs = tuple(self._network.segment_by_vlan(v).name for v in p.vlans)
        else:
            segs = (p.segment,)
        t = self._port_traffic[name]
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

    def _peer_status(
        self,
        name: str,
        now: float,
        peer_status: type[PeerStatus],
        path_status: type[PathStatus],
        segments_of: Callable[[str], tuple[PeerSegment, ...]] | None,
    ) -> PeerStatus:
        # called for every peer of every status: positional arguments and cached text
        # (a 99-peer status is built while 15 other control requests wait, issue 10)
        established, last_handshake = self._sessions.handshake_state(name)
        paths = self._paths[name]
        active = paths.active
        t = self._traffic[name]
        return peer_status(
            name,
            _key_text(self._peers[name].public_key),
            _session_word(established, paths),
            active.text if active else None,
            active.relay if active else None,
            round(now - last_handshake, 3) if last_handshake is not None else None,
            _ms(active.rtt) if active else None,
            round(active.results.loss(), 3) if active else None,
            t.rx_bytes,
            t.tx_bytes,
            t.rx_frames,
            t.tx_frames,
            tuple(self._path_status(p, p is active, path_status) for p in paths.paths),
            () if segments_of is None else segments_of(name),
        )

    @staticmethod
    def _path_status(path: Path, active: bool, path_status: type[PathStatus]) -> PathStatus:
        """`path`'s status, made again only when it changed (most paths of an idle peer,
        its relay candidates above all, do not between two statuses)."""
        key = (path.up, path.rtt, path.results.loss(), active, path.configured)
        shown = path.shown
        if shown is not None and shown[0] == key:
            return shown[1]
        up, rtt, loss, _, configured = key
        st = path_status(
            path.text,
            "up" if up else "down",
            None if rtt is None else round(rtt * 1000, 3),
            round(loss, 3),
            active,
            not configured,
        )
        path.shown = (key, st)
        return st


def _shift(hdr: bytes, delta: int) -> bytes:
    if delta == 0:
        return hdr
    return vnet.build(vnet.parse_untrusted(hdr).shifted(delta))


def _session_word(established: bool, paths: PeerPaths) -> Literal["up", "handshaking", "down"]:
    """A peer's `session` in the status: handshaking while there is a path to try."""
    return "up" if established else ("handshaking" if paths.paths else "down")


@functools.lru_cache(maxsize=4096)
def _key_text(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _reach_limit(nodes: int) -> int:
    """Entries one relay's REACH_PARTs may name: its network file may be newer than
    ours (nodes we do not know yet are named, then ignored), never unbounded."""
    return 2 * nodes + 255


def _path_log(peer: str, pe: PathEvent) -> Log:
    return Log(pe.kind.value, {"peer": peer, "path": format_target(pe.target), "detail": pe.detail})
