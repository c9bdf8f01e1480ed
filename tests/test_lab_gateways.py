"""The gateway part of the lab, pure: lab file -> network file, flows the policy check tries."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from lanspan.config import load_network
from lanspan.errors import ConfigError
from lanspan.lab.gateways import allowed, longest_gap, policy_flows
from lanspan.lab.model import load_lab, parse_lab
from lanspan.lab.probe import ProbeResult
from lanspan.lab.topology import expand

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gateways.toml"


def _plan(tmp_path: Path):  # type: ignore[no-untyped-def]
    lab = load_lab(EXAMPLE)
    from lanspan.config.keys import encode_key, generate_private_key, public_key

    pubs = {n.name: encode_key(public_key(generate_private_key())) for n in lab.node}
    plan = expand(lab, "lsl-gw", pubs)
    path = tmp_path / "network.toml"
    path.write_text(plan.network_toml)
    return lab, plan, load_network(path)


def test_network_file_carries_the_gateway_tables(tmp_path: Path) -> None:
    _, _, net = _plan(tmp_path)
    assert [g.segment for g in net.gateways] == ["lan", "api"]
    assert net.gateways[0].nodes == ("gra-gw1", "rbx-gw1") and not net.gateways[0].preempt
    assert [f.name for f in net.floating] == ["web"]
    assert len(net.allows) == 4 and [d.segment for d in net.dhcp] == ["lan"]
    gw = net.node("gra-gw1")
    hosts = {p.segment: [str(a) for a in p.addresses] for p in gw.ports if p.kind == "host"}
    assert hosts == {"lan": ["198.18.10.2/24"], "api": ["198.18.11.2/24"]}
    assert set(gw.segments) == {"lan", "api"}


def test_gateways_route_and_guests_use_the_virtual_gateway(tmp_path: Path) -> None:
    _, plan, _ = _plan(tmp_path)
    gw_ns = plan.node("gra-gw1").ns
    cmds = [argv for ns, argv in plan.commands if ns == gw_ns]
    assert ("sysctl", "-qw", "net.ipv4.ip_forward=1") in cmds
    assert any("masquerade" in argv for argv in cmds)
    hv_ns = plan.node("gra-hv1").ns
    assert not [a for ns, a in plan.commands if ns == hv_ns and "ip_forward=1" in a]
    lan = plan.guest("gra-lan").ns
    assert (lan, ("ip", "route", "add", "default", "via", "198.18.10.1")) in plan.commands
    api = plan.guest("gra-api").ns
    assert (api, ("ip", "route", "add", "default", "via", "198.18.11.1")) in plan.commands
    # the DHCP guest gets no static address, and nothing else hands it one
    assert plan.guest("rbx-dhcp").interfaces[0].addresses == ()
    assert plan.internet_ns == "lsl-gw-inet" and plan.internet_addr == "198.19.250.2/24"


def test_policy_flows_allow_and_deny_both_ways(tmp_path: Path) -> None:
    _, _, net = _plan(tmp_path)
    flows = dict(policy_flows(net))
    seg = lambda s: ("segment", s)  # noqa: E731
    inet = ("internet", "internet")
    assert flows[("lan", seg("api"), "tcp", 8080)] is True
    assert flows[("api", seg("lan"), "tcp", 8080)] is False  # the reverse direction
    assert flows[("lan", seg("api"), "tcp", 8081)] is False  # a port no rule lists
    assert flows[("lan", seg("api"), "icmp", None)] is True
    assert flows[("api", seg("lan"), "icmp", None)] is False
    assert flows[("api", inet, "tcp", 80)] is True
    assert flows[("api", inet, "tcp", 81)] is False
    assert flows[("lan", inet, "icmp", None)] is True
    assert flows[("lan", inet, "tcp", 5001)] is False
    assert allowed(net, "lan", seg("api"), "tcp", 8080)
    assert not allowed(net, "api", inet, "icmp", None)


def test_lab_file_refuses_bad_gateway_parts() -> None:
    base = tomllib.loads(EXAMPLE.read_text())
    bad = dict(base, node=[*base["node"][:-1], {"name": "rbx-hv1", "site": "rbx",
                                               "host": {"nope": "198.18.10.9/24"}}])  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape("node[3].host: unknown segment 'nope'")):
        parse_lab(bad, "x.toml")
    wrong = dict(base, node=[*base["node"][:-1], {"name": "rbx-hv1", "site": "rbx",
                                                 "host": {"lan": "198.18.11.9/24"}}])  # fmt: skip
    with pytest.raises(ConfigError, match="not in segment 'lan'"):
        parse_lab(wrong, "x.toml")
    guest = dict(base, guest=[{"name": "x", "node": "gra-hv1", "segment": "lan", "dhcp": True,
                               "address": ["198.18.10.50/24"]}])  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape("dhcp = true")):
        parse_lab(guest, "x.toml")
    fault = dict(base, fault=[{"name": "k", "kind": "kill-gateway", "segment": "other"}])
    with pytest.raises(ConfigError, match="has no \\[\\[gateway\\]\\]"):
        parse_lab(fault, "x.toml")
    stray = dict(base, fault=[{"name": "k", "kind": "kill-agent", "node": "gra-hv1",
                               "settle": 2}])  # fmt: skip
    with pytest.raises(ConfigError, match="are for kill-gateway faults"):
        parse_lab(stray, "x.toml")
    inet = dict(base, internet={"address": "198.18.10.7/24"})
    with pytest.raises(ConfigError, match=re.escape("198.19.250.0/24")):
        parse_lab(inet, "x.toml")


def test_longest_gap_per_window() -> None:
    timeline = [1] * 10 + [0] * 5 + [1] * 10 + [0] * 2 + [1] * 3
    pr = ProbeResult("a", "b", 10.0, len(timeline), 0, 0.0, 0.0, timeline)
    assert longest_gap(pr, 0, 250) == 50.0
    assert longest_gap(pr, 250, 300) == 20.0
    assert longest_gap(pr, 0, 100) == 0.0
