"""lanspan.switch's fast path: a cached answer is always the rules' answer.

A switch with the cache and one without it are fed the same events (frames
from ports and peers, peers up and down, time passing) and must answer and
count alike; then one test per event that must invalidate a cached answer,
and the cache never carries a frame across segments.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from test_switch import API, LAN, STATIC_P1, A, B, C, eth, switch

from lanspan.switch import Forward, Switch
from lanspan.switch import core as switch_core
from lanspan.wire.ethernet import BROADCAST, push_tag


class _NoCache(dict):  # type: ignore[type-arg]
    def __setitem__(self, key: object, value: object) -> None:
        pass


def uncached(ageing: float = 300.0) -> Switch:
    sw = switch(ageing)
    sw._hot_out = _NoCache()  # type: ignore[assignment]
    sw._hot_in = _NoCache()  # type: ignore[assignment]
    return sw


def same(a: Forward | None, b: Forward | None) -> bool:
    return a == b


def test_cached_and_uncached_agree_on_random_events() -> None:
    rng = random.Random(14)
    macs = [A, B, C, bytes.fromhex("020000000e05"), STATIC_P1]
    ports = ["vm1", "vm2", "vm3", "trunk1", "lan0"]
    peers = ["p1", "p2", "p3"]
    hits = 0
    for _ in range(30):
        fast, slow = switch(ageing=5.0), uncached(ageing=5.0)
        now = 1.0
        for _ in range(300):
            r = rng.random()
            if r < 0.45:
                port = rng.choice(ports)
                f = eth(rng.choice(macs), rng.choice(macs))
                if port == "trunk1" and rng.random() < 0.3:
                    f = push_tag(f, rng.choice([10, 11]))
                before = len(fast._hot_out)
                got = fast.from_port(port, f, now)
                hits += len(fast._hot_out) == before and got is not None and bool(got.peers)
                assert same(got, slow.from_port(port, f, now))
            elif r < 0.85:
                peer, vni = rng.choice(peers), rng.choice([LAN, API])
                f = eth(rng.choice(macs), rng.choice(macs))
                assert same(fast.from_peer(peer, vni, f, now), slow.from_peer(peer, vni, f, now))
            elif r < 0.92:
                peer, up = rng.choice(peers), rng.random() < 0.6
                fast.set_peer_up(peer, up)
                slow.set_peer_up(peer, up)
            else:
                now += rng.choice([0.1, 1.0, 3.0, 6.0])
                fast.handle_timer(now)
                slow.handle_timer(now)
            now += 0.01
            assert fast.drops == slow.drops
            assert fast.counters == slow.counters
            assert fast.mac_table(now=now) == slow.mac_table(now=now)
            assert fast.mac_counts() == Counter(e.segment for e in fast.mac_table())
            assert fast.next_timer() == slow.next_timer()
    assert hits > 100  # the fast path was taken, not only filled


def _learned(sw: Switch, now: float = 1.0) -> bytes:
    """B behind p1 and A behind vm1 in lan; returns the frame vm1 -> B, now cached."""
    sw.from_peer("p1", LAN, eth(BROADCAST, B), now)
    f = eth(B, A)
    assert sw.from_port("vm1", f, now) == Forward(LAN, f, (), ("p1",))
    assert sw._hot_out  # filled
    return f


def test_cached_answer_used_and_refreshes_learning() -> None:
    sw = switch(ageing=10.0)
    f = _learned(sw)
    assert sw.from_port("vm1", f, 8.0) == Forward(LAN, f, (), ("p1",))
    assert sw.counters["unicast"] == 2
    # A was refreshed at 8.0 by the cached answer: it does not age out at 11.0
    sw.handle_timer(11.0)
    assert any(e.mac == "02:00:00:00:0a:01" for e in sw.mac_table(now=11.0))


def test_dst_move_invalidates() -> None:
    sw = switch()
    f = _learned(sw)
    sw.from_peer("p2", LAN, eth(BROADCAST, B), 2.0)  # B moved to p2
    assert sw.from_port("vm1", f, 2.0) == Forward(LAN, f, (), ("p2",))


def test_dst_moved_to_the_sending_port_invalidates() -> None:
    sw = switch()
    f = _learned(sw)
    sw.from_port("vm1", eth(BROADCAST, B), 2.0)  # B now behind vm1 itself
    assert sw.from_port("vm1", f, 2.1) is None
    assert sw.drops["switch.same_port"] == 1


def test_src_move_invalidates() -> None:
    sw = switch()
    f = _learned(sw)
    sw.from_port("vm3", eth(BROADCAST, A), 2.0)  # A moved to vm3
    fwd = sw.from_port("vm1", f, 2.1)  # A back at vm1: a move, counted as one
    assert fwd == Forward(LAN, f, (), ("p1",))
    assert sw.counters["mac_moves"] == 2


def test_ageing_invalidates() -> None:
    sw = switch(ageing=5.0)
    f = _learned(sw)
    sw.from_port("vm1", eth(BROADCAST, A), 5.0)  # A stays fresh, B (seen at 1.0) ages
    fwd = sw.from_port("vm1", f, 6.5)
    assert fwd is not None and fwd.peers == ("p1", "p2")  # flooded: B unknown
    assert sw.counters["aged"] == 1


def test_peer_down_invalidates() -> None:
    sw = switch()
    f = _learned(sw)
    sw.set_peer_up("p1", False)
    fwd = sw.from_port("vm1", f, 2.0)
    assert fwd is not None and fwd.peers == ("p2",)  # B flushed with p1: flooded to p2


def test_peer_down_invalidates_a_static_destination() -> None:
    sw = switch()
    f = eth(STATIC_P1, A)
    assert sw.from_port("vm1", f, 1.0) == Forward(LAN, f, (), ("p1",))
    assert sw._hot_out
    sw.set_peer_up("p1", False)  # nothing learned behind p1 to flush
    assert sw.from_port("vm1", f, 2.0) is None
    assert sw.drops["switch.peer_down"] == 1


def test_peer_in_cached_answer_never_crosses_segments() -> None:
    sw = switch()
    _learned(sw)  # B behind p1 in lan, cached for vm1
    f = eth(B, A)
    fwd = sw.from_port("vm2", f, 2.0)  # the same bytes on an api port
    assert fwd is not None and fwd.vni == API
    assert fwd.peers == ("p1", "p3")  # flooded in api: B is not known there
    # the same bytes from a peer in another segment are not delivered to lan's port
    sw.from_port("vm1", eth(BROADCAST, C), 2.0)
    g = eth(C, B)
    assert sw.from_peer("p1", LAN, g, 2.0) is not None and sw._hot_in
    fwd = sw.from_peer("p1", API, g, 2.1)
    assert fwd is not None and "vm1" not in dict(fwd.ports)


def test_receive_side_cached_and_invalidated() -> None:
    sw = switch()
    sw.from_port("vm1", eth(BROADCAST, A), 1.0)
    g = eth(A, B)
    assert sw.from_peer("p1", LAN, g, 1.0) == Forward(LAN, g, (("vm1", g),), ())
    assert sw.from_peer("p1", LAN, g, 1.1) == Forward(LAN, g, (("vm1", g),), ())
    sw.from_port("vm3", eth(BROADCAST, A), 1.2)  # A moved to vm3
    assert sw.from_peer("p1", LAN, g, 1.3) == Forward(LAN, g, (("vm3", g),), ())


def test_short_tagged_frame_from_peer_never_hits() -> None:
    sw = switch()
    sw.from_port("vm1", eth(BROADCAST, A), 1.0)
    g = push_tag(eth(A, B), 10)
    sw.from_peer("p1", LAN, g, 1.0)
    assert sw.from_peer("p1", LAN, g[:16], 1.1) is None
    assert sw.drops["ethernet.short_tagged_frame"] == 1


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    sw = switch()
    monkeypatch.setattr(switch_core, "MAX_HOT", 8)
    sw.from_peer("p1", LAN, eth(BROADCAST, B), 1.0)
    for i in range(40):
        src = bytes([2, 0, 0, 1, 0, i])
        sw.from_port("vm1", eth(B, src), 1.0)
    assert len(sw._hot_out) <= 8
