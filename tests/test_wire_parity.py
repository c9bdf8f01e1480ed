"""Parity payloads: the XOR over interleaved groups, and their wire format."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.wire import parity, payload


def cut(body: bytes, chunk: int) -> list[bytes]:
    return [body[i : i + chunk] for i in range(0, len(body), chunk)]


@given(
    st.binary(min_size=1, max_size=6000),
    st.integers(min_value=1, max_value=700),
    st.integers(min_value=1, max_value=16),
    st.data(),
)
def test_one_missing_fragment_per_group_is_rebuilt(
    body: bytes, chunk: int, groups: int, data: st.DataObject
) -> None:
    frags = cut(body, chunk)
    groups = min(groups, len(frags))
    xs = parity.xors(body, chunk, groups)
    assert len(xs) == groups and all(len(x) == chunk for x in xs)
    for g in range(groups):
        members = list(range(g, len(frags), groups))
        lost = data.draw(st.sampled_from(members))
        others = [frags[i] for i in members if i != lost]
        assert parity.rebuild(xs[g], others, len(frags[lost])) == frags[lost]


@given(st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=8))
def test_parity_of_one_group_is_the_xor_of_its_members(frags: list[bytes]) -> None:
    chunk = max(1, *map(len, frags))
    body = b"".join(f.ljust(chunk, b"\0") for f in frags)
    (x,) = parity.xors(body, chunk, 1)
    want = bytearray(chunk)
    for f in frags:
        for i, c in enumerate(f):
            want[i] ^= c
    assert x == bytes(want)


def test_rebuild_refuses_fragments_longer_than_the_parity() -> None:
    assert parity.rebuild(b"\0" * 4, [b"12345"], 4) is None
    assert parity.rebuild(b"\0" * 4, [b"1234"], 5) is None


def test_groups_for() -> None:
    assert parity.groups_for(45, 11) == 4
    assert parity.groups_for(2, 11) == 1
    assert parity.groups_for(3, 1) == 3
    with pytest.raises(ValueError):
        parity.groups_for(0, 11)


BODY = bytes(range(256)) * 20


def parities(fid: int = 3, chunk: int = 1000, groups: int = 2) -> list[bytes]:
    frags = cut(BODY, chunk)
    last = len(frags[-1])
    return payload.build_parities(7, True, fid, len(frags), last, parity.xors(BODY, chunk, groups))


def test_build_and_parse() -> None:
    raw = parities()
    assert len(raw) == 2
    for g, r in enumerate(raw):
        p = payload.parse_untrusted(r)
        assert p.is_parity and p.is_fragment and p.has_offload and p.vni == 7
        assert (p.frag_id, p.frag_index, p.frag_count) == (3, g, 6)
        groups, last, xor = payload.parity_header(p)
        assert (groups, last, len(xor)) == (2, len(BODY) - 5000, 1000)


def test_build_refuses_more_groups_than_fragments() -> None:
    with pytest.raises(ValueError):
        payload.build_parities(7, False, 1, 2, 10, [b"x"] * 3)


def crafted(
    group: int = 0, count: int = 4, groups: int = 2, version: int = 0, last: int = 10, n: int = 20
) -> bytes:
    head = payload.header(payload.FLAG_I | payload.FLAG_F | payload.FLAG_P, 5)
    return head + struct.pack("!HBBBBH", 9, group, count, groups, version, last) + bytes(n)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (crafted(version=1), "payload.parity_version"),
        (crafted(group=2), "payload.bad_parity"),
        (crafted(groups=5), "payload.bad_parity"),
        (crafted(groups=0, group=0), "payload.bad_parity"),
        (crafted(count=65, groups=2), "payload.bad_parity"),
        (crafted(last=0), "payload.bad_parity"),
        (crafted(last=21), "payload.bad_parity"),
        (crafted(count=64, groups=1, n=1100, last=1100), "payload.bad_parity"),
        (crafted(n=0), "payload.short_parity"),
        (
            payload.header(payload.FLAG_I | payload.FLAG_P, 5) + crafted()[8:],
            "payload.parity_not_fragment",
        ),
    ],
)
def test_bad_parity_headers_are_named(raw: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as e:
        payload.parse_untrusted(raw)
    assert e.value.reason == reason


@given(st.sampled_from(parities() + parities(60000, 700, 4)), st.data())
def test_truncations_and_appended_bytes_only_bad_packet(raw: bytes, data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    try:
        p = payload.parse_untrusted(raw[:n])
    except BadPacket:
        pass
    else:  # a shorter parity that still holds together (its last length fits)
        assert p.is_parity
        groups, last, xor = payload.parity_header(p)
        assert 1 <= last <= len(xor) and p.frag_index < groups <= p.frag_count
    extra = data.draw(st.binary(max_size=64))
    with contextlib.suppress(BadPacket):  # parsed or BadPacket, nothing else
        payload.parse_untrusted(raw + extra)


@given(st.binary(max_size=80))
def test_random_bytes_behind_a_parity_header_parse_or_bad_packet(tail: bytes) -> None:
    head = payload.header(payload.FLAG_I | payload.FLAG_F | payload.FLAG_P, 5)
    try:
        p = payload.parse_untrusted(head + tail)
    except BadPacket:
        return
    groups, last, xor = payload.parity_header(p)
    assert p.frag_index < groups <= p.frag_count <= payload.MAX_FRAGMENTS
    assert 1 <= last <= len(xor)
