"""The network file's kernel data plane fields: [[site]], plain VTEPs, VXLAN addresses."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from lanspan.config import parse_network
from lanspan.config.model import Site, Vtep
from lanspan.errors import ConfigError

BASE = (Path(__file__).parent / "data" / "config" / "base.toml").read_text()
KEY_C = "aGkW7R5ytpm+VHnLmYnU5wYa6rHrOWgAvG1Kp9HmT0Q="

SITE = """
[[site]]
name = "gra"
trusted = true
underlay = ["198.19.1.0/24"]
vxlan_port = 4790
"""

VTEP = """
[[node]]
name = "gra-old1"
site = "gra"
vtep = true
vxlan_address = "198.19.1.9"
segments = ["lan"]
"""


def net_with(*extra: str, base: str = BASE) -> str:
    head, sep, rest = base.partition("[[node]]")
    return head + "".join(extra) + "\n" + sep + rest


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_network(text, "net.toml")
    return ei.value.problems


def test_trusted_site_and_vtep_build_the_model() -> None:
    net = parse_network(net_with(SITE) + VTEP, "net.toml")
    assert net.site("gra") == Site("gra", True, (IPv4Network("198.19.1.0/24"),), 4790)
    assert net.site("rbx") == Site("rbx")  # only named by a node: untrusted
    assert not net.site("rbx").trusted
    assert net.vteps == (Vtep("gra-old1", "gra", IPv4Address("198.19.1.9"), ("lan",)),)
    assert "gra-old1" not in {n.name for n in net.nodes}  # no agent, no key: not a node
    # gra-hv1's endpoint inside the underlay is its VXLAN address; rbx-db1 has none.
    assert net.node("gra-hv1").vxlan_address == IPv4Address("198.19.1.2")
    assert net.node("rbx-db1").vxlan_address is None


def test_explicit_vxlan_address() -> None:
    text = net_with(SITE).replace(
        'segments = ["lan", "api"]\n', 'segments = ["lan", "api"]\nvxlan_address = "198.19.1.200"\n'
    )
    assert parse_network(text, "n").node("gra-hv1").vxlan_address == IPv4Address("198.19.1.200")


def test_vxlan_address_outside_the_underlay_is_refused() -> None:
    text = net_with(SITE).replace(
        'segments = ["lan", "api"]\n', 'segments = ["lan", "api"]\nvxlan_address = "198.19.2.7"\n'
    )
    assert problems(text) == [
        'node "gra-hv1" vxlan_address: 198.19.2.7 is outside site "gra"\'s underlay '
        "(198.19.1.0/24) — plain VXLAN is unauthenticated and is sent only inside a trusted "
        "underlay"
    ]
    vtep = VTEP.replace("198.19.1.9", "203.0.113.9")
    assert problems(net_with(SITE) + vtep) == [
        'node "gra-old1" vxlan_address: 203.0.113.9 is outside site "gra"\'s underlay '
        "(198.19.1.0/24) — plain VXLAN is unauthenticated and is sent only inside a trusted "
        "underlay"
    ]


def test_trusted_node_without_an_address_in_the_underlay() -> None:
    site = SITE.replace("198.19.1.0/24", "198.19.9.0/24")
    assert problems(net_with(site)) == [
        'node "gra-hv1" vxlan_address: the node is in trusted site "gra" but none of its '
        "endpoints is inside the site's underlay (198.19.9.0/24) — add "
        'vxlan_address = "<its address in the site>"'
    ]


def test_vtep_only_in_a_trusted_site() -> None:
    assert problems(BASE + VTEP) == [
        'node "gra-old1" vxlan_address: "198.19.1.9": plain VXLAN is only used in a trusted '
        'site, and site "gra" is not one — declare [[site]] name = "gra" with trusted = true '
        "and its underlay"
    ]
    assert problems(BASE.replace('site = "rbx"', 'site = "rbx"\nvxlan_address = "198.19.2.2"'))[
        0
    ].startswith('node "rbx-db1" vxlan_address: "198.19.2.2": plain VXLAN is only used')


def test_vtep_fields() -> None:
    keyed = VTEP.replace("vtep = true", f'vtep = true\npublic_key = "{KEY_C}"')
    assert problems(net_with(SITE) + keyed) == [
        'node "gra-old1": unknown field "public_key" (known fields: name, site, vtep, '
        "vxlan_address, segments)"
    ]
    assert problems(net_with(SITE) + VTEP.replace('"lan"]', '"lna"]')) == [
        'node "gra-old1" segments[0]: "lna" is not a defined segment — did you mean "lan"?'
    ]
    no_addr = VTEP.replace('vxlan_address = "198.19.1.9"\n', "")
    assert problems(net_with(SITE) + no_addr) == [
        'node "gra-old1": missing required field "vxlan_address"'
    ]
    same = VTEP.replace("198.19.1.9", "198.19.1.2")  # gra-hv1's VTEP address
    assert problems(net_with(SITE) + same) == [
        'node "gra-old1" vxlan_address: 198.19.1.2 is already the VXLAN address of node "gra-hv1"'
    ]
    dup = VTEP.replace('"gra-old1"', '"rbx-db1"')
    assert problems(net_with(SITE) + dup) == [
        'node[2] name: "rbx-db1" is already used by node[1] — node names must be unique'
    ]


def test_site_table_rules() -> None:
    assert problems(net_with(SITE.replace('underlay = ["198.19.1.0/24"]\n', ""))) == [
        'site "gra" underlay: a trusted site needs its underlay prefixes — plain VXLAN is sent '
        'only inside them; add underlay = ["198.19.1.0/24"]'
    ]
    assert problems(net_with(SITE.replace("trusted = true\n", ""))) == [
        'site "gra" underlay: only used in a trusted site — add trusted = true or remove underlay'
    ]
    assert problems(net_with(SITE.replace("198.19.1.0/24", "198.19.1.1/24"))) == [
        'site "gra" underlay[0]: "198.19.1.1/24" has host bits set — did you mean "198.19.1.0/24"?'
    ]
    assert problems(net_with(SITE.replace("4790", "70000")))[0] == (
        'site "gra" vxlan_port: 70000 is outside 1..65535'
    )
    assert problems(net_with(SITE.replace("trusted", "trustd")))[0] == (
        'site "gra": unknown field "trustd" — did you mean "trusted"?'
    )
