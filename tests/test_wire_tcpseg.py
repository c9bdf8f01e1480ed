"""Software TCP segmentation: the segments are what the kernel's GSO would send.

Checked against an independent reading of each segment (ipaddress and
plain sums, not the module's own helpers): payloads concatenate to the
original, sequence numbers follow, IP lengths and ids are right, flags sit
only where they belong, the IPv4 header checksum verifies and the partial TCP
checksum, completed as a device would, verifies with the pseudo-header.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from lanspan.wire import vnet
from lanspan.wire.tcpseg import coalesce, segment

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128


def csum(data: bytes) -> int:
    """Internet checksum (RFC 1071) of `data`, the plain way."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def superframe(
    v6: bool,
    tags: int,
    ip_opts: bytes,
    tcp_opts: bytes,
    flags: int,
    seq: int,
    ident: int,
    data: bytes,
    mss: int,
) -> tuple[vnet.VnetHeader, bytes, int, int]:
    """A TCP GSO superframe as a guest's kernel hands it over; (hdr, frame, l3, l4)."""
    eth = bytes.fromhex("020000000002020000000001")
    for t in range(tags):
        eth += struct.pack("!HH", 0x88A8 if t == 0 and tags == 2 else 0x8100, 10 + t)
    doff = 5 + len(tcp_opts) // 4
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 12345, doff << 4, flags, 502, 0, 0)
    tcp += tcp_opts
    if v6:
        src = ipaddress.IPv6Address("fd00::1").packed
        dst = ipaddress.IPv6Address("fd00::2").packed
        ip = struct.pack("!IHBB", 6 << 28, len(tcp) + len(data), 6, 64) + src + dst
        etype, gso = 0x86DD, vnet.GSO_TCPV6
    else:
        ihl = 5 + len(ip_opts) // 4
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            ihl * 4 + len(tcp) + len(data),
            ident,
            0x4000,
            64,
            6,
            0,
            bytes([198, 18, 10, 1]),
            bytes([198, 18, 10, 2]),
        )
        ip += ip_opts
        etype, gso = 0x0800, vnet.GSO_TCPV4
    l3 = len(eth) + 2
    l4 = l3 + len(ip)
    frame = eth + struct.pack("!H", etype) + ip + tcp + data
    hdr = vnet.VnetHeader(vnet.NEEDS_CSUM, gso, l4 + len(tcp), mss, l4, 16)
    return hdr, frame, l3, l4


@st.composite
def superframes(draw: st.DrawFn) -> tuple[vnet.VnetHeader, bytes, int, int, bool, int]:
    v6 = draw(st.booleans())
    tags = draw(st.integers(0, 2))
    ip_opts = b"" if v6 else b"\x01" * 4 * draw(st.integers(0, 10))
    tcp_opts = b"\x01" * 4 * draw(st.integers(0, 10))
    flags = ACK | draw(st.sampled_from([0, PSH, FIN, PSH | FIN, CWR, CWR | PSH, ECE | PSH | FIN]))
    seq = draw(st.integers(0, 2**32 - 1))
    ident = draw(st.integers(0, 0xFFFF))
    mss = draw(st.integers(64, 1460))
    size = draw(st.integers(1, 20 * mss))
    data = draw(st.binary(min_size=size, max_size=size))
    hdr, frame, l3, l4 = superframe(v6, tags, ip_opts, tcp_opts, flags, seq, ident, data, mss)
    return hdr, frame, l3, l4, v6, flags


