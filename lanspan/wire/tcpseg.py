"""Software TCP segmentation: a TCP GSO superframe cut into its real TCP segments.

A superframe read from a port (vnet header with gso_type TCPV4/TCPV6, up to
64 KiB) crosses the mesh as ~46 fragments; one lost fragment loses all of it.
Cut into MSS-sized segments, each datagram carries one whole TCP segment, so
a loss costs one segment. What the kernel's ``tcp_gso_segment`` does, done
here:

- sequence number: the superframe's plus the payload bytes before the segment;
- flags: CWR only on the first segment, FIN and PSH only on the last;
- IPv4: total length per segment, id incremented per segment, header checksum
  recomputed; IPv6: payload length per segment;
- TCP checksum left partial: the field holds the folded pseudo-header sum for
  the segment's length, and every segment shares one vnet header with
  NEEDS_CSUM (csum_start at the TCP header, csum_offset 16), so the receiving
  device or stack completes it, as it does for the superframe itself.

The frame may carry 802.1Q / 802.1ad tags (up to two) in front of the L3
header. Anything else (UDP GSO, no GSO, IP options the header offsets do not
account for, a header the vnet header does not describe) is not segmented:
`segment` returns None and the caller keeps today's path.
"""

from __future__ import annotations

import struct

from lanspan.wire.vnet import GSO_ECN, GSO_TCPV4, GSO_TCPV6, MIN_GSO_SIZE, NEEDS_CSUM, VnetHeader

__all__ = ["Segments", "coalesce", "segment", "tcp_span"]

_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_VLAN_TPIDS = (0x8100, 0x88A8)
_IPPROTO_TCP = 6
_TCP_CSUM_OFFSET = 16

_FIN = 0x01
_PSH = 0x08
_CWR = 0x80

_H = struct.Struct("!H")
_I = struct.Struct("!I")


class Segments:
    """The segments of one superframe: `frames` (each a whole Ethernet frame) and the
    one vnet header (NEEDS_CSUM, no GSO) they all share."""

    __slots__ = ("frames", "vnet")

    def __init__(self, frames: list[bytes], vnet: VnetHeader) -> None:
        self.frames = frames
        self.vnet = vnet


