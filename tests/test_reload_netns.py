"""Reload in namespaces: grow, shrink and re-address a running network without losing frames.

Three agents run; a guest of n1 pings a guest of n2 every 50 ms for the whole
test. Meanwhile the network file changes under the agents and they reload it
(`lanspan reload` and SIGHUP): n4 joins, n3 leaves, n2 moves to another
underlay address, broken files are rejected, segment b is added, its MTU
changed, and it is removed. The ping must lose nothing: no sequence number may
be missing before the last one answered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from agentlib import Cluster, ContinuousPing, lanspan_cli, make_cluster

from lanspan.lab.netns import Netns, require_root, run, wait_for
from lanspan.session import REKEY_AFTER_TIME, REKEY_SPREAD, REKEY_TIMEOUT

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

UP = 30.0  # generous bound for anything a slow shared machine has to converge


def reload_ok(c: Cluster, name: str) -> str:
    r = c.reload(name)
    assert r.returncode == 0, f"reload of {name} failed: {r.stdout}{r.stderr}"
    assert r.stdout.startswith("reloaded:"), r.stdout
    return r.stdout


def handshake_ages(c: Cluster, name: str) -> dict[str, Any]:
    return {p: doc["last_handshake_age"] for p, doc in c.peers(name).items()}


def settled(c: Cluster, name: str) -> bool:
    """No handshake in the last REKEY_TIMEOUT (+ jitter): an initiation sent before the
    peer ran may be retried once that late, even though the peer's own one made a session."""
    return all(
        age is not None and age > REKEY_TIMEOUT + 2 for age in handshake_ages(c, name).values()
    )


def assert_no_new_handshake(
    before: dict[str, Any], after: dict[str, Any], elapsed: float, who: str
) -> None:
    """An age that went down means a handshake happened in between."""
    for peer, age in before.items():
        assert age is not None and after[peer] is not None, (who, peer, before, after)
        if age + elapsed < REKEY_AFTER_TIME - REKEY_SPREAD - 10:  # not a scheduled rekey
            assert after[peer] >= age, f"{who}: new handshake with {peer} ({age} -> {after[peer]})"


