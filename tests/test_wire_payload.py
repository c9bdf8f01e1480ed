"""The session payload format: VXLAN header, offload, fragments, control."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.node.relays import ReachParts
from lanspan.wire import control, payload

FRAME = bytes(range(256)) * 6


def test_frame_roundtrip_is_standard_vxlan() -> None:
    data = payload.build_frame(10, FRAME)
    assert data[:8] == bytes([0x08, 0, 0, 0, 0, 0, 10, 0])  # RFC 7348 layout
    p = payload.parse_untrusted(data)
    assert (p.vni, p.body, p.has_offload, p.is_fragment, p.is_control) == (
        10,
        FRAME,
        False,
        False,
        False,
    )


def test_offload_frame_keeps_vnet_header() -> None:
    vnet = bytes([1, 1, 54, 0, 0x48, 0x05, 34, 0, 16, 0])
    p = payload.parse_untrusted(payload.build_frame(0xABCDEF, FRAME, vnet))
    assert p.vni == 0xABCDEF and p.has_offload and p.body == vnet + FRAME


@pytest.mark.parametrize("size", [1, 1387, 1388, 1389, 5000, 65000])
def test_fragments_rebuild_the_body_and_share_one_size(size: int) -> None:
    body = (FRAME * 50)[:size]
    frags = payload.build_fragments(11, body, True, 7, 1400)
    assert all(len(f) <= 1400 for f in frags)
    assert len({len(f) for f in frags[:-1]}) <= 1  # one UDP GSO batch
    parsed = [payload.parse_untrusted(f) for f in frags]
    assert [p.frag_index for p in parsed] == list(range(len(frags)))
    assert all(p.frag_count == len(frags) and p.frag_id == 7 for p in parsed)
    assert b"".join(p.body for p in parsed) == body


def test_too_many_fragments_is_refused() -> None:
    with pytest.raises(ValueError):
        payload.build_fragments(1, bytes(200_000), False, 1, 1400)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x08\x00\x00", "payload.short"),
        (bytes([0x08, 0, 0, 0, 0, 0, 0, 0]), "payload.no_vni"),
        (bytes([0x00, 0, 0, 0, 0, 0, 5, 0]), "payload.no_vni"),
        (bytes([0x08, 0, 0, 0, 0, 0, 5, 1]), "payload.reserved_bits"),
        (bytes([0x48, 0, 0, 0, 0, 0, 5, 0]), "payload.reserved_bits"),
        (bytes([0x88, 0, 0, 0, 0, 0, 0, 0]), "payload.bad_control_header"),
        (bytes([0x0A, 0, 0, 0, 0, 0, 5, 0, 0]), "payload.short_fragment"),
        (bytes([0x0A, 0, 0, 0, 0, 0, 5, 0, 0, 1, 3, 3]), "payload.bad_fragment_index"),
        (bytes([0x0A, 0, 0, 0, 0, 0, 5, 0, 0, 1, 0, 0]), "payload.bad_fragment_index"),
    ],
)
def test_bad_payloads_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as e:
        payload.parse_untrusted(data)
    assert e.value.reason == reason


@given(st.binary(max_size=64))
def test_random_payload_only_raises_badpacket(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        payload.parse_untrusted(data)


@given(st.integers(0, 11), st.binary(max_size=16))
def test_truncated_and_extended_fragments(cut: int, extra: bytes) -> None:
    frag = payload.build_fragments(3, FRAME * 2, False, 9, 1400)[0]
    for data in (frag[:cut], frag + extra):
        try:
            p = payload.parse_untrusted(data)
        except BadPacket:
            continue
        assert p.vni == 3


def test_probe_roundtrip_and_errors() -> None:
    probe = control.Probe(False, 2, 0xDEADBEEF, 123456789)
    data = payload.build_control(control.build_probe(probe))
    p = payload.parse_untrusted(data)
    assert p.is_control and control.parse_untrusted(p.body) == probe
    for bad, reason in [
        (b"", "control.short"),
        (b"\x01\x00", "control.bad_length"),
        (b"\x09" + bytes(13), "control.unknown_type"),
    ]:
        with pytest.raises(BadPacket) as e:
            control.parse_untrusted(bad)
        assert e.value.reason == reason


@given(st.binary(max_size=40))
def test_random_control_only_raises_badpacket(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        control.parse_untrusted(data)


PLANES = control.Planes(False, (("lan", "kernel"), ("api", "userspace")))


def test_planes_roundtrip_and_wire_bytes() -> None:
    data = control.build_planes(PLANES)
    assert data == b"\x06\x00\x02\x03lan\x01\x03api\x00"
    assert control.parse_untrusted(data) == PLANES
    acked = control.Planes(True, ())
    assert control.build_planes(acked) == b"\x06\x01\x00"
    assert control.parse_untrusted(b"\x06\x01\x00") == acked


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x06\x00", "control.short"),
        (b"\x06\x02\x00", "control.bad_planes"),  # an unknown flag
        (b"\x06\x00\x01\x03lan\x02", "control.bad_planes"),  # an unknown plane
        (b"\x06\x00\x01\x03lan", "control.short"),  # no plane byte
        (b"\x06\x00\x02\x03lan\x01\x03lan\x00", "control.bad_planes"),  # named twice
        (b"\x06\x00\x00\x00", "control.bad_length"),
        (b"\x06\x00\x01\x00\x01", "control.bad_name"),
    ],
)
def test_bad_planes_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as e:
        control.parse_untrusted(data)
    assert e.value.reason == reason


def test_planes_refuses_what_it_cannot_say() -> None:
    with pytest.raises(ValueError, match="neither"):
        control.build_planes(control.Planes(False, (("lan", "fast"),)))
    with pytest.raises(ValueError, match="at most 255"):
        control.build_planes(control.Planes(False, tuple((f"s{i}", "kernel") for i in range(256))))


@given(st.integers(min_value=0, max_value=30), st.binary(max_size=8))
def test_truncated_and_extended_planes_only_raise_badpacket(cut: int, extra: bytes) -> None:
    good = control.build_planes(PLANES)
    for data in (good[:cut], good + extra):
        try:
            got = control.parse_untrusted(data)
        except BadPacket:
            continue
        assert data == good and got == PLANES


_NAMES = st.text("abcdefghij-0123456789", min_size=1, max_size=40)


@given(
    st.lists(st.tuples(_NAMES, st.integers(0, 2**32 - 1)), max_size=700),
    st.integers(300, 1500),
    st.integers(0, 1000),
)
def test_reach_messages_fit_the_budget_and_rebuild_the_offer(
    peers: list[tuple[str, int]], budget: int, gen: int
) -> None:
    """One REACH when it fits, else REACH_PARTs each within `budget`, which put
    back together (in any order, one lost then resent) give the offer as listed."""
    msgs = control.build_reach_messages([control.reach_entry(*p) for p in peers], gen, budget)
    assert all(len(m) <= budget for m in msgs)
    parsed = [control.parse_untrusted(m) for m in msgs]
    if len(parsed) == 1 and isinstance(parsed[0], control.Reach):
        assert list(parsed[0].peers) == peers
        assert len(peers) <= 255
        return
    parts = [m for m in parsed if isinstance(m, control.ReachPart)]
    assert len(parts) == len(parsed) >= 2
    assert {(p.gen, p.total) for p in parts} == {(gen & 0xFF, len(parts))}
    table = ReachParts(limit=len(peers))
    got = [table.add("r", p) for p in reversed(parts[1:])]
    assert got == [None] * (len(parts) - 1)
    assert table.add("r", parts[0]) == tuple(peers)


@given(
    st.lists(st.tuples(_NAMES, st.integers(0, 2**32 - 1)), max_size=255),
    st.integers(0, 255),
    st.integers(1, 255).flatmap(lambda t: st.tuples(st.integers(0, t - 1), st.just(t))),
)
def test_a_reach_part_builds_back_to_what_parses(
    peers: list[tuple[str, int]], gen: int, where: tuple[int, int]
) -> None:
    part = control.ReachPart(gen, where[0], where[1], tuple(peers))
    data = control.build_reach_part(part)
    assert control.parse_untrusted(data) == part
    parts = control.build_reach_messages([control.reach_entry(*p) for p in peers], gen, 300)
    if len(parts) > 1:  # a whole offer's parts are the same bytes
        first = control.parse_untrusted(parts[0])
        assert isinstance(first, control.ReachPart)
        assert control.build_reach_part(first) == parts[0]


def test_reach_parts_start_over_on_a_new_generation_and_stay_bounded() -> None:
    one = [control.ReachPart(1, i, 3, (("a", i),)) for i in range(3)]
    two = [control.ReachPart(2, i, 3, (("b", i),)) for i in range(3)]
    table = ReachParts(limit=4)
    assert table.add("r", one[0]) is None
    assert table.add("r", two[1]) is None  # generation 2: part 0 of 1 is dropped
    assert table.add("r", one[1]) is None  # back to 1: starts over again
    assert table.add("r", one[2]) is None  # still missing part 0 of generation 1
    assert table.add("r", one[0]) == (("a", 0), ("a", 1), ("a", 2))
    table.forget("r")
    big = control.ReachPart(3, 0, 2, tuple((f"p{i}", 0) for i in range(5)))
    with pytest.raises(BadPacket) as e:  # more peers than the limit: dropped, forgotten
        table.add("r", big)
    assert e.value.reason == "relay.reach_parts_too_many"
    assert table.add("r", control.ReachPart(3, 1, 2, (("x", 0),))) is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x07\x00\x00\x01", "control.short"),  # header cut
        (b"\x07\x00\x02\x02\x00", "control.bad_reach_part"),  # part 2 of 2
        (b"\x07\x00\x00\x00\x00", "control.bad_reach_part"),  # of 0 parts
        (b"\x07\x00\x00\x01\x01\x01a", "control.short"),  # no rtt
        (b"\x07\x00\x00\x01\x00\x00", "control.bad_length"),  # bytes after the list
    ],
)
def test_bad_reach_parts_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as e:
        control.parse_untrusted(data)
    assert e.value.reason == reason


def _reach_list_reference(data: bytes, at: int, count: int) -> tuple[tuple[str, int], ...]:
    """A REACH list read entry by entry with `_take_name`: what `_reach_list` inlines."""
    peers = []
    for _ in range(count):
        name, at = control._take_name(data, at)
        if at + 4 > len(data):
            raise BadPacket("control.short", "reach rtt")
        peers.append((name, int.from_bytes(data[at : at + 4], "big")))
        at += 4
    if at != len(data):
        raise BadPacket("control.bad_length", "bytes after reach list")
    return tuple(peers)


@given(
    st.lists(st.tuples(st.text(min_size=1, max_size=12), st.integers(0, 2**32 - 1)), max_size=8),
    st.one_of(st.binary(max_size=40), st.sampled_from([b"\x02\xff\xfe", b"\x01\x80\x00"])),
    st.integers(0, 12),
    st.booleans(),
)
def test_a_reach_list_reads_as_entry_by_entry_whatever_the_bytes(
    peers: list[tuple[str, int]], junk: bytes, extra: int, cut: bool
) -> None:
    """Valid entries, then junk (cut short, bad lengths, bad UTF-8): the inlined reader
    gives the same entries or the same drop reason as the reference."""
    body = b"".join(control.reach_entry(n, rtt) for n, rtt in peers if len(n.encode()) < 256)
    body += junk
    if cut and body:
        body = body[: len(body) // 2]
    data = bytes([control.REACH, 0]) + body
    count = len(peers) + extra
    want: object
    try:
        want = _reach_list_reference(data, 2, count)
    except BadPacket as e:
        want = e.reason
    try:
        got: object = control._reach_list(data, 2, count)
    except BadPacket as e:
        got = e.reason
    assert got == want
