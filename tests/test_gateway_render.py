"""The gateway renderers: keepalived, dnsmasq, nftables, forwarding check, status."""

from __future__ import annotations

import ast
import difflib
import shutil
import subprocess
from pathlib import Path

import pytest

import lanspan.gateway
from lanspan.config import parse_network
from lanspan.gateway import render_keepalived
from lanspan.gateway.dnsmasq import render_dnsmasq, segments_served
from lanspan.gateway.policy import forwarding_warnings, render_policy, sysctl_keys
from lanspan.gateway.status import VrrpTracker, gateway_status, parse_leases

DATA = Path(__file__).parent / "data" / "config"
BASE = (DATA / "gateways.toml").read_text()
NET = parse_network(BASE, "gateways.toml")
RUN = "/run/lanspan/acme"


def test_gateway_package_is_pure() -> None:
    forbidden = {"socket", "asyncio", "os", "time", "subprocess", "threading", "selectors"}
    for f in Path(lanspan.gateway.__file__).parent.glob("*.py"):
        tree = ast.parse(f.read_text())
        names = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
        }
        names |= {
            n.module.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module
        }
        assert not names & forbidden, f.name


# ------------------------------------------------------------------ keepalived


def test_two_gateways_differ_only_in_priority() -> None:
    # the segment gateways alone (the uplink float speaks unicast, so it names peers)
    text = BASE.split("[[floating]]")[0] + "[[allow]]" + BASE.split("[[allow]]", 1)[1]
    text = text.replace('nodes = ["gra-hv1", "rbx-gw1"]', "")
    net = parse_network(text, "x")
    a = render_keepalived(net, "gra-gw1", RUN).text.splitlines()
    b = render_keepalived(net, "rbx-gw1", RUN).text.splitlines()
    diff = [d for d in difflib.unified_diff(a, b, n=0, lineterm="") if d[:1] in "+-"]
    diff = [d for d in diff if not d.startswith(("+++", "---"))]
    assert diff == ["-    priority 250", "+    priority 240"] * 2
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if x != y:
            assert x.strip().startswith("priority") and y.strip().startswith("priority")


def test_keepalived_instance_details() -> None:
    conf = render_keepalived(NET, "gra-gw1", RUN)
    assert conf.instances == ("gw_lan", "gw_api", "fl_edge")
    text = conf.text
    assert "    vrrp_version 3" in text and f'    notify_fifo "{RUN}/vrrp.fifo"' in text
    assert "    advert_int 0.2\n    nopreempt\n" in text
    assert "        198.18.10.1/24 dev ls-lan\n" in text
    assert "    virtual_ipaddress_excluded {\n        fd00:10::1/64 dev ls-lan\n" in text
    assert "    unicast_src_ip 198.19.9.2\n    unicast_peer {\n        198.19.9.3\n    }" in text
    assert "vrrp_sync_group gateways {\n    group {\n        gw_lan\n        gw_api\n" in text
    hv = render_keepalived(NET, "gra-hv1", RUN)
    assert hv.instances == ("fl_web",)
    assert "nopreempt" not in hv.text  # preempt = true
    assert hv.scripts == {
        "check-web.sh": "#!/bin/sh\n# lanspan: health check of floating web\n"
        "curl -fsS http://127.0.0.1/health\n"
    }
    assert f'    script "{RUN}/check-web.sh"' in hv.text and "track_script" in hv.text
    assert "vrrp_sync_group" not in hv.text


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed")
def test_keepalived_accepts_the_configuration(tmp_path: Path) -> None:
    for node in ("gra-gw1", "rbx-gw1", "gra-hv1"):
        conf = tmp_path / f"{node}.conf"
        conf.write_text(render_keepalived(NET, node, RUN).text)
        out = subprocess.run(
            ["keepalived", "-t", "-f", str(conf)], capture_output=True, text=True, check=False
        )
        # the host-port TAPs do not exist here: that is the only complaint allowed
        errors = [
            line
            for line in out.stderr.splitlines()
            if "doesn't exist" not in line and "Non-existent interface" not in line and line
        ]
        assert errors == [], out.stderr


# ------------------------------------------------------------------ dnsmasq


