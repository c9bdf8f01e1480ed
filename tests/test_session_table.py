"""SessionTable unit tests: API contract, queue, timers, hostile input."""

from __future__ import annotations

import ast
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lanspan.noise
import lanspan.session
from lanspan.session import (
    FIRST_RETRY,
    KEEPALIVE_TIMEOUT,
    MAX_QUEUED,
    REJECT_AFTER_MESSAGES,
    REKEY_AFTER_MESSAGES,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    RETRY_MAX,
    RETRY_MAX_JITTER,
    Delivered,
    PeerStatus,
    SessionEvent,
    SessionTable,
    Transmit,
)
from lanspan.wire import messages

SRC = ("198.18.0.9", 51820)


def _table(seed: int, **kw: object) -> SessionTable:
    rng = random.Random(seed)
    ticks = itertools.count()
    return SessionTable(
        rng.randbytes(32),
        random_bytes=rng.randbytes,
        wall_time=lambda: 1_700_000_000.0 + next(ticks),  # each initiation a new second
        **kw,  # type: ignore[arg-type]
    )


def _pair(**kw: object) -> tuple[SessionTable, SessionTable]:
    a, b = _table(1, **kw), _table(2, **kw)
    a.add_peer("b", b.public_key)
    b.add_peer("a", a.public_key)
    return a, b


def _transmits(t: SessionTable) -> list[Transmit]:
    return [x for x in t.take_outputs() if isinstance(x, Transmit)]


def _establish(a: SessionTable, b: SessionTable, now: float = 0.0) -> None:
    a.initiate("b", now)
    (init,) = _transmits(a)
    assert b.receive(init.data, SRC, now) is None
    (resp,) = _transmits(b)
    assert resp.to == SRC and resp.peer == "a"
    assert a.receive(resp.data, SRC, now) is None
    (keepalive,) = _transmits(a)
    assert b.receive(keepalive.data, SRC, now) == Delivered("a", b"", SRC)
    b.take_outputs()


def test_public_api_is_reexported() -> None:
    for name in ("SessionTable", "Transmit", "SessionEvent", "Delivered", "PeerStatus", "Addr"):
        assert hasattr(lanspan.session, name)


def test_core_packages_import_no_io() -> None:
    forbidden = {"socket", "asyncio", "os", "time", "select", "subprocess"}
    for pkg in (lanspan.session, lanspan.noise):
        for path in Path(pkg.__file__ or "").parent.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_events_and_status_after_handshake() -> None:
    a, b = _pair()
    assert a.status("b") == PeerStatus("b", False, None, 0, 0, 0, 0, None)
    a.initiate("b", 3.0)
    init = _transmits(a)[0]
    b.receive(init.data, SRC, 3.0)
    a.receive(_transmits(b)[0].data, SRC, 3.5)
    # where the response came from, and how long after the initiation (a proven path)
    assert SessionEvent("b", "up", "initiator", SRC, 0.5) in a.take_outputs()
    st_a = a.status("b")
    assert st_a.established and st_a.last_handshake == 3.5 and st_a.tx_messages == 1


def test_up_events_on_both_sides() -> None:
    a, b = _pair()
    a.initiate("b", 0.0)
    b.receive(_transmits(a)[0].data, SRC, 0.0)
    a.receive(_transmits(b)[0].data, SRC, 0.0)
    actions = a.take_outputs()
    assert SessionEvent("b", "up", "initiator", SRC, 0.0) in actions
    keepalive = next(x for x in actions if isinstance(x, Transmit))
    b.receive(keepalive.data, SRC, 0.25)
    # confirmed from where the response went: that path is proven, with its RTT
    assert SessionEvent("a", "up", "responder", SRC, 0.25) in b.take_outputs()
    assert b.status("a").established


