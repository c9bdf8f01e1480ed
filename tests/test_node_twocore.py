"""Two (and three) node cores pumped into each other through a fake link and a fake clock."""

from __future__ import annotations

import itertools
import random
import struct
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanspan.addr import Addr
from lanspan.config import encode_key, generate_private_key, parse_network, public_key
from lanspan.config.model import Network
from lanspan.control.document import status_json
from lanspan.node.core import BUSY_WINDOW, NodeCore
from lanspan.node.outputs import Log, Send, Write
from lanspan.wire import control, payload, vnet

BCAST = b"\xff" * 6
MAC1 = bytes.fromhex("020000000001")
MAC2 = bytes.fromhex("020000000002")
CHATTY = bytes.fromhex("02000000cccc")
NOWHERE = bytes.fromhex("02000000dddd")  # never learned: flooded as unknown unicast


def pinned_mac(name: str) -> bytes:
    """A static MAC every Net pins to node `name` (on its first segment): unicast to it
    goes to that peer alone, as a guest's traffic to a learned MAC does."""
    return bytes.fromhex("020000ee") + int(name[1:]).to_bytes(2, "big")


def frame(dst: bytes, src: bytes, size: int = 100, ethertype: int = 0x0800) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + bytes(size)


def plain(f: bytes) -> bytes:
    return vnet.ZERO_HEADER + f


@dataclass
class Link:
    """Carries datagrams between addresses; loses, duplicates and reorders by seed."""

    rng: random.Random
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    cut: set[Addr] = field(default_factory=set)
    blocked: set[frozenset[Addr]] = field(default_factory=set)  # pairs that cannot talk
    queue: list[tuple[Addr, Addr, bytes]] = field(default_factory=list)

    def send(self, src: Addr, dst: Addr, data: bytes) -> None:
        if dst in self.cut or src in self.cut or frozenset((src, dst)) in self.blocked:
            return
        if self.rng.random() < self.loss:
            return
        self.queue.append((src, dst, data))
        if self.rng.random() < self.dup:
            self.queue.append((src, dst, data))
        if len(self.queue) > 1 and self.rng.random() < self.reorder:
            i = self.rng.randrange(len(self.queue))
            self.queue[i], self.queue[-1] = self.queue[-1], self.queue[i]

    def take(self) -> list[tuple[Addr, Addr, bytes]]:
        q, self.queue = self.queue, []
        return q


