"""What travels inside a session: VXLAN-headed frames, fragments, control messages.

Every plaintext of a transport message starts with an 8-byte VXLAN header
(RFC 7348), so plain mode and encrypted mode share one frame format::

     0               1               2               3
    +---------------+---------------+---------------+---------------+
    |     flags     |                reserved (0)                   |
    +---------------+---------------+---------------+---------------+
    |                 VNI (24 bits)                 | reserved (0)  |
    +---------------+---------------+---------------+---------------+

flags: I (0x08) — the VNI is valid, an Ethernet frame follows (RFC 7348).
Inside a session lanspan also uses bits that RFC 7348 reserves (they are
never set in plain VXLAN mode):

- O (0x01) offload: the body starts with a 10-byte virtio_net_hdr that
  describes checksum and segmentation state of a (super)frame.
- F (0x02) fragment: the body starts with a fragment header
  ``u16 superframe id (BE), u8 index, u8 count``; the bodies of fragments
  0..count-1 concatenated form the body of the original message.
- P (0x04) parity, with F: the XOR parity of one interleaved group of a
  fragmented superframe's fragments (below). A receiver that does not know P
  drops it as ``payload.reserved_bits``.
- C (0x80) control: lanspan's own message (probes, reachability); VNI 0.

A parity payload (flags I | F | P, and O when the fragments have it; the VNI of
the fragments) follows the 8-byte header with::

     0               1               2               3
    +---------------+---------------+---------------+---------------+
    |   superframe id (u16 BE)      |   group g     | count n       |
    +---------------+---------------+---------------+---------------+
    |   groups G    |  version (0)  |  length of fragment n-1 (BE)  |
    +---------------+---------------+---------------+---------------+
    | XOR of the bodies of fragments g, g+G, g+2G... each zero-padded
    | to the parity's length (the size of every fragment but the last)
    +---------------------------------------------------------------

Group g holds the fragments whose index i has i % G == g (interleaved: a burst
of up to G lost datagrams costs each group at most one); a receiver missing one
fragment of a group rebuilds it from the parity and the group's other fragments
(`lanspan.wire.parity`). The version byte is 0; any other is dropped.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from lanspan.errors import BadPacket
from lanspan.wire.vnet import VNET_HDR_LEN

FLAG_I = 0x08
FLAG_O = 0x01
FLAG_F = 0x02
FLAG_P = 0x04
FLAG_C = 0x80
_KNOWN_FLAGS = FLAG_I | FLAG_O | FLAG_F | FLAG_P | FLAG_C

HEADER_LEN = 8
FRAG_HEADER_LEN = 4
PARITY_HEADER_LEN = 4  # after the fragment header: groups, version, last length
PARITY_VERSION = 0
MAX_FRAGMENTS = 64
# Largest reassembled body: a 64 KiB GSO superframe, an 802.1Q tag and a vnet header.
MAX_BODY = 65535 + 4 + 14 + VNET_HDR_LEN

_HEADER = struct.Struct("!B3xI")  # flags, VNI << 8
_FRAG = struct.Struct("!HBB")
_PARITY = struct.Struct("!HBBBBH")  # id, group, count, groups, version, last length
_PARITY_TAIL = struct.Struct("!BBH")


class Payload(NamedTuple):
    """A parsed payload header; `body` is what follows it (after a fragment header).

    A parity payload (FLAG_P) has `frag_index` = its group, `frag_count` = the
    superframe's fragment count, and `body` = its 4-byte parity header and the
    XOR (`parity_header`), validated by `parse_untrusted`.

    Immutable like a frozen dataclass, but a tuple: built ~3x faster (0.19 against
    0.53 us), and one is built per datagram of every superframe received.
    """

    flags: int
    vni: int
    body: bytes
    frag_id: int = 0
    frag_index: int = 0
    frag_count: int = 0

    @property
    def is_control(self) -> bool:
        return bool(self.flags & FLAG_C)

    @property
    def has_offload(self) -> bool:
        return bool(self.flags & FLAG_O)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & FLAG_F)

    @property
    def is_parity(self) -> bool:
        return bool(self.flags & FLAG_P)


def parity_header(p: Payload) -> tuple[int, int, bytes]:
    """(groups, length of the last fragment, XOR) of a parity payload `parse_untrusted`
    returned."""
    groups, _version, last = _PARITY_TAIL.unpack_from(p.body)
    return groups, last, p.body[PARITY_HEADER_LEN:]


def header(flags: int, vni: int) -> bytes:
    return _HEADER.pack(flags, vni << 8)


def build_frame(vni: int, frame: bytes, vnet: bytes | None = None) -> bytes:
    """One whole frame; `vnet` (10 bytes) carries offload state when not None."""
    if vnet is None:
        return _HEADER.pack(FLAG_I, vni << 8) + frame
    return _HEADER.pack(FLAG_I | FLAG_O, vni << 8) + vnet + frame


def build_control(body: bytes) -> bytes:
    return _HEADER.pack(FLAG_C, 0) + body


def build_fragments(
    vni: int, body: bytes, offload: bool, frag_id: int, max_plaintext: int
) -> list[bytes]:
    """Split `body` into payloads of at most `max_plaintext` bytes.

    All but the last fragment have the same size, which lets the socket layer
    hand them to the kernel as one UDP GSO batch.
    """
    chunk = max_plaintext - HEADER_LEN - FRAG_HEADER_LEN
    count = -(-len(body) // chunk)
    if count > MAX_FRAGMENTS or chunk <= 0:
        raise ValueError(f"body of {len(body)} B needs {count} fragments of {chunk} B")
    head = _HEADER.pack(FLAG_I | FLAG_F | (FLAG_O if offload else 0), vni << 8)
    fid = frag_id & 0xFFFF
    return [
        head + _FRAG.pack(fid, i, count) + body[i * chunk : (i + 1) * chunk] for i in range(count)
    ]


def build_parities(
    vni: int, offload: bool, frag_id: int, count: int, last_len: int, xors: list[bytes]
) -> list[bytes]:
    """The parity payloads of a superframe sent as `count` fragments, the last of
    `last_len` bytes: `xors[g]` is group g's XOR (`lanspan.wire.parity.xors`)."""
    groups = len(xors)
    if not 1 <= groups <= count <= MAX_FRAGMENTS:
        raise ValueError(f"{groups} parity groups for {count} fragments")
    head = _HEADER.pack(FLAG_I | FLAG_F | FLAG_P | (FLAG_O if offload else 0), vni << 8)
    fid = frag_id & 0xFFFF
    return [
        head + _PARITY.pack(fid, g, count, groups, PARITY_VERSION, last_len) + x
        for g, x in enumerate(xors)
    ]


