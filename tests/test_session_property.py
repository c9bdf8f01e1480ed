"""Nothing in SessionTable grows without bound (issue 10): long adversarial event
sequences on a fake clock, with the state checked against its caps.

Events: retry_soon toggles (a member flipping REACH), timers, small steps and
large clock jumps, payloads queued for unreachable peers, handshake and
transport messages lost, duplicated, reordered and replayed (any datagram ever
sent may come back any number of times), peers removed and re-added.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanspan.session import MAX_QUEUED, HsState, SessionTable, Transmit
from lanspan.session.ratelimit import MAX_SOURCES
from lanspan.session.table import (
    _BACKOFF,
    _MAX_GIVEN_UP,
    _MAX_NEXT,
    _MAX_PENDINGS,
    _SEEN_SIZE,
)

SRC = ("198.18.0.9", 51820)
MAX_OUTPUTS = MAX_QUEUED + 16  # what one event may hand out at most (a flushed queue)


def _table(rng: random.Random) -> SessionTable:
    wall = [1_700_000_000.0]

    def wall_time() -> float:
        wall[0] += 0.001  # strictly increasing, as a real clock would be here
        return wall[0]

    return SessionTable(
        rng.randbytes(32), random_bytes=random.Random(rng.random()).randbytes, wall_time=wall_time
    )


def assert_bounded(t: SessionTable) -> None:
    peers = t._peers
    own: set[int] = set()
    for p in peers.values():
        assert 0 <= p.backoff <= len(_BACKOFF)
        assert len(p.queue) <= MAX_QUEUED
        assert len(p.queued_at) == len(p.queue)  # one arrival time per payload
        assert list(p.queued_at) == sorted(p.queued_at)
        # In INITIATION_SENT a peer either has its retry timer or waits for a token.
        waiting = p.waiting_since is not None
        assert waiting == (t._waiting.get(p.name) is p)
        assert (p.state is HsState.INITIATION_SENT) == ((p.retry_at is not None) or waiting)
        assert not (waiting and p.retry_at is not None)
        assert p.state is HsState.INITIATION_SENT or not p.pendings
        assert len(p.pendings) <= _MAX_PENDINGS
        assert len(p.nexts) <= _MAX_NEXT and len(p.previous) <= _MAX_NEXT
        for pending in p.pendings:
            assert t._pendings[pending.local_index] is pending
            own.add(pending.local_index)
        assert len(p.given_up) <= _MAX_GIVEN_UP
        for pending in p.given_up:
            assert t._given_up[pending.local_index] is pending
            own.add(pending.local_index)
        for kp in p.keypairs():
            assert t._keypairs[kp.local_index] is kp
            own.add(kp.local_index)
    # No index outlives its peer or its keypair: the tables are exactly the live ones.
    assert t.receiver_indexes() == own
    assert len(t._pendings) <= _MAX_PENDINGS * len(peers)
    assert len(t._given_up) <= _MAX_GIVEN_UP * len(peers)
    assert len(t._keypairs) <= (1 + 2 * _MAX_NEXT) * len(peers)
    assert set(t._waiting) <= set(peers)
    assert len(t._load_times) <= t._load_limit + 1
    assert len(t._seen) <= _SEEN_SIZE and len(t._limiter) <= MAX_SOURCES
    assert len(t.drops) <= 40  # a fixed set of reasons
    assert all(r.startswith(("session.", "wire.")) or "." not in r for r in t.drops)


def _timers(t: SessionTable, now: float) -> None:
    deadline = t.next_timer()
    if deadline is not None and deadline <= now:
        t.handle_timer(now)
        after = t.next_timer()
        assert after is None or after > now, "a timer due again at once would spin"


class World:
    """Two tables a and b that know each other, plus peers that never answer."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.a, self.b = _table(self.rng), _table(self.rng)
        self.tables = {"a": self.a, "b": self.b}
        self.ghosts = {f"g{i}": self.rng.randbytes(32) for i in range(3)}
        self._add("a", "b")
        self._add("b", "a")
        for name, key in self.ghosts.items():
            self.a.add_peer(name, key, persistent_keepalive=self.rng.choice([None, 5.0]))
        self.wire: list[tuple[str, bytes]] = []  # (destination, datagram), bounded
        self.events = 0

    def _add(self, name: str, peer: str) -> None:
        self.tables[name].add_peer(peer, self.tables[peer].public_key)

    def _collect(self) -> None:
        for name, t in self.tables.items():
            out = t.take_outputs()
            assert len(out) <= MAX_OUTPUTS
            for o in out:
                if isinstance(o, Transmit) and (o.peer in ("a", "b") or o.to is not None):
                    dst = "b" if name == "a" else "a"
                    self.wire.append((dst, o.data))
        if len(self.wire) > 256:
            del self.wire[:128]

    def step(self, op: int, arg: int) -> None:
        self.events += 1
        r = arg / 65536
        peers_a = ["b", *self.ghosts]
        if op == 0:  # time passes a little
            self.now += r * 0.05
        elif op == 1:  # a large clock jump
            self.now += 10 ** (1 + int(r * 7))
        elif op == 2:  # REACH toggling: a sign of life, again and again
            t, peer = (self.a, peers_a[arg % 4]) if arg & 1 else (self.b, "a")
            t.retry_soon(peer, self.now)
        elif op == 3:  # a payload (queued while there is no session)
            t, peer = (self.a, peers_a[arg % 4]) if arg & 1 else (self.b, "a")
            data = t.seal(peer, b"x" * (arg % 64), self.now)
            if data is not None and peer in ("a", "b"):
                self.wire.append(("b" if t is self.a else "a", data))
        elif op in (4, 5, 6) and self.wire:  # deliver any datagram: reorder, dup, replay
            i = arg % len(self.wire)
            dst, data = self.wire[i] if op != 4 else self.wire.pop(i)
            src = SRC if op != 6 else (f"198.18.{arg % 7}.{arg % 251}", 51820)
            self.tables[dst].receive(data, src, self.now)
        elif op == 7 and self.wire:  # lose one
            self.wire.pop(arg % len(self.wire))
        elif op == 8:  # a peer removed and re-added (a reload)
            name, peer = ("a", "b") if arg & 1 else ("b", "a")
            self.tables[name].remove_peer(peer)
            self._add(name, peer)
        elif op == 9:
            t, peer = (self.a, peers_a[arg % 4]) if arg & 1 else (self.b, "a")
            t.initiate(peer, self.now)
        for t in self.tables.values():
            _timers(t, self.now)
        self._collect()

    def check(self) -> None:
        for t in self.tables.values():
            assert_bounded(t)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.integers(0, 2**32),
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 65535)), min_size=20, max_size=300),
)
def test_adversarial_sequences_keep_state_bounded(seed: int, ops: list[tuple[int, int]]) -> None:
    world = World(seed)
    for op, arg in ops:
        world.step(op, arg)
        world.check()


