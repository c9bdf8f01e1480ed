"""TCP superframes cross the mesh as their TCP segments when the path loses datagrams.

One lost datagram then costs one segment, and the receiver still writes
superframes: the segments of one GRO batch are joined back (tcpseg.coalesce).
"""

from __future__ import annotations

import struct

from test_node_batch import ADDR, MAC1, MAC2, NOW, pair, writes
from test_wire_tcpseg import ACK, PSH, superframe

from lanspan.node.core import NodeCore
from lanspan.node.outputs import Send
from lanspan.wire import payload, vnet
from lanspan.wire.tcpseg import segment

MSS = 1348


def tcp_superframe(seq: int = 1000, size: int = 47 * MSS) -> tuple[bytes, int]:
    """vnet header + a TCPv4 GSO superframe from n1's guest to n2's; and its L4 offset."""
    hdr, frame, _l3, l4 = superframe(
        False,
        0,
        b"",
        b"\x01" * 12,
        ACK | PSH,
        seq,
        7,
        bytes(range(256)) * (size // 256) + bytes(size % 256),
        MSS,
    )
    return hdr.to_bytes() + MAC2 + MAC1 + frame[12:], l4


def sent(a: NodeCore, data: bytes) -> list[bytes]:
    a.frame_from_port("g", data, NOW)
    return [d for o in a.take_outputs() if isinstance(o, Send) for d in o.batch]


def payload_of(data: bytes, l4: int) -> bytes:
    frame = data[vnet.VNET_HDR_LEN :]
    return frame[l4 + (frame[l4 + 12] >> 4) * 4 :]


def seq_of(data: bytes, l4: int) -> int:
    return int(struct.unpack_from("!I", data, vnet.VNET_HDR_LEN + l4 + 4)[0])


def lossy(core: NodeCore, peer: str) -> None:
    """One probe of `peer`'s active path went unanswered."""
    active = core._paths[peer].active
    assert active is not None
    active.results.append(False)


def test_without_loss_a_superframe_travels_as_fragments() -> None:
    a, b = pair()
    data, _ = tcp_superframe()
    batch = sent(a, data)
    assert b.datagrams(batch, ADDR["n1"], NOW)
    assert writes(b) == [data]


def test_with_loss_each_datagram_carries_one_segment_and_the_receiver_joins_them() -> None:
    a, b = pair()
    lossy(a, "n2")
    data, l4 = tcp_superframe()
    batch = sent(a, data)
    assert len(batch) == 47  # one per segment; as fragments it was 45
    assert b.datagrams(batch, ADDR["n1"], NOW)
    (w,) = writes(b)
    hdr = vnet.parse_untrusted(w)
    assert hdr.gso_type == vnet.GSO_TCPV4 and hdr.gso_size == MSS and hdr.needs_csum
    assert payload_of(w, l4) == payload_of(data, l4)
    assert seq_of(w, l4) == seq_of(data, l4)
    # the superframe the receiver writes segments as the sender's did
    segs = segment(hdr, w[vnet.VNET_HDR_LEN :])
    orig = segment(vnet.parse_untrusted(data), data[vnet.VNET_HDR_LEN :])
    assert segs is not None and orig is not None and segs.frames == orig.frames


def test_a_lost_segment_costs_that_segment_only() -> None:
    a, b = pair()
    lossy(a, "n2")
    data, l4 = tcp_superframe()
    batch = sent(a, data)
    assert b.datagrams(batch[:20] + batch[21:], ADDR["n1"], NOW)
    out = writes(b)
    assert len(out) == 2  # the segments before the gap, and those after it
    got = b"".join(payload_of(w, l4) for w in out)
    whole = payload_of(data, l4)
    assert got == whole[: 20 * MSS] + whole[21 * MSS :]
    assert seq_of(out[1], l4) == seq_of(data, l4) + 21 * MSS
    assert b._reassembly.next_timer() is None
    assert not any(r.startswith("reassembly.") for r in b.drop_counts())


def test_segments_spread_over_batches_are_written_as_they_come() -> None:
    a, b = pair()
    lossy(a, "n2")
    data, l4 = tcp_superframe()
    batch = sent(a, data)
    for part in (batch[:1], batch[1:30], batch[30:]):
        assert b.datagrams(part, ADDR["n1"], NOW)
    out = writes(b)
    assert [len(payload_of(w, l4)) for w in out] == [MSS, 29 * MSS, 17 * MSS]
    assert b"".join(payload_of(w, l4) for w in out) == payload_of(data, l4)


def test_other_frames_keep_today_s_path() -> None:
    a, b = pair()
    lossy(a, "n2")
    # not TCP: an offloaded UDP GSO superframe is still fragmented and rebuilt whole
    udp = vnet.VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_UDP_L4, 42, 1300, 34, 6).to_bytes()
    data = udp + MAC2 + MAC1 + b"\x08\x00" + bytes(20000)
    batch = sent(a, data)
    assert len(batch) == -(-len(data) // (a._max_plaintext - payload.HEADER_LEN - 4))
    assert b.datagrams(batch, ADDR["n1"], NOW)
    assert writes(b) == [data]


def test_loss_mode_keeps_segmenting_for_a_while_after_the_last_loss_seen() -> None:
    from lanspan.node.core import LOSSY_HOLD

    a, _ = pair()
    frames = [tcp_superframe(seq=1000 + i * 47 * MSS)[0] for i in range(3)]  # new data
    lossy(a, "n2")
    assert len(sent(a, frames[0])) == 47
    active = a._paths["n2"].active
    assert active is not None
    active.results.clear()  # the window shows no loss any more: still segments
    a.frame_from_port("g", frames[1], NOW + LOSSY_HOLD - 1)
    assert sum(len(o.batch) for o in a.take_outputs() if isinstance(o, Send)) == 47
    a.frame_from_port("g", frames[2], NOW + LOSSY_HOLD + 1)
    assert sum(len(o.batch) for o in a.take_outputs() if isinstance(o, Send)) == 45


def test_never_and_always() -> None:
    a, _ = pair()
    data, _ = tcp_superframe()
    a._tcp_segmentation = "always"  # as NodeCore(tcp_segmentation=...) sets it
    assert len(sent(a, data)) == 47
    a._tcp_segmentation = "never"
    lossy(a, "n2")
    assert len(sent(a, data)) == 45


def test_a_local_tcp_retransmission_marks_the_peer_lossy_at_once() -> None:
    a, _ = pair()
    first, _ = tcp_superframe(seq=1000)
    after, _ = tcp_superframe(seq=1000 + 47 * MSS)
    assert len(sent(a, first)) == 45 and len(sent(a, after)) == 45  # new data: fragments
    # the guest's TCP resends bytes of the first superframe: something was lost
    again, _ = tcp_superframe(seq=1000 + 5 * MSS, size=MSS)
    sent(a, again)
    later, _ = tcp_superframe(seq=1000 + 94 * MSS)
    assert len(sent(a, later)) == 47


def test_sequence_numbers_that_wrap_are_new_data() -> None:
    a, _ = pair()
    for seq in (2**32 - 47 * MSS - 10, (2**32 - 10) & 0xFFFFFFFF, 47 * MSS - 10):
        data, _ = tcp_superframe(seq=seq)
        assert len(sent(a, data)) == 45
