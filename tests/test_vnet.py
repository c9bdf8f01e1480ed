"""lanspan.wire.vnet: layout, round trip, shifting, validation of peer headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.wire import vnet
from lanspan.wire.vnet import VnetHeader

u16 = st.integers(0, 0xFFFF)
headers = st.builds(VnetHeader, st.integers(0, 255), st.integers(0, 255), u16, u16, u16, u16)

# A TCPv4 superframe as a TAP hands it out: 14 Ethernet + 20 IP + 32 TCP.
GOLDEN = bytes.fromhex("01 01 4200 a805 2200 1000")
GOLDEN_HDR = VnetHeader(
    flags=vnet.NEEDS_CSUM,
    gso_type=vnet.GSO_TCPV4,
    hdr_len=66,
    gso_size=1448,
    csum_start=34,
    csum_offset=16,
)


def test_golden() -> None:
    assert vnet.parse_untrusted(GOLDEN) == GOLDEN_HDR
    assert vnet.build(GOLDEN_HDR) == GOLDEN
    assert GOLDEN_HDR.to_bytes() == GOLDEN
    assert GOLDEN_HDR.is_gso and GOLDEN_HDR.needs_csum
    vnet.validate_untrusted(GOLDEN_HDR, 65000)


@given(headers)
def test_round_trip(h: VnetHeader) -> None:
    b = vnet.build(h)
    assert len(b) == vnet.VNET_HDR_LEN
    assert vnet.parse_untrusted(b) == h


@given(headers, st.binary(max_size=64))
def test_trailing_bytes_ignored(h: VnetHeader, tail: bytes) -> None:
    data = vnet.build(h) + tail
    assert vnet.parse_untrusted(data) == h
    assert vnet.split_untrusted(data) == (h, tail)


@given(headers, st.integers(0, vnet.VNET_HDR_LEN - 1))
def test_truncated_is_bad_packet(h: VnetHeader, n: int) -> None:
    with pytest.raises(BadPacket) as e:
        vnet.parse_untrusted(vnet.build(h)[:n])
    assert e.value.reason == "vnet.short"


@given(st.binary(max_size=40))
def test_any_bytes_parse_or_bad_packet(data: bytes) -> None:
    try:
        h = vnet.parse_untrusted(data)
    except BadPacket:
        assert len(data) < vnet.VNET_HDR_LEN
        return
    try:
        vnet.validate_untrusted(h, 1514)
    except BadPacket as e:
        assert e.reason.startswith("vnet.")


def test_byte_by_byte() -> None:
    for n in range(len(GOLDEN)):
        with pytest.raises(BadPacket):
            vnet.parse_untrusted(GOLDEN[:n])
    assert vnet.parse_untrusted(GOLDEN) == GOLDEN_HDR


def test_shift_push_pop_tag() -> None:
    tagged = GOLDEN_HDR.shifted(+4)
    assert (tagged.csum_start, tagged.hdr_len) == (38, 70)
    assert (tagged.gso_size, tagged.csum_offset) == (1448, 16)
    assert tagged.shifted(-4) == GOLDEN_HDR
    # unused offsets stay zero
    assert VnetHeader().shifted(4) == VnetHeader()
    with pytest.raises(ValueError):
        VnetHeader(flags=vnet.NEEDS_CSUM, csum_start=2).shifted(-4)


@given(headers, st.sampled_from([4, -4, 8, -8]))
def test_shift_inverse(h: VnetHeader, d: int) -> None:
    try:
        s = h.shifted(d)
    except ValueError:
        return
    assert s.shifted(-d) == h
    assert s.gso_size == h.gso_size and s.csum_offset == h.csum_offset


@pytest.mark.parametrize(
    ("hdr", "frame_len", "reason"),
    [
        (VnetHeader(flags=0x80), 100, "vnet.flags"),
        (
            VnetHeader(gso_type=3, flags=1, gso_size=1000, csum_start=34, csum_offset=6),
            9000,
            "vnet.gso_type",
        ),
        (VnetHeader(gso_type=7), 100, "vnet.gso_type"),
        (VnetHeader(gso_type=vnet.GSO_ECN), 100, "vnet.gso_type"),
        (
            VnetHeader(flags=1, gso_type=1, gso_size=63, csum_start=34, csum_offset=16),
            9000,
            "vnet.gso_size",
        ),
        (
            VnetHeader(gso_type=1, gso_size=1448, csum_start=34, csum_offset=16),
            9000,
            "vnet.gso_no_csum",
        ),
        (VnetHeader(flags=1, csum_start=34, csum_offset=16), 51, "vnet.csum"),
        (VnetHeader(flags=1, csum_start=4, csum_offset=6), 100, "vnet.csum"),
        (VnetHeader(flags=1, csum_start=34, csum_offset=16, hdr_len=200), 100, "vnet.hdr_len"),
    ],
)
def test_validate_rejects(hdr: VnetHeader, frame_len: int, reason: str) -> None:
    with pytest.raises(BadPacket) as e:
        vnet.validate_untrusted(hdr, frame_len)
    assert e.value.reason == reason


def test_validate_accepts() -> None:
    vnet.validate_untrusted(VnetHeader(), 60)
    vnet.validate_untrusted(VnetHeader(flags=vnet.DATA_VALID), 60)
    vnet.validate_untrusted(VnetHeader(flags=1, csum_start=34, csum_offset=16), 52)
    ecn = VnetHeader(
        flags=1,
        gso_type=vnet.GSO_TCPV6 | vnet.GSO_ECN,
        hdr_len=86,
        gso_size=1428,
        csum_start=54,
        csum_offset=16,
    )
    vnet.validate_untrusted(ecn, 60000)


@given(headers, st.integers(0, 70000))
def test_validated_headers_are_safe(h: VnetHeader, frame_len: int) -> None:
    try:
        vnet.validate_untrusted(h, frame_len)
    except BadPacket:
        return
    assert h.csum_start + h.csum_offset + 2 <= frame_len
    assert h.hdr_len <= frame_len
    if h.is_gso:
        assert h.gso_size >= vnet.MIN_GSO_SIZE
        assert h.gso_type & ~vnet.GSO_ECN in {vnet.GSO_TCPV4, vnet.GSO_TCPV6, vnet.GSO_UDP_L4}


def test_with_zero_header() -> None:
    frame = bytes(range(60))
    out = vnet.with_zero_header(frame)
    assert out[:10] == bytes(10) and out[10:] == frame
    assert vnet.parse_untrusted(out) == VnetHeader()
