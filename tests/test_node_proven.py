"""A handshake we initiated, answered, proves the path the response came from (the
responder answers from the address our initiation reached): that path is up from the
session's start, with the handshake's RTT, and is not probed for it."""

from __future__ import annotations

import random

from idlesim import EventNet
from test_node_twocore import Link, Net

from lanspan.node.outputs import Log


def _logs(net: Net, node: str, kind: str) -> list[Log]:
    return [x for x in net.logged[node] if x.kind == kind]


def test_the_initiators_path_is_up_with_its_session_and_the_responder_probes() -> None:
    net = Net(2, Link(random.Random(3)), nat=frozenset({"n2"}))  # n2 dials; n1 cannot
    net.run(0.3)
    assert net.up("n1", "n2") and net.up("n2", "n1")
    roles = {n: next(x.fields["detail"] for x in _logs(net, n, "session_up")) for n in ("n1", "n2")}
    initiator = next(n for n, role in roles.items() if role == "initiator")
    responder = next(n for n, role in roles.items() if role == "responder")
    ups = _logs(net, initiator, "path_up")
    assert len(ups) == 1 and ups[0].fields["detail"].endswith("handshake"), ups
    peer = net.nodes[initiator]._paths[responder]
    assert peer.active is not None and peer.active.up and peer.active.rtt is not None
    assert not peer.active.outstanding  # no probe was needed for it
    # the responder has no such proof (its answer may not have arrived): it probes
    r_up = _logs(net, responder, "path_up")
    assert len(r_up) == 1 and "handshake" not in r_up[0].fields["detail"], r_up
    assert net.nodes[responder]._paths[initiator].active.up  # type: ignore[union-attr]


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


def test_a_cold_start_probes_each_new_pair_once() -> None:
    """32 nodes on a fake underlay with latency: each pair's first probe exchange is
    the responder's alone (one probe and one ack a pair; two each before)."""
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
    assert probes <= pairs * 1.1, probes