class Net:
    def __init__(
        self,
        n: int,
        link: Link,
        segments: dict[str, list[str]] | None = None,
        nat: frozenset[str] = frozenset(),
        no_relay: frozenset[str] = frozenset(),
        sites: dict[str, str] | None = None,  # node -> site (default: a site each)
    ) -> None:
        self.keys = {f"n{i}": generate_private_key() for i in range(1, n + 1)}
        self.addr = {name: (f"198.18.0.{i}", 51820) for i, name in enumerate(self.keys, 1)}
        segments = segments or {name: ["a", "b"] for name in self.keys}
        self.segments = segments
        text = [
            '[network]\nname = "t"\n[[segment]]\nname = "a"\nvlan = 10\n'
            '[[segment]]\nname = "b"\nvlan = 20\n'
        ]
        for name, key in self.keys.items():
            host, port = self.addr[name]
            endpoints = "[]" if name in nat else f'["{host}:{port}"]'
            text.append(
                f'[[node]]\nname = "{name}"\nsite = "{(sites or {}).get(name, "s" + name)}"\n'
                f'public_key = "{encode_key(public_key(key))}"\n'
                f"endpoints = {endpoints}\nrelay = {str(name not in no_relay).lower()}\n"
                f"segments = {segments[name]!r}\n".replace("'", '"')
            )
            for seg in segments[name]:
                text.append(
                    f'  [[node.port]]\n  kind = "access"\n  name = "p{seg}"\n  segment = "{seg}"\n'
                )
        for name in self.keys:
            mac = pinned_mac(name).hex(":")
            text.append(
                f'[[static_mac]]\nsegment = "{segments[name][0]}"\nmac = "{mac}"\n'
                f'node = "{name}"\nport = "p{segments[name][0]}"\n'
            )
        self.network: Network = parse_network("\n".join(text), "test.toml")
        self.rng = random.Random(7)
        self.now = 100.0
        self.link = link
        self.nodes = {name: self.core(name) for name in self.keys}
        self.by_addr = {self.addr[n]: n for n in self.nodes}
        # Nodes that carry traffic: unicast from CHATTY every 0.1 s to every peer (to its
        # pinned MAC: only unicast to a known MAC makes a peer busy, a flood does not).
        self.chatty: set[str] = set()
        self.written: dict[str, list[tuple[str, bytes]]] = {n: [] for n in self.nodes}
        self.logged: dict[str, list[Log]] = {n: [] for n in self.nodes}

    def core(self, name: str) -> NodeCore:
        """A new core for node `name`, started now (as its agent starts)."""
        return NodeCore(
            self.network,
            name,
            self.keys[name],
            random_bytes=self.rng.randbytes,
            wall_time=lambda: 1.7e9 + self.now,
            now=self.now,
        )

    def step(self, dt: float = 0.01) -> None:
        before, self.now = self.now, round(self.now + dt, 6)
        if int(self.now * 10) != int(before * 10):
            for name in self.chatty:
                node = self.nodes[name]
                port = "p" + self.segments[name][0]
                for peer in self.nodes:
                    if peer != name and self.segments[peer][0] in self.segments[name]:
                        f = plain(frame(pinned_mac(peer), CHATTY))
                        node.frame_from_port(port, f, self.now)
        for name, node in self.nodes.items():
            if node.next_timer() <= self.now:
                node.handle_timer(self.now)
            for out in node.take_outputs():
                if isinstance(out, Send):
                    for d in out.batch:
                        self.link.send(self.addr[name], out.target, d)
                elif isinstance(out, Write):
                    if out.data[vnet.VNET_HDR_LEN + 6 : vnet.VNET_HDR_LEN + 12] != CHATTY:
                        self.written[name].append((out.port, out.data))
                else:
                    self.logged[name].append(out)
        for src, dst, data in self.link.take():
            target = self.by_addr.get(dst)
            if target is not None:
                self.nodes[target].datagram(data, src, self.now)

    def run(self, seconds: float, dt: float = 0.01) -> None:
        for _ in range(round(seconds / dt)):
            self.step(dt)

    def up(self, a: str, b: str) -> bool:
        return self.nodes[a]._sessions.status(b).established

    def take_written(self, name: str) -> list[tuple[str, bytes]]:
        w, self.written[name] = self.written[name], []
        return w


def test_broadcast_then_learned_unicast_cross_two_nodes() -> None:
    net = Net(2, Link(random.Random(1)))
    net.run(1.0)
    assert net.up("n1", "n2") and net.up("n2", "n1")
    f1 = frame(BCAST, MAC1)
    net.nodes["n1"].frame_from_port("pa", plain(f1), net.now)
    net.run(0.1)
    assert net.take_written("n2") == [("pa", plain(f1))]  # segment a only, not pb
    f2 = frame(MAC1, MAC2)
    net.nodes["n2"].frame_from_port("pa", plain(f2), net.now)
    net.run(0.1)
    assert net.take_written("n1") == [("pa", plain(f2))]
    st = status_json(net.nodes["n1"].status(net.now))
    peer = st["peers"][0]
    assert peer["session"] == "up" and peer["rx_frames"] == 1 and peer["tx_frames"] == 1
    assert peer["paths"][0]["state"] == "up" and peer["rtt_ms"] is not None


def test_a_broadcast_sent_before_the_session_is_up_arrives_with_it() -> None:
    """A guest's ARP request while the session comes up (a cold start) is not lost
    until the guest's kernel repeats it a second later: held, sent once it is up."""
    net = Net(2, Link(random.Random(1)))
    arp = frame(BCAST, MAC1, ethertype=0x0806)
    net.nodes["n1"].frame_from_port("pa", plain(arp), net.now)  # no session yet
    offload = vnet.build(vnet.VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 34, 6))
    udp = frame(BCAST, MAC1, ethertype=0x0800)
    net.nodes["n1"].frame_from_port("pa", offload + udp, net.now)  # offload metadata: not held
    while not (net.up("n1", "n2") and net.up("n2", "n1")):
        net.step()
        assert net.now < 101.0
    net.run(0.05)
    assert net.take_written("n2") == [("pa", plain(arp))]  # once, and only the plain one
    net.run(2.0)
    assert net.take_written("n2") == []
    assert net.nodes["n1"]._switch.counters["flood_held_sent"] == 1