@given(superframes())
def test_segments_are_valid_tcp_and_add_up_to_the_superframe(
    case: tuple[vnet.VnetHeader, bytes, int, int, bool, int],
) -> None:
    hdr, frame, l3, l4, v6, flags0 = case
    segs = segment(hdr, frame)
    assert segs is not None
    doff = (frame[l4 + 12] >> 4) * 4
    payload = frame[l4 + doff :]
    mss = hdr.gso_size
    assert len(segs.frames) == -(-len(payload) // mss)
    sv = segs.vnet
    assert sv.flags == vnet.NEEDS_CSUM and sv.gso_type == vnet.GSO_NONE
    assert (sv.csum_start, sv.csum_offset) == (l4, 16)
    seq0 = struct.unpack_from("!I", frame, l4 + 4)[0]
    ident0 = struct.unpack_from("!H", frame, l3 + 4)[0]
    got = b""
    last = len(segs.frames) - 1
    for i, f in enumerate(segs.frames):
        vnet.validate_untrusted(sv, len(f))
        assert f[: l3 - 2] == frame[: l3 - 2]  # MACs and tags unchanged
        data = f[l4 + doff :]
        assert len(data) == (mss if i < last else len(payload) - last * mss)
        tcp_len = len(f) - l4
        if v6:
            assert struct.unpack_from("!H", f, l3 + 4)[0] == tcp_len
            pseudo = f[l3 + 8 : l3 + 40] + struct.pack("!IxxxB", tcp_len, 6)
            assert f[l3 + 6] == 6 and f[l3 : l3 + 4] == frame[l3 : l3 + 4]
        else:
            assert struct.unpack_from("!H", f, l3 + 2)[0] == len(f) - l3
            assert struct.unpack_from("!H", f, l3 + 4)[0] == (ident0 + i) & 0xFFFF
            assert csum(f[l3:l4]) == 0  # the IPv4 header checksum verifies
            assert f[l3 + 6 : l3 + 10] == frame[l3 + 6 : l3 + 10]  # DF, TTL, protocol
            pseudo = f[l3 + 12 : l3 + 20] + struct.pack("!xBH", 6, tcp_len)
        seq = struct.unpack_from("!I", f, l4 + 4)[0]
        assert seq == (seq0 + len(got)) & 0xFFFFFFFF
        fl = f[l4 + 13]
        want = flags0
        if i:
            want &= ~CWR
        if i != last:
            want &= ~(FIN | PSH)
        assert fl == want
        # everything else of the TCP header as in the superframe (ports, ack, window, options)
        assert f[l4 : l4 + 4] == frame[l4 : l4 + 4]
        assert f[l4 + 8 : l4 + 13] == frame[l4 + 8 : l4 + 13]
        assert f[l4 + 14 : l4 + 16] == frame[l4 + 14 : l4 + 16]
        assert f[l4 + 18 : l4 + doff] == frame[l4 + 18 : l4 + doff]
        # NEEDS_CSUM, completed as a device does: the sum from csum_start, the field
        # holding the pseudo-header part, stored inverted; then it verifies in full.
        done = bytearray(f)
        struct.pack_into("!H", done, l4 + 16, csum(f[l4:]))
        assert csum(pseudo + bytes(done[l4:])) == 0
        got += data
    assert got == payload


@given(superframes())
def test_a_frame_segments_only_when_each_segment_fits(
    case: tuple[vnet.VnetHeader, bytes, int, int, bool, int],
) -> None:
    hdr, frame, _l3, l4, _v6, _ = case
    end = l4 + (frame[l4 + 12] >> 4) * 4
    assert segment(hdr, frame, max_frame=end + hdr.gso_size - 1) is None
    segs = segment(hdr, frame, max_frame=end + hdr.gso_size)
    assert segs is not None and max(map(len, segs.frames)) <= end + hdr.gso_size


def test_other_frames_are_left_alone() -> None:
    hdr, frame, l3, l4 = superframe(False, 0, b"", b"", ACK, 1, 1, bytes(3000), 1000)
    assert segment(hdr, frame) is not None
    # UDP GSO, no GSO, no NEEDS_CSUM: not ours
    for gso in (vnet.GSO_UDP_L4, vnet.GSO_NONE):
        assert segment(vnet.VnetHeader(vnet.NEEDS_CSUM, gso, 0, 1000, l4, 16), frame) is None
    assert segment(vnet.VnetHeader(0, vnet.GSO_TCPV4, 0, 1000, l4, 16), frame) is None
    # a vnet header that does not describe the frame: TCPV6 on IPv4, csum_start off the
    # TCP header, a UDP checksum offset, a truncated frame, no payload
    assert segment(vnet.VnetHeader(1, vnet.GSO_TCPV6, 0, 1000, l4, 16), frame) is None
    assert segment(vnet.VnetHeader(1, vnet.GSO_TCPV4, 0, 1000, l4 + 4, 16), frame) is None
    assert segment(vnet.VnetHeader(1, vnet.GSO_TCPV4, 0, 1000, l4, 6), frame) is None
    assert segment(hdr, frame[: l4 + 10]) is None
    assert segment(hdr, frame[: l4 + 20]) is None
    not_tcp = bytearray(frame)
    not_tcp[l3 + 9] = 17
    assert segment(hdr, bytes(not_tcp)) is None


def test_ecn_superframe_keeps_cwr_on_the_first_segment_only() -> None:
    _hdr, frame, _l3, l4 = superframe(True, 1, b"", b"", ACK | CWR | ECE, 7, 0, bytes(2500), 1000)
    segs = segment(vnet.VnetHeader(1, vnet.GSO_TCPV6 | vnet.GSO_ECN, 0, 1000, l4, 16), frame)
    assert segs is not None
    assert [f[l4 + 13] for f in segs.frames] == [ACK | CWR | ECE, ACK | ECE, ACK | ECE]


def without_sums(hdr: vnet.VnetHeader, frame: bytes, l3: int, v6: bool) -> bytes:
    """`frame` with its IPv4 header checksum and TCP checksum zeroed."""
    f = bytearray(frame)
    if not v6:
        f[l3 + 10 : l3 + 12] = b"\0\0"
    f[hdr.csum_start + 16 : hdr.csum_start + 18] = b"\0\0"
    return bytes(f)


@given(superframes())
def test_coalesce_joins_the_segments_back_into_the_superframe(
    case: tuple[vnet.VnetHeader, bytes, int, int, bool, int],
) -> None:
    hdr, frame, l3, l4, v6, flags0 = case
    segs = segment(hdr, frame)
    assert segs is not None
    got = coalesce(segs.vnet, segs.frames)
    if len(segs.frames) == 1:
        assert got == [(segs.vnet, segs.frames[0])]
        return
    if hdr.gso_size < vnet.MIN_GSO_SIZE:
        return
    assert len(got) == 1
    h, f = got[0]
    end = l4 + (frame[l4 + 12] >> 4) * 4
    ecn = vnet.GSO_ECN if flags0 & CWR else 0
    assert h == vnet.VnetHeader(vnet.NEEDS_CSUM, hdr.gso_type | ecn, end, hdr.gso_size, l4, 16)
    assert without_sums(h, f, l3, v6) == without_sums(hdr, frame, l3, v6)
    if not v6:
        assert csum(f[l3:l4]) == 0
    # the partial TCP checksum holds the pseudo-header sum for the whole TCP length
    tcp_len = len(f) - l4
    pseudo = (
        f[l3 + 8 : l3 + 40] + struct.pack("!IxxxB", tcp_len, 6)
        if v6
        else f[l3 + 12 : l3 + 20] + struct.pack("!xBH", 6, tcp_len)
    )
    assert struct.unpack_from("!H", f, l4 + 16)[0] == (~csum(pseudo)) & 0xFFFF or csum(pseudo) == 0


@given(superframes(), st.data())
def test_coalesce_keeps_order_and_bytes_with_segments_lost_or_mixed(
    case: tuple[vnet.VnetHeader, bytes, int, int, bool, int], data: st.DataObject
) -> None:
    hdr, frame, _l3, l4, _v6, _ = case
    segs = segment(hdr, frame)
    assert segs is not None
    # some lost, an unrelated frame in between: every payload byte still there, in order
    kept = [f for f in segs.frames if data.draw(st.booleans())]
    pos = data.draw(st.integers(0, len(kept)))
    other = b"\x02" * 12 + b"\x88\xb5" + bytes(60)
    frames = [*kept[:pos], other, *kept[pos:]]
    got = coalesce(segs.vnet, frames)
    end = l4 + (frame[l4 + 12] >> 4) * 4
    assert [f for h, f in got if f == other] == [other]
    flat = []
    for h, f in got:
        if f == other:
            continue
        vnet.validate_untrusted(h, len(f))
        sub = segment(h, f) if h.is_gso else None
        flat += sub.frames if sub is not None else [f]
    assert [x[end:] for x in flat] == [x[end:] for x in kept]
    assert [x[l4 + 4 : l4 + 8] for x in flat] == [x[l4 + 4 : l4 + 8] for x in kept]


def test_coalesce_does_not_join_other_flows_or_gaps() -> None:
    hdr, frame, _l3, l4 = superframe(False, 0, b"", b"", ACK, 1, 1, bytes(3000), 1000)
    segs = segment(hdr, frame)
    assert segs is not None
    a, b, c = segs.frames
    other_port = bytearray(b)
    other_port[l4 + 1] ^= 1
    for frames in ([a, c], [a, bytes(other_port)], [b, a]):
        assert coalesce(segs.vnet, frames) == [(segs.vnet, f) for f in frames]
    assert len(coalesce(segs.vnet, [a, b, c])) == 1