def test_dnsmasq_configuration() -> None:
    assert segments_served(NET, "gra-gw1") == ("lan",)
    assert segments_served(NET, "gra-hv1") == ()
    conf = render_dnsmasq(NET, "rbx-gw1", "lan")
    lines = conf.text.splitlines()
    assert conf.device == "ls-lan" and conf.lease_file == "/var/lib/lanspan/acme/lan.leases"
    for want in (
        "interface=ls-lan",
        "bind-interfaces",
        "port=0",
        "dhcp-authoritative",
        "dhcp-leasefile=/var/lib/lanspan/acme/lan.leases",
        "dhcp-range=set:lan,198.18.10.100,198.18.10.199,255.255.255.0,600",
        "dhcp-option=tag:lan,option:router,198.18.10.1",
        "dhcp-host=02:aa:00:00:00:10,198.18.10.10,printer",
        "enable-ra",
        "dhcp-range=set:lan6,fd00:10::,ra-only,64,600",
    ):
        assert want in lines, want
    dns = parse_network(BASE.replace("lease_time = 600", "lease_time = 600\ndns = true"), "x")
    assert "port=0" not in render_dnsmasq(dns, "rbx-gw1", "lan").text


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
def test_dnsmasq_accepts_the_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "d.conf"
    conf.write_text(render_dnsmasq(NET, "gra-gw1", "lan").text)
    out = subprocess.run(
        ["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "syntax check OK" in out.stderr, out.stderr


# ------------------------------------------------------------------ nftables


def test_policy_rules() -> None:
    text = render_policy(NET, "gra-gw1")
    lines = [line.strip() for line in text.splitlines()]
    assert lines[1:4] == [
        "table inet lanspan_gw_acme",
        "delete table inet lanspan_gw_acme",
        "table inet lanspan_gw_acme {",
    ]
    assert "type filter hook forward priority filter; policy drop;" in lines
    assert "ct state established,related accept" in lines
    assert (
        'iifname "ls-lan" oifname "ls-api" meta nfproto ipv4 tcp dport { 443, 8000-8100 }'
        ' counter accept comment "allow[0]"'
    ) in lines
    assert (
        'iifname "ls-api" oifname != @segments meta nfproto ipv4 udp dport { 53 } counter accept'
        ' comment "allow[1]"'
    ) in lines
    # a node that is no gateway gets no allow rules
    assert "accept comment" not in render_policy(NET, "gra-hv1")


def test_policy_both_families_and_icmpv6() -> None:
    text = BASE.replace('ipv4 = "198.18.11.0/24"', 'ipv4 = "198.18.11.0/24"\nipv6 = "fd00:11::/64"')
    text = text.replace(
        'address = ["198.18.11.2/24"]', 'address = ["198.18.11.2/24", "fd00:11::2/64"]'
    )
    text = text.replace(
        'address = ["198.18.11.3/24"]', 'address = ["198.18.11.3/24", "fd00:11::3/64"]'
    )
    rules = render_policy(parse_network(text, "x"), "gra-gw1")
    assert (
        'meta nfproto ipv6 tcp dport { 443, 8000-8100 } counter accept comment "allow[0]"' in rules
    )
    assert 'meta nfproto ipv6 meta l4proto ipv6-icmp counter accept comment "allow[2]"' in rules


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed")
def test_nft_accepts_the_policy(tmp_path: Path) -> None:
    f = tmp_path / "p.nft"
    f.write_text(render_policy(NET, "gra-gw1"))
    out = subprocess.run(["nft", "-c", "-f", str(f)], capture_output=True, text=True, check=False)
    if out.returncode != 0 and "Operation not permitted" in out.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN")
    assert out.returncode == 0, out.stderr


def test_forwarding_warnings() -> None:
    keys = sysctl_keys(NET, "gra-hv1")
    assert "net/ipv4/conf/ls-lan/forwarding" in keys
    quiet = dict.fromkeys(keys, "0")
    assert forwarding_warnings(NET, "gra-hv1", quiet) == []
    loud = quiet | {"net/ipv4/conf/ls-lan/forwarding": "1"}
    (w,) = forwarding_warnings(NET, "gra-hv1", loud)
    assert w.startswith('node "gra-hv1" is not a gateway but forwards IPv4 on ls-lan')
    gw = dict.fromkeys(sysctl_keys(NET, "gra-gw1"), "0")
    (w,) = [x for x in forwarding_warnings(NET, "gra-gw1", gw) if "ipv4" in x]
    assert "net.ipv4.ip_forward is 0" in w
    assert forwarding_warnings(NET, "gra-gw1", dict.fromkeys(gw, "1")) == []


# ------------------------------------------------------------------ status


def test_tracker_follows_the_fifo_and_counts_junk() -> None:
    t = VrrpTracker(("gw_lan", "gw_api", "fl_edge"))
    assert t.feed('INSTANCE "gw_lan" BACKUP 250', 1.0) is not None
    change = t.feed('INSTANCE "gw_lan" MASTER 250', 2.5)
    assert change is not None and (change.old, change.new, change.at) == ("backup", "master", 2.5)
    assert t.feed('INSTANCE "gw_lan" MASTER 250', 3.0) is None  # no change
    assert t.feed('GROUP "gateways" MASTER', 3.0) is None
    for junk in (
        "",
        "nonsense",
        'INSTANCE "gw_nope" MASTER 1',
        'INSTANCE "gw_lan" DANCING 1',
        'INSTANCE "unterminated',
        "x" * 1000,
    ):
        assert t.feed(junk, 4.0) is None
    assert t.bad_lines == 5  # an empty line is not counted
    assert [c.new for c in t.take_outputs()] == ["backup", "master"]
    assert t.take_outputs() == []
    st = gateway_status(NET, "gra-gw1", t)
    lan = st.instances[0]
    assert (lan.name, lan.state, lan.since, lan.priority) == ("gw_lan", "master", 2.5, 250)
    assert st.instances[1].state == "init" and st.bad_reports == 5
    t.stopped(9.0)
    assert {s for s, _ in t.states.values()} == {"stopped"}
    assert gateway_status(NET, "gra-gw1", t).to_json()["instances"][0]["state"] == "stopped"  # type: ignore[index]


def test_parse_leases() -> None:
    text = (
        "1700000600 02:aa:00:00:00:10 198.18.10.10 printer 01:02:aa:00:00:00:10\n"
        "0 02:AA:00:00:00:11 198.18.10.101 * *\n"
        "duid 00:01:00:01:2c:aa\n"
        "garbage line\n"
        "1700000600 02:aa:00:00:00:12 not-an-ip x *\n"
    )
    a, b = parse_leases(text, "lan")
    assert (a.mac, a.address, a.hostname, a.expires) == (
        "02:aa:00:00:00:10",
        "198.18.10.10",
        "printer",
        1700000600.0,
    )
    assert (b.mac, b.hostname, b.expires) == ("02:aa:00:00:00:11", None, None)
