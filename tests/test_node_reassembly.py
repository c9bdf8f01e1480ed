"""Reassembly is bounded: duplicates, strays, timeouts and floods are counted."""

from __future__ import annotations

import random

from lanspan.node.reassembly import Reassembler
from lanspan.wire import parity, payload


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


# Parity: one XOR per interleaved group of fragments (lanspan.wire.parity).
CHUNK = 1400 - payload.PARITY_HEADER_LEN - payload.HEADER_LEN - payload.FRAG_HEADER_LEN
BIG = bytes(random.Random(2).randbytes(60_000))


def with_parity(
    fid: int = 1, body: bytes = BIG, groups: int = 4
) -> tuple[list[payload.Payload], list[payload.Payload]]:
    """(fragments, parities) of `body` as the sender builds them with parity."""
    raw = payload.build_fragments(7, body, True, fid, 1400 - payload.PARITY_HEADER_LEN)
    last = len(body) - (len(raw) - 1) * CHUNK
    par = payload.build_parities(7, True, fid, len(raw), last, parity.xors(body, CHUNK, groups))
    assert all(len(p) == 1400 for p in par)
    return [payload.parse_untrusted(f) for f in raw], [payload.parse_untrusted(p) for p in par]


def feed(r: Reassembler, items: list[payload.Payload], now: float = 0.0) -> list[bytes]:
    out = []
    for f in items:
        r.add("p", f, now)
        out += [d.payload.body for d in r.take_outputs()]
    return out


def test_one_lost_fragment_per_group_is_rebuilt_whole() -> None:
    r = Reassembler()
    data, par = with_parity()
    assert len(data) == 44 and len(par) == 4
    lost = {0, 5, 42, 43}  # groups 0, 1, 2, 3: one each
    got = feed(r, [f for f in data if f.frag_index not in lost] + par)
    assert got == [BIG]
    assert r.recovered == 4 and not r.drops and r.next_timer() is None


def test_the_last_shorter_fragment_is_rebuilt_at_its_length() -> None:
    r = Reassembler()
    data, par = with_parity()
    got = feed(r, data[:-1] + par)
    assert got == [BIG] and r.recovered == 1


def test_parity_first_then_fragments() -> None:
    r = Reassembler()
    data, par = with_parity()
    # each group is rebuilt as soon as it misses one: the superframe is out early,
    # and its late fragments start a buffer of their own, as late fragments do
    assert feed(r, par + data[1:]) == [BIG] and r.recovered == 4


def test_two_lost_in_one_group_is_dropped_and_counted() -> None:
    r = Reassembler(timeout=1.0)
    data, par = with_parity()
    lost = {1, 5}  # both group 1
    assert feed(r, [f for f in data if f.frag_index not in lost] + par) == []
    r.handle_timer(1.0)
    assert r.drops == {"reassembly.unrecoverable": 1} and r.recovered == 0
    assert r.next_timer() is None


def test_unrecoverable_superframes_evicted_are_counted_as_such() -> None:
    r = Reassembler(max_pending=2)
    for fid in (1, 2, 3):
        data, par = with_parity(fid)
        feed(r, [f for f in data if f.frag_index not in (0, 4)] + par)
    assert r.drops == {"reassembly.unrecoverable": 1}


def test_parity_of_a_superframe_already_whole_is_not_kept() -> None:
    r = Reassembler()
    _, par = with_parity(9)
    r.completed("p", 9)  # the core joined it on its fast path
    assert feed(r, par) == []
    assert r.parity_unneeded == 4 and r.next_timer() is None and not r.drops
    data2, par2 = with_parity(10)
    assert feed(r, data2 + par2) == [BIG]  # the reassembler joined it: same
    assert r.parity_unneeded == 8 and r.next_timer() is None and r.recovered == 0


def test_parity_of_a_newer_superframe_is_kept_after_an_id_wraps() -> None:
    r = Reassembler()
    r.completed("p", 0xFFFF)
    data, par = with_parity(2)
    assert feed(r, par[:1] + data[1:]) == [BIG]


def test_duplicate_and_inconsistent_parity_are_counted() -> None:
    r = Reassembler()
    data, par = with_parity(4)
    feed(r, [f for f in data if f.frag_index not in (1, 5)] + par[1:2] + par[1:2])
    assert r.drops["reassembly.duplicate"] == 1
    _, other = with_parity(4, groups=5)
    feed(r, other[1:2])
    assert r.drops["reassembly.inconsistent"] == 1 and r.next_timer() is None


def test_parity_that_does_not_fit_its_fragments_is_dropped() -> None:
    r = Reassembler()
    data, par = with_parity(5)
    # a fragment of group 1 shorter than the parity's length: not the same superframe
    bad = data[5]._replace(body=data[5].body[:100])
    assert feed(r, [*data[:1], bad, *data[6:], *par]) == []
    assert r.drops["reassembly.bad_parity"] == 1
    assert r.next_timer() is None


def test_parity_bytes_count_against_the_budget() -> None:
    r = Reassembler(budget=3 * 1400)
    for fid in range(1, 6):
        _, par = with_parity(fid)
        feed(r, par[:3])
    assert sum(r._bytes.values()) <= 3 * 1400
    assert r.drops["reassembly.unrecoverable"] >= 1
