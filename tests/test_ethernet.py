"""lanspan.wire.ethernet: header parsing, 802.1Q tag push/pop, MAC helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.wire import ethernet
from lanspan.wire.ethernet import (
    BROADCAST,
    EthernetHeader,
    build,
    format_mac,
    is_multicast,
    parse_mac,
    parse_untrusted,
    pop_tag,
    push_tag,
)

DST = bytes.fromhex("02aa00000001")
SRC = bytes.fromhex("02bb00000002")

# Golden vectors: an ARP request untagged, and the same in VLAN 10 with PCP 5.
ARP_UNTAGGED = bytes.fromhex("ffffffffffff02bb0000000208060001080006040001")
ARP_VLAN10 = bytes.fromhex("ffffffffffff02bb000000028100a00a08060001080006040001")
# QinQ: outer C-tag VLAN 10 (TPID 0x8100), inner S-tag VLAN 300 (TPID 0x88a8).
QINQ = bytes.fromhex("02aa0000000102bb000000028100000a88a8012c080045")

macs = st.binary(min_size=6, max_size=6)
vids = st.integers(0, 4095)
pcps = st.integers(0, 7)
ethertypes = st.integers(0, 0xFFFF).filter(lambda t: t != 0x8100)
payloads = st.binary(max_size=64)


def test_golden_untagged() -> None:
    h = parse_untrusted(ARP_UNTAGGED)
    assert h == EthernetHeader(BROADCAST, SRC, None, 0, 0x0806, 14)
    assert not h.tagged


def test_golden_tagged() -> None:
    h = parse_untrusted(ARP_VLAN10)
    assert h == EthernetHeader(BROADCAST, SRC, 10, 5, 0x0806, 18)
    assert h.tagged
    assert pop_tag(ARP_VLAN10) == ARP_UNTAGGED
    assert push_tag(ARP_UNTAGGED, 10, pcp=5) == ARP_VLAN10


def test_dei_bit() -> None:
    frame = bytes.fromhex("ffffffffffff02bb0000000281001fff0800")
    h = parse_untrusted(frame)
    assert (h.vlan, h.pcp, h.dei) == (4095, 0, True)


def test_qinq_inner_tag_untouched() -> None:
    h = parse_untrusted(QINQ)
    assert (h.vlan, h.ethertype, h.header_len) == (10, 0x88A8, 18)
    inner = pop_tag(QINQ)
    assert inner == bytes.fromhex("02aa0000000102bb0000000288a8012c080045")
    # The S-tag is not an 802.1Q outer tag: it parses as an untagged frame.
    h2 = parse_untrusted(inner)
    assert (h2.vlan, h2.ethertype) == (None, 0x88A8)
    assert pop_tag(inner) == inner
    assert push_tag(inner, 10) == QINQ


def test_double_8021q_pops_one() -> None:
    frame = build(DST, SRC, 0x0800, b"x", vlan=20)
    double = push_tag(frame, 10)
    h = parse_untrusted(double)
    assert (h.vlan, h.ethertype) == (10, 0x8100)
    assert pop_tag(double) == frame


def test_short_and_runt() -> None:
    with pytest.raises(BadPacket) as e:
        parse_untrusted(ARP_UNTAGGED[:13])
    assert e.value.reason == "ethernet.short_frame"
    with pytest.raises(BadPacket) as e:
        parse_untrusted(b"")
    assert e.value.reason == "ethernet.short_frame"
    with pytest.raises(BadPacket) as e:
        parse_untrusted(ARP_VLAN10[:17])
    assert e.value.reason == "ethernet.short_tagged_frame"
    # exactly a header is fine
    assert parse_untrusted(ARP_VLAN10[:18]).vlan == 10
    assert parse_untrusted(ARP_UNTAGGED[:14]).ethertype == 0x0806


def test_pop_tag_on_short_or_untagged_is_identity() -> None:
    assert pop_tag(ARP_VLAN10[:17]) == ARP_VLAN10[:17]
    assert pop_tag(b"") == b""
    assert pop_tag(ARP_UNTAGGED) == ARP_UNTAGGED


def test_push_tag_rejects_misuse() -> None:
    with pytest.raises(ValueError):
        push_tag(ARP_UNTAGGED, 4096)
    with pytest.raises(ValueError):
        push_tag(ARP_UNTAGGED, -1)
    with pytest.raises(ValueError):
        push_tag(ARP_UNTAGGED, 10, pcp=8)
    with pytest.raises(ValueError):
        push_tag(b"\x00" * 11, 10)


def test_build_rejects_misuse() -> None:
    with pytest.raises(ValueError):
        build(DST[:5], SRC, 0x0800)
    with pytest.raises(ValueError):
        build(DST, SRC, 0x10000)


@given(macs, macs, ethertypes, payloads, st.none() | vids, pcps)
def test_build_parse_roundtrip(
    dst: bytes, src: bytes, ethertype: int, payload: bytes, vlan: int | None, pcp: int
) -> None:
    frame = build(dst, src, ethertype, payload, vlan=vlan, pcp=pcp)
    h = parse_untrusted(frame)
    assert (h.dst, h.src, h.vlan, h.ethertype) == (dst, src, vlan, ethertype)
    assert h.pcp == (pcp if vlan is not None else 0)
    assert h.header_len == (14 if vlan is None else 18)
    assert frame[h.header_len :] == payload


@given(macs, macs, ethertypes, payloads, vids, pcps)
def test_push_pop_inverse(
    dst: bytes, src: bytes, ethertype: int, payload: bytes, vlan: int, pcp: int
) -> None:
    frame = build(dst, src, ethertype, payload)
    tagged = push_tag(frame, vlan, pcp)
    assert len(tagged) == len(frame) + 4
    assert pop_tag(tagged) == frame
    assert parse_untrusted(tagged).vlan == vlan


@given(st.sampled_from([ARP_UNTAGGED, ARP_VLAN10, QINQ]), st.data())
def test_truncated_and_extended_samples(sample: bytes, data: st.DataObject) -> None:
    """Truncations raise only BadPacket; appended bytes never change the header."""
    cut = data.draw(st.integers(0, len(sample)))
    try:
        parse_untrusted(sample[:cut])
    except BadPacket as e:
        assert e.reason in {"ethernet.short_frame", "ethernet.short_tagged_frame"}
    extra = data.draw(st.binary(max_size=32))
    assert parse_untrusted(sample + extra) == parse_untrusted(sample)


@given(st.binary(max_size=40))
def test_random_bytes_raise_only_badpacket(blob: bytes) -> None:
    try:
        h = parse_untrusted(blob)
    except BadPacket as e:
        assert e.reason in {"ethernet.short_frame", "ethernet.short_tagged_frame"}
    else:
        assert len(blob) >= h.header_len
        assert h.dst == blob[:6] and h.src == blob[6:12]


def test_multicast() -> None:
    assert is_multicast(BROADCAST)
    assert is_multicast(bytes.fromhex("01005e000001"))
    assert is_multicast(bytes.fromhex("333300000001"))
    assert not is_multicast(DST)
    assert not is_multicast(bytes.fromhex("000000000000"))


def test_mac_text() -> None:
    assert format_mac(DST) == "02:aa:00:00:00:01"
    assert parse_mac("02:aa:00:00:00:01") == DST
    assert parse_mac("02-AA-00-00-00-01") == DST
    for bad in ("02:aa:00:00:00", "02:aa:00:00:00:01:02", "02:aa:00-00:00:01", "+2:aa:00:00:00:01"):
        with pytest.raises(ValueError):
            parse_mac(bad)
    with pytest.raises(ValueError):
        format_mac(b"\x00" * 5)


@given(macs)
def test_mac_text_roundtrip(mac: bytes) -> None:
    assert parse_mac(format_mac(mac)) == mac


def test_public_names() -> None:
    for name in ethernet.__all__:
        assert hasattr(ethernet, name)
