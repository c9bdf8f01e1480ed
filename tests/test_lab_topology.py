"""The lab expansion is pure: lab file -> namespaces, links, addresses, network file (golden)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from lanspan.errors import ConfigError
from lanspan.lab.model import load_lab, parse_lab
from lanspan.lab.topology import expand

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "data" / "lab"
EXAMPLES = ["small", "three-datacenters", "hubs-nat", "redundancy"]
UPDATE = os.environ.get("LANSPAN_UPDATE_GOLDEN") == "1"


def fake_keys(names: list[str]) -> dict[str, str]:
    return {n: base64.b64encode(bytes([i + 1]) * 32).decode() for i, n in enumerate(names)}


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; LANSPAN_UPDATE_GOLDEN=1 rewrites it"


@pytest.mark.parametrize("example", EXAMPLES)
def test_expansion_matches_golden(example: str) -> None:
    lab = load_lab(ROOT / "examples" / f"{example}.toml")
    plan = expand(lab, "lsl-t", fake_keys([n.name for n in lab.node]))
    _golden(f"{example}.plan.json", json.dumps(plan.to_json(), indent=1, sort_keys=True) + "\n")
    _golden(f"{example}.network.toml", plan.network_toml)


@pytest.mark.parametrize("example", EXAMPLES)
def test_generated_network_file_loads(example: str, tmp_path: Path) -> None:
    config = pytest.importorskip("lanspan.config")
    load_network = getattr(config, "load_network", None)
    if load_network is None:
        pytest.skip("lanspan.config.load_network not written yet")
    lab = load_lab(ROOT / "examples" / f"{example}.toml")
    plan = expand(lab, "lsl-t", fake_keys([n.name for n in lab.node]))
    f = tmp_path / "network.toml"
    f.write_text(plan.network_toml)
    net = load_network(f)
    assert {n.name for n in net.nodes} == {n.name for n in lab.node}


def test_expansion_is_deterministic_and_addresses_stay_in_lab_range() -> None:
    lab = load_lab(ROOT / "examples" / "three-datacenters.toml")
    keys = fake_keys([n.name for n in lab.node])
    a, b = expand(lab, "p", keys), expand(lab, "p", keys)
    assert a == b
    text = json.dumps(a.to_json())
    import re
    from ipaddress import ip_address

    for m in re.findall(r"\b(\d+\.\d+\.\d+\.\d+)\b", text):
        assert ip_address(m) in __import__("ipaddress").ip_network("198.18.0.0/15"), m


def test_nat_site_nodes_have_no_endpoint_and_core_has_no_route_inside() -> None:
    lab = load_lab(ROOT / "examples" / "hubs-nat.toml")
    plan = expand(lab, "p", fake_keys([n.name for n in lab.node]))
    assert plan.node("br1-n1").endpoint is None
    assert plan.node("hub-a1").endpoint == "198.19.1.2:51820"
    core_routes = [argv for ns, argv in plan.commands if ns == plan.core_ns and "route" in argv]
    assert [r[3] for r in core_routes] == ["198.19.1.0/24", "198.19.2.0/24"]
    assert any("masquerade" in argv for ns, argv in plan.commands if ns == "p-r-branch1")
    # auto-assigned guest addresses (hub-a-vm took .101)
    assert plan.guest("br1-vm").interfaces[0].addresses == ("198.18.20.102/24",)


def _errors(doc: str, tmp_path: Path) -> list[str]:
    f = tmp_path / "bad.toml"
    f.write_text(doc)
    with pytest.raises(ConfigError) as e:
        load_lab(f)
    assert e.value.source == str(f)
    assert str(f) in e.value.render()
    return e.value.problems


BASE = """
[lab]
name = "t"
[[segment]]
name = "lan"
vlan = 10
ipv4 = "198.18.10.0/24"
[[site]]
name = "gra"
[[node]]
name = "n1"
site = "gra"
"""


def test_minimal_lab_is_valid() -> None:
    import tomllib

    lab = parse_lab(tomllib.loads(BASE), "mem")
    assert lab.name == "t"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[[guest]]\nname = "g"\nnode = "nope"\nsegment = "lan"\n',
            "guest[0].node: unknown node 'nope'",
        ),
        (
            '[[guest]]\nname = "g"\nnode = "n1"\nsegment = "wan"\n',
            "guest[0].segment: unknown segment 'wan'",
        ),
        (
            '[[guest]]\nname = "g"\nnode = "n1"\nsegment = "lan"\naddress = ["10.0.0.1/24"]\n',
            "outside the lab range",
        ),
        (
            '[[guest]]\nname = "g"\nnode = "n1"\nsegment = "lan"\naddress = ["198.18.99.1/24"]\n',
            "guest[0].address: 198.18.99.1/24 is not in segment 'lan' subnet 198.18.10.0/24",
        ),
        ('[[fault]]\nname = "f"\nkind = "cut-uplink"\n', "needs `site`"),
        ('[[fault]]\nname = "f"\nkind = "explode"\nsite = "gra"\n', "fault[0].kind"),
        (
            '[[fault]]\nname = "f"\nkind = "kill-agent"\nnode = "n9"\n',
            "fault[0].node: unknown node 'n9'",
        ),
        ('[[site]]\nname = "gra"\n', "site: name 'gra' is used twice"),
        ('[[node]]\nname = "n2"\nsite = "ams"\n', "node[1].site: unknown site 'ams'"),
        ('[[site]]\nname = "x"\ncolour = "red"\n', "site[1].colour: unknown field"),
        ('[[site]]\nname = "x"\nnat = true\nuplinks = 2\n', "behind NAT has one uplink"),
        ('[[site]]\nname = "x"\nuplinks = 3\n', "site[1].uplinks"),
        (
            '[[fault]]\nname = "f"\nkind = "cut-uplink"\nsite = "gra"\nuplink = "active"\n',
            "fault[0].uplink: site 'gra' has one uplink",
        ),
        ('[[fault]]\nname = "f"\nkind = "block"\nsites = ["gra", "gra"]\n', "two different"),
        (
            '[[fault]]\nname = "f"\nkind = "block"\nsites = ["gra", "ams"]\n',
            "fault[0].sites: unknown site 'ams'",
        ),
        ('[[fault]]\nname = "f"\nkind = "kill-relay"\n', "a kill-relay fault needs `probe`"),
        (
            '[[fault]]\nname = "f"\nkind = "cut-uplink"\nsite = "gra"\nupstream_only = true\n',
            "`upstream_only` needs `uplink`",
        ),
    ],
)
def test_errors_name_field_and_value(extra: str, expected: str, tmp_path: Path) -> None:
    problems = _errors(BASE + extra, tmp_path)
    assert any(expected in p for p in problems), problems


def test_bad_vlan_and_range(tmp_path: Path) -> None:
    doc = BASE.replace("vlan = 10", "vlan = 5000").replace("198.18.10.0/24", "192.168.1.0/24")
    problems = _errors(doc, tmp_path)
    assert any(p.startswith("segment[0].vlan:") and "5000" in p for p in problems), problems
    assert any(p.startswith("segment[0].ipv4:") and "192.168.1.0/24" in p for p in problems)


def test_not_toml(tmp_path: Path) -> None:
    problems = _errors("[lab\n", tmp_path)
    assert "not valid TOML" in problems[0]


def _mutations() -> Any:
    from hypothesis import strategies as st

    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 70000),
        st.floats(allow_nan=True),
        st.text(max_size=12),
        st.sampled_from(["198.18.10.0/24", "198.18.10.300/24", "fd00::1/64", "lan", "gra", "n1"]),
        st.lists(st.text(max_size=4), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )
    return st.lists(st.tuples(st.integers(0, 10_000), st.text(max_size=10), leaf), max_size=6)


def _tables(x: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(x, dict):
        out.append(x)
        for v in x.values():
            _tables(v, out)
    elif isinstance(x, list):
        for v in x:
            _tables(v, out)


def _mutate(doc: Any, edits: list[tuple[int, str, Any]]) -> Any:
    import copy

    doc = copy.deepcopy(doc)
    for pick, key, value in edits:
        tables: list[dict[str, Any]] = []
        _tables(doc, tables)
        t = tables[pick % len(tables)]
        keys = sorted(t)
        if keys and pick % 3 == 0:
            del t[keys[pick % len(keys)]]
        elif keys and pick % 3 == 1:
            t[keys[pick % len(keys)]] = value
        else:
            t[key] = value
    return doc


def test_any_mangled_lab_file_gives_config_error_or_a_lab() -> None:
    import tomllib

    from hypothesis import HealthCheck, given, settings

    base = tomllib.loads((ROOT / "examples" / "three-datacenters.toml").read_text())

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_mutations())
    def check(edits: list[tuple[int, str, Any]]) -> None:
        doc = _mutate(base, edits)
        try:
            lab = parse_lab(doc, "mangled.toml")
        except ConfigError as e:
            assert e.problems and all(isinstance(p, str) and p for p in e.problems)
            return
        plan = expand(lab, "p", fake_keys([n.name for n in lab.node]))
        assert plan.namespaces

    check()


def test_two_uplink_site_gives_nodes_two_endpoints_and_routes_each_prefix() -> None:
    lab = load_lab(ROOT / "examples" / "redundancy.toml")
    plan = expand(lab, "p", fake_keys([n.name for n in lab.node]))
    site = plan.site("hub-a")
    assert site.prefixes() == ("198.19.1.0/24", "198.19.101.0/24")
    node = plan.node("hub-a1")
    assert node.endpoints() == ("198.19.1.2:51820", "198.19.101.2:51820")
    assert 'endpoints = ["198.19.1.2:51820", "198.19.101.2:51820"]' in plan.network_toml
    cmds = [(ns, " ".join(argv)) for ns, argv in plan.commands]
    # the core reaches each prefix over its own provider link
    assert (plan.core_ns, "ip route add 198.19.1.0/24 via 198.19.0.2") in cmds
    assert (plan.core_ns, "ip route add 198.19.101.0/24 via 198.19.254.2") in cmds
    # the router sends the second prefix out of the second uplink
    assert (site.ns, "ip rule add from 198.19.101.0/24 lookup 102 priority 100") in cmds
    # the node prefers up0 and ignores a dark link's routes
    assert (node.ns, "ip route add default via 198.19.101.1 metric 200") in cmds
    assert (node.ns, "sysctl -qw net.ipv4.conf.all.ignore_routes_with_linkdown=1") in cmds
    one = plan.node("hub-b1")
    assert one.endpoints() == ("198.19.2.2:51820",) and one.underlay2 is None
    assert all(len(x.if_a) <= 15 and len(x.if_b) <= 15 for x in plan.links)
