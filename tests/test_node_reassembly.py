"""Reassembly is bounded: duplicates, strays, timeouts and floods are counted."""

from __future__ import annotations

import random

from lanspan.node.reassembly import Reassembler
from lanspan.wire import payload


def add(r: Reassembler, peer: str, f: payload.Payload, now: float) -> payload.Payload | None:
    """One fragment in; the payload it completed, if any."""
    r.add(peer, f, now)
    done = r.take_outputs()
    assert len(done) <= 1 and all(d.peer == peer for d in done)
    return done[0].payload if done else None


BODY = bytes(random.Random(1).randbytes(10_000))


def frags(fid: int = 1, body: bytes = BODY) -> list[payload.Payload]:
    return [payload.parse_untrusted(f) for f in payload.build_fragments(7, body, True, fid, 1400)]


def test_out_of_order_fragments_rebuild_once() -> None:
    r = Reassembler()
    parts = frags()
    random.Random(3).shuffle(parts)
    results = [add(r, "p", f, 0.0) for f in parts]
    whole = [x for x in results if x is not None]
    assert len(whole) == 1 and whole[0].body == BODY and whole[0].vni == 7
    assert whole[0].has_offload and not whole[0].is_fragment
    assert add(r, "p", parts[0], 0.0) is None  # a late duplicate starts nothing useful


def test_duplicate_fragment_is_counted() -> None:
    r = Reassembler()
    f = frags()
    add(r, "p", f[0], 0.0)
    assert add(r, "p", f[0], 0.0) is None
    assert r.drops["reassembly.duplicate"] == 1


def test_incomplete_superframe_times_out() -> None:
    r = Reassembler(timeout=1.0)
    add(r, "p", frags()[0], 0.0)
    assert r.next_timer() == 1.0
    r.handle_timer(1.0)
    assert r.drops["reassembly.timeout"] == 1 and r.next_timer() is None


def test_pending_is_bounded_and_peers_are_separate() -> None:
    r = Reassembler(max_pending=4)
    for fid in range(10):
        add(r, "p", frags(fid)[0], float(fid))
    assert r.drops["reassembly.evicted"] == 6
    a, b = frags(1), frags(1)
    for fa in a[:-1]:
        add(r, "a", fa, 20.0)
    for fb in b[:-1]:
        add(r, "b", fb, 20.0)
    assert add(r, "a", a[-1], 20.0) is not None


def test_inconsistent_reuse_of_an_id_is_dropped() -> None:
    r = Reassembler()
    add(r, "p", frags(5)[0], 0.0)
    other = frags(5, BODY[:3000])
    assert add(r, "p", other[1], 0.0) is None
    assert r.drops["reassembly.inconsistent"] == 1
