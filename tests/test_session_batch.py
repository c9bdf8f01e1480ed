"""SessionTable.receive_many (one GRO batch) authenticates what receive one by one does."""

from __future__ import annotations

import pytest
from test_node_batch import NOW, pair

from lanspan.session import SessionTable

SRC = ("127.0.0.1", 40001)


def tables() -> tuple[SessionTable, SessionTable]:
    a, b = pair()
    return a._sessions, b._sessions


def payloads(n: int, size: int = 1300) -> list[bytes]:
    return [bytes([i]) * size for i in range(n)]


def test_an_in_order_batch_costs_one_full_receive(monkeypatch: pytest.MonkeyPatch) -> None:
    sa, sb = tables()
    plain = payloads(46)
    sealed = sa.seal_many("n2", plain, NOW)
    assert sealed is not None
    peer = sb._peers["n1"]
    rx0, bytes0 = peer.rx_messages, peer.rx_bytes
    full = []
    receive = sb.receive
    monkeypatch.setattr(sb, "receive", lambda d, s, n: full.append(d) or receive(d, s, n))
    got = sb.receive_many(sealed, SRC, NOW)
    assert [d.payload for d in got] == plain
    assert {d.peer for d in got} == {"n1"} and {d.src for d in got} == {SRC}
    assert len(full) == 1  # the other 45 took the short path
    assert peer.rx_messages - rx0 == 46
    assert peer.rx_bytes - bytes0 == sum(map(len, sealed))


def test_bad_replayed_and_foreign_datagrams_in_a_batch_are_dropped_and_counted() -> None:
    sa, sb = tables()
    plain = payloads(10)
    sealed = sa.seal_many("n2", plain, NOW)
    assert sealed is not None
    bad = bytearray(sealed[3])
    bad[-1] ^= 1
    batch = [*sealed[:3], bytes(bad), sealed[4], sealed[1], sealed[5], b"junk", *sealed[6:]]
    batch.append(sealed[9])  # the same counter again, at the end
    peer = sb._peers["n1"]
    rx0 = peer.rx_messages
    drops0 = dict(sb.drops)
    got = sb.receive_many(batch, SRC, NOW)
    assert [d.payload for d in got] == plain[:3] + plain[4:]
    new = {k: v - drops0.get(k, 0) for k, v in sb.drops.items() if v != drops0.get(k, 0)}
    assert new.get("session.bad_auth") == 1
    assert new.get("session.replay") == 2
    assert peer.rx_messages - rx0 == 9


def test_an_out_of_order_batch_matches_one_by_one() -> None:
    sa, sb = tables()
    plain = payloads(12)
    sealed = sa.seal_many("n2", plain, NOW)
    assert sealed is not None
    order = [0, 1, 2, 5, 3, 4, 6, 11, 7, 8, 9, 10]
    got = sb.receive_many([sealed[i] for i in order], SRC, NOW)
    assert [d.payload for d in got] == [plain[i] for i in order]
