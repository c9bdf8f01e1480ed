"""The node's fast paths (`frame_to_peer`, `datagram_to_port`) do what the full ones do.

Two worlds of the same two nodes (the same keys, the same seeded randomness, the
same wall clock), fed the same random run of frames (unicast both ways, floods,
unknown destinations, frames too long for one datagram, tagged frames refused)
and timer rounds (probes, keepalives, rekeys, expiries): one through the agent's
entry points with their fast paths, the other through `frame_from_port`,
`datagram` and `take_outputs`. Every datagram, write, counter, drop, deadline and
status must be the same, event by event.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from agent_inproc import network_toml

from lanspan.addr import Addr
from lanspan.config import parse_network
from lanspan.node.core import NodeCore
from lanspan.node.outputs import Send, Write
from lanspan.wire import vnet

MAC = {"n1": bytes([2, 0, 0, 0, 0, 1]), "n2": bytes([2, 0, 0, 0, 0, 2])}
ADDR: dict[str, Addr] = {"n1": ("127.0.0.1", 40001), "n2": ("127.0.0.1", 40002)}
OTHER = {"n1": "n2", "n2": "n1"}
KEYS = {"n1": bytes(range(1, 33)), "n2": bytes(range(101, 133))}

Sent = list[tuple[str, object, bytes]]  # (from, to, datagram) or ("write", port, bytes)


class World:
    def __init__(self, fast: bool, seed: int) -> None:
        self.fast = fast
        net = parse_network(network_toml(KEYS, {n: a[1] for n, a in ADDR.items()}), "t.toml")
        self.clock = [1_000_000.0]
        self.nodes: dict[str, NodeCore] = {}
        for i, name in enumerate(("n1", "n2")):
            rng = random.Random(seed * 10 + i)
            self.nodes[name] = NodeCore(
                net,
                name,
                KEYS[name],
                random_bytes=rng.randbytes,
                wall_time=lambda: self.clock[0],
                now=0.0,
            )
        self.log: Sent = []
        self.fast_hits = 0

    def _carry(self, name: str, now: float) -> None:
        """Deliver what `name` queued, and what that makes, until nothing moves."""
        todo = [name]
        while todo:
            who = todo.pop(0)
            for out in self.nodes[who].take_outputs():
                if isinstance(out, Send):
                    for d in out.batch:
                        self._datagram(who, d, now)
                        todo.append(OTHER[who])
                elif isinstance(out, Write):
                    self.log.append((who, out.port, out.data))

    def _datagram(self, sender: str, d: bytes, now: float) -> None:
        self.log.append((sender, "udp", d))
        node = self.nodes[OTHER[sender]]
        if not self.fast:
            node.datagram(d, ADDR[sender], now)
            return
        got = node.datagram_to_port(d, ADDR[sender], now)
        if isinstance(got, tuple):
            self.fast_hits += 1
            self.log.append((OTHER[sender], got[0], got[1]))

    def frame(self, name: str, data: bytes, now: float) -> None:
        node = self.nodes[name]
        if not self.fast:
            node.frame_from_port("g", data, now)
        else:
            one = node.frame_to_peer("g", data, now)
            if one is not None:
                self.fast_hits += 1
                assert one[0] == ADDR[OTHER[name]]
                self._datagram(name, one[1], now)
                self._carry(OTHER[name], now)
        self._carry(name, now)

    def timers(self, now: float) -> None:
        for name, node in self.nodes.items():
            if node.next_timer() <= now:
                node.handle_timer(now)
            self._carry(name, now)

    def state(self, now: float) -> object:
        out = []
        for node in self.nodes.values():
            sessions = node._sessions
            assert sessions.next_timer() == sessions._scan_next_timer()  # the heap is exact
            out.append((node.next_timer(), dict(node.drop_counts()), node.status(now)))
        return out


def ether(dst: bytes, src: bytes, size: int, rng: random.Random, tag: bool = False) -> bytes:
    body = rng.randbytes(max(46, size))
    if tag:  # an 802.1Q frame on an access port: refused by the switch
        return vnet.ZERO_HEADER + dst + src + b"\x81\x00\x00\x0a\x88\xb5" + body
    return vnet.ZERO_HEADER + dst + src + b"\x88\xb5" + body


def run(world: World, seed: int, steps: int, check: Callable[[float], None]) -> None:
    rng = random.Random(seed)
    now = 0.0
    for _ in range(40):  # handshakes and the first probes
        now += 0.25
        world.timers(now)
        check(now)
    for _ in range(steps):
        r = rng.random()
        name = rng.choice(("n1", "n2"))
        if r < 0.55:  # unicast to the other guest: mostly small, some too long
            size = rng.choice((60, 100, 1000, 1400)) if rng.random() < 0.9 else 3000
            world.frame(name, ether(MAC[OTHER[name]], MAC[name], size, rng), now)
        elif r < 0.65:
            world.frame(name, ether(b"\xff" * 6, MAC[name], 60, rng), now)
        elif r < 0.7:  # to a MAC nobody has taught us
            world.frame(name, ether(bytes([2, 0, 0, 0, 9, 9]), MAC[name], 60, rng), now)
        elif r < 0.72:
            world.frame(name, ether(MAC[OTHER[name]], MAC[name], 60, rng, tag=True), now)
        else:  # time passes: probes, keepalives, now and then a rekey or an expiry
            now += rng.choice((0.001, 0.05, 0.3, 2.0, 11.0, 130.0, 200.0))
            world.clock[0] += 1.0
            world.timers(now)
        check(now)


@pytest.mark.parametrize("seed", range(3))
def test_the_fast_paths_do_what_the_full_ones_do(seed: int) -> None:
    fast, full = World(True, seed), World(False, seed)
    states: list[object] = []
    run(full, seed, 600, lambda now: states.append((list(full.log), full.state(now))))
    it = iter(states)
    run(fast, seed, 600, lambda now: _same(next(it), (list(fast.log), fast.state(now))))
    assert fast.fast_hits > 100, "the common case took the fast paths"
    assert full.fast_hits == 0


def _same(want: object, got: object) -> None:
    assert got == want


def test_a_hot_unicast_is_one_datagram_out_and_one_write_in() -> None:
    world = World(True, 7)
    run(world, 7, 0, lambda now: None)
    a, b = world.nodes["n1"], world.nodes["n2"]
    rng = random.Random(1)
    now = 10.0
    for _ in range(3):  # each side learns the other's MAC; the switches' caches warm
        world.frame("n1", ether(MAC["n2"], MAC["n1"], 60, rng), now)
        world.frame("n2", ether(MAC["n1"], MAC["n2"], 60, rng), now)
    data = ether(MAC["n2"], MAC["n1"], 100, rng)
    one = a.frame_to_peer("g", data, now)
    assert one is not None and one[0] == ADDR["n2"]
    assert a.take_outputs() == []
    assert b.datagram_to_port(one[1], ADDR["n1"], now) == ("g", data)
    assert b.take_outputs() == []


def test_a_packet_that_moves_no_deadline_leaves_no_timer_to_recompute() -> None:
    """A seal or receive marks its peer's timers touched (recomputed at the next wake)
    only when the peer's deadline moves: the second of two frames out moves none (the
    "no answer" deadline is armed, no keepalive is due), nor does the second in."""
    world = World(True, 3)
    run(world, 3, 0, lambda now: None)
    a, b = world.nodes["n1"], world.nodes["n2"]
    rng = random.Random(2)
    now = 10.0
    for _ in range(3):
        world.frame("n1", ether(MAC["n2"], MAC["n1"], 60, rng), now)
        world.frame("n2", ether(MAC["n1"], MAC["n2"], 60, rng), now)
    sent = []
    for _ in range(2):
        a.next_timer()  # the wake before the read: touched peers recomputed
        one = a.frame_to_peer("g", ether(MAC["n2"], MAC["n1"], 60, rng), now)
        assert one is not None
        sent.append(one[1])
    assert not a._sessions._touched
    for d in sent:
        b.next_timer()
        assert isinstance(b.datagram_to_port(d, ADDR["n1"], now), tuple)
    assert not b._sessions._touched
    for node in (a, b):
        assert node._sessions.next_timer() == node._sessions._scan_next_timer()