def test_gso_superframe_is_fragmented_and_rebuilt_with_its_offload_header() -> None:
    net = Net(2, Link(random.Random(2), reorder=0.3))
    net.run(1.0)
    # A TCPv4 superframe as a TAP with TSO gives it: 14 + 20 + 32 header bytes.
    payload = bytes(random.Random(3).randbytes(60_000))
    f = frame(BCAST, MAC1, 0) + bytes(52) + payload
    hdr = vnet.build(vnet.VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 66, 1448, 34, 16))
    net.nodes["n1"].frame_from_port("pa", hdr + f, net.now)
    net.run(0.1)
    assert net.take_written("n2") == [("pa", hdr + f)]


def test_loss_duplication_and_reordering_keep_frames_whole_and_single() -> None:
    net = Net(2, Link(random.Random(4), loss=0.1, dup=0.2, reorder=0.3))
    net.run(3.0)
    assert net.up("n1", "n2")
    sent = []
    for i in range(50):
        f = frame(BCAST, MAC1, 100 + i)
        sent.append(plain(f))
        net.nodes["n1"].frame_from_port("pa", plain(f), net.now)
        net.step()
    net.run(0.5)
    got = [data for port, data in net.take_written("n2")]
    assert len(got) == len(set(got))  # duplicates never delivered twice
    assert set(got) <= set(sent)
    assert 30 <= len(got) < 50  # about 10 % lost
    assert net.nodes["n2"]._sessions.drops["session.replay"] > 0


def test_frames_for_a_segment_the_peer_does_not_carry_are_not_sent() -> None:
    net = Net(3, Link(random.Random(5)), {"n1": ["a", "b"], "n2": ["a"], "n3": ["a", "b"]})
    net.run(1.0)
    net.nodes["n1"].frame_from_port("pb", plain(frame(BCAST, MAC1)), net.now)
    net.run(0.1)
    assert net.take_written("n2") == []
    assert net.take_written("n3") == [("pb", plain(frame(BCAST, MAC1)))]


def test_active_path_failure_is_detected_within_a_second() -> None:
    net = Net(2, Link(random.Random(6)))
    net.chatty.add("n1")  # failover within a second is for peers carrying traffic
    net.run(3.0)
    paths = net.nodes["n1"]._paths["n2"]
    assert paths.active is not None and paths.active.up
    net.link.cut.add(net.addr["n2"])
    cut = net.now
    while paths.active is not None and paths.active.up:
        net.step()
        assert net.now - cut < 1.0
    net.step()
    assert "path_down" in [e.kind for e in net.logged["n1"]]


def block(net: Net, a: str, b: str) -> None:
    net.link.blocked.add(frozenset((net.addr[a], net.addr[b])))


def _fail_over_to_the_relay(net: Net) -> float:
    """Block n1 <-> n3 (n1's traffic direct until then): how long until n1 sends to n3
    through the relay, within a second."""
    paths = net.nodes["n1"]._paths["n3"]
    assert paths.active is not None and paths.active.relay is None
    block(net, "n1", "n3")
    cut = net.now
    while paths.active is None or paths.active.relay is None or not paths.active.up:
        net.step()
        assert net.now - cut < 1.0, "no failover to the relay within 1 s"
    return net.now - cut


def test_a_blocked_busy_path_fails_over_at_its_deadline_whatever_the_probes_phase() -> None:
    # On the probe grid a silent path went down up to a probe interval after its
    # deadline: blocks at twelve phases failed over in 0.61-0.80 s (default timers);
    # checked at the deadline, within dead_after (0.6 s) of the block and a step.
    took = []
    for seed in range(12):
        net = Net(3, Link(random.Random(seed)))
        net.chatty.add("n1")
        net.run(4.0 + seed * 0.017)  # the block falls at another point of the grid
        took.append(_fail_over_to_the_relay(net))
    assert max(took) <= net.nodes["n1"]._paths["n3"].dead_after + 0.03, sorted(took)


