"""NodeCore.datagrams (a GRO batch from one sender) delivers what datagram() one by one does."""

from __future__ import annotations

import os
import time

from agent_inproc import network_toml

from lanspan.config import generate_private_key, parse_network
from lanspan.node.core import PARITY_GROUP, NodeCore, TcpSegmentation
from lanspan.node.outputs import Send, Write
from lanspan.wire import vnet

MAC1 = bytes([2, 0, 0, 0, 0, 1])
MAC2 = bytes([2, 0, 0, 0, 0, 2])
ADDR = {"n1": ("127.0.0.1", 40001), "n2": ("127.0.0.1", 40002)}
NOW = 10.0


def pair(
    tcp_segmentation: TcpSegmentation = "loss", parity_group: int = PARITY_GROUP
) -> tuple[NodeCore, NodeCore]:
    keys = {"n1": generate_private_key(), "n2": generate_private_key()}
    net = parse_network(network_toml(keys, {n: a[1] for n, a in ADDR.items()}), "t.toml")
    a, b = (
        NodeCore(
            net,
            n,
            keys[n],
            random_bytes=os.urandom,
            wall_time=time.time,
            now=0.0,
            tcp_segmentation=tcp_segmentation,
            parity_group=parity_group,
        )
        for n in ("n1", "n2")
    )
    nodes = {"n1": a, "n2": b}
    now = 0.0
    for _ in range(20):  # handshakes and the first probes, delivered one by one
        now += 0.5
        for node in nodes.values():
            node.handle_timer(now)
        moved = True
        while moved:
            moved = False
            for name, other in (("n1", "n2"), ("n2", "n1")):
                for out in nodes[name].take_outputs():
                    if isinstance(out, Send):
                        for d in out.batch:
                            nodes[other].datagram(d, ADDR[name], now)
                            moved = True
    # both learn each other's guest MAC
    a.frame_from_port("g", vnet.ZERO_HEADER + b"\xff" * 6 + MAC1 + b"\x88\xb5" + bytes(46), NOW)
    for out in a.take_outputs():
        if isinstance(out, Send):
            b.datagrams(list(out.batch), ADDR["n1"], NOW)
    b.take_outputs()
    # and n1 n2's (its frames to MAC2 are unicast, not unknown unicast held back)
    b.frame_from_port("g", vnet.ZERO_HEADER + b"\xff" * 6 + MAC2 + b"\x88\xb5" + bytes(46), NOW)
    for out in b.take_outputs():
        if isinstance(out, Send):
            a.datagrams(list(out.batch), ADDR["n2"], NOW)
    a.take_outputs()
    return a, b


def superframe() -> bytes:
    """A TCPv4 GSO superframe n1's guest sends n2's: 46 fragments on the wire."""
    hdr = vnet.VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 66, 1348, 34, 16).to_bytes()
    return hdr + MAC2 + MAC1 + b"\x08\x00" + os.urandom(65000)


def sealed(a: NodeCore, data: bytes) -> list[bytes]:
    a.frame_from_port("g", data, NOW)
    sends = [o for o in a.take_outputs() if isinstance(o, Send)]
    assert len(sends) == 1
    return list(sends[0].batch)


def writes(b: NodeCore) -> list[bytes]:
    return [o.data for o in b.take_outputs() if isinstance(o, Write)]


def test_a_superframe_in_one_batch_is_written_whole() -> None:
    a, b = pair()
    data = superframe()
    batch = sealed(a, data)
    assert len(batch) > 40
    assert b.datagrams(batch, ADDR["n1"], NOW) is True
    assert writes(b) == [data]
    assert not any(r.startswith("reassembly.") for r in b.drop_counts())


def test_a_superframe_over_two_batches_or_reordered_is_written_whole() -> None:
    a, b = pair()
    for cut in (1, 20, 45):
        data = superframe()
        batch = sealed(a, data)
        assert b.datagrams(batch[:cut], ADDR["n1"], NOW)
        assert writes(b) == []
        assert b.datagrams(batch[cut:], ADDR["n1"], NOW)
        assert writes(b) == [data]
    data = superframe()
    batch = sealed(a, data)
    batch[3], batch[4] = batch[4], batch[3]
    assert b.datagrams(batch, ADDR["n1"], NOW)
    assert writes(b) == [data]


def test_small_frames_and_a_superframe_in_one_batch_keep_their_order() -> None:
    a, b = pair()
    small = [vnet.ZERO_HEADER + MAC2 + MAC1 + b"\x88\xb5" + bytes([i]) * 60 for i in range(3)]
    big = superframe()
    batch = sealed(a, small[0]) + sealed(a, big) + sealed(a, small[1]) + sealed(a, small[2])
    assert b.datagrams(batch, ADDR["n1"], NOW)
    assert writes(b) == [small[0], big, small[1], small[2]]


def test_a_lost_fragment_writes_nothing_and_a_replayed_batch_is_dropped() -> None:
    a, b = pair()
    batch = sealed(a, superframe())
    assert b.datagrams(batch[:10] + batch[11:], ADDR["n1"], NOW)
    assert writes(b) == []
    replays = b.drop_counts().get("session.replay", 0)
    assert b.datagrams(batch[:10], ADDR["n1"], NOW) is False
    assert writes(b) == []
    assert b.drop_counts()["session.replay"] == replays + 10


def test_junk_in_a_batch_is_dropped_and_the_rest_delivered() -> None:
    a, b = pair()
    data = superframe()
    batch = sealed(a, data)
    assert b.datagrams([os.urandom(100), *batch, b"\x04" + bytes(40)], ADDR["n1"], NOW)
    assert writes(b) == [data]


def test_a_superframe_cut_by_a_lone_datagram_or_a_timer_round_still_completes() -> None:
    a, b = pair()
    big = superframe()
    small = vnet.ZERO_HEADER + MAC2 + MAC1 + b"\x88\xb5" + bytes(60)
    batch = sealed(a, big)
    assert b.datagrams(batch[:30], ADDR["n1"], NOW)
    (lone,) = sealed(a, small)
    assert b.datagram(lone, ADDR["n1"], NOW)  # the run goes to the reassembler first
    assert b.datagrams(batch[30:], ADDR["n1"], NOW)
    assert writes(b) == [small, big]  # as one by one: the small frame was whole first
    big = superframe()
    batch = sealed(a, big)
    assert b.datagrams(batch[:30], ADDR["n1"], NOW)
    b.handle_timer(NOW + 0.1)
    assert b.datagrams(batch[30:], ADDR["n1"], NOW + 0.1)
    assert [w for w in writes(b) if len(w) > 1000] == [big]