def _fold(s: int) -> int:
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(data: bytes) -> int:
    """One's-complement sum of 16-bit big-endian words (unfolded is fine below 2**32)."""
    if len(data) & 1:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def segment(hdr: VnetHeader, frame: bytes, max_frame: int | None = None) -> Segments | None:
    """`frame` (a TCP GSO superframe described by `hdr`) as its TCP segments.

    None when it is not one this function segments (see the module doc), or
    when a segment would be longer than `max_frame` bytes.
    """
    base = hdr.gso_type & ~GSO_ECN
    if base not in (GSO_TCPV4, GSO_TCPV6) or not hdr.needs_csum:
        return None
    mss = hdr.gso_size
    if mss <= 0:
        return None
    n = len(frame)
    # L3 offset: behind the MAC addresses and up to two VLAN tags
    l3 = 12
    if n < l3 + 2:
        return None
    etype = _H.unpack_from(frame, l3)[0]
    for _ in range(2):
        if etype not in _VLAN_TPIDS:
            break
        l3 += 4
        if n < l3 + 2:
            return None
        etype = _H.unpack_from(frame, l3)[0]
    l3 += 2
    l4 = hdr.csum_start
    if hdr.csum_offset != _TCP_CSUM_OFFSET or n < l4 + 20:
        return None
    if base == GSO_TCPV4:
        if etype != _ETH_P_IP or n < l3 + 20:
            return None
        vihl, proto = frame[l3], frame[l3 + 9]
        if vihl >> 4 != 4 or l3 + (vihl & 0x0F) * 4 != l4 or proto != _IPPROTO_TCP:
            return None
    else:
        # extension headers between l3 + 40 and the TCP header are copied as they are
        if etype != _ETH_P_IPV6 or l4 < l3 + 40 or frame[l3] >> 4 != 6:
            return None
    doff = (frame[l4 + 12] >> 4) * 4
    end = l4 + doff
    if doff < 20 or end > n:
        return None
    if max_frame is not None and end + mss > max_frame:
        return None
    data = memoryview(frame)[end:]
    total = len(data)
    if total == 0:
        return None
    count = -(-total // mss)
    head = bytearray(frame[:end])
    seq0 = _I.unpack_from(head, l4 + 4)[0]
    flags0 = head[l4 + 13]
    tcp_len_full = doff + mss
    if base == GSO_TCPV4:
        id0 = _H.unpack_from(head, l3 + 4)[0]
        head[l3 + 10 : l3 + 12] = b"\0\0"
        # the IPv4 header's sum without total length and id, which change per segment
        _H.pack_into(head, l3 + 2, 0)
        _H.pack_into(head, l3 + 4, 0)
        ip_sum = _sum16(bytes(head[l3:l4]))
        pseudo = _sum16(bytes(head[l3 + 12 : l3 + 20])) + _IPPROTO_TCP
        ip_len_full = l4 - l3 + tcp_len_full
    else:
        ip_sum = 0
        pseudo = _sum16(bytes(head[l3 + 8 : l3 + 40])) + _IPPROTO_TCP
        ip_len_full = l4 - l3 - 40 + tcp_len_full
    v4 = base == GSO_TCPV4
    pack16, pack32 = _H.pack_into, _I.pack_into
    frames: list[bytes] = []
    last = count - 1
    # every segment but the last: full size, one IP length and TCP pseudo-header sum;
    # per segment only the sequence number (and the IPv4 id and header checksum)
    if v4:
        pack16(head, l3 + 2, ip_len_full)
    else:
        pack16(head, l3 + 4, ip_len_full)
    pack16(head, l4 + 16, _fold(pseudo + tcp_len_full))
    ip_base = ip_sum + ip_len_full
    head[l4 + 13] = flags0 & ~(_FIN | _PSH)  # the first keeps CWR
    mid_flags = flags0 & ~(_FIN | _PSH | _CWR)
    for i in range(last):
        if i == 1:
            head[l4 + 13] = mid_flags
        if v4:
            ident = (id0 + i) & 0xFFFF
            x = ip_base + ident
            x = (x & 0xFFFF) + (x >> 16)
            pack16(head, l3 + 4, ident)
            pack16(head, l3 + 10, 0xFFFF - ((x & 0xFFFF) + (x >> 16)))
        pack32(head, l4 + 4, (seq0 + i * mss) & 0xFFFFFFFF)
        frames.append(bytes(head) + data[i * mss : (i + 1) * mss])
    size = total - last * mss
    ip_len = ip_len_full - mss + size
    head[l4 + 13] = flags0 if count == 1 else flags0 & ~_CWR
    if v4:
        ident = (id0 + last) & 0xFFFF
        pack16(head, l3 + 2, ip_len)
        pack16(head, l3 + 4, ident)
        pack16(head, l3 + 10, 0xFFFF - _fold(ip_sum + ip_len + ident))
    else:
        pack16(head, l3 + 4, ip_len)
    pack32(head, l4 + 4, (seq0 + last * mss) & 0xFFFFFFFF)
    pack16(head, l4 + 16, _fold(pseudo + doff + size))
    frames.append(bytes(head) + data[last * mss :])
    return Segments(frames, VnetHeader(NEEDS_CSUM, 0, end, 0, l4, _TCP_CSUM_OFFSET))


_URG = 0x20
_SYN = 0x02
_RST = 0x04
# a segment with any of these ends a coalesced superframe, or (SYN, RST, URG) is
# never coalesced at all
_NO_MERGE = _SYN | _RST | _URG
_LAST_ONLY = _FIN | _PSH


class _Seg:
    """The first segment of a run, as `coalesce` reads it: its header as one integer
    and the mask of the bits every later segment of the run must share."""

    __slots__ = ("end", "flags", "frame", "head", "l3", "mask", "size", "v6")

    def __init__(self, frame: bytes, l3: int, v6: bool, end: int, l4: int) -> None:
        self.frame, self.l3, self.v6, self.end = frame, l3, v6, end
        self.size = len(frame) - end
        self.flags = frame[l4 + 13]
        self.head = int.from_bytes(frame[:end], "big")
        self.mask = _mask(end, l3, l4, v6)


_MASKS: dict[tuple[int, int, int, bool], int] = {}


def _mask(end: int, l3: int, l4: int, v6: bool) -> int:
    """All header bits but the ones segmentation changes: IP length (and IPv4 id and
    checksum), TCP sequence number, flags and checksum."""
    key = (end, l3, l4, v6)
    m = _MASKS.get(key)
    if m is None:
        b = bytearray(b"\xff" * end)
        varying = [(l3 + 4, 2)] if v6 else [(l3 + 2, 4), (l3 + 10, 2)]
        for o, ln in [*varying, (l4 + 4, 4), (l4 + 13, 1), (l4 + 16, 2)]:
            b[o : o + ln] = bytes(ln)
        m = int.from_bytes(b, "big")
        if len(_MASKS) < 64:  # a few header layouts in use, never many
            _MASKS[key] = m
    return m


def _field(head: int, end: int, offset: int, size: int) -> int:
    return (head >> ((end - offset - size) * 8)) & ((1 << (size * 8)) - 1)


def _read_segment(frame: bytes, l4: int) -> _Seg | None:
    """The first segment of a run, checked in full."""
    n = len(frame)
    if n < l4 + 20 or l4 < 34:
        return None
    etype = _H.unpack_from(frame, 12)[0]
    l3 = 14
    for _ in range(2):
        if etype not in _VLAN_TPIDS:
            break
        if n < l3 + 4:
            return None
        etype = _H.unpack_from(frame, l3 + 2)[0]
        l3 += 4
    doff = (frame[l4 + 12] >> 4) * 4
    end = l4 + doff
    if doff < 20 or end >= n:
        return None
    if etype == _ETH_P_IP:
        vihl = frame[l3]
        if (
            vihl >> 4 != 4
            or l3 + (vihl & 0x0F) * 4 != l4
            or frame[l3 + 9] != _IPPROTO_TCP
            or _H.unpack_from(frame, l3 + 2)[0] != n - l3  # no Ethernet padding
            or frame[l3 + 6] & 0x3F
            or frame[l3 + 7]  # a fragment: never
        ):
            return None
        return _Seg(frame, l3, False, end, l4)
    if etype == _ETH_P_IPV6:
        if (
            l4 != l3 + 40
            or frame[l3] >> 4 != 6
            or frame[l3 + 6] != _IPPROTO_TCP
            or _H.unpack_from(frame, l3 + 4)[0] != n - l4
        ):
            return None
        return _Seg(frame, l3, True, end, l4)
    return None


def _merge(group: list[_Seg | bytes], l4: int) -> tuple[VnetHeader, bytes]:
    first = group[0]
    assert isinstance(first, _Seg)
    l3, end = first.l3, first.end
    last = group[-1]
    last_flags = (last.frame if isinstance(last, _Seg) else last)[l4 + 13]
    head = bytearray(first.frame[:end])
    parts = [memoryview(first.frame)[end:]]
    parts += [memoryview(f)[end:] for f in group[1:] if isinstance(f, bytes)]
    total = sum(map(len, parts))
    tcp_len = end - l4 + total
    if first.v6:
        _H.pack_into(head, l3 + 4, tcp_len)
        pseudo = _sum16(bytes(head[l3 + 8 : l3 + 40]))
        gso = GSO_TCPV6
    else:
        _H.pack_into(head, l3 + 2, l4 - l3 + tcp_len)
        head[l3 + 10 : l3 + 12] = b"\0\0"
        _H.pack_into(head, l3 + 10, 0xFFFF - _fold(_sum16(bytes(head[l3:l4]))))
        pseudo = _sum16(bytes(head[l3 + 12 : l3 + 20]))
        gso = GSO_TCPV4
    head[l4 + 13] = first.flags | (last_flags & _LAST_ONLY)
    # partial, as a GSO superframe's: the pseudo-header sum for the whole TCP length
    _H.pack_into(head, l4 + 16, _fold(pseudo + _IPPROTO_TCP + tcp_len))
    if first.flags & _CWR:
        gso |= GSO_ECN
    frame = b"".join([bytes(head), *parts])
    return VnetHeader(NEEDS_CSUM, gso, end, first.size, l4, _TCP_CSUM_OFFSET), frame


def coalesce(hdr: VnetHeader, frames: list[bytes]) -> list[tuple[VnetHeader, bytes]]:
    """The inverse of `segment`, for frames that all carry vnet header `hdr`: runs of
    consecutive segments of one TCP flow joined back into GSO superframes, the rest
    as they are, in order.

    A run is what the kernel's GRO would join: the same headers but for IP
    length/id/checksum and TCP sequence/flags/checksum, contiguous sequence
    numbers, every segment but the last of one size (the superframe's
    gso_size, at least MIN_GSO_SIZE), the same flags but CWR only on the
    first and FIN or PSH only on the last, no SYN, RST or URG, at most 64 KiB
    of IP packet. The superframe's TCP checksum is left partial (NEEDS_CSUM),
    as the segments' are.
    """
    if (
        hdr.gso_type != 0
        or not hdr.needs_csum
        or hdr.csum_offset != _TCP_CSUM_OFFSET
        or len(frames) < 2
    ):
        return [(hdr, f) for f in frames]
    l4 = hdr.csum_start
    out: list[tuple[VnetHeader, bytes]] = []
    group: list[_Seg | bytes] = []  # the first segment read in full, the others as bytes
    first: _Seg | None = None
    ip_len = seq = 0

    def flush() -> None:
        if len(group) == 1:
            out.append((hdr, frames_of(group[0])))
        elif group:
            out.append(_merge(group, l4))
        group.clear()

    def frames_of(x: _Seg | bytes) -> bytes:
        return x.frame if isinstance(x, _Seg) else x

    # bit positions, in a header read as one integer, of the sequence number and the
    # IP length field of the run's first segment (the same for the run)
    seq_shift = len_shift = len_base = 0
    for f in frames:
        if first is not None and group:
            end, n = first.end, len(f)
            if n > end:
                head = int.from_bytes(f[:end], "big")
                size = n - end
                flags = f[l4 + 13]
                if (
                    not (head ^ first.head) & first.mask
                    and (head >> seq_shift) & 0xFFFFFFFF == seq
                    and size <= first.size
                    and not (flags ^ first.flags) & ~(_LAST_ONLY | _CWR)
                    and not flags & _CWR
                    and ip_len + size <= 0xFFFF
                    and (head >> len_shift) & 0xFFFF == n - len_base
                ):
                    group.append(f)
                    ip_len += size
                    seq = (seq + size) & 0xFFFFFFFF
                    if size < first.size or flags & _LAST_ONLY:
                        flush()
                    continue
            flush()
        s = _read_segment(f, l4)
        if s is None or s.flags & _NO_MERGE or s.size < MIN_GSO_SIZE:
            out.append((hdr, f))
            continue
        first = s
        seq_shift = (s.end - l4 - 8) * 8
        len_shift = (s.end - s.l3 - (6 if s.v6 else 4)) * 8
        len_base = l4 if s.v6 else s.l3
        group.append(s)
        ip_len = (s.end - s.l3 - (40 if s.v6 else 0)) + s.size
        seq = (_field(s.head, s.end, l4 + 4, 4) + s.size) & 0xFFFFFFFF
        if s.flags & _LAST_ONLY:
            flush()
    flush()
    return out


_VNET = struct.Struct("<BBHHHH")


def tcp_span(hdr: bytes, frame: bytes) -> tuple[bytes, int, int] | None:
    """(ports, sequence number, payload length) of a TCP frame behind vnet header bytes
    `hdr` that mark its TCP checksum as partial (the way a local stack hands over TCP);
    None for anything else. `ports` is the TCP header's first 4 bytes."""
    if len(hdr) != _VNET.size:
        return None
    flags, _gso, _hl, _gs, l4, off = _VNET.unpack(hdr)
    if not flags & NEEDS_CSUM or off != _TCP_CSUM_OFFSET or len(frame) < l4 + 20:
        return None
    size = len(frame) - l4 - (frame[l4 + 12] >> 4) * 4
    if size <= 0:
        return None
    return frame[l4 : l4 + 4], _I.unpack_from(frame, l4 + 4)[0], size