def test_a_confirmation_from_elsewhere_proves_no_path() -> None:
    """The responder's response went to SRC; a confirmation from another address says
    nothing of SRC's return path, nor of its own: the session is up, no path proven."""
    a, b = _pair()
    a.initiate("b", 0.0)
    b.receive(_transmits(a)[0].data, SRC, 0.0)
    a.receive(_transmits(b)[0].data, SRC, 0.1)
    keepalive = _transmits(a)[0]
    b.receive(keepalive.data, ("198.18.0.10", 51820), 0.2)
    assert SessionEvent("a", "up", "responder") in b.take_outputs()


def test_seal_without_session_queues_and_initiates_once() -> None:
    a, b = _pair()
    for i in range(MAX_QUEUED + 5):
        assert a.seal("b", b"p%d" % i, 0.0) is None
    assert a.drops["session.queue_full"] == 5
    initiations = _transmits(a)
    assert len(initiations) == 1 and initiations[0].data[0] == 1
    b.receive(initiations[0].data, SRC, 0.0)
    a.receive(_transmits(b)[0].data, SRC, 0.0)
    flushed = _transmits(a)
    assert len(flushed) == MAX_QUEUED
    got = [b.receive(t.data, SRC, 0.0) for t in flushed]
    assert [d.payload for d in got if d] == [b"p%d" % i for i in range(5, MAX_QUEUED + 5)]


def test_seal_many_and_counters() -> None:
    a, b = _pair(cipher="chachapoly")
    _establish(a, b)
    out = a.seal_many("b", [b"x", b"y", b"z"], 1.0)
    assert out is not None and len(out) == 3
    assert [messages.parse_transport_header_untrusted(d)[1] for d in out] == [1, 2, 3]
    assert [b.receive(d, SRC, 1.0) for d in reversed(out)] == [
        Delivered("a", p, SRC) for p in (b"z", b"y", b"x")
    ]
    assert b.status("a").rx_messages == 4


def test_message_limits_rekey_then_refuse() -> None:
    a, b = _pair()
    _establish(a, b)
    kp = a._peers["b"].current
    assert kp is not None
    kp.send_counter = REKEY_AFTER_MESSAGES
    assert a.seal("b", b"still ok", 1.0) is not None
    assert [t.data[0] for t in _transmits(a)] == [1]  # a fresh initiation
    kp.send_counter = REJECT_AFTER_MESSAGES
    assert a.seal("b", b"too many", 1.0) is None  # queued for the next keypair
    data = messages.build(messages.TransportData(kp.local_index, REJECT_AFTER_MESSAGES, bytes(16)))
    assert a.receive(data, SRC, 1.0) is None and a.drops["session.expired"] == 1


def test_receiver_peer() -> None:
    a, b = _pair()
    _establish(a, b)
    data = a.seal("b", b"relay me", 1.0)
    assert data is not None
    assert b.receiver_peer(data) == "a"
    assert a.receiver_peer(data) is None
    assert b.receiver_peer(b"\x01" + bytes(147)) is None
    a.initiate("b", 200.0)  # a pending initiation index is also ours
    pending = messages.parse_untrusted(_transmits(a)[-1].data)
    assert isinstance(pending, messages.HandshakeInitiation)
    fake_cookie = messages.build(messages.CookieReply(pending.sender, bytes(24), bytes(32)))
    assert a.receiver_peer(fake_cookie) == "b"


def test_remove_peer_emits_down_and_forgets() -> None:
    a, b = _pair()
    _establish(a, b)
    a.take_outputs()
    a.remove_peer("b")
    assert a.take_outputs() == [SessionEvent("b", "down", "removed")]
    data = b.seal("a", b"hi", 1.0)
    assert data is not None
    assert a.receive(data, SRC, 1.0) is None and a.drops["session.unknown_receiver"] == 1
    with pytest.raises(KeyError):
        a.status("b")
    a.add_peer("b", b.public_key)  # can come back


def test_misuse_raises() -> None:
    a, b = _pair()
    with pytest.raises(ValueError):
        a.add_peer("b", b.public_key)
    with pytest.raises(ValueError):
        a.add_peer("c", b.public_key)
    with pytest.raises(ValueError):
        a.add_peer("c", bytes(31))
    with pytest.raises(ValueError):
        a.add_peer("c", bytes([9] * 32), psk=b"short")
    with pytest.raises(KeyError):
        a.seal("nobody", b"", 0.0)
    with pytest.raises(ValueError):
        _table(3, cipher="rot13")