def test_blocked_direct_path_goes_through_a_relay_end_to_end() -> None:
    net = Net(3, Link(random.Random(8)))
    block(net, "n1", "n3")
    net.run(4.0)
    assert net.up("n1", "n3") and net.up("n3", "n1")  # the handshake itself was relayed
    paths = net.nodes["n1"]._paths["n3"]
    assert paths.active is not None and paths.active.relay == "n2"
    f = frame(BCAST, MAC1)
    net.nodes["n1"].frame_from_port("pa", plain(f), net.now)
    net.run(0.1)
    assert net.take_written("n3") == [("pa", plain(f))]
    assert net.nodes["n2"]._counters["relayed"] > 0
    peer = next(
        p for p in status_json(net.nodes["n1"].status(net.now))["peers"] if p["name"] == "n3"
    )
    assert peer["via"] == "n2" and peer["session"] == "up"
    assert net.nodes["n2"]._sessions.drops["session.bad_auth"] == 0


def test_an_overloaded_node_does_not_probe_the_relays_of_its_slow_busy_peers() -> None:
    """100 agents on 2 cores, a cold start with guests pinging: every answer came late,
    so every busy peer's three relays were probed five times a second too, and the
    overload outlived the guests (issue 10). Timers handled OVERLOAD_LATE late: the
    machine is slow, not the path; relays are probed again once it keeps up."""
    from lanspan.node.core import OVERLOAD_HOLD, OVERLOAD_LATE

    def relay_probes(overloaded: bool) -> tuple[int, int]:
        net = Net(3, Link(random.Random(10)))
        net.chatty.add("n1")
        net.run(4.0)
        relay = net.nodes["n2"]
        before = relay._counters["relayed"]
        # 2 s of a slow machine: everything handled in steps longer than the fast probe
        # interval, so every answer is late (direct_lossy) and, overloaded, timers too
        net.run(2.0, dt=OVERLOAD_LATE + 0.2 if overloaded else 0.35)
        return relay._counters["relayed"] - before, net.nodes["n1"]._counters["overloaded"]

    slow, episodes = relay_probes(overloaded=False)
    assert slow >= 8 and episodes == 0  # late answers alone: the relays are probed
    relayed, episodes = relay_probes(overloaded=True)
    assert relayed <= 2 and episodes == 1  # at most the one probe there and back in flight
    # Once it keeps up again, a cut still moves traffic to the relay within a second.
    net = Net(3, Link(random.Random(10)))
    net.chatty.add("n1")
    net.run(4.0)
    net.run(2.0, dt=OVERLOAD_LATE + 0.2)
    net.run(OVERLOAD_HOLD + 1.0)
    _fail_over_to_the_relay(net)


def _overloaded_start(blocked: bool, seconds: float) -> tuple[Net, float | None, float | None]:
    """Three nodes started on a machine that handles everything 0.8 s late (n1's
    guests talk to every peer from the start): when n1's session to n3 and its first
    path to n3 came up, seconds after the start."""
    net = Net(3, Link(random.Random(10)))
    net.chatty.add("n1")
    if blocked:
        block(net, "n1", "n3")
    start, session, path = net.now, None, None
    paths = net.nodes["n1"]._paths["n3"]
    while net.now - start < seconds:
        net.step(0.8)
        if session is None and net.up("n1", "n3"):
            session = net.now - start
        if path is None and paths.active is not None and paths.active.up:
            path = net.now - start
    return net, session, path


def test_an_overloaded_start_waits_for_slow_direct_answers_before_the_relays() -> None:
    """A 100-node cold start on 2 cores: direct answers took 1.5 s (median) against a
    0.6 s deadline, so each direct path flapped and every peer's relays were probed
    too (answers 3 s later still), for pairs whose direct path worked (issue 10).
    Overloaded, a probe is lost only after 4 x the node's own lateness: measured
    before, 9 relayed datagrams in these 8 s; now none, and the direct path is up."""
    net, session, path = _overloaded_start(blocked=False, seconds=8.0)
    assert net.nodes["n1"]._counters["overloaded"] == 1
    assert session is not None and path is not None
    assert net.nodes["n2"]._counters["relayed"] == 0
    assert not any(log.kind == "path_down" for log in net.logged["n1"])


def test_an_overloaded_start_brings_a_relay_only_pair_up() -> None:
    """The same start with n1-n3 blocked: the handshake through n2 answers 2.4 s late.
    Measured before: no session in 30 s (every answer came after three more retries);
    with the late answers teaching their latency and the relay path judged on the
    machine's time, the session is up in 8 s, the relay path in 13 s, and it stays."""
    net, session, path = _overloaded_start(blocked=True, seconds=30.0)
    assert session is not None and session <= 12.0, session
    assert path is not None and path <= 18.0, path
    paths = net.nodes["n1"]._paths["n3"]
    assert paths.active is not None and paths.active.relay == "n2" and paths.active.up
    assert not any(log.kind == "path_down" for log in net.logged["n1"])


