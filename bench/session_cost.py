"""Micro-benchmark: µs per SessionTable.seal and per transport receive of a
1400-byte payload, for both ciphers (best of several rounds, so noise from
other processes on the box counts as little as possible); then the CPU of one
handshake (a rekey) at both ends together: initiation, response, the
confirming keepalive (process time, best of several rounds of 50).

Run: python bench/session_cost.py
"""

from __future__ import annotations

import os
import time

from lanspan.session import SessionTable, Transmit

PAYLOAD = bytes(1400)
N = 5_000
ROUNDS = 7
CIPHERS = ("aesgcm", "chachapoly")


def _pair(cipher: str) -> tuple[SessionTable, SessionTable]:
    assert cipher in CIPHERS
    kw = {"random_bytes": os.urandom, "wall_time": time.time}
    a = SessionTable(os.urandom(32), cipher=cipher, **kw)  # type: ignore[arg-type]
    b = SessionTable(os.urandom(32), cipher=cipher, **kw)  # type: ignore[arg-type]
    a.add_peer("b", b.public_key)
    b.add_peer("a", a.public_key)
    a.initiate("b", 0.0)
    for _ in range(3):  # initiation, response, confirming keepalive
        for src, dst in ((a, b), (b, a)):
            for act in src.take_outputs():
                if isinstance(act, Transmit):
                    dst.receive(act.data, ("peer", 1), 0.0)
    assert a.status("b").established and b.status("a").established
    return a, b


def _round(a: SessionTable, b: SessionTable) -> tuple[float, float, float]:
    seal, receive, src = a.seal, b.receive, ("peer", 1)
    t0 = time.perf_counter()
    for _ in range(N):  # outputs discarded: time the call, not our memory use
        seal("b", PAYLOAD, 1.0)
    t1 = time.perf_counter()
    sealed = [seal("b", PAYLOAD, 1.0) or b"" for _ in range(N)]
    t2 = time.perf_counter()
    for data in sealed:
        receive(data, src, 1.0)
    t3 = time.perf_counter()
    batch = [PAYLOAD] * 44
    rounds = N // 44
    t4 = time.perf_counter()
    for _ in range(rounds):
        a.seal_many("b", batch, 1.0)
    t5 = time.perf_counter()
    return (t1 - t0) / N, (t3 - t2) / N, (t5 - t4) / (rounds * 44)


def _handshake_cpu(cipher: str) -> float:
    """Seconds of CPU for one rekey of an established pair, both ends together."""
    a, b = _pair(cipher)
    now, best = 0.0, float("inf")
    for _ in range(ROUNDS):
        t0 = time.process_time()
        for _ in range(50):
            now += 200.0  # past REKEY_AFTER_TIME: each is a fresh handshake
            a.initiate("b", now)
            for _ in range(3):
                for src, dst in ((a, b), (b, a)):
                    for act in src.take_outputs():
                        if isinstance(act, Transmit):
                            dst.receive(act.data, ("peer", 1), now)
        best = min(best, (time.process_time() - t0) / 50)
    assert a.status("b").established and b.status("a").established
    return best


def main() -> None:
    print(f"{'cipher':<11} {'seal µs':>8} {'receive µs':>11} {'seal_many µs/msg':>17}")
    for cipher in CIPHERS:
        a, b = _pair(cipher)
        results = [_round(a, b) for _ in range(ROUNDS)]
        assert not b.drops, b.drops
        seal, receive, many = (min(col) * 1e6 for col in zip(*results, strict=True))
        print(f"{cipher:<11} {seal:8.2f} {receive:11.2f} {many:17.2f}")
    for cipher in CIPHERS:
        print(f"{cipher:<11} handshake, both ends: {_handshake_cpu(cipher) * 1e6:7.0f} µs CPU")


if __name__ == "__main__":
    main()
