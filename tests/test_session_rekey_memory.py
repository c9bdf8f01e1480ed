"""RSS per peer (issue 10): a session holds only the cipher objects it can use.

Each AEAD object holds ~4 KiB of OpenSSL state; at 99 peers, keeping a send cipher
for `previous` keypairs (which never send) and for a responder's offers (which
send only once confirmed) was ~400 KiB an agent.
"""

from __future__ import annotations

import random
import sys

import pytest

import lanspan.session.table as table_mod
from lanspan.noise import aead_for
from lanspan.session import SessionTable, Transmit


def _pump(a: SessionTable, b: SessionTable, now: float) -> None:
    for _ in range(4):
        a.handle_timer(now)
        b.handle_timer(now)
        for src, dst in ((a, b), (b, a)):
            for act in src.take_outputs():
                if isinstance(act, Transmit):
                    dst.receive(act.data, ("peer", 1), now)


def test_previous_keypairs_and_unused_offers_hold_no_send_cipher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []

    def counting(cipher, key):  # type: ignore[no-untyped-def]
        made.append(sys._getframe(1).f_code.co_name)
        return aead_for(cipher, key)

    monkeypatch.setattr(table_mod, "aead_for", counting)
    rng = random.Random(4)
    clock = [0.0]
    kw = {"random_bytes": rng.randbytes, "wall_time": lambda: 1.7e9 + clock[0]}
    a = SessionTable(rng.randbytes(32), **kw)  # type: ignore[arg-type]
    b = SessionTable(rng.randbytes(32), **kw)  # type: ignore[arg-type]
    a.add_peer("b", b.public_key)
    b.add_peer("a", a.public_key)
    now = 0.0
    rounds = 4
    for _ in range(rounds):  # a handshake (rekey) each, with traffic both ways
        now += 130.0
        clock[0] = now
        a.initiate("b", now)
        _pump(a, b, now)
        assert a.seal("b", b"x", now) is not None
        _pump(a, b, now)
        assert b.seal("a", b"y", now) is not None
        _pump(a, b, now)
    for t, peer in ((a, "b"), (b, "a")):
        p = t._peers[peer]
        assert p.current is not None and p.current.encrypt is not None
        for kp in [*p.previous, *p.nexts]:
            assert kp.encrypt is None and kp.send_key is None
    # a receive cipher per keypair; a send cipher only for the one each end sends on
    assert made.count("sender") <= 2 * rounds, made
    assert set(made) == {"__init__", "sender"}
