"""Ethernet II frames with at most one outer 802.1Q tag: parse, tag, untag.

Untagged frame::

     0                   6                   12      14
    +-------------------+-------------------+-------+---------------
    | dst MAC (6)       | src MAC (6)       | type  | payload ...
    +-------------------+-------------------+-------+---------------

802.1Q-tagged frame (outer TPID 0x8100)::

     0         6         12       14      16      18
    +---------+---------+--------+-------+-------+---------------
    | dst (6) | src (6) | 0x8100 | TCI   | type  | payload ...
    +---------+---------+--------+-------+-------+---------------

    TCI (16 bits, big endian) = PCP (3) | DEI (1) | VID (12)

Only the outer 0x8100 tag is interpreted. A second tag behind it (QinQ,
TPID 0x8100 or 0x88a8) is payload: `EthernetHeader.ethertype` then names
that inner TPID and the inner tag travels untouched. A frame whose first
TPID is 0x88a8 is, for this module, an untagged frame of ethertype 0x88a8.

VID 0 is a priority tag (802.1p): it carries a PCP but no VLAN.

Every function here is cheap: the data plane calls them once per
(super)frame, so they slice bytes and never copy the payload more than once.
"""

from __future__ import annotations

import re

from lanspan.errors import BadPacket
from lanspan.records import record

__all__ = [
    "BROADCAST",
    "ETH_HEADER_LEN",
    "TAG_TPIDS",
    "TPID_8021AD",
    "TPID_8021Q",
    "VLAN_HEADER_LEN",
    "EthernetHeader",
    "build",
    "format_mac",
    "is_multicast",
    "parse_mac",
    "parse_untrusted",
    "pop_tag",
    "push_tag",
]

ETH_HEADER_LEN = 14
VLAN_HEADER_LEN = 18
TPID_8021Q = 0x8100
TPID_8021AD = 0x88A8
#: EtherTypes that announce a VLAN tag (C-tag, S-tag, the pre-standard 0x9100).
TAG_TPIDS = frozenset({TPID_8021Q, TPID_8021AD, 0x9100})
BROADCAST = b"\xff\xff\xff\xff\xff\xff"
_TPID_8021Q_BYTES = b"\x81\x00"
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4}")


@record(frozen=True, slots=True)
class EthernetHeader:
    """The decoded Ethernet header (and outer 802.1Q tag, if any) of a frame."""

    dst: bytes  # 6 bytes
    src: bytes  # 6 bytes
    vlan: int | None  # VID of the outer 0x8100 tag, 0..4095; None when untagged
    pcp: int  # priority code point of the outer tag, 0..7; 0 when untagged
    ethertype: int  # the EtherType after the outer tag (may be an inner TPID)
    header_len: int  # 14 untagged, 18 tagged
    dei: bool = False  # drop-eligible indicator of the outer tag

    @property
    def tagged(self) -> bool:
        """True when the frame carries an outer 0x8100 tag (including VID 0)."""
        return self.vlan is not None


def parse_untrusted(frame: bytes) -> EthernetHeader:
    """Decode the header of a frame read from a port or a peer.

    Raises `BadPacket("ethernet.short_frame")` for fewer than 14 bytes and
    `BadPacket("ethernet.short_tagged_frame")` for a 0x8100-tagged frame of fewer than 18 bytes.
    """
    n = len(frame)
    if n < ETH_HEADER_LEN:
        raise BadPacket("ethernet.short_frame", f"{n} bytes, an Ethernet header needs 14")
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype != TPID_8021Q:
        return EthernetHeader(frame[0:6], frame[6:12], None, 0, ethertype, ETH_HEADER_LEN)
    if n < VLAN_HEADER_LEN:
        raise BadPacket("ethernet.short_tagged_frame", f"{n} bytes, an 802.1Q header needs 18")
    tci = (frame[14] << 8) | frame[15]
    return EthernetHeader(
        frame[0:6],
        frame[6:12],
        tci & 0x0FFF,
        tci >> 13,
        (frame[16] << 8) | frame[17],
        VLAN_HEADER_LEN,
        bool(tci & 0x1000),
    )


def push_tag(frame: bytes, vlan: int, pcp: int = 0) -> bytes:
    """Insert an outer 802.1Q tag (TPID 0x8100) after the MAC addresses.

    An existing tag is kept behind the new one (it becomes the inner tag).
    """
    if not 0 <= vlan <= 4095:
        raise ValueError(f"VLAN id {vlan} outside 0..4095")
    if not 0 <= pcp <= 7:
        raise ValueError(f"PCP {pcp} outside 0..7")
    if len(frame) < 12:
        raise ValueError(f"frame of {len(frame)} bytes has no MAC addresses")
    tci = (pcp << 13) | vlan
    return b"".join((frame[:12], _TPID_8021Q_BYTES, tci.to_bytes(2, "big"), frame[12:]))


def pop_tag(frame: bytes) -> bytes:
    """Remove the outer 802.1Q tag; a frame without one is returned as is.

    An inner tag (QinQ) becomes the outer tag of the result, untouched.
    """
    if len(frame) >= VLAN_HEADER_LEN and frame[12:14] == _TPID_8021Q_BYTES:
        return frame[:12] + frame[16:]
    return frame


def build(
    dst: bytes,
    src: bytes,
    ethertype: int,
    payload: bytes = b"",
    vlan: int | None = None,
    pcp: int = 0,
) -> bytes:
    """Build a frame; with `vlan`, one outer 802.1Q tag. No padding, no FCS."""
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MAC addresses are 6 bytes")
    if not 0 <= ethertype <= 0xFFFF:
        raise ValueError(f"EtherType {ethertype:#x} outside 16 bits")
    frame = dst + src + ethertype.to_bytes(2, "big") + payload
    return frame if vlan is None else push_tag(frame, vlan, pcp)


def is_multicast(mac: bytes) -> bool:
    """True for group addresses (multicast and broadcast): I/G bit set."""
    return bool(mac[0] & 1)


def format_mac(mac: bytes) -> str:
    """`b"\\x02\\xaa\\0\\0\\0\\x01"` -> `"02:aa:00:00:00:01"`."""
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, not {len(mac)}")
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """`"02:aa:00:00:00:01"` (or with `-`) -> 6 bytes; ValueError otherwise."""
    if _MAC_RE.fullmatch(text.strip()) is None:
        raise ValueError(
            f"not a MAC address: {text!r} (expected 6 hex pairs, e.g. 02:aa:00:00:00:01)"
        )
    return bytes.fromhex(text.strip().replace("-", "").replace(":", ""))