def parse_untrusted(data: bytes) -> Payload:
    """Parse a decrypted payload; raise BadPacket naming what is wrong."""
    if len(data) < HEADER_LEN:
        raise BadPacket("payload.short", f"{len(data)} B")
    flags, word = _HEADER.unpack_from(data)
    if flags & ~_KNOWN_FLAGS or word & 0xFF:
        raise BadPacket("payload.reserved_bits", f"flags {flags:#04x}")
    vni = word >> 8
    if flags & FLAG_C:
        if flags != FLAG_C or vni:
            raise BadPacket("payload.bad_control_header", f"flags {flags:#04x}")
        return Payload(flags, 0, data[HEADER_LEN:])
    if not flags & FLAG_I or vni == 0:
        raise BadPacket("payload.no_vni", f"flags {flags:#04x} vni {vni}")
    if flags & FLAG_P:
        start = HEADER_LEN + FRAG_HEADER_LEN + PARITY_HEADER_LEN
        if not flags & FLAG_F:
            raise BadPacket("payload.parity_not_fragment", f"flags {flags:#04x}")
        if len(data) <= start:
            raise BadPacket("payload.short_parity", f"{len(data)} B")
        fid, group, count, groups, version, last = _PARITY.unpack_from(data, HEADER_LEN)
        if version != PARITY_VERSION:
            raise BadPacket("payload.parity_version", f"version {version}")
        chunk = len(data) - start
        if (
            not group < groups <= count <= MAX_FRAGMENTS
            or not 1 <= last <= chunk
            or (count - 1) * chunk + last > MAX_BODY
        ):
            raise BadPacket(
                "payload.bad_parity", f"group {group}/{groups} of {count}, last {last}, {chunk} B"
            )
        return Payload(flags, vni, data[HEADER_LEN + FRAG_HEADER_LEN :], fid, group, count)
    if flags & FLAG_F:
        if len(data) < HEADER_LEN + FRAG_HEADER_LEN:
            raise BadPacket("payload.short_fragment", f"{len(data)} B")
        fid, index, count = _FRAG.unpack_from(data, HEADER_LEN)
        if count < 1 or count > MAX_FRAGMENTS or index >= count:
            raise BadPacket("payload.bad_fragment_index", f"{index}/{count}")
        return Payload(flags, vni, data[HEADER_LEN + FRAG_HEADER_LEN :], fid, index, count)
    return Payload(flags, vni, data[HEADER_LEN:])