def test_psk_mismatch_never_comes_up() -> None:
    a, b = _table(1), _table(2)
    a.add_peer("b", b.public_key, psk=bytes([1] * 32))
    b.add_peer("a", a.public_key, psk=bytes([2] * 32))
    a.initiate("b", 0.0)
    b.receive(_transmits(a)[0].data, SRC, 0.0)
    a.receive(_transmits(b)[0].data, SRC, 0.0)
    assert a.drops["session.bad_handshake"] == 1 and not a.status("b").established


def test_replayed_initiation_rejected() -> None:
    a, b = _pair()
    a.initiate("b", 0.0)
    init = _transmits(a)[0].data
    b.receive(init, SRC, 0.0)
    assert len(_transmits(b)) == 1
    b.receive(init, SRC, 1.0)
    assert b.drops["session.replayed_initiation"] == 1 and _transmits(b) == []


def test_initiations_from_one_peer_rate_limited() -> None:
    a, b = _pair()
    a.initiate("b", 0.0)
    b.receive(_transmits(a)[0].data, SRC, 0.0)
    b.take_outputs()
    a.handle_timer(10.0)  # a retry: new timestamp, new ephemeral
    retry = _transmits(a)[0].data
    b.receive(retry, SRC, 0.001)
    assert b.drops["session.initiation_flood"] == 1 and _transmits(b) == []
    b.receive(retry, SRC, 0.1)
    assert len(_transmits(b)) == 1


def test_retries_then_handshake_failed() -> None:
    a, _ = _pair()
    a.seal("b", b"lost", 0.0)
    sent = len(_transmits(a))
    now = 0.0
    while (deadline := a.next_timer()) is not None:
        now = deadline
        a.handle_timer(now)
        actions = a.take_outputs()
        sent += sum(isinstance(x, Transmit) for x in actions)
        if any(isinstance(x, SessionEvent) for x in actions):
            assert SessionEvent("b", "handshake_failed", "no response in 90 s") in actions
            break
    assert REKEY_ATTEMPT_TIME <= now <= REKEY_ATTEMPT_TIME + REKEY_TIMEOUT + 1
    assert sent >= int(REKEY_ATTEMPT_TIME / (REKEY_TIMEOUT + 1 / 3))
    assert a.drops["session.handshake_failed"] == 1
    # Issue 10: the queue is dropped but the peer is never given up. (This test used
    # to assert `next_timer() is None` here: that was the bug.)
    retry = a.next_timer()
    assert retry is not None and retry - now <= RETRY_MAX + RETRY_MAX_JITTER
    events: list[SessionEvent] = []
    for _ in range(200):  # two more attempt windows
        now = a.next_timer() or now
        a.handle_timer(now)
        actions = a.take_outputs()
        events += [x for x in actions if isinstance(x, SessionEvent)]
        assert any(isinstance(x, Transmit) and x.data[0] == 1 for x in actions)
    assert now > 3 * REKEY_ATTEMPT_TIME
    assert events == []  # handshake_failed is said once per outage
    assert a.drops["session.handshake_failed"] == 1


def test_persistent_keepalive() -> None:
    a, b = _table(1), _table(2)
    a.add_peer("b", b.public_key, persistent_keepalive=25.0)
    b.add_peer("a", a.public_key)
    assert a.next_timer() == 0.0  # due at once: starts the handshake
    a.handle_timer(2.0)
    (init,) = _transmits(a)
    retry = a.next_timer()
    # No session yet: the first retry comes after FIRST_RETRY, not REKEY_TIMEOUT.
    assert retry is not None and 2.0 + FIRST_RETRY <= retry <= 2.0 + FIRST_RETRY * (1 + 1 / 15)
    b.receive(init.data, SRC, 2.0)
    a.receive(_transmits(b)[0].data, SRC, 2.0)
    a.take_outputs()  # the confirming keepalive, sent at 2.0
    assert a.next_timer() == 27.0
    a.handle_timer(27.0)
    (ka,) = _transmits(a)
    assert b.receive(ka.data, SRC, 27.0) == Delivered("a", b"", SRC)


