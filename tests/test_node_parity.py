"""With tcp_segmentation "parity", a peer showing loss gets its superframes as
fragments followed by one XOR parity per interleaved group: one lost datagram
per group is rebuilt, the superframe written whole; without loss nothing changes."""

from __future__ import annotations

import os
import struct
import time

from agent_inproc import network_toml
from test_node_batch import ADDR, NOW, pair, writes
from test_node_tcpseg import lossy, sent, tcp_superframe

from lanspan.config import generate_private_key, parse_network
from lanspan.dataplane.udp import chunks
from lanspan.node.core import _PARITY, PARITY_GROUP, ZERO_VNET, NodeCore
from lanspan.wire import payload, vnet


def test_without_loss_no_parity_is_sent() -> None:
    a, b = pair("parity", 11)
    data, _ = tcp_superframe()
    batch = sent(a, data)
    assert len(batch) == 45
    assert b.datagrams(batch, ADDR["n1"], NOW)
    assert writes(b) == [data]
    assert "parity_sent" not in a.status(NOW).counters


def test_with_loss_parity_follows_in_one_more_gso_send() -> None:
    a, b = pair("parity", 11)
    lossy(a, "n2")
    data, _ = tcp_superframe()
    batch = sent(a, data)
    assert len(batch) == 45 + 4  # 45 fragments (each 4 bytes shorter), 4 groups
    assert [len(c) for c in chunks(batch)] == [45, 4]
    assert len({len(d) for d in batch[-5:]}) == 2  # parities as long as the full fragments
    assert a.status(NOW).counters["parity_sent"] == 4
    assert b.datagrams(batch, ADDR["n1"], NOW)
    assert writes(b) == [data]
    counts = b.status(NOW).counters
    assert counts["parity_unneeded"] == 4 and "parity_recovered" not in counts
    assert b._reassembly.next_timer() is None and not reassembly_drops(b)


def test_one_lost_datagram_per_group_is_rebuilt() -> None:
    a, b = pair("parity", 11)
    lossy(a, "n2")
    data, _ = tcp_superframe()
    batch = sent(a, data)
    kept = [d for i, d in enumerate(batch) if i not in (2, 17, 44, 43)]  # groups 2, 1, 0, 3
    for part in (kept[:20], kept[20:]):  # over two GRO batches
        assert b.datagrams(part, ADDR["n1"], NOW)
    assert writes(b) == [data]
    assert b.status(NOW).counters["parity_recovered"] == 4
    assert b._reassembly.next_timer() is None and not reassembly_drops(b)


def test_a_lost_parity_costs_nothing() -> None:
    a, b = pair("parity", 11)
    lossy(a, "n2")
    data, _ = tcp_superframe()
    batch = sent(a, data)
    assert b.datagrams(batch[:45] + batch[46:], ADDR["n1"], NOW)
    assert writes(b) == [data] and not reassembly_drops(b)


def test_two_lost_in_one_group_drop_the_superframe_and_count_it() -> None:
    a, b = pair("parity", 11)
    lossy(a, "n2")
    data, _ = tcp_superframe()
    batch = sent(a, data)
    assert b.datagrams([d for i, d in enumerate(batch) if i not in (3, 7)], ADDR["n1"], NOW)
    assert writes(b) == []
    b.handle_timer(NOW + 2.0)
    assert b.drop_counts()["reassembly.unrecoverable"] == 1


def test_by_default_a_lossy_peer_gets_one_parity_per_five_fragments() -> None:
    keys = {"n1": generate_private_key(), "n2": generate_private_key()}
    net = parse_network(network_toml(keys, {n: a[1] for n, a in ADDR.items()}), "t.toml")
    core = NodeCore(net, "n1", keys["n1"], random_bytes=os.urandom, wall_time=time.time, now=0.0)
    assert core._tcp_segmentation == "parity" and core._parity_group == 5
    a, _ = pair("parity", PARITY_GROUP)
    lossy(a, "n2")
    data, _ = tcp_superframe()
    assert len(sent(a, data)) == 45 + 9


def test_crafted_parity_is_dropped_and_counted_never_raised() -> None:
    a, b = pair("parity", 11)
    lossy(a, "n2")
    data, _ = tcp_superframe()
    batch = sent(a, data)
    # two lost in group 1: the superframe waits, its parity taken
    b.datagrams([d for i, d in enumerate(batch) if i not in (1, 5)], ADDR["n1"], NOW)
    fid, count = a._frag_id, 45  # the superframe just sent
    head = payload.header(payload.FLAG_I | payload.FLAG_F | payload.FLAG_P | payload.FLAG_O, 10)
    tail = bytes(4 + 1300)
    crafted = [
        head + struct.pack("!HBBBBH", fid, 0, count, 4, 1, 100) + tail[4:],  # version 1
        head + struct.pack("!HBBBBH", fid, 9, count, 4, 0, 100) + tail[4:],  # group >= groups
        head + struct.pack("!HBBBBH", fid, 0, count, 3, 0, 100) + tail[4:],  # other groups
    ]
    sealed = a._sessions.seal_many("n2", crafted, NOW)
    assert sealed is not None
    b.datagrams(sealed, ADDR["n1"], NOW)
    drops = b.drop_counts()
    assert drops["payload.parity_version"] == 1 and drops["payload.bad_parity"] == 1
    assert drops["reassembly.inconsistent"] == 1
    assert writes(b) == []


def reassembly_drops(core: NodeCore) -> dict[str, int]:
    drops = core.drop_counts().items()
    return {k: v for k, v in drops if k.startswith(("reassembly.", "payload."))}


def test_a_superframe_that_parity_would_push_past_the_fragment_cap_goes_without() -> None:
    a, _ = pair("parity", 5)
    lossy(a, "n2")
    chunk = a._max_plaintext - payload.HEADER_LEN - payload.FRAG_HEADER_LEN
    body = bytes(64 * chunk - 10)  # 64 fragments; 4 bytes shorter each, it would be 65
    frame = body[: len(body) - vnet.VNET_HDR_LEN]
    out = a._payloads(10, frame, ZERO_VNET, frame, a._max_plaintext, _PARITY)
    assert len(out) == 64
    assert not any(payload.parse_untrusted(p).is_parity for p in out)