def test_a_node_that_says_no_does_not_relay() -> None:
    net = Net(3, Link(random.Random(9)), no_relay=frozenset({"n2"}))
    block(net, "n1", "n3")
    net.run(4.0)
    assert not net.up("n1", "n3")
    assert all(p.relay is None for p in net.nodes["n1"]._paths["n3"].paths)


def test_cutting_the_direct_path_moves_traffic_to_a_relay_within_a_second() -> None:
    net = Net(3, Link(random.Random(10)))
    net.chatty.add("n1")
    net.run(4.0)
    paths = net.nodes["n1"]._paths["n3"]
    assert paths.active is not None and paths.active.relay is None
    assert {p.relay for p in paths.paths} == {None, "n2"}  # relay path probed in advance
    block(net, "n1", "n3")
    cut = net.now
    while paths.active is None or paths.active.relay is None or not paths.active.up:
        net.step()
        assert net.now - cut < 1.0, "no failover to the relay within 1 s"
    net.link.blocked.clear()
    net.run(4.0)  # the direct path comes back after its hold-down
    assert paths.active is not None and paths.active.relay is None


def test_branches_behind_nat_fail_over_between_hubs() -> None:
    # n1, n2, n3 are hubs; n4 and n5 are branches behind NAT that never talk directly.
    net = Net(5, Link(random.Random(11)), nat=frozenset({"n4", "n5"}))
    net.chatty.add("n4")
    block(net, "n4", "n5")
    net.run(5.0)
    assert net.up("n4", "n5")
    paths = net.nodes["n4"]._paths["n5"]
    assert paths.active is not None and paths.active.relay in {"n1", "n2", "n3"}
    assert {p.relay for p in paths.paths} == {"n1", "n2", "n3"}
    hub = paths.active.relay
    net.link.cut.add(net.addr[hub])  # the hub dies
    cut = net.now
    while paths.active is None or paths.active.relay == hub or not paths.active.up:
        net.step()
        assert net.now - cut < 1.0, "no failover to another hub within 1 s"
    f = frame(BCAST, MAC1)
    net.nodes["n4"].frame_from_port("pa", plain(f), net.now)
    net.run(0.1)
    assert net.take_written("n5") == [("pa", plain(f))]


def test_a_relay_never_forwards_through_another_relay() -> None:
    # n2 reaches n3 only through a relay itself: it must refuse to relay n1's traffic to n3.
    net = Net(4, Link(random.Random(12)))
    block(net, "n1", "n3")
    block(net, "n2", "n3")
    net.run(4.0)
    n2 = net.nodes["n2"]
    assert n2._paths["n3"].active is not None and n2._paths["n3"].active.relay == "n4"
    n1_paths = net.nodes["n1"]._paths["n3"]
    assert {p.relay for p in n1_paths.paths if p.relay} == {"n4"}  # n2 does not offer n3
    before = n2._drops["relay.no_direct_path"]
    fake = payload.build_control(control.build_relay(control.Relay(False, "n3", b"x" * 40)))
    sealed = net.nodes["n1"]._sessions.seal("n2", fake, net.now)
    assert sealed is not None
    n2.datagram(sealed, net.addr["n1"], net.now)
    assert n2._drops["relay.no_direct_path"] == before + 1
    assert all(not isinstance(o, Send) or o.target != net.addr["n3"] for o in n2.take_outputs())


_FUZZ_NET: list[Net] = []


