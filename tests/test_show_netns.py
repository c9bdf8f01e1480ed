"""`lanspan show`, `show --json` and `show macs` against three real agents."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from agentlib import Cluster, lanspan_cli, make_cluster

from lanspan.config import encode_key, public_key
from lanspan.lab.netns import Netns, require_root, run, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

NODES = ["n1", "n2", "n3"]


def guest_mac(c: Cluster, node: str) -> str:
    links = json.loads(run(["ip", "-j", "link", "show", "eth0"], ns=c.members[node].guest).stdout)
    mac: str = links[0]["address"]
    return mac


def control_exchange(path: Path, requests: list[bytes]) -> list[dict[str, Any]]:
    """Send request lines on one connection; read one answer per non-blank line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"".join(r + b"\n" for r in requests))
        f = s.makefile("rb")
        return [json.loads(f.readline()) for r in requests if r.strip()]


def rtt_known(c: Cluster, node: str) -> bool:
    return all(p["rtt_ms"] is not None for p in c.peers(node).values())


def test_show_json_human_and_macs(tmp_path: Path) -> None:
    with Netns() as ns:
        c = make_cluster(ns, tmp_path, NODES)
        try:
            for name in NODES:
                c.start(name)
            wait_for(c.mesh_up, 30, "every session up")
            wait_for(lambda: rtt_known(c, "n1"), 30, "RTT measured on every path of n1")
            assert c.ping("n1", "n2", count=3)
            assert c.ping("n1", "n3", count=3)
            sock = str(c.sock("n1"))

            # --json: the status document of docs/control-api.md
            doc = c.show("n1")
            assert doc["node"] == "n1" and doc["network"] == "optest"
            assert doc["public_key"] == encode_key(public_key(c.members["n1"].key))
            assert doc["listen_port"] == 51820 and doc["uptime_s"] >= 0
            assert [s["name"] for s in doc["segments"]] == ["a"]
            assert doc["segments"][0]["vlan"] == 100 and doc["segments"][0]["mtu"] == 1400
            (port,) = doc["ports"]
            assert (port["name"], port["kind"], port["device"]) == ("ga", "access", "ga")
            assert port["segments"] == ["a"] and port["rx_frames"] >= 6
            peers = {p["name"]: p for p in doc["peers"]}
            assert set(peers) == {"n2", "n3"}
            for name, p in peers.items():
                ep = f"{c.members[name].endpoints[0]}:51820"
                assert p["session"] == "up", p
                assert p["endpoint"] == ep and p["via"] is None
                assert p["public_key"] == encode_key(public_key(c.members[name].key))
                assert p["last_handshake_age"] is not None and p["last_handshake_age"] >= 0
                assert p["rtt_ms"] is not None and 0 <= p["rtt_ms"] < 5000
                assert p["rx_frames"] >= 3 and p["tx_frames"] >= 3
                assert p["rx_bytes"] >= 3 * 98 and p["tx_bytes"] >= 3 * 98
                # The configured path; relayed ones ("via n3") may be listed as learned.
                (path,) = [x for x in p["paths"] if not x["learned"]]
                assert path["endpoint"] == ep and path["state"] == "up"
                assert path["active"] is True and path["learned"] is False
            assert isinstance(doc["drops"], dict) and isinstance(doc["counters"], dict)

            # human
            r = lanspan_cli("show", "--socket", sock)
            assert r.returncode == 0, r.stderr
            text = r.stdout
            assert text.startswith("network: optest\n  node: n1\n"), text
            assert "segments:" in text and "ports:" in text
            for name in ("n2", "n3"):
                block = text.split(f"peer: {name}\n")[1].split("\n\n")[0]
                ep = f"{c.members[name].endpoints[0]}:51820"
                assert "  session: up\n" in block, block
                assert f"  endpoint: {ep}\n" in block, block
                assert " ago\n" in block  # latest handshake
                assert "  rtt: " in block and " ms, loss " in block, block
                assert "  paths:\n" in block
                path_rows = [ln.split() for ln in block.splitlines() if ep in ln and "*" in ln]
                assert path_rows and path_rows[0][:3] == ["*", ep, "up"], block

            # macs: the guests' MACs, where they live
            mine, theirs = guest_mac(c, "n1"), guest_mac(c, "n2")
            r = lanspan_cli("show", "macs", "--json", "--socket", sock)
            assert r.returncode == 0, r.stderr
            rows = {row["mac"]: row for row in json.loads(r.stdout)}
            # docs/control-api.md writes "port vm1"; the agent hands the switch's "port:vm1".
            where = {mac: row["where"].replace(":", " ", 1) for mac, row in rows.items()}
            assert rows[mine]["segment"] == "a" and rows[mine]["vlan"] == 100
            assert where[mine] == "port ga" and rows[mine]["static"] is False
            assert where[theirs] == "peer n2" and rows[theirs]["static"] is False
            assert 0 <= rows[theirs]["age"] < 60
            r = lanspan_cli("show", "macs", "--segment", "a", "--socket", sock)
            assert r.returncode == 0, r.stderr
            lines = r.stdout.splitlines()
            assert lines[0].split() == ["SEGMENT", "VLAN", "MAC", "WHERE", "TYPE", "AGE"]
            mine_row = next(ln for ln in lines if mine in ln).split()
            assert mine_row[:3] == ["a", "100", mine] and "learned" in mine_row, mine_row
            assert any(theirs in ln and "n2" in ln for ln in lines), r.stdout
            r = lanspan_cli("show", "macs", "--segment", "nosuch", "--json", "--socket", sock)
            assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr

            # the protocol itself: one JSON object per line, errors keep the connection
            answers = control_exchange(
                c.sock("n1"),
                [b'{"op": "ping"}', b"not json", b"", b'{"op": "nosuch"}',
                 b'{"op": "macs", "segment": 5}', b'{"op": "status"}'],
            )  # fmt: skip
            assert answers[0] == {"ok": True, "result": "pong"}
            assert [a["ok"] for a in answers] == [True, False, False, False, True], answers
            assert all(isinstance(a["error"], str) and a["error"] for a in answers[1:4])
            assert answers[4]["result"]["node"] == "n1"

            # no agent there: a clear message, exit 1
            r = lanspan_cli("show", "--socket", str(tmp_path / "absent.sock"))
            assert r.returncode == 1 and "no agent at" in r.stderr, r.stderr
        finally:
            c.stop_all()