def human_show(c: Cluster, name: str) -> str:
    r = lanspan_cli("show", "--socket", str(c.sock(name)))
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_reload_add_remove_readdress_and_reject(tmp_path: Path) -> None:
    with Netns() as ns:
        c = make_cluster(ns, tmp_path, ["n1", "n2", "n3"])
        c.add_member("n4")  # its namespaces exist; it is not in the file yet
        try:
            for name in ("n1", "n2", "n3"):
                c.start(name)
            wait_for(c.mesh_up, UP, "sessions between n1, n2, n3")
            assert c.ping("n1", "n2", count=2)
            ping = ContinuousPing(
                ns, c.members["n1"].guest, c.members["n2"].guest_ip, tmp_path / "ping.log"
            )
            ping.wait_replies(10)
            wait_for(lambda: settled(c, "n1") and settled(c, "n2"), UP, "first handshakes done")
            pair = {a: {b: handshake_ages(c, a)[b]} for a, b in (("n1", "n2"), ("n2", "n1"))}
            t_pair = time.monotonic()

            ping.mark("a: n4 joins")
            # (a) n4 joins: `lanspan reload` on n1, SIGHUP on n2 and n3.
            c.write(["n1", "n2", "n3", "n4"])
            out = reload_ok(c, "n1")
            assert "peer n4 added" in out
            c.sighup("n2")
            c.sighup("n3")
            wait_for(lambda: "n4" in c.peers("n2") and "n4" in c.peers("n3"), UP, "SIGHUP reloads")
            ping.mark("a: n4 starts")
            c.start("n4")
            wait_for(c.mesh_up, UP, "every session with n4 up")
            assert c.ping("n4", "n1", count=3)
            text = human_show(c, "n1")
            block = text[text.index("peer: n4") :]
            assert "session: up" in block.split("peer:")[1], text
            ping.wait_replies(10)

            ping.mark("b: n3 leaves")
            # (b) n3 leaves.
            c.write(["n1", "n2", "n4"])
            for name in ("n1", "n2", "n4"):
                assert "peer n3 removed" in reload_ok(c, name)
            ping.mark("b: n3 stops")
            c.stop("n3")
            assert "n3" not in c.peers("n1")
            assert "peer: n3" not in human_show(c, "n1")
            assert c.mesh_up()
            ping.wait_replies(10)

            # Adding n4 and removing n3 left the n1 <-> n2 session alone.
            for name, before in pair.items():
                now_ages = handshake_ages(c, name)
                assert_no_new_handshake(before, now_ages, time.monotonic() - t_pair, name)

            ping.mark("c: n2 moves")
            # (c) n2 moves to a second underlay address; the old one goes away.
            n2 = c.members["n2"]
            run(["sysctl", "-qw", "net.ipv4.conf.up0.promote_secondaries=1"], ns=n2.ns)
            ns.address(n2.ns, "up0", "198.18.0.102/24")
            # n2 answers each peer from the address that peer uses (IP_PKTINFO), so its
            # traffic keeps coming from the old address until the peers reload.
            wait_for(lambda: all(settled(c, n) for n in ("n1", "n2", "n4")), UP, "handshakes done")
            ages = {n: handshake_ages(c, n) for n in ("n1", "n2", "n4")}
            t0 = time.monotonic()
            n2.endpoints = ["198.18.0.102"]
            c.write()
            for name in ("n1", "n4"):
                assert "peer n2 endpoints now" in reload_ok(c, name)
            ping.mark("c: n2 reloads")
            reload_ok(c, "n2")

            def moved(name: str) -> bool:
                p = c.peers(name)["n2"]
                active = [x for x in p["paths"] if x["active"]]
                return (
                    p["endpoint"] == "198.18.0.102:51820"
                    and len(active) == 1
                    and active[0]["endpoint"] == "198.18.0.102:51820"
                    and active[0]["state"] == "up"
                )

            try:
                wait_for(lambda: moved("n1") and moved("n4"), UP, "n2's new endpoint in use")
            except TimeoutError as e:
                state = {n: c.peers(n)["n2"] for n in ("n1", "n4")}
                raise AssertionError(f"{e}: {state}") from None
            ping.mark("c: old address of n2 deleted")
            run(["ip", "addr", "del", "198.18.0.2/24", "dev", "up0"], ns=n2.ns)
            ping.wait_replies(20)
            assert moved("n1") and moved("n4")
            assert c.mesh_up()
            elapsed = time.monotonic() - t0
            for name in ("n1", "n2", "n4"):
                assert_no_new_handshake(ages[name], handshake_ages(c, name), elapsed, name)
            assert c.ping("n4", "n2", count=2)

            ping.mark("d: broken files")
            # (d) broken files are rejected with the reason; the agents keep running.
            valid = c.network_file.read_text()
            c.network_file.write_text(valid.replace("vlan = 100", "vlan = 5000", 1))
            r = c.reload("n1")
            assert r.returncode == 1, r.stdout + r.stderr
            assert "reload rejected" in r.stderr and "vlan" in r.stderr, r.stderr
            assert "5000" in r.stderr, r.stderr
            r = lanspan_cli("reload", "--json", "--socket", str(c.sock("n4")))
            assert r.returncode == 1, r.stdout + r.stderr
            doc = json.loads(r.stdout)
            assert doc["ok"] is False and doc["changes"] == [] and "5000" in doc["error"], doc
            c.sighup("n2")
            wait_for(
                lambda: "reload rejected" in c.log("n2").read_text(), UP, "n2 logs the rejection"
            )
            # Valid TOML the running agent cannot take without a restart.
            c.network_file.write_text(valid.replace("port = 51820", "port = 51821", 1))
            r = c.reload("n4")
            assert r.returncode == 1 and "port changed" in r.stderr, r.stdout + r.stderr
            c.network_file.write_text("this is [not toml\n")
            r = c.reload("n4")
            assert r.returncode == 1 and str(c.network_file) in r.stderr, r.stderr
            c.network_file.write_text(valid)
            for name in ("n1", "n2", "n4"):
                assert c.alive(name), c.log(name).read_text()
                assert reload_ok(c, name).strip() == "reloaded: no changes"
            r = lanspan_cli("reload", "--json", "--socket", str(c.sock("n1")))
            assert r.returncode == 0, r.stdout + r.stderr
            assert json.loads(r.stdout) == {"ok": True, "changes": [], "error": None}
            assert c.mesh_up()
            assert c.ping("n4", "n1", count=2)
            ping.wait_replies(10)

            # (e) a segment is added with a host port on n1 and n2, then its MTU changes.
            ping.mark("e: segment b added")
            seg_b = '[[segment]]\nname = "b"\nvlan = 200\nipv4 = "198.18.101.0/24"\nmtu = {}\n'
            c.more_segments = [seg_b.format(1400)]
            for name in ("n1", "n2"):
                m = c.members[name]
                m.more_segments = ["b"]
                m.more_ports = [
                    '  [[node.port]]\n  kind = "host"\n  name = "hb"\n  segment = "b"\n'
                    f'  address = ["198.18.101.{m.index}/24"]\n'
                ]
            c.write()
            for name in ("n1", "n2", "n4"):
                out = reload_ok(c, name)
                if name != "n4":
                    assert "port hb added" in out, out
            assert [s["name"] for s in c.show("n1")["segments"]] == ["a", "b"]
            n1_ns = c.members["n1"].ns

            def host_port_mtu() -> int:
                links = run(["ip", "-j", "link", "show", "ls-b"], ns=n1_ns).stdout
                mtu: int = json.loads(links)[0]["mtu"]
                return mtu

            assert host_port_mtu() == 1400
            ping_b = ["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.101.2"]
            r = run(ping_b, ns=n1_ns, check=False)
            assert r.returncode == 0, r.stdout + r.stderr
            ping.mark("e: segment b mtu changed")
            c.more_segments = [seg_b.format(1300)]
            c.write()
            for name in ("n1", "n2", "n4"):
                out = reload_ok(c, name)
                if name != "n4":
                    assert "port hb changed" in out, out
            assert host_port_mtu() == 1300
            r = run(ping_b, ns=n1_ns, check=False)
            assert r.returncode == 0, r.stdout + r.stderr
            ping.wait_replies(5)

            # (f) and removed again: the host ports and their devices go.
            ping.mark("f: segment b removed")
            c.more_segments = []
            for name in ("n1", "n2"):
                c.members[name].more_segments, c.members[name].more_ports = [], []
            c.write()
            for name in ("n1", "n2", "n4"):
                out = reload_ok(c, name)
                if name != "n4":
                    assert "port hb removed" in out, out
            assert "ls-b" not in run(["ip", "-o", "link"], ns=n1_ns).stdout
            assert [s["name"] for s in c.show("n1")["segments"]] == ["a"]
            assert c.mesh_up()
            ping.wait_replies(10)

            result = ping.finish()
            assert result.missing == [], ping.story(result)
            assert result.duplicates == 0, result.output[-3000:]
            # SIGINT may catch one request in flight; none before it may be lost.
            assert result.transmitted - result.received <= 1, result.output[-3000:]
            assert result.received >= 50
        finally:
            c.stop_all()
