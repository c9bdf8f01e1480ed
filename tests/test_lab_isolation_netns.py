"""The lab's isolation check on real namespaces: a leak is reported as one, an isolated
address is not, over IPv4 and IPv6, with all targets echoed at once; the check takes
away exactly the routes it added."""

from __future__ import annotations

import pytest

from lanspan.lab import netns
from lanspan.lab.checks import isolation
from lanspan.lab.topology import GuestIf, GuestPlan, Plan

pytestmark = pytest.mark.netns


def _guest(name: str, ns: str, segment: str, *addresses: str) -> GuestPlan:
    return GuestPlan(
        name=name,
        node="n",
        ns=ns,
        kind="access",
        interfaces=(GuestIf("eth0", segment, None, addresses, 1400),),
    )


def test_isolation_finds_the_leaks_and_only_those() -> None:
    if netns.require_root():
        pytest.skip("needs root")
    with netns.Netns() as n:
        a, b, d, e = n.add("a"), n.add("b"), n.add("d"), n.add("e")
        for ns in (a, b, d):
            n.exec(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
        # a and b share a wire although they are on two segments: a leak, both ways
        n.veth(a, "eth0", b, "eth0")
        n.veth(d, "eth0", e, "eth0")  # d's wire leads to a namespace with no address
        for ns, cidr in ((a, "198.18.99.1/24"), (a, "fd00:99::1/64"), (b, "198.18.98.7/24"),
                         (b, "fd00:98::7/64"), (d, "198.18.98.9/24")):  # fmt: skip
            n.address(ns, "eth0", cidr)
        guests = (
            _guest("ga", a, "lan", "198.18.99.1/24", "fd00:99::1/64"),
            _guest("gb", b, "api", "198.18.98.7/24"),
            _guest("gc", b, "api", "fd00:98::7/64"),  # b's wire, IPv6 only
            _guest("gd", d, "api", "198.18.98.9/24"),  # alone on its own wire
        )
        plan = Plan("t", n.prefix, "", (), (), (), (), guests, (), "")
        routes_before = {ns: n.exec(ns, ["ip", "-4", "route"]).stdout for ns in (a, b, d)}
        got = {c["name"]: c["passed"] for c in isolation(plan)}
        assert got == {
            "lan -/-> api: ga -> 198.18.98.7": False,
            "lan -/-> api: ga -> fd00:98::7": False,
            "lan -/-> api: ga -> 198.18.98.9": True,
            "api -/-> lan: gb -> 198.18.99.1": False,
            "api -/-> lan: gc -> fd00:99::1": False,
            "api -/-> lan: gd -> 198.18.99.1": True,
        }
        for ns in (a, b, d):
            assert n.exec(ns, ["ip", "-4", "route"]).stdout == routes_before[ns]
        assert "fd00:98::7 dev" not in n.exec(a, ["ip", "-6", "route"]).stdout
