"""Multi-path handshakes (issue 10) and bounded handshake cost (issue 11).

DH work is counted by wrapping the responder's consume function: every call
to it is the two X25519 operations of an initiation."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from sessionlib import Mesh

import lanspan.session.table as table_module
from lanspan.addr import Relay
from lanspan.session import FIRST_RETRY, SessionTable, Transmit
from lanspan.session.ratelimit import (
    BURST,
    MAX_SOURCES,
    PER_SECOND,
    InitiationCache,
    SourceRateLimiter,
    source_key,
)
from lanspan.wire import messages

SRC = ("198.18.0.9", 51820)
OTHER = ("198.19.0.9", 40000)


@pytest.fixture
def dh_count(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls = [0]
    real = table_module.consume_initiation_untrusted

    def counting(**kw: object) -> object:
        calls[0] += 1
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(table_module, "consume_initiation_untrusted", counting)
    yield calls


def _table(seed: int, **kw: object) -> SessionTable:
    rng = random.Random(seed)
    ticks = itertools.count()
    return SessionTable(
        rng.randbytes(32),
        random_bytes=rng.randbytes,
        wall_time=lambda: 1_700_000_000.0 + next(ticks),
        **kw,  # type: ignore[arg-type]
    )


def _pair(**kw: object) -> tuple[SessionTable, SessionTable]:
    a, b = _table(1), _table(2, **kw)
    a.add_peer("b", b.public_key)
    b.add_peer("a", a.public_key)
    return a, b


def _transmits(t: SessionTable) -> list[Transmit]:
    return [x for x in t.take_outputs() if isinstance(x, Transmit)]


def _initiations(a: SessionTable, n: int) -> list[bytes]:
    """n fresh initiations from `a` to "b" (its retries: new ephemeral, new timestamp)."""
    a.initiate("b", 0.0)
    out = [t.data for t in _transmits(a) if t.data[0] == 1]
    while len(out) < n:
        now = a.next_timer()
        assert now is not None
        a.handle_timer(now)
        out += [t.data for t in _transmits(a) if t.data[0] == 1]
    return out[:n]


# ---- multi-path ---------------------------------------------------------------


def test_initiation_over_two_paths_completes_when_first_return_path_is_dead(
    dh_count: list[int],
) -> None:
    """Issue 10, two-provider site: a sends its initiation to both of b's endpoints,
    the copies leave from a's two addresses; b answers the first copy over a1, whose
    return path is dead. b must answer the second copy over a2 (same response)."""
    a1, a2 = ("198.18.1.1", 51820), ("198.18.2.1", 51820)
    b1, b2 = ("198.18.1.2", 51820), ("198.18.2.2", 51820)
    mesh = Mesh(
        ("a", "b"),
        seed=21,
        addrs={"a": [a1, a2], "b": [b1, b2]},
        initiate=False,
        probe_interval=None,
    )
    mesh.route = {("a", b1): a1, ("a", b2): a2, ("b", a1): b1, ("b", a2): b2}
    mesh.cuts = {(b1, a1), (b2, a1)}  # nothing reaches a at a1
    mesh.tables["a"].initiate("b", 0.0)
    up = mesh.run_until(lambda: mesh.established("b", "a"), 5.0, step=0.005)
    assert up is not None and up < FIRST_RETRY, up  # no retry was needed
    assert mesh.established("a", "b")
    b = mesh.tables["b"]
    assert dh_count[0] == 1 and b.responses_resent == 1
    responses = [(src, dst) for _, src, dst, d in mesh.tap if d[0] == 2]
    assert responses == [(b1, a1), (b2, a2)]
    # The resent response is byte-identical: one keypair offered, one confirmed.
    r1, r2 = (d for _, _, _, d in mesh.tap if d[0] == 2)
    assert r1 == r2
    assert len(b.receiver_indexes()) == 1


def test_duplicate_resend_is_bounded_and_ends_with_confirmation(dh_count: list[int]) -> None:
    a, b = _pair()
    (init,) = _initiations(a, 1)
    b.receive(init, SRC, 0.0)
    (first,) = _transmits(b)
    for i in range(100):  # the same copy from 100 source addresses
        b.receive(init, (f"198.18.3.{i}", 51820), 0.01)
    resent = _transmits(b)
    assert len(resent) == 3 and {t.data for t in resent} == {first.data}
    assert b.drops["session.resend_limit"] == 97
    b.receive(init, SRC, 0.02)  # where it was answered already
    assert _transmits(b) == [] and b.drops["session.replayed_initiation"] == 1
    # Once the initiator used the keypair, copies are no longer answered.
    a.receive(first.data, SRC, 0.03)
    (keepalive,) = _transmits(a)
    assert b.receive(keepalive.data, SRC, 0.03) is not None
    b.take_outputs()
    b.receive(init, ("198.18.9.9", 51820), 0.04)
    assert _transmits(b) == [] and b.drops["session.replayed_initiation"] == 2
    assert dh_count[0] == 1


# ---- a duplicate never costs a DH twice -----------------------------------------


def test_identical_replays_cost_one_dh(dh_count: list[int]) -> None:
    a, b = _pair()
    (init,) = _initiations(a, 1)
    for i in range(1000):
        b.receive(init, SRC, i * 0.01)
    assert dh_count[0] == 1
    assert b.drops["session.replayed_initiation"] == 999
    assert len(_transmits(b)) == 1
    # mac2 is not part of what the DH sees: a copy with junk in mac2 is the same one.
    junk = init[: messages.MAC2_OFFSET_INITIATION] + bytes(range(16))
    b.receive(junk, SRC, 11.0)
    assert dh_count[0] == 1 and b.drops["session.replayed_initiation"] == 1000


def test_replays_of_refused_initiations_cost_one_dh(dh_count: list[int]) -> None:
    a, b = _pair()
    stranger = _table(3)
    stranger.add_peer("b", b.public_key)
    (unknown,) = _initiations(stranger, 1)
    for _ in range(50):
        b.receive(unknown, SRC, 0.0)
    assert dh_count[0] == 1 and b.drops["session.unknown_peer"] == 1
    assert b.drops["session.replayed_initiation"] == 49
    old, new = _initiations(a, 2)
    b.receive(new, SRC, 1.0)
    for _ in range(50):  # older timestamp: refused after one DH, then from the cache
        b.receive(old, SRC, 2.0)
    assert dh_count[0] == 3 and b.drops["session.stale_initiation"] == 1


def test_initiation_too_soon_is_kept_decrypted(dh_count: list[int]) -> None:
    a, b = _pair()
    first, retry = _initiations(a, 2)
    b.receive(first, SRC, 0.0)
    b.take_outputs()
    b.receive(retry, SRC, 0.001)  # within _MIN_INITIATION_INTERVAL
    assert b.drops["session.initiation_flood"] == 1 and _transmits(b) == []
    b.receive(retry, SRC, 0.1)  # answered now, from the initiation decrypted before
    assert len(_transmits(b)) == 1
    assert dh_count[0] == 2


def test_cache_is_bounded_and_expires() -> None:
    cache: InitiationCache[int] = InitiationCache(8, 10.0)
    for i in range(100):
        cache.put(bytes([i]), i, 0.0)
    assert len(cache) == 8 and cache.get(bytes([99]), 0.0) == 99
    assert cache.get(bytes([0]), 0.0) is None
    assert cache.get(bytes([99]), 10.0) is None and len(cache) == 0


# ---- per-source rate limit under load, before any DH ----------------------------


def test_under_load_cookie_replies_are_rate_limited_per_source(dh_count: list[int]) -> None:
    a, b = _pair(handshakes_per_second_under_load=0)  # b always under load
    inits = _initiations(a, 40)
    for init in inits:
        b.receive(init, SRC, 0.0)
    replies = _transmits(b)
    assert len(replies) == BURST  # burst 5, then nothing until tokens come back
    assert all(r.peer is None and r.to == SRC and r.data[0] == 3 for r in replies)
    assert b.drops["session.under_load"] == BURST
    assert b.drops["session.rate_limited"] == 40 - BURST
    assert dh_count[0] == 0
    # Another source has its own bucket.
    b.receive(inits[0], OTHER, 0.0)
    (reply,) = _transmits(b)
    assert reply.to == OTHER


def test_under_load_with_cookie_dh_is_rate_limited_per_source(dh_count: list[int]) -> None:
    a, b = _pair(handshakes_per_second_under_load=0)
    (first,) = _initiations(a, 1)
    b.receive(first, SRC, 0.0)
    (cookie,) = _transmits(b)
    a.receive(cookie.data, SRC, 0.0)  # a now holds a cookie for SRC: mac2 from now on
    inits = _initiations(a, 60)  # (within the cookie's life on a's clock)
    t = 0.0
    for init in inits:  # 60 fresh initiations with a valid mac2, 50 a second
        t += 0.02
        b.receive(init, SRC, t)
    assert b.drops["session.under_load"] == 1  # the first; all later ones carry mac2
    # The bucket: the 4 tokens left after the cookie reply, then PER_SECOND per second.
    assert PER_SECOND * t - BURST <= dh_count[0] <= BURST + PER_SECOND * t
    assert b.drops["session.rate_limited"] == 60 - dh_count[0]


def test_not_under_load_nothing_is_rate_limited(dh_count: list[int]) -> None:
    a, b = _pair()
    inits = _initiations(a, 30)
    for i, init in enumerate(inits):
        b.receive(init, SRC, i * 0.05)
    assert dh_count[0] == 30 and b.drops["session.rate_limited"] == 0


def test_rate_limiter_buckets() -> None:
    rl = SourceRateLimiter()
    assert [rl.allow(SRC, 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert rl.allow(("198.18.0.9", 1), 0.0) is False  # the port does not matter
    assert rl.allow(SRC, 1 / PER_SECOND) is True  # one token back
    assert rl.allow(SRC, 1 / PER_SECOND) is False
    # IPv6: one bucket per /64.
    assert source_key(("fd00::1", 1)) == source_key(("fd00::ffff:1", 2)) == "fd00::/64"
    assert source_key(("fd00:0:0:1::1", 1)) != source_key(("fd00::1", 1))
    assert source_key(Relay("hub")) == Relay("hub")


def test_rate_limiter_table_is_bounded_under_spoofed_sources() -> None:
    rl = SourceRateLimiter()
    allowed = sum(rl.allow((f"198.18.{i >> 8 & 255}.{i & 255}", 1), 0.0) for i in range(20_000))
    assert len(rl) == MAX_SOURCES and allowed == MAX_SOURCES  # a full table refuses
    assert rl.allow(SRC, 5.0) is True and len(rl) == 1  # idle entries are forgotten


# ---- receiver indexes ---------------------------------------------------------------


def test_receiver_indexes_are_every_live_local_index() -> None:
    a, b = _pair()
    assert a.receiver_indexes() == frozenset()
    a.initiate("b", 0.0)
    init = messages.parse_untrusted(_transmits(a)[0].data)
    assert isinstance(init, messages.HandshakeInitiation)
    assert a.receiver_indexes() == {init.sender}  # the pending handshake
    b.receive(messages.build(init), SRC, 0.0)
    resp_data = _transmits(b)[0].data
    resp = messages.parse_untrusted(resp_data)
    assert isinstance(resp, messages.HandshakeResponse)
    assert b.receiver_indexes() == {resp.sender}  # the keypair offered
    a.receive(resp_data, SRC, 0.0)
    assert a.receiver_indexes() == {init.sender}  # pending became the keypair
    a.remove_peer("b")
    assert a.receiver_indexes() == frozenset()