def _fuzz_net() -> Net:
    if not _FUZZ_NET:
        net = Net(2, Link(random.Random(13)))
        net.run(1.0)
        _FUZZ_NET.append(net)
    return _FUZZ_NET[0]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_datagrams_are_dropped_and_counted_never_raised(data: bytes) -> None:
    net = _fuzz_net()
    node = net.nodes["n2"]
    before = sum(node.drop_counts().values())
    node.datagram(data, net.addr["n1"], net.now)
    after = sum(node.drop_counts().values())
    outputs = node.take_outputs()
    sends = [o for o in outputs if isinstance(o, Send)]
    assert after == before + 1 or sends  # counted, or answered (a handshake)
    assert [o for o in outputs if isinstance(o, Write)] == []


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_tampered_real_datagrams_never_raise(data: st.DataObject) -> None:
    net = _fuzz_net()
    sender, node = net.nodes["n1"], net.nodes["n2"]
    body = data.draw(
        st.sampled_from(
            [
                payload.build_frame(10, frame(BCAST, MAC1)),
                payload.build_control(control.build_probe(control.Probe(False, 0, 1, 2))),
                payload.build_control(control.build_relay(control.Relay(False, "n1", b"x" * 20))),
                payload.build_control(control.build_reach(control.Reach((("n1", 5),)))),
                *payload.build_fragments(10, bytes(3000), True, 3, 1400),
            ]
        )
    )
    cut = data.draw(st.integers(0, len(body)))
    tail = data.draw(st.binary(max_size=20))
    sealed = sender._sessions.seal("n2", body[:cut] + tail, net.now)
    assert sealed is not None
    flip = data.draw(st.one_of(st.none(), st.integers(0, len(sealed) - 1)))
    if flip is not None:
        sealed = sealed[:flip] + bytes([sealed[flip] ^ 0x40]) + sealed[flip + 1 :]
    node.datagram(sealed, net.addr["n1"], net.now)
    node.take_outputs()


def test_reconfigure_applies_timers_and_reports_segment_changes() -> None:
    net = Net(2, Link(random.Random(14)))
    net.run(1.0)
    node = net.nodes["n1"]
    slower = replace(net.network.timers, probe_interval=1.0)
    with pytest.raises(ValueError, match="restart"):
        node.check_reload(replace(net.network, name="other"))
    changes = node.reconfigure(replace(net.network, timers=slower), net.now)
    assert node._paths["n2"].timers.probe_interval == 1.0
    assert any(c.startswith("timers now") for c in changes)
    assert net.up("n1", "n2")  # the session was not touched


def test_reach_gossip_is_damped_when_a_link_flaps() -> None:
    net = Net(3, Link(random.Random(15)))
    net.run(3.0)
    hub = net.nodes["n2"]
    full = hub._direct_reach()
    assert set(full) == {"n1", "n3"}
    flapping = [full, {"n1": full["n1"]}]
    sends = 0
    now = net.now
    for tick in range(50):  # n3 comes and goes at every 0.2 s probe tick, for 10 s
        hub._direct_reach = lambda t=tick: flapping[t % 2]  # type: ignore[method-assign]
        before = hub._gossip_state.sent_at
        hub._gossip(now)
        sends += hub._gossip_state.sent_at != before
        now += 0.2
    # 50 changes; at most the flap budget of immediate sends plus one per interval.
    assert 3 <= sends <= 3 + 10 + 1


def test_reload_of_an_endpoint_keeps_the_learned_macs() -> None:
    net = Net(2, Link(random.Random(16)))
    net.run(1.0)
    node = net.nodes["n1"]
    node.frame_from_port("pa", plain(frame(BCAST, MAC1)), net.now)
    assert len(learned(node)) == 1
    moved = replace(
        net.network.nodes[1], endpoints=(replace(net.network.nodes[1].endpoints[0], port=51821),)
    )
    new = replace(net.network, nodes=(net.network.nodes[0], moved))
    changes = node.reconfigure(new, net.now)
    assert changes == ["peer n2 endpoints now ['198.18.0.2:51821']"]
    assert len(learned(node)) == 1  # the switch was kept
    changes = node.reconfigure(replace(new, mac_ageing=60.0), net.now)
    assert "switch rebuilt: MAC tables relearn" in changes and learned(node) == []


def learned(node: NodeCore) -> list[object]:
    return [e for e in node._switch.mac_table() if not e.static]


def _sent_by(net: Net, name: str, seconds: float, every: float, f: bytes) -> int:
    """Datagrams `name` sends in `seconds` while its port gives it `f` every `every` s."""
    sent = [0]
    send = net.link.send

    def count(src: Addr, dst: Addr, data: bytes) -> None:
        if src == net.addr[name]:
            sent[0] += 1
        send(src, dst, data)

    net.link.send = count  # type: ignore[method-assign]
    end = net.now + seconds
    while net.now < end:
        net.nodes[name].frame_from_port("pa", plain(f), net.now)
        net.run(every)
    net.link.send = send  # type: ignore[method-assign]
    return sent[0]


