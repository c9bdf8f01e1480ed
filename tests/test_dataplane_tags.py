"""PacketPort's 802.1Q re-insertion (pure part): tag bytes and vnet offsets."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from lanspan.dataplane.packet import TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID, _insert_tag
from lanspan.wire import vnet

MACS = bytes.fromhex("ffffffffffff020000000b01")


def test_plain_frame_gets_tag() -> None:
    frame = MACS + b"\x08\x00" + b"x" * 46
    out = _insert_tag(vnet.with_zero_header(frame), 10, 0, TP_STATUS_VLAN_VALID)
    assert out == vnet.ZERO_HEADER + MACS + b"\x81\x00\x00\x0a" + frame[12:]


def test_tpid_from_metadata() -> None:
    frame = MACS + b"\x08\x00" + b"x" * 46
    status = TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID
    out = _insert_tag(vnet.with_zero_header(frame), 0x3064, 0x88A8, status)
    assert out[10 + 12 : 10 + 16] == struct.pack("!HH", 0x88A8, 0x3064)


def test_gso_offsets_shift_with_the_tag() -> None:
    h = vnet.VnetHeader(
        flags=vnet.NEEDS_CSUM,
        gso_type=vnet.GSO_TCPV4,
        hdr_len=66,
        gso_size=1448,
        csum_start=34,
        csum_offset=16,
    )
    frame = MACS + b"\x08\x00" + bytes(3000)
    out = _insert_tag(h.to_bytes() + frame, 20, 0, TP_STATUS_VLAN_VALID)
    h2 = vnet.parse_untrusted(out)
    assert (h2.csum_start, h2.hdr_len, h2.gso_size) == (38, 70, 1448)
    assert len(out) == 10 + len(frame) + 4
    vnet.validate_untrusted(h2, len(out) - 10)


@given(st.integers(0, 0xFFFF), st.binary(min_size=2, max_size=200))
def test_tag_then_rest_unchanged(tci: int, rest: bytes) -> None:
    frame = MACS + rest
    out = _insert_tag(vnet.with_zero_header(frame), tci, 0, TP_STATUS_VLAN_VALID)
    assert out[10:22] == MACS
    assert struct.unpack("!HH", out[22:26]) == (0x8100, tci)
    assert out[26:] == rest


def test_runt_left_alone() -> None:
    assert _insert_tag(b"\0" * 15, 10, 0, TP_STATUS_VLAN_VALID) == b"\0" * 15
