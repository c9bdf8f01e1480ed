"""A node's offer to relay (`_direct_reach`) is kept peer by peer as sessions, paths
and RTTs change; at every step it must equal a scan of every peer's paths."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from test_node_twocore import Link, Net

from lanspan.addr import Addr
from lanspan.node.core import NodeCore


@dataclass
class SlowLink(Link):
    """A Link whose datagrams arrive 1-3 steps after they were sent (RTTs move)."""

    held: list[tuple[int, tuple[Addr, Addr, bytes]]] = field(default_factory=list)
    steps: int = 0

    def take(self) -> list[tuple[Addr, Addr, bytes]]:
        self.steps += 1
        for item in super().take():
            self.held.append((self.steps + self.rng.randint(1, 3), item))
        due = [item for at, item in self.held if at <= self.steps]
        self.held = [(at, item) for at, item in self.held if at > self.steps]
        return due


def scanned(node: NodeCore) -> dict[str, int]:
    """What the node should offer: every peer with a session and an up direct path, at
    the RTT of its active path if that is one, else of the first such path."""
    out = {}
    for peer in node._up:
        paths = node._paths[peer]
        a = paths.active
        if a is not None and a.up and a.relay is None:
            out[peer] = round((a.rtt or 0.0) * 1e6)
            continue
        for p in paths.paths:
            if p.up and p.relay is None:
                out[peer] = round((p.rtt or 0.0) * 1e6)
                break
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_kept_offer_equals_a_scan_through_cuts_blocks_and_loss(seed: int) -> None:
    rng = random.Random(seed)
    net = Net(6, SlowLink(random.Random(seed), loss=0.05), nat=frozenset({"n6"}))
    net.chatty = {"n1"}  # busy peers: fast probing, more RTT samples
    addrs = list(net.addr.values())
    changed = 0
    rtts: set[int] = set()
    for second in range(90):
        if second % 5 == 0:  # a new fault picture every 5 s
            net.link.cut = {a for a in addrs if rng.random() < 0.15}
            net.link.blocked = {
                frozenset((a, b)) for a in addrs for b in addrs if a < b and rng.random() < 0.1
            }
        for _ in range(100):
            net.step(0.01)
            for node in net.nodes.values():
                assert node._direct_reach() == scanned(node)
        changed += sum(len(scanned(node)) for node in net.nodes.values())
        rtts |= {rtt for node in net.nodes.values() for rtt in scanned(node).values()}
    net.link.cut, net.link.blocked = set(), set()
    net.run(15.0)
    for node in net.nodes.values():
        assert node._direct_reach() == scanned(node)
    # the faults did make the offers move (so the comparison was not of two empty dicts)
    assert changed > 0 and len(rtts) > 20
    assert all(len(scanned(net.nodes[n])) >= 4 for n in ("n1", "n2", "n3"))


def test_offers_expire_when_due_and_not_before() -> None:
    """`expire` skips its scan while no offer can be old enough; it must still find each
    offer as it comes due, also after re-offers (newer) and withdrawals."""
    from lanspan.node.relays import ReachTable

    t = ReachTable(expiry=10.0)
    t.offer("r1", {"a": 1}, 0.0)
    t.offer("r2", {"b": 1}, 5.0)
    assert t.expire(9.0) == []
    assert t.expire(10.5) == ["r1"]
    assert t.expire(14.0) == []
    assert t.expire(15.5) == ["r2"]
    t.offer("r3", {"a": 1}, 20.0)
    t.offer("r3", {"a": 2}, 28.0)  # refreshed: due from 38 on, not 30
    assert t.expire(31.0) == []
    t.offer("r4", {"a": 1}, 29.0)
    t.forget("r4")
    assert t.expire(38.5) == ["r3"]
    assert t.expire(1000.0) == [] and not t.offers
