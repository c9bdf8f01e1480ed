"""A completed handshake proves its path: the initiator's, where the response came from
(the responder answers from the address our initiation reached); the responder's, where
its response went, when the confirmation comes from there. That path is up from the
session's start, with the handshake's RTT, and is not probed for it."""

from __future__ import annotations

import random

from idlesim import EventNet
from test_node_twocore import Link, Net

from lanspan.node.outputs import Log


def _logs(net: Net, node: str, kind: str) -> list[Log]:
    return [x for x in net.logged[node] if x.kind == kind]


def test_both_ends_paths_are_up_with_the_session_and_need_no_probe() -> None:
    net = Net(2, Link(random.Random(3)), nat=frozenset({"n2"}))  # n2 dials; n1 cannot
    net.run(0.3)
    assert net.up("n1", "n2") and net.up("n2", "n1")
    for node, peer, role in (("n2", "n1", "initiator"), ("n1", "n2", "responder")):
        assert [x.fields["detail"] for x in _logs(net, node, "session_up")] == [role]
        ups = _logs(net, node, "path_up")
        assert len(ups) == 1 and ups[0].fields["detail"].endswith("handshake"), ups
        active = net.nodes[node]._paths[peer].active
        assert active is not None and active.up and active.rtt is not None
        assert not active.outstanding and len(active.results) == 0  # never probed for it


def test_a_lost_response_proves_nothing() -> None:
    """The initiator's path comes up only once a response arrives; before, it stays
    down however many initiations went out."""
    net = Net(2, Link(random.Random(4)))
    a, b = net.addr["n1"], net.addr["n2"]
    net.link.blocked = {frozenset((a, b))}
    net.run(2.0)
    for n, peer in (("n1", "n2"), ("n2", "n1")):
        assert not net.up(n, peer)
        assert not any(p.up for p in net.nodes[n]._paths[peer].paths)
        assert not _logs(net, n, "path_up")
    net.link.blocked = set()
    net.run(3.0)
    assert net.up("n1", "n2") and net.up("n2", "n1")
    assert all(net.nodes[n]._paths[p].direct_up() for n, p in (("n1", "n2"), ("n2", "n1")))


def test_a_cold_start_needs_no_probe_to_bring_paths_up() -> None:
    """32 nodes on a fake underlay with latency: every pair's path is up from its
    handshake alone (two probes and two acks a pair before, one each with only the
    initiator's path proven)."""
    from lanspan.node import core as core_mod
    from lanspan.wire import control

    probes = 0
    real = core_mod.NodeCore._control

    def counting(self, peer, body, src, now, relayed_=False):  # type: ignore[no-untyped-def]
        nonlocal probes
        msg = control.parse_untrusted(body)
        if isinstance(msg, control.Probe) and not msg.ack:
            probes += 1
        return real(self, peer, body, src, now, relayed_)

    core_mod.NodeCore._control = counting  # type: ignore[method-assign]
    try:
        net = EventNet(32)
        net.run(4.0)
    finally:
        core_mod.NodeCore._control = real  # type: ignore[method-assign]
    pairs = 32 * 31 // 2
    assert all(net.up(a, b) for a in net.nodes for b in net.nodes if a != b)
    assert all(node._paths[p].direct_up() for node in net.nodes.values() for p in node._paths)
    assert probes <= pairs * 0.1, probes