def test_only_unicast_to_a_known_mac_makes_a_peer_busy_a_flood_does_not() -> None:
    """ARP/ND/MLD and unknown unicast reach every peer of a segment: probing all of
    them at the fast rate for each (issue 10, 100 nodes; at a cold start every guest's
    unicast is unknown until answered) cost more than the floods themselves."""
    net = Net(5, Link(random.Random(4)))
    net.run(12.0)  # up, and past the first busy window
    assert all(net.up("n1", f"n{i}") for i in range(2, 6))
    bcast = _sent_by(net, "n1", 6.0, 0.5, frame(BCAST, MAC1))
    net.run(BUSY_WINDOW + 1.0)
    unknown = _sent_by(net, "n1", 6.0, 0.5, frame(NOWHERE, MAC1))
    net.run(BUSY_WINDOW + 1.0)
    known = _sent_by(net, "n1", 6.0, 0.5, frame(pinned_mac("n2"), MAC1))
    # idle probing (every ~4 s, each peer) vs fast probing (5 a second, each peer)
    assert bcast - 12 * 4 < 4 * 6 / 2, bcast  # each broadcast to each of the 4 peers
    assert unknown - 6 * 4 < 4 * 6 / 2, unknown  # to every peer once a second
    assert known - 12 > 6 * 3, known  # n2 probed fast
    # n2 alone: n1's probes and its acks of n2's (5 a second each), the rest idle
    assert known - 12 < 6 * 5 * 2 + 4 * 6 / 2, known


def _natd_outage(seed: int) -> tuple[list[float], float]:
    """n1 behind NAT, its uplink cut for ~20 s: the gaps between its initiations once
    they reached their cap, and how long after the heal its session was whole."""
    net = Net(2, Link(random.Random(seed)), nat=frozenset({"n1"}))
    net.run(3.0)
    assert net.up("n1", "n2")
    sent: list[float] = []
    real_send = net.link.send

    def send(src: Addr, dst: Addr, data: bytes) -> None:
        if src == net.addr["n1"] and data[0] == 1:  # n1's initiations
            sent.append(net.now)
        real_send(src, dst, data)

    net.link.send = send  # type: ignore[method-assign]
    net.link.cut.add(net.addr["n1"])
    cut = net.now
    net.run(20.0 + seed * 0.37)  # the heal falls at another point of n1's retries
    gaps = [b - a for a, b in itertools.pairwise(t for t in sent if t > cut + 3.0)]
    net.link.cut.clear()
    healed = net.now
    n1 = net.nodes["n1"]._sessions
    while not (n1.status("n2").established and not n1._peers["n2"].suspected):
        net.step()
        assert net.now - healed < 10.0
    return gaps, net.now - healed


def test_a_node_nobody_can_dial_retries_often_enough_to_heal_its_pairs_alone() -> None:
    """Behind NAT, a node's pairs heal only by its own retries: at RETRY_MAX and its
    jitter a pair could wait 2 s after the heal (chaos, seed 20: 2.03 s), so such a
    node caps its retries at RETRY_MAX_BEHIND_NAT."""
    from lanspan.session import RETRY_MAX_BEHIND_NAT, RETRY_MAX_JITTER

    cap = RETRY_MAX_BEHIND_NAT + RETRY_MAX_JITTER
    for seed in range(4):
        gaps, took = _natd_outage(seed)
        assert gaps and max(gaps) <= cap + 0.02, (seed, gaps)
        assert took <= cap + 0.1, (seed, took)


@pytest.mark.parametrize("nat", [False, True])
def test_only_a_node_nobody_can_dial_suspects_a_silent_peer(nat: bool) -> None:
    """Every path of an up peer went silent: a NAT'd node handshakes at once (the
    peer may have restarted and cannot reach it); a public node waits (a restarted
    peer initiates to it; on a loaded machine this was a handshake storm)."""
    net = Net(2, Link(random.Random(5)), nat=frozenset({"n1"}) if nat else frozenset())
    net.run(3.0)
    assert net.up("n1", "n2")
    net.link.cut.add(net.addr["n2"])
    net.run(20.0)  # past the idle dead time
    assert not any(p.up for p in net.nodes["n1"]._paths["n2"].paths)
    assert net.nodes["n1"]._sessions._peers["n2"].suspected is nat