def test_long_seeded_mixed_run() -> None:
    """100 000 events of every kind (the costly ones: real X25519), one seed."""
    world = World(7)
    rng = random.Random(7)
    weights = [30, 1, 25, 10, 10, 8, 3, 5, 1, 2]
    ops = rng.choices(range(10), weights=weights, k=100_000)
    for i, op in enumerate(ops):
        world.step(op, rng.randrange(65536))
        if i % 97 == 0:
            world.check()
    world.check()
    assert world.now > 1e6  # clock jumps happened
    assert (
        world.a.drops["session.replayed_initiation"] + world.b.drops["session.replayed_initiation"]
        > 0
    )


def test_million_cheap_events_one_victim() -> None:
    """1 800 000 cheap events against one table (REACH toggles, timers, clock steps and
    jumps, payloads for peers that never answer): no exception, nothing grows, and
    the initiations it sends stay at the rate-limited pace."""
    rng = random.Random(11)
    t = _table(rng)
    keys = {f"p{i}": rng.randbytes(32) for i in range(4)}
    for name, key in keys.items():
        t.add_peer(name, key, persistent_keepalive=10.0 if name == "p0" else None)
    names = list(keys)
    now = 0.0
    sent: Counter[str] = Counter()
    events = 0
    jumped = 0.0
    for _ in range(300_000):
        # six events per round: two toggles, one step, one payload, timers, take
        peer = names[rng.randrange(4)]
        t.retry_soon(peer, now)
        t.retry_soon(names[rng.randrange(4)], now)
        if rng.random() < 1e-4:
            gap = 10.0 ** rng.randint(2, 8)
            now += gap
            jumped += gap
        else:
            now += rng.random() * 0.002
        if rng.random() < 0.05:
            t.seal(peer, b"p", now)
        _timers(t, now)
        for o in t.take_outputs():
            assert isinstance(o, Transmit) or o.kind == "handshake_failed"
            if isinstance(o, Transmit) and o.data[0] == 1:
                assert o.peer is not None
                sent[o.peer] += 1
        events += 6
    assert_bounded(t)
    assert events >= 1_800_000
    # Per peer: at most ~4 initiations per RETRY_SOON_INTERVAL (1 s) of steady time.
    steady = now - jumped
    for name in names:
        assert sent[name] <= 5 * steady + 4 * 20, (name, sent[name], steady)
        assert sent[name] >= steady / 2.0 - 1
