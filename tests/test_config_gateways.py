"""Gateways, floating addresses, filtering, pools and DHCP in the network file."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanspan.config import HostPort, parse_network
from lanspan.config.model import Pool
from lanspan.config.pools import PoolExhausted, assign, home_offset, parse_range
from lanspan.errors import ConfigError

BASE = (Path(__file__).parent / "data" / "config" / "gateways.toml").read_text()


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_network(text, "net.toml")
    return ei.value.problems


def edit(old: str, new: str, count: int = 1) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, count)


def bad(old: str, new: str, count: int = 1) -> list[str]:
    return problems(edit(old, new, count))


# ------------------------------------------------------------------ the model


def test_base_builds_gateways_floats_allows_pools_dhcp() -> None:
    net = parse_network(BASE, "net.toml")
    lan, _ = net.gateways
    assert lan.segment == "lan" and lan.nodes == ("gra-gw1", "rbx-gw1")
    assert [str(a) for a in lan.addresses] == ["198.18.10.1/24", "fd00:10::1/64"]
    assert (lan.preempt, lan.advert_interval, lan.vrid) == (False, 0.2, 1)
    assert net.segment("lan").gateway == IPv4Address("198.18.10.1")  # filled from the gateway
    web, edge = net.floating
    assert (web.segment, web.uplink, web.vrid, web.preempt) == ("lan", None, 2, True)
    assert (edge.segment, edge.uplink, edge.vrid) == (None, "wan", 2)
    assert net.allows[0].ports == ((443, 443), (8000, 8100))
    assert net.allows[0].families == (4,)  # api has no ipv6
    assert net.allows[1].to_kind == "internet"
    (dhcp,) = net.dhcp
    assert dhcp.range4 == (IPv4Address("198.18.10.100"), IPv4Address("198.18.10.199"))
    assert dhcp.ipv6 == "slaac" and dhcp.hosts[0].mac == bytes.fromhex("02aa00000010")
    assert net.node("gra-gw1").uplinks[0].interface == "eth0"


def test_auto_addresses_come_from_the_pools_and_fill_the_host_port() -> None:
    net = parse_network(BASE, "net.toml")
    port = net.node("gra-gw1").port("lan0")
    assert isinstance(port, HostPort) and port.auto
    v4, v6 = port.addresses
    assert v4.network == net.segment("lan").ipv4 and v6.network == net.segment("lan").ipv6
    assert IPv4Address("198.18.10.33") <= v4.ip <= IPv4Address("198.18.10.62")
    got = {(a.node, a.address.version): a.address for a in net.assignments}
    assert got[("gra-gw1", 4)] == v4.ip and got[("gra-gw1", 6)] == v6.ip
    assert len(set(got.values())) == len(got) == 6


def test_auto_address_does_not_depend_on_the_order_or_presence_of_other_nodes() -> None:
    before = parse_network(BASE, "x").node("gra-gw1").port("lan0")
    # drop gra-hv1 (and the floating address it holds), then put rbx-gw1 first
    head, _, _ = BASE.partition('[[node]]\nname = "gra-hv1"')
    text = head.replace('nodes = ["gra-hv1", "rbx-gw1"]', 'nodes = ["rbx-gw1"]')
    gra, _, rbx = text.partition('[[node]]\nname = "rbx-gw1"')
    first, _, gra_node = gra.partition('[[node]]\nname = "gra-gw1"')
    text = first + '[[node]]\nname = "rbx-gw1"' + rbx + '[[node]]\nname = "gra-gw1"' + gra_node
    net = parse_network(text, "x")
    assert [n.name for n in net.nodes] == ["rbx-gw1", "gra-gw1"]
    assert net.node("gra-gw1").port("lan0") == before


# ------------------------------------------------------------------ pools, pure


POOL = Pool("lan", IPv4Address("198.18.10.32"), IPv4Address("198.18.10.47"))


def test_collisions_are_resolved_by_probing_and_reported() -> None:
    names = [f"n{i}" for i in range(12)]
    placed = assign("acme", POOL, names)
    assert len({p.address for p in placed}) == 12
    homes = {n: home_offset("acme", "lan", n, POOL.size) for n in names}
    shared = [p for p in placed if p.collided_with]
    assert shared, "12 names in 16 addresses collide (fixed by the names chosen)"
    for p in placed:
        assert p.home == IPv4Address(int(POOL.first) + homes[p.name])
        assert set(p.collided_with) == {
            m for m in names if m != p.name and homes[m] == homes[p.name]
        }
        if not p.collided_with and p.address != p.home:
            assert p.home in {q.address for q in placed}  # only moved because it was taken


def test_taken_addresses_are_skipped_and_exhaustion_raises() -> None:
    taken = [IPv4Address("198.18.10.32") + i for i in range(10)]
    placed = assign("acme", POOL, ["a", "b", "c", "d", "e", "f"], taken)
    assert not {p.address for p in placed} & set(taken)
    with pytest.raises(PoolExhausted) as ei:
        assign("acme", POOL, [f"n{i}" for i in range(7)], taken)
    assert (ei.value.wanted, ei.value.free) == (7, 6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=14, unique=True))
def test_assignment_is_independent_of_order(names: list[str]) -> None:
    shuffled = list(names)
    random.Random(len(names)).shuffle(shuffled)
    assert assign("acme", POOL, names) == assign("acme", POOL, shuffled)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=10, unique=True),
    st.text("xyz", min_size=1, max_size=4),
)
def test_a_newcomer_moves_only_those_it_collides_with(names: list[str], new: str) -> None:
    before = {p.name: p for p in assign("acme", POOL, names)}
    after = {p.name: p for p in assign("acme", POOL, [*names, new])}
    home_new = after[new].home
    for n, p in before.items():
        if p.address == p.home and after[n].address != p.address:
            # a name at its home loses it only to a newcomer with that home, sorting first
            assert p.home == home_new and new < n
    # and removing the newcomer again gives back exactly the old assignment
    assert {p.name: p for p in assign("acme", POOL, names)} == before


def test_parse_range() -> None:
    assert parse_range("198.18.10.0/30") == (IPv4Address("198.18.10.1"), IPv4Address("198.18.10.2"))
    assert parse_range("fd00::/126") == (IPv6Address("fd00::1"), IPv6Address("fd00::3"))
    assert parse_range("198.18.10.5-198.18.10.9") == (
        ip_address("198.18.10.5"),
        ip_address("198.18.10.9"),
    )
    assert parse_range("198.18.10.9-198.18.10.5") == (
        "starts after it ends (198.18.10.9 > 198.18.10.5)"
    )
    assert parse_range("198.18.10.1-fd00::1") == "mixes IPv4 and IPv6"


# ------------------------------------------------------------------ errors, naming the field


def test_gateway_on_a_node_that_does_not_carry_the_segment() -> None:
    text = edit(
        'nodes = ["gra-gw1", "rbx-gw1"]\npreempt = false\nadvert_interval',
        'nodes = ["gra-gw1", "gra-hv1"]\npreempt = false\nadvert_interval',
    )
    text = text.replace(
        'segments = ["lan", "api"]\n\n  [[node.port]]\n  kind = "access"',
        'segments = ["api"]\n\n  [[node.port]]\n  kind = "access"',
    )
    msgs = problems(text)
    assert (
        'gateway[0] nodes[1]: node "gra-hv1" does not carry segment "lan" — add it to the node\'s'
        " segments and give the node a host port in it" in msgs
    )


def test_gateway_on_a_node_without_a_host_port_in_the_segment() -> None:
    text = BASE.replace(
        'nodes = ["gra-gw1", "rbx-gw1"]\npreempt = false\n\n',
        'nodes = ["gra-gw1", "gra-hv1"]\npreempt = false\n\n',
        1,
    )
    assert problems(text) == [
        'gateway[1] nodes[1]: node "gra-hv1" has no host port in segment "api" — add [[node.port]]'
        ' kind = "host" with an address in the segment'
    ]


def test_gateway_unknown_node_and_duplicate() -> None:
    assert bad('nodes = ["gra-gw1", "rbx-gw1"]', 'nodes = ["gra-gw1", "rbx-gw2", "gra-gw1"]') == [
        'gateway[0] nodes[1]: "rbx-gw2" is not a defined node — did you mean "rbx-gw1"?',
        'gateway[0] nodes[2]: "gra-gw1" is listed twice',
    ]


def test_virtual_address_outside_the_segment() -> None:
    assert bad(
        'address = ["198.18.10.1", "fd00:10::1"]', 'address = ["198.18.12.1", "fd00:10::1"]'
    ) == [
        'gateway[0] address[0]: 198.18.12.1 is outside the segment\'s ipv4 198.18.10.0/24 of "lan"'
    ]
    assert bad('address = ["198.18.11.1"]', 'address = ["fd00:11::1"]') == [
        'gateway[1] address[0]: fd00:11::1 is ipv6 but segment "api" has no ipv6 subnet'
        " — add ipv6 = ... to the segment"
    ]


def test_virtual_address_taken_by_a_host_or_in_a_pool() -> None:
    assert bad('address = ["198.18.11.1"]', 'address = ["198.18.11.2"]') == [
        'gateway[1] address[0]: 198.18.11.2 is already used by node "gra-gw1" port "api0"'
        " address[0]"
    ]
    assert bad('address = ["198.18.11.1"]', 'address = ["198.18.11.70"]') == [
        "gateway[1] address[0]: 198.18.11.70 is inside pool[2] (198.18.11.64-198.18.11.127 of "
        'segment "api"), whose addresses go to `auto` host ports — pick one outside the pool'
    ]


def test_segment_gateway_must_be_the_virtual_address() -> None:
    text = edit('ipv4 = "198.18.11.0/24"', 'ipv4 = "198.18.11.0/24"\ngateway = "198.18.11.254"')
    assert problems(text) == [
        'segment "api" gateway: 198.18.11.254 is not an address of gateway[1] (198.18.11.1) — drop'
        " the segment's gateway field or make it the virtual address"
    ]


def test_preempt_is_required_and_advert_interval_checked() -> None:
    assert bad(
        'nodes = ["gra-gw1", "rbx-gw1"]\npreempt = false\n\n', 'nodes = ["gra-gw1", "rbx-gw1"]\n\n'
    ) == ['gateway[1]: missing required field "preempt"']
    assert bad("advert_interval = 0.2", "advert_interval = 0.005") == [
        "gateway[0] advert_interval: 0.005 is outside 0.01..40.95 seconds (VRRPv3)"
    ]
    assert bad("advert_interval = 0.2", "advert_interval = 0.125") == [
        "gateway[0] advert_interval: 0.125 is not a whole number of centiseconds — write 0.12"
    ]


def test_vrid_unique_per_segment() -> None:
    text = edit('nodes = ["gra-hv1", "rbx-gw1"]', 'nodes = ["gra-hv1", "rbx-gw1"]\nvrid = 1')
    assert problems(text) == [
        'floating "web" vrid: 1 is already used by gateway[0] in segment "lan" — every VRRP'
        " instance of one segment needs its own vrid"
    ]


def test_floating_address_on_an_uplink_the_node_lacks() -> None:
    assert bad(
        'nodes = ["gra-gw1", "rbx-gw1"]\npreempt = false\n\n[[allow]]',
        'nodes = ["gra-gw1", "gra-hv1"]\npreempt = false\n\n[[allow]]',
    ) == [
        'floating "edge" nodes[1]: node "gra-hv1" has no uplink "wan" — add [[node.uplink]]'
        ' name = "..." interface = "..." to the node'
    ]


def test_floating_needs_segment_or_uplink_and_a_prefix_on_uplinks() -> None:
    assert bad('uplink = "wan"', 'uplink = "wan"\nsegment = "lan"') == [
        'floating "edge": give either segment (a service address in a segment) or uplink'
        " (a public address on the nodes' uplink), not both or neither"
    ]
    assert bad('address = ["198.19.9.100/24"]', 'address = ["198.19.9.100"]') == [
        'floating "edge" address[0]: "198.19.9.100" has no prefix length — write e.g. '
        '"198.19.1.100/24"'
    ]


def test_overlapping_pools_and_one_pool_per_family() -> None:
    text = edit(
        '[[pool]]\nsegment = "api"',
        '[[pool]]\nsegment = "lan"\nrange = "198.18.10.40-198.18.10.90"\n\n'
        '[[pool]]\nsegment = "api"',
    )
    assert problems(text) == [
        'pool[2] segment: segment "lan" already has an ipv4 pool, pool[0] (198.18.10.32/27 of'
        ' segment "lan") — one pool per family and segment'
    ]


def test_pool_overlapping_a_static_address() -> None:
    assert bad('range = "198.18.11.64-198.18.11.127"', 'range = "198.18.11.0/25"') == [
        'pool[2] range: "198.18.11.0/25" contains 198.18.11.2, the static address of node '
        '"gra-gw1" port "api0" address[0] — move the pool or that address'
    ]


def test_pool_outside_the_segment() -> None:
    assert bad('range = "198.18.11.64-198.18.11.127"', 'range = "198.18.12.64-198.18.12.127"') == [
        'pool[2] range: "198.18.12.64-198.18.12.127" is not inside 198.18.11.0/24 of segment "api"'
    ]


def test_exhausted_pool() -> None:
    text = edit('range = "198.18.10.32/27"', 'range = "198.18.10.32-198.18.10.33"')
    assert problems(text) == [
        'pool[0] (198.18.10.32-198.18.10.33 of segment "lan"): the pool is exhausted — 3 host ports'
        " want an address, 2 are free; widen the range"
    ]


def test_auto_without_a_pool() -> None:
    text = edit('  address = ["198.18.11.2/24"]', '  address = "auto"')
    text = text.replace('[[pool]]\nsegment = "api"\nrange = "198.18.11.64-198.18.11.127"\n', "")
    assert problems(text) == [
        'node "gra-gw1" port "api0" address: "auto" needs a [[pool]] in segment "api" — add'
        ' [[pool]] segment = "api" range = "..."'
    ]


def test_address_string_other_than_auto() -> None:
    assert bad('  address = "auto"', '  address = "198.18.10.5/24"') == [
        'node "gra-gw1" port "lan0" address: "198.18.10.5/24" is neither a list of addresses nor'
        ' "auto" — write ["198.18.10.5/24"] or "auto"'
    ]


def test_allow_rules() -> None:
    assert bad(
        'from = "lan"\nto = "api"\nproto = "tcp"', 'from = "lan"\nto = "api"\nproto = "sctp"'
    ) == ['allow[0] proto: "sctp" is not one of "tcp", "udp", "icmp", "any"']
    assert bad('ports = [443, "8000-8100"]', 'ports = [443, "8100-8000", 70000]') == [
        'allow[0] ports[1]: "8100-8000" is outside 1..65535 (or starts after it ends)',
        "allow[0] ports[2]: 70000 is outside 1..65535 (or starts after it ends)",
    ]
    assert bad('proto = "icmp"', 'proto = "icmp"\nports = [1]') == [
        'allow[2] ports: ports need proto = "tcp" or "udp", not "icmp"'
    ]
    assert bad('to = "internet"', 'to = "wan2"') == [
        'allow[1] to: "wan2" is not a segment, an uplink of every gateway of "api" (node "gra-gw1"'
        ' lacks it) or "internet"'
    ]
    assert bad(
        'from = "lan"\nto = "api"\nproto = "tcp"', 'from = "lab"\nto = "api"\nproto = "tcp"'
    ) == ['allow[0] from: "lab" is not a defined segment — did you mean "lan"?']


def test_allow_between_segments_with_different_gateways() -> None:
    text = BASE.replace(
        'nodes = ["gra-gw1", "rbx-gw1"]\npreempt = false\n\n',
        'nodes = ["rbx-gw1", "gra-gw1"]\npreempt = false\n\n',
        1,
    )
    msgs = problems(text)
    assert msgs[0] == (
        'allow[0] to: the gateways of "lan" ["gra-gw1", "rbx-gw1"] and of "api" ["rbx-gw1",'
        ' "gra-gw1"] differ — give both segments the same gateway nodes in the same order, so'
        " both directions cross one node"
    )


def test_dhcp_rules() -> None:
    assert bad('range = "198.18.10.100-198.18.10.199"', 'range = "198.18.10.30-198.18.10.40"') == [
        'dhcp[0] range: "198.18.10.30-198.18.10.40" overlaps pool[0] (198.18.10.32/27 of segment'
        ' "lan")'
    ]
    assert bad('address = "198.18.10.10"', 'address = "198.18.10.80"') == [
        'dhcp[0] host[0] address: 198.18.10.80 is already used by floating "web" address[0]'
    ]
    assert bad("lease_time = 600", "lease_time = 60") == [
        "dhcp[0] lease_time: 60 is below 120 seconds (dnsmasq's minimum)"
    ]
    assert bad('ipv6 = "slaac"', 'ipv6 = "dhcpv6"') == [
        'dhcp[0] range6: missing — "dhcpv6" hands out addresses from range6'
    ]
    # a static lease may sit inside the range
    assert parse_network(edit('address = "198.18.10.10"', 'address = "198.18.10.150"'), "x").dhcp


def test_host_address_inside_a_dhcp_range_is_refused() -> None:
    text = edit(
        '  kind = "access"\n  name = "vm1"\n  segment = "lan"\n',
        '  kind = "host"\n  name = "lan9"\n  segment = "lan"\n  tap = "ls-lan9"\n'
        '  address = ["198.18.10.150/24"]\n',
    )
    msgs = problems(text)
    assert any("198.18.10.150" in m and "dhcp[0] range" in m for m in msgs), msgs


def test_dhcp_needs_a_gateway_and_explicit_vrid_is_kept() -> None:
    text = edit('[[gateway]]\nsegment = "lan"', '[[gateway]]\nsegment = "lan"\nvrid = 7')
    assert parse_network(text, "x").gateways[0].vrid == 7
    start = BASE.index('[[gateway]]\nsegment = "lan"')
    end = BASE.index('[[gateway]]\nsegment = "api"')
    text = BASE[:start] + BASE[end:]
    assert (
        'dhcp[0] segment: segment "lan" has no [[gateway]] — DHCP is served by the segment\'s'
        " gateways, with the virtual address as router"
    ) in problems(text)


def test_check_prints_the_pool_assignment_and_collisions() -> None:
    from lanspan.config.commands import summary

    net = parse_network(BASE, "x")
    text = summary(net)
    for a in net.assignments:
        assert f"{a.node}  {a.port}  {a.segment}      {a.address}" in text
    assert "gateway lan    segment lan  198.18.10.1 fd00:10::1  gra-gw1 > rbx-gw1  no" in text
    # squeeze the IPv4 pool of lan to 3 addresses: someone collides or probes
    small = parse_network(
        edit('range = "198.18.10.32/27"', 'range = "198.18.10.40-198.18.10.42"'), "x"
    )
    moved = [a for a in small.assignments if a.address.version == 4 and a.address != a.home]
    assert moved
    assert f"moved to {moved[0].address}" in summary(small)
