"""virtio_net_hdr: the 10-byte offload header in front of frames on TAP / AF_PACKET.

Layout (little-endian, ``struct virtio_net_hdr`` without ``num_buffers``)::

    struct virtio_net_hdr {
        u8  flags;        /* NEEDS_CSUM = 1, DATA_VALID = 2, RSC_INFO = 4 */
        u8  gso_type;     /* NONE 0, TCPV4 1, UDP 3, TCPV6 4, UDP_L4 5; | ECN 0x80 */
        u16 hdr_len;      /* bytes of headers (L2+L3+L4) in front of the payload */
        u16 gso_size;     /* payload bytes per segment when gso_type != NONE */
        u16 csum_start;   /* where checksumming starts, from the Ethernet header */
        u16 csum_offset;  /* where, after csum_start, the checksum is stored */
    };

On a TAP and on AF_PACKET with PACKET_VNET_HDR every offset counts from the
first byte of the Ethernet frame. Pushing an 802.1Q tag moves them by +4,
popping one by -4 (`VnetHeader.shifted`).

Headers that come from a peer are untrusted: `validate_untrusted` checks one
before it is written to a local device, including every later use: the
offsets must survive an 802.1Q tag pushed or popped on the way out
(`TAG_SHIFT`), so `shifted(±TAG_SHIFT)` and `build` of a validated header
never raise.
"""

from __future__ import annotations

import struct
from dataclasses import replace

from lanspan.errors import BadPacket
from lanspan.records import record

__all__ = [
    "DATA_VALID",
    "GSO_ECN",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP",
    "GSO_UDP_L4",
    "KNOWN_GSO_TYPES",
    "MIN_GSO_SIZE",
    "NEEDS_CSUM",
    "RSC_INFO",
    "TAG_SHIFT",
    "VNET_HDR_LEN",
    "ZERO_HEADER",
    "VnetHeader",
    "build",
    "parse_untrusted",
    "split_untrusted",
    "validate_untrusted",
    "with_zero_header",
]

VNET_HDR_LEN = 10

# flags
NEEDS_CSUM = 0x01
DATA_VALID = 0x02
RSC_INFO = 0x04
_KNOWN_FLAGS = NEEDS_CSUM | DATA_VALID | RSC_INFO

# gso_type
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO, obsolete: never accepted from a peer
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
KNOWN_GSO_TYPES = frozenset({GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4})

MIN_GSO_SIZE = 64  # smaller segments from a peer are refused (a cheap amplification)
TAG_SHIFT = 4  # an 802.1Q tag pushed (+4) or popped (-4) after validation
ETH_HLEN = 14  # a used hdr_len or csum_start is never inside the Ethernet addresses
_MAX_OFFSET = 0xFFFF - TAG_SHIFT  # room for a pushed tag in a 16-bit field

_STRUCT = struct.Struct("<BBHHHH")

ZERO_HEADER = bytes(VNET_HDR_LEN)


@record(frozen=True, slots=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def is_gso(self) -> bool:
        return (self.gso_type & ~GSO_ECN) != GSO_NONE

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & NEEDS_CSUM)

    def shifted(self, delta: int) -> VnetHeader:
        """The header for the same frame after `delta` bytes were inserted (+4 for an
        802.1Q tag) or removed (-4) in front of the L3 header.

        Offsets that are 0 (unused) stay 0. Raises ValueError if a used offset
        would go negative or past 16 bits (a caller bug: tags are pushed only
        behind the Ethernet addresses, before csum_start).
        """
        csum_start = self.csum_start
        hdr_len = self.hdr_len
        if self.needs_csum:
            csum_start += delta
        if hdr_len:
            hdr_len += delta
            if hdr_len <= 0:  # a used length may not become 0, which means "unused"
                raise ValueError(f"cannot shift {self} by {delta}")
        if not (0 <= csum_start <= 0xFFFF and 0 <= hdr_len <= 0xFFFF):
            raise ValueError(f"cannot shift {self} by {delta}")
        return replace(self, csum_start=csum_start, hdr_len=hdr_len)

    def to_bytes(self) -> bytes:
        return build(self)


def build(hdr: VnetHeader) -> bytes:
    """The 10 bytes of `hdr`. Raises struct.error on out-of-range fields (a caller bug)."""
    return _STRUCT.pack(
        hdr.flags, hdr.gso_type, hdr.hdr_len, hdr.gso_size, hdr.csum_start, hdr.csum_offset
    )


def parse_untrusted(data: bytes | bytearray | memoryview) -> VnetHeader:
    """Decode the first 10 bytes of `data`; BadPacket("vnet.short") if fewer.

    Only the layout is checked here; `validate_untrusted` checks the meaning.
    """
    if len(data) < VNET_HDR_LEN:
        raise BadPacket("vnet.short", f"{len(data)} bytes")
    return VnetHeader(*_STRUCT.unpack_from(data, 0))


def split_untrusted(data: bytes) -> tuple[VnetHeader, bytes]:
    """(header, frame) from a vnet header followed by a frame."""
    return parse_untrusted(data), data[VNET_HDR_LEN:]


def validate_untrusted(hdr: VnetHeader, frame_len: int) -> None:
    """Check a header that came from a peer before it goes to a local device.

    Raises BadPacket with one of the reasons ``vnet.flags``, ``vnet.gso_type``,
    ``vnet.gso_size``, ``vnet.gso_no_csum``, ``vnet.csum``, ``vnet.hdr_len``.
    """
    if hdr.flags & ~_KNOWN_FLAGS:
        raise BadPacket("vnet.flags", f"flags 0x{hdr.flags:02x}")
    base = hdr.gso_type & ~GSO_ECN
    if base not in KNOWN_GSO_TYPES:
        raise BadPacket("vnet.gso_type", f"gso_type 0x{hdr.gso_type:02x}")
    if base == GSO_NONE and hdr.gso_type & GSO_ECN:
        raise BadPacket("vnet.gso_type", "ECN bit without GSO")
    if base != GSO_NONE:
        if hdr.gso_size < MIN_GSO_SIZE:
            raise BadPacket("vnet.gso_size", f"gso_size {hdr.gso_size} < {MIN_GSO_SIZE}")
        if not hdr.needs_csum:
            raise BadPacket("vnet.gso_no_csum", "GSO without NEEDS_CSUM")
    if hdr.csum_start + hdr.csum_offset + 2 > frame_len or (hdr.needs_csum and hdr.csum_start < 14):
        raise BadPacket(
            "vnet.csum",
            f"csum_start {hdr.csum_start} + csum_offset {hdr.csum_offset} "
            f"outside frame of {frame_len}",
        )
    if hdr.hdr_len > frame_len:
        raise BadPacket("vnet.hdr_len", f"hdr_len {hdr.hdr_len} > frame {frame_len}")
    # later uses: a tag pushed (+4) must fit 16 bits, one popped (-4) must not go negative
    if hdr.hdr_len and not ETH_HLEN <= hdr.hdr_len <= _MAX_OFFSET:
        raise BadPacket("vnet.hdr_len", f"hdr_len {hdr.hdr_len} outside {ETH_HLEN}..{_MAX_OFFSET}")
    if hdr.needs_csum and hdr.csum_start > _MAX_OFFSET:
        raise BadPacket("vnet.csum", f"csum_start {hdr.csum_start} > {_MAX_OFFSET}")


def with_zero_header(frame: bytes) -> bytes:
    """A frame without vnet header turned into one behind an all-zero header."""
    return ZERO_HEADER + frame
