"""Site members tell each other their data plane per segment (PLANES), through lossy links."""

from __future__ import annotations

import random

from test_node_twocore import Link, Net

from lanspan.node.outputs import Log


def heard(net: Net, name: str) -> list[dict[str, object]]:
    return [dict(out.fields) for out in net.logged[name] if out.kind == "peer_planes"]


def test_site_members_learn_each_others_planes_once() -> None:
    net = Net(3, Link(random.Random(11)), sites={"n1": "dc", "n2": "dc", "n3": "far"})
    net.nodes["n1"].set_planes({"a": "kernel", "b": "userspace"})
    net.nodes["n2"].set_planes({"a": "kernel", "b": "kernel"})
    net.nodes["n3"].set_planes({"a": "userspace", "b": "userspace"})
    net.run(40.0)  # several probe rounds: told once, never again while nothing changes
    assert heard(net, "n2") == [{"peer": "n1", "planes": {"a": "kernel", "b": "userspace"}}]
    assert heard(net, "n1") == [{"peer": "n2", "planes": {"a": "kernel", "b": "kernel"}}]
    assert heard(net, "n3") == []  # another site: nothing to agree on, nothing sent
    assert net.nodes["n1"]._planes_acked == {"n2"}


def test_planes_arrive_through_heavy_loss() -> None:
    net = Net(
        2, Link(random.Random(12), loss=0.5, dup=0.2, reorder=0.3), sites={"n1": "dc", "n2": "dc"}
    )
    net.nodes["n1"].set_planes({"a": "userspace"})
    net.nodes["n2"].set_planes({"a": "kernel"})
    net.run(120.0)
    assert heard(net, "n2") == [{"peer": "n1", "planes": {"a": "userspace"}}]
    assert heard(net, "n1") == [{"peer": "n2", "planes": {"a": "kernel"}}]


def test_a_restarted_member_is_told_again_and_a_change_is_logged() -> None:
    net = Net(2, Link(random.Random(13)), sites={"n1": "dc", "n2": "dc"})
    net.nodes["n1"].set_planes({"a": "kernel"})
    net.nodes["n2"].set_planes({"a": "kernel"})
    net.run(5.0)
    assert heard(net, "n1") == [{"peer": "n2", "planes": {"a": "kernel"}}]
    # n2 says something else now (as an agent restarted with another choice would)
    net.nodes["n2"].set_planes({"a": "userspace"})
    net.run(40.0)
    assert heard(net, "n1")[-1] == {"peer": "n2", "planes": {"a": "userspace"}}
    assert len(heard(net, "n1")) == 2


def test_planes_from_outside_the_site_are_dropped_and_counted() -> None:
    net = Net(2, Link(random.Random(14)), sites={"n1": "dc", "n2": "far"})
    net.run(2.0)
    # n2 (another site) sends PLANES anyway: n1 counts and ignores it
    n2 = net.nodes["n2"]
    n2._planes = (("a", "userspace"),)
    n2._send_planes("n1", net.now)
    net.run(0.5)
    assert heard(net, "n1") == []
    assert net.nodes["n1"].drop_counts()["node.planes_outside_site"] == 1
    assert not any(isinstance(o, Log) and o.kind == "peer_planes" for o in net.logged["n1"])
