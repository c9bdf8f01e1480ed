"""Hypothesis state machine over lanspan.switch: random networks, random frames.

A small random network (2-4 segments, access/trunk/host ports, 2-3 peers
with random segment sets, static MACs) and random frames (random source and
destination from a small MAC pool with broadcast and multicast, random outer
and inner tags) arrive on random ports and peers at random times, while
peers go up and down and timers fire. After every step, independently of the
switch's code:

- every output carries the frame's segment: a port only if the segment is
  allowed on it, with the segment's tag on a trunk (none on its native VLAN,
  access and host ports); a peer only if it is up and carries the segment;
- nothing goes back to the ingress port, a frame from a peer goes to no peer;
- frames in VLANs or segments not allowed, or tagged on access ports, are
  never forwarded;
- a unicast to a MAC the model knows (static, or learned and not aged) goes
  to exactly that one place; anything else floods to exactly the segment's
  other ports and up peers.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from lanspan.config.model import (
    AccessPort,
    HostPort,
    Network,
    Node,
    Port,
    Segment,
    StaticMac,
    TrunkPort,
)
from lanspan.switch import Forward, Switch
from lanspan.switch.core import UNKNOWN_UNICAST_INTERVAL, UNKNOWN_UNICAST_WINDOW
from lanspan.wire.ethernet import BROADCAST, TAG_TPIDS, build, parse_untrusted, pop_tag, push_tag

UNICAST = [bytes([2, 0, 0, 0, 0, i]) for i in range(1, 6)]
MULTICAST = bytes.fromhex("01005e000001")
ZERO = b"\x00" * 6
DSTS = [*UNICAST, *UNICAST, BROADCAST, MULTICAST]
SRCS = [*UNICAST, *UNICAST, MULTICAST, ZERO]
INNERS = st.sampled_from([None, None, None, None, 0x8100, 0x88A8])
UNKNOWN_VID = 30
UNKNOWN_VNI = 999
INNER_VID = 7  # the inner tag's VLAN: may well be another segment's VLAN (hopping attempts)
INNER_TAG = INNER_VID.to_bytes(2, "big")

# drops that happen before learning: the frame taught the switch nothing
BEFORE_LEARNING = {
    "switch.unknown_port",
    "switch.unknown_peer",
    "switch.unknown_vni",
    "ethernet.short_frame",
    "ethernet.short_tagged_frame",
    "switch.vlan_not_allowed",
    "switch.segment_not_allowed",
    "switch.peer_segment_not_allowed",
    "switch.tagged_on_access",
    "switch.bad_src_mac",
    "switch.static_mac_violation",
    "switch.mac_limit",
    "switch.peer_mac_limit",
    "switch.mac_held",
}
AFTER_LEARNING = {
    "switch.same_port",
    "switch.same_peer",
    "switch.split_horizon",
    "switch.flood_rate",
    "switch.peer_down",
    "switch.unknown_unicast",
}
ALL_REASONS = BEFORE_LEARNING | AFTER_LEARNING | {"switch.inner_tag_on_untagged_port"}


@st.composite
def networks(draw: st.DrawFn) -> Network:
    n_seg = draw(st.integers(2, 4))
    vlans = draw(st.lists(st.integers(1, 20), min_size=n_seg, max_size=n_seg, unique=True))
    vnis = draw(st.lists(st.integers(100, 120), min_size=n_seg, max_size=n_seg, unique=True))
    segs = tuple(Segment(f"s{i}", vlans[i], vnis[i]) for i in range(n_seg))
    names = [s.name for s in segs]
    every = st.just(names)
    mine = draw(every | st.lists(st.sampled_from(names), min_size=1, unique=True))
    limits = st.integers(1, 6)
    rates = st.sampled_from([5.0, 50.0, 2000.0])
    ports: list[Port] = []
    for i in range(draw(st.integers(1, 3))):
        ports.append(
            AccessPort(
                f"a{i}",
                draw(st.sampled_from(names)),
                f"a{i}",
                True,
                mac_limit=draw(limits),
                flood_rate=draw(rates),
            )
        )
    for i in range(draw(st.integers(1, 2))):
        allowed = draw(
            st.just(vlans)
            | st.lists(st.sampled_from([*vlans, UNKNOWN_VID]), min_size=1, unique=True)
        )
        native = draw(st.none() | st.sampled_from(allowed))
        ports.append(
            TrunkPort(
                f"t{i}",
                f"t{i}",
                False,
                tuple(allowed),
                native_vlan=native,
                mac_limit=draw(limits),
                flood_rate=draw(rates),
            )
        )
    for i in range(draw(st.integers(0, 2))):
        ports.append(HostPort(f"h{i}", draw(st.sampled_from(mine)), f"h{i}"))
    nodes = [Node("me", "x", b"\x00" * 32, (), tuple(mine), tuple(ports))]
    for i in range(draw(st.integers(2, 3))):
        carried = draw(every | st.lists(st.sampled_from(names), unique=True))
        # a port in each segment it carries: floods go only where they can be delivered
        peer_ports = (
            AccessPort("a", names[0], "a", True, mac_limit=draw(st.integers(1, 3))),
            *(AccessPort(f"x{j}", c, f"x{j}", True, mac_limit=0) for j, c in enumerate(carried)),
        )
        nodes.append(Node(f"p{i}", "y", b"\x00" * 32, (), tuple(carried), peer_ports))
    statics: list[StaticMac] = []
    for mac in draw(st.lists(st.sampled_from(UNICAST[2:]), unique=True, max_size=2)):
        owner = draw(st.sampled_from(nodes))
        seg = draw(st.sampled_from(names))
        port = None
        if owner.name == "me":
            port = draw(st.none() | st.sampled_from([p.name for p in ports]))
        statics.append(StaticMac(seg, mac, owner.name, port))
    ageing = draw(st.sampled_from([5.0, 60.0]))
    return Network(
        "rand",
        segments=segs,
        nodes=tuple(nodes),
        static_macs=tuple(statics),
        mac_ageing=ageing,
    )


@dataclass
class Learned:
    where: str
    seen: float


class SwitchMachine(RuleBasedStateMachine):
    net: Network
    sw: Switch
    now: float
    up: dict[str, bool]
    learned: dict[tuple[int, bytes], Learned]

    @initialize(net=networks())
    def setup(self, net: Network) -> None:
        self.net = net
        self.me = net.node("me")
        self.mine = {net.segment(s).vni for s in self.me.segments}
        self.sw = Switch(net, "me", flap_moves=2, flap_window=5.0)
        self.now = 0.0
        self.up = {n.name: False for n in net.nodes if n.name != "me"}
        # unknown unicast: (vni, dst) -> (flooded to all, unknown since)
        self.unknown_at: dict[tuple[int, bytes], tuple[float, float]] = {}
        self.learned = {}
        self.ports = {p.name: p for p in self.me.ports}
        self.statics: dict[tuple[int, bytes], str] = {}
        self.pins: dict[tuple[int, bytes], str] = {}
        for m in net.static_macs:
            seg = net.segment(m.segment)
            if seg.vni not in self.mine:
                continue
            key = (seg.vni, m.mac)
            if m.node != "me":
                self.pins[key] = "peer:" + m.node
                if m.segment in net.node(m.node).segments:
                    self.statics[key] = "peer:" + m.node
            elif m.port is None:
                self.pins[key] = "local"
            else:
                self.pins[key] = "port:" + m.port
                if self.egress_vid(self.ports[m.port], seg.vni) is not False:
                    self.statics[key] = "port:" + m.port

    # -------------------------------------------------------------- helpers

    def seg_of_vid(self, vid: int) -> Segment | None:
        for s in self.net.segments:
            if s.vlan == vid:
                return s
        return None

    def egress_vid(self, port: Port, vni: int) -> int | bool | None:
        """False: the segment is not on this port; None: untagged; else the tag."""
        seg = next(s for s in self.net.segments if s.vni == vni)
        if vni not in self.mine:
            return False
        if isinstance(port, TrunkPort):
            if seg.vlan == port.native_vlan:
                return None
            return seg.vlan if seg.vlan in port.vlans else False
        return None if port.segment == seg.name else False

    def peer_carries(self, peer: str, vni: int) -> bool:
        if vni not in self.mine:
            return False
        seg = next(s for s in self.net.segments if s.vni == vni)
        return seg.name in self.net.node(peer).segments

    def expected_segment(self, port: Port, tag: int | None, inner: int | None) -> int | None:
        if isinstance(port, TrunkPort):
            vid = port.native_vlan if tag in (None, 0) else tag
            if vid is None or (vid not in port.vlans and vid != port.native_vlan):
                return None
            seg = self.seg_of_vid(vid)
        else:
            if tag not in (None, 0) or inner is not None:
                return None
            seg = next((s for s in self.net.segments if s.name == port.segment), None)
        if seg is None or seg.vni not in self.mine:
            return None
        return seg.vni

    def location(self, vni: int, mac: bytes) -> str | None:
        key = (vni, mac)
        if key in self.statics:
            return self.statics[key]
        e = self.learned.get(key)
        if e is None or e.seen + self.net.mac_ageing <= self.now:
            return None
        return e.where

    def advance(self, dt: float) -> None:
        self.now += dt
        for key in [k for k, e in self.learned.items() if e.seen + self.net.mac_ageing <= self.now]:
            del self.learned[key]

    def learn(self, vni: int, src: bytes, where: str) -> None:
        pin = self.pins.get((vni, src))
        if pin is not None and pin != "local":
            assert pin == where
            return
        self.learned[(vni, src)] = Learned(where, self.now)
        self.unknown_at.pop((vni, src), None)  # known: a later loss starts a new window

    def check_outputs(
        self, fwd: Forward, vni: int, ingress: str, from_peer: bool, inner_tagged: bool
    ) -> None:
        assert fwd.vni == vni and vni in self.mine
        names = [name for name, _ in fwd.ports]
        assert len(names) == len(set(names))
        for name, out in fwd.ports:
            assert name != "port:" + ingress or from_peer
            assert from_peer or name != ingress
            vid = self.egress_vid(self.ports[name], vni)
            assert vid is not False, f"{name} does not carry segment {vni}"
            h = parse_untrusted(out)
            if vid is None:
                assert out == fwd.frame
                assert h.vlan is None and h.ethertype not in TAG_TPIDS
            else:
                assert h.vlan == vid
                assert pop_tag(out) == fwd.frame
        if from_peer:
            assert fwd.peers == ()
        for peer in fwd.peers:
            assert self.up[peer] and self.peer_carries(peer, vni)
        assert len(fwd.peers) == len(set(fwd.peers))
        assert inner_tagged == (fwd.frame[12:14] in {t.to_bytes(2, "big") for t in TAG_TPIDS})

    def expected_flood(
        self, vni: int, ingress: str | None, inner_tagged: bool
    ) -> tuple[set[str], set[str]]:
        ports = {
            name
            for name, p in self.ports.items()
            if name != ingress
            and (vid := self.egress_vid(p, vni)) is not False
            and not (vid is None and inner_tagged)
        }
        peers = (
            set()
            if ingress is None
            else {p for p, up in self.up.items() if up and self.peer_carries(p, vni)}
        )
        return ports, peers

    def outcome(
        self,
        fwd: Forward | None,
        before: dict[str, int],
        vni: int | None,
        src: bytes,
        dst: bytes,
        where: str,
        inner_tagged: bool,
    ) -> None:
        delta = {k: v - before.get(k, 0) for k, v in self.sw.drops.items() if v != before.get(k, 0)}
        assert set(delta) <= ALL_REASONS, delta
        early = set(delta) & BEFORE_LEARNING
        if vni is None:
            assert fwd is None and early, "a frame outside its allowed segments was accepted"
            return
        if early:
            assert fwd is None and len(early) == 1
            reason = early.pop()
            if reason == "switch.bad_src_mac":
                assert src[0] & 1 or src == ZERO
            if reason == "switch.static_mac_violation":
                pin = self.pins.get((vni, src))
                assert pin is not None and pin != where
            if reason == "switch.mac_held":  # only a move is ever refused for a flap
                held = self.learned.get((vni, src))
                assert held is not None and held.where != where
            return
        assert not (src[0] & 1) and src != ZERO
        self.learn(vni, src, where)
        from_peer = where.startswith("peer:")
        ingress = where[5:]
        loc = None if dst[0] & 1 else self.location(vni, dst)
        if loc is not None:
            if loc == where:
                assert (
                    fwd is None
                    and ("switch.same_peer" if from_peer else "switch.same_port") in delta
                )
            elif from_peer and loc.startswith("peer:"):
                assert fwd is None and "switch.split_horizon" in delta
            elif loc.startswith("peer:") and not self.up[loc[5:]]:
                assert fwd is None and "switch.peer_down" in delta
            elif (
                loc.startswith("port:")
                and inner_tagged
                and self.egress_vid(self.ports[loc[5:]], vni) is None
            ):
                assert fwd is None and "switch.inner_tag_on_untagged_port" in delta
            else:
                assert fwd is not None, f"unicast to {loc} not forwarded: {delta}"
                dests = [f"port:{n}" for n, _ in fwd.ports] + [f"peer:{p}" for p in fwd.peers]
                assert dests == [loc], "a learned unicast goes to exactly one place"
            return
        ports, peers = self.expected_flood(vni, None if from_peer else ingress, inner_tagged)
        unknown = not from_peer and not dst[0] & 1 and "switch.flood_rate" not in delta
        if unknown and peers:
            # unknown unicast: every peer once a second per destination, some in between
            last = self.unknown_at.get((vni, dst))
            if last is None:
                self.unknown_at[(vni, dst)] = (self.now, self.now)
            elif (
                self.now - last[1] < UNKNOWN_UNICAST_WINDOW
                or self.now - last[0] >= UNKNOWN_UNICAST_INTERVAL
            ):
                self.unknown_at[(vni, dst)] = (self.now, last[1])
            else:
                peers = set(fwd.peers) if fwd is not None else set()
                assert peers <= self.expected_flood(vni, ingress, inner_tagged)[1]
        if fwd is None:
            assert "switch.flood_rate" in delta or (not ports and not peers), delta
            return
        assert {n for n, _ in fwd.ports} == ports
        assert set(fwd.peers) == peers

    # ---------------------------------------------------------------- rules

    @rule(
        data=st.data(),
        src=st.sampled_from(SRCS),
        dst=st.sampled_from(DSTS),
        inner=INNERS,
        dt=st.sampled_from([0.0, 0.0, 0.01, 1.0, 3.0]),
    )
    def frame_from_port(
        self, data: st.DataObject, src: bytes, dst: bytes, inner: int | None, dt: float
    ) -> None:
        port = data.draw(st.sampled_from(sorted(self.ports)))
        p = self.ports[port]
        vids = [s.vlan for s in self.net.segments] + [UNKNOWN_VID, 0]
        if isinstance(p, TrunkPort):
            vids += [None, *p.vlans, *p.vlans]
        else:
            vids += [None] * 8
        tag = data.draw(st.sampled_from(vids))
        self.advance(dt)
        self.send_port(port, src, dst, tag, inner, data.draw(st.integers(0, 7)))

    def send_port(
        self, port: str, src: bytes, dst: bytes, tag: int | None, inner: int | None, pcp: int
    ) -> None:
        if inner is None:
            frame = build(dst, src, 0x0800, b"payload")
        else:
            frame = build(dst, src, inner, INNER_TAG + b"\x08\x00payload")
        mesh = frame
        if tag is not None:
            frame = push_tag(frame, tag, pcp=pcp)
        elif inner == 0x8100:
            # the "inner" C-tag is the outer one: a frame tagged INNER_VID
            tag, inner, mesh = INNER_VID, None, pop_tag(frame)
        before = dict(self.sw.drops)
        fwd = self.sw.from_port(port, frame, self.now)
        vni = self.expected_segment(self.ports[port], tag, inner)
        if fwd is not None:
            assert vni is not None
            assert fwd.frame == mesh
            self.check_outputs(fwd, vni, port, False, inner is not None)
        self.outcome(fwd, before, vni, src, dst, "port:" + port, inner is not None)

    @rule(
        data=st.data(),
        src=st.sampled_from(SRCS),
        dst=st.sampled_from(DSTS),
        inner=INNERS,
        dt=st.sampled_from([0.0, 0.0, 0.01, 1.0, 3.0]),
    )
    def frame_from_peer(
        self, data: st.DataObject, src: bytes, dst: bytes, inner: int | None, dt: float
    ) -> None:
        peer = data.draw(st.sampled_from(sorted(self.up)))
        vni = data.draw(st.sampled_from([*self.mine, *self.mine, UNKNOWN_VNI, 100]))
        self.advance(dt)
        self.send_peer(peer, vni, src, dst, inner)

    def send_peer(self, peer: str, vni: int, src: bytes, dst: bytes, inner: int | None) -> None:
        if inner is None:
            frame = build(dst, src, 0x0800, b"payload")
        else:
            frame = build(dst, src, inner, INNER_TAG + b"\x08\x00payload")
        before = dict(self.sw.drops)
        fwd = self.sw.from_peer(peer, vni, frame, self.now)
        ok = self.peer_carries(peer, vni)
        if fwd is not None:
            assert ok
            assert fwd.frame == frame
            self.check_outputs(fwd, vni, peer, True, inner is not None)
        self.outcome(fwd, before, vni if ok else None, src, dst, "peer:" + peer, inner is not None)

    @precondition(
        lambda self: bool(getattr(self, "learned", None) or getattr(self, "statics", None))
    )
    @rule(data=st.data(), src=st.sampled_from(UNICAST), dt=st.sampled_from([0.0, 0.5]))
    def unicast_to_known(self, data: st.DataObject, src: bytes, dt: float) -> None:
        """A reply to a MAC the model knows, from any port or peer in its segment."""
        vni, dst = data.draw(st.sampled_from(sorted({*self.learned, *self.statics})))
        ingress = [
            f"port:{n}" for n, p in self.ports.items() if self.egress_vid(p, vni) is not False
        ]
        ingress += [f"peer:{p}" for p in self.up if self.peer_carries(p, vni)]
        if not ingress:
            return
        where = data.draw(st.sampled_from(sorted(ingress)))
        self.advance(dt)
        if where.startswith("peer:"):
            self.send_peer(where[5:], vni, src, dst, None)
            return
        vid = self.egress_vid(self.ports[where[5:]], vni)
        assert vid is not False
        self.send_port(where[5:], src, dst, vid, None, 0)

    @rule(data=st.data(), n=st.integers(30, 45), src=st.sampled_from(UNICAST))
    def flood_burst(self, data: st.DataObject, n: int, src: bytes) -> None:
        """Many broadcasts at one instant: the port's flood rate limit engages."""
        port = data.draw(st.sampled_from(sorted(self.ports)))
        p = self.ports[port]
        tag = None
        frame = mesh = build(BROADCAST, src, 0x0800, b"storm")
        if isinstance(p, TrunkPort) and p.native_vlan is None:
            tag = p.vlans[0]
            frame = push_tag(frame, tag)
        vni = self.expected_segment(p, tag, None)
        for _ in range(n):
            before = dict(self.sw.drops)
            fwd = self.sw.from_port(port, frame, self.now)
            if fwd is not None:
                assert vni is not None and fwd.frame == mesh
                self.check_outputs(fwd, vni, port, False, False)
            self.outcome(fwd, before, vni, src, BROADCAST, "port:" + port, False)

    @rule(data=st.data(), cut=st.integers(0, 17))
    def runt_from_port(self, data: st.DataObject, cut: int) -> None:
        port = data.draw(st.sampled_from(sorted(self.ports)))
        frame = push_tag(build(BROADCAST, UNICAST[0], 0x0800, b"x"), 10)[:cut]
        assert self.sw.from_port(port, frame, self.now) is None

    @rule(data=st.data(), up=st.booleans())
    def peer_up_down(self, data: st.DataObject, up: bool) -> None:
        peer = data.draw(st.sampled_from(sorted(self.up)))
        self.sw.set_peer_up(peer, up)
        self.up[peer] = up
        if not up:
            for key in [k for k, e in self.learned.items() if e.where == "peer:" + peer]:
                del self.learned[key]

    @rule(dt=st.sampled_from([0.5, 5.0, 30.0]))
    def timer(self, dt: float) -> None:
        self.advance(dt)
        self.sw.handle_timer(self.now)
        deadline = self.sw.next_timer()
        assert (deadline is None) == (not self.learned)
        assert deadline is None or deadline > self.now

    @rule()
    def take_events(self) -> None:
        for e in self.sw.take_outputs():
            assert e.kind in {"mac_move", "mac_flap", "switch.mac_limit", "storm"}
            assert e.segment in {s.name for s in self.net.segments}

    # ----------------------------------------------------------- invariants

    @invariant()
    def table_matches_model(self) -> None:
        if not hasattr(self, "sw"):
            return
        table = self.sw.mac_table(now=self.now)
        learned = {(e.segment, e.mac, str(e.where)) for e in table if not e.static}
        model = {
            (next(s.name for s in self.net.segments if s.vni == vni), mac.hex(":"), e.where)
            for (vni, mac), e in self.learned.items()
        }
        assert learned == model
        for e in table:
            assert e.age >= 0 and (e.static or e.age < self.net.mac_ageing)
            assert self.net.segment(e.segment).vlan == e.vlan
        # per-port MAC limits hold
        for name, p in self.ports.items():
            count = sum(1 for e in table if not e.static and e.where == "port:" + name)
            assert count <= p.mac_limit


TestSwitchMachine = SwitchMachine.TestCase
TestSwitchMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