def test_passive_keepalive_timer() -> None:
    a, b = _pair()
    _establish(a, b)
    data = a.seal("b", b"data", 1.0)
    assert data is not None
    b.receive(data, SRC, 1.0)
    assert b.next_timer() == 1.0 + KEEPALIVE_TIMEOUT
    b.handle_timer(1.0 + KEEPALIVE_TIMEOUT)
    (ka,) = _transmits(b)
    assert a.receive(ka.data, SRC, 11.0) == Delivered("b", b"", SRC)


def test_reprs_hide_keys() -> None:
    priv = bytes([7] * 32)
    t = SessionTable(priv, random_bytes=random.Random(0).randbytes, wall_time=lambda: 0.0)
    t.add_peer("p", bytes([8] * 32), psk=bytes([9] * 32))
    assert priv.hex() not in repr(t) and bytes([9] * 32).hex() not in repr(t._peers)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_datagrams_never_raise(data: bytes) -> None:
    a, b = _pair()
    _establish(a, b)
    before = sum(b.drops.values())
    assert b.receive(data, SRC, 1.0) is None
    assert sum(b.drops.values()) == before + 1


@given(st.data())
def test_mutated_valid_datagrams_never_raise(data: st.DataObject) -> None:
    a, b = _pair()
    a.initiate("b", 0.0)
    samples = [_transmits(a)[0].data]
    b.receive(samples[0], SRC, 0.0)
    samples.append(_transmits(b)[0].data)
    a.receive(samples[1], SRC, 0.0)
    samples.append(_transmits(a)[0].data)
    raw = bytearray(data.draw(st.sampled_from(samples)))
    cut = data.draw(st.integers(0, len(raw)))
    tail = data.draw(st.binary(max_size=8))
    mutated = bytes(raw[:cut]) + tail
    for table in (a, b):
        table.receive(mutated, SRC, 0.5)  # must not raise; counted when dropped


def test_roaming_source_is_reported() -> None:
    a, b = _pair()
    _establish(a, b)
    first, second = a.seal_many("b", [b"1", b"2"], 1.0) or []
    assert b.receive(first, ("198.18.0.9", 51820), 1.0) == Delivered("a", b"1", SRC)
    moved = ("198.19.7.7", 40000)
    assert b.receive(second, moved, 1.1) == Delivered("a", b"2", moved)


def test_no_initiation_while_nothing_can_carry_it_and_one_at_the_sign_of_life() -> None:
    """A peer the node cannot reach yet (a NAT'd peer before any relay offers it) gets
    no initiation and spends no token of the budget; its retry timer keeps looking
    (never given up), and the REACH that names it (retry_soon) starts one at once."""
    a = _table(1)
    ways = {"hub": True, "nat": False}
    a.dialable = lambda name: ways[name]
    for name, seed in (("hub", 2), ("nat", 3)):
        a.add_peer(name, _table(seed).public_key)
    a.seal("hub", b"x", 0.0)
    a.seal("nat", b"x", 0.0)
    sent = _transmits(a)
    assert [t.peer for t in sent] == ["hub"]
    now = 0.0
    for _ in range(40):  # ~40 s of retries: to the hub only, the nat peer still looked at
        deadline = a.next_timer()
        assert deadline is not None and deadline - now <= RETRY_MAX + RETRY_MAX_JITTER
        now = deadline
        a.handle_timer(now)
        assert {t.peer for t in _transmits(a)} <= {"hub"}
    ways["nat"] = True  # a relay that reaches it is up
    a.retry_soon("nat", now)
    a.handle_timer(now)
    assert [t.peer for t in _transmits(a) if t.data[0] == 1] == ["nat"]
