"""Reassembly is bounded: duplicates, strays, timeouts and floods are counted."""

from __future__ import annotations

import random

from lanspan.node.reassembly import Reassembler
from lanspan.wire import payload

BODY = bytes(random.Random(1).randbytes(10_000))


def frags(fid: int = 1, body: bytes = BODY) -> list[payload.Payload]:
    return [payload.parse_untrusted(f) for f in payload.build_fragments(7, body, True, fid, 1400)]


def test_out_of_order_fragments_rebuild_once() -> None:
    r = Reassembler()
    parts = frags()
    random.Random(3).shuffle(parts)
    results = [r.add("p", f, 0.0) for f in parts]
    whole = [x for x in results if x is not None]
    assert len(whole) == 1 and whole[0].body == BODY and whole[0].vni == 7
    assert whole[0].has_offload and not whole[0].is_fragment
    assert r.add("p", parts[0], 0.0) is None  # a late duplicate starts nothing useful


def test_duplicate_fragment_is_counted() -> None:
    r = Reassembler()
    f = frags()
    r.add("p", f[0], 0.0)
    assert r.add("p", f[0], 0.0) is None
    assert r.drops["reassembly.duplicate"] == 1


def test_incomplete_superframe_times_out() -> None:
    r = Reassembler(timeout=1.0)
    r.add("p", frags()[0], 0.0)
    assert r.next_timer() == 1.0
    r.handle_timer(1.0)
    assert r.drops["reassembly.timeout"] == 1 and r.next_timer() is None


def test_pending_is_bounded_and_peers_are_separate() -> None:
    r = Reassembler(max_pending=4)
    for fid in range(10):
        r.add("p", frags(fid)[0], float(fid))
    assert r.drops["reassembly.evicted"] == 6
    a, b = frags(1), frags(1)
    for fa in a[:-1]:
        r.add("a", fa, 20.0)
    for fb in b[:-1]:
        r.add("b", fb, 20.0)
    assert r.add("a", a[-1], 20.0) is not None


def test_inconsistent_reuse_of_an_id_is_dropped() -> None:
    r = Reassembler()
    r.add("p", frags(5)[0], 0.0)
    other = frags(5, BODY[:3000])
    assert r.add("p", other[1], 0.0) is None
    assert r.drops["reassembly.inconsistent"] == 1
