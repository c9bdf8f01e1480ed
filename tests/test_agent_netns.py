"""Real agents in network namespaces: three nodes, two segments sharing one subnet.

Segments A and B use the same IPv4 subnet, so a leak between them would show
up as a successful ping. Every guest pings every guest of its segment on the
other sites; no guest reaches the other segment's addresses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lanspan.config import encode_key, generate_private_key, public_key, write_private_key
from lanspan.lab.netns import Netns, require_root, run, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

NODES = ("n1", "n2", "n3")
SUBNET = "198.18.100"  # the same /24 in both segments, on purpose


@dataclass
class Mesh:
    ns: Netns
    tmp: Path
    agents: dict[str, subprocess.Popen[bytes]]
    guests: dict[tuple[str, str], str]  # (node, segment) -> namespace

    def sock(self, node: str) -> Path:
        return self.tmp / f"{node}.sock"

    def show(self, node: str) -> dict[str, object]:
        out = run(
            [sys.executable, "-m", "lanspan", "show", "--json", "--socket", str(self.sock(node))]
        )
        doc: dict[str, object] = json.loads(out.stdout)
        return doc

    def ping(self, src: tuple[str, str], ip: str, count: int = 1) -> bool:
        r = run(
            ["ping", "-c", str(count), "-W", "1", "-i", "0.2", ip], ns=self.guests[src], check=False
        )
        return r.returncode == 0


def guest_ip(segment: str, i: int) -> str:
    return f"{SUBNET}.{(10 if segment == 'a' else 20) + i}"


def network_file(keys: dict[str, bytes], underlay: dict[str, str]) -> str:
    lines = [
        '[network]\nname = "itest"\nport = 51820\n',
        '[[segment]]\nname = "a"\nvlan = 100\nipv4 = "198.18.100.0/24"\nmtu = 1400\n',
        '[[segment]]\nname = "b"\nvlan = 200\nmtu = 1400\n',
    ]
    for node in NODES:
        lines.append(
            f'[[node]]\nname = "{node}"\nsite = "site-{node}"\n'
            f'public_key = "{encode_key(public_key(keys[node]))}"\n'
            f'endpoints = ["{underlay[node]}:51820"]\nsegments = ["a", "b"]\n'
        )
        for seg in ("a", "b"):
            lines.append(
                f'  [[node.port]]\n  kind = "access"\n  name = "g{seg}"\n  segment = "{seg}"\n'
                f'  interface = "g{seg}"\n'
            )
    return "\n".join(lines)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Netns() as ns:
        core = ns.add("core")
        run(["ip", "link", "add", "br0", "type", "bridge"], ns=core)
        run(["ip", "link", "set", "br0", "up"], ns=core)
        keys = {n: generate_private_key() for n in NODES}
        underlay = {n: f"198.18.0.{i + 1}" for i, n in enumerate(NODES)}
        guests: dict[tuple[str, str], str] = {}
        for i, node in enumerate(NODES, start=1):
            nns = ns.add(node)
            ns.veth(nns, "up0", core, f"p{node}")
            run(["ip", "link", "set", f"p{node}", "master", "br0"], ns=core)
            ns.address(nns, "up0", f"{underlay[node]}/24")
            for seg in ("a", "b"):
                g = ns.add(f"{node}{seg}")
                ns.veth(g, "eth0", nns, f"g{seg}")
                ns.address(g, "eth0", f"{guest_ip(seg, i)}/24")
                guests[(node, seg)] = g
            write_private_key(tmp_path / f"{node}.key", keys[node])
        (tmp_path / "net.toml").write_text(network_file(keys, underlay))
        agents = {}
        for node in NODES:
            agents[node] = ns.spawn(
                ns.name(node),
                [
                    sys.executable,
                    "-m",
                    "lanspan",
                    "agent",
                    "--network",
                    str(tmp_path / "net.toml"),
                    "--node",
                    node,
                    "--key",
                    str(tmp_path / f"{node}.key"),
                    "--control",
                    str(tmp_path / f"{node}.sock"),
                ],
                log=tmp_path / f"{node}.log",
            )
        m = Mesh(ns, tmp_path, agents, guests)
        try:
            for node in NODES:
                wait_for(m.sock(node).exists, 20, f"control socket of {node}")
            yield m
        finally:
            for node, proc in agents.items():
                if proc.poll() is None:
                    assert ns.stop(proc) == 0, (tmp_path / f"{node}.log").read_text()


def all_sessions_up(m: Mesh) -> bool:
    for node in NODES:
        peers = m.show(node)["peers"]
        assert isinstance(peers, list)
        if not all(p["session"] == "up" for p in peers):
            return False
    return True


def test_segments_span_sites_and_stay_isolated(mesh: Mesh) -> None:
    wait_for(lambda: all_sessions_up(mesh), 20, "every session up")
    for seg in ("a", "b"):
        for i, src in enumerate(NODES, start=1):
            for j, _dst in enumerate(NODES, start=1):
                if i != j:
                    target = guest_ip(seg, j)
                    assert mesh.ping((src, seg), target, count=3), f"{src}/{seg} -> {target}"
    # Same subnet, other segment: a leak would answer.
    for src in NODES:
        for j in range(1, len(NODES) + 1):
            assert not mesh.ping((src, "a"), guest_ip("b", j)), f"leak {src}/a -> b{j}"
            assert not mesh.ping((src, "b"), guest_ip("a", j)), f"leak {src}/b -> a{j}"
    doc = mesh.show("n1")
    assert {s["name"] for s in doc["segments"]} == {"a", "b"}  # type: ignore[index, union-attr]


def test_large_frames_and_tcp_cross_the_mesh(mesh: Mesh) -> None:
    wait_for(lambda: all_sessions_up(mesh), 20, "every session up")
    # The segment MTU (1400) goes through unfragmented: 1372 B of ICMP payload + 28.
    r = run(
        ["ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1372", guest_ip("a", 2)],
        ns=mesh.guests[("n1", "a")],
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # A TCP transfer exercises TSO superframes, fragments and reassembly.
    server = mesh.ns.spawn(mesh.guests[("n2", "a")], ["iperf3", "-s", "-1"])
    wait_for(
        lambda: "5201" in run(["ss", "-ltn"], ns=mesh.guests[("n2", "a")]).stdout,
        10,
        "iperf3 server listening",
    )
    r = run(
        ["iperf3", "-c", guest_ip("a", 2), "-t", "2", "-J"],
        ns=mesh.guests[("n1", "a")],
        check=False,
        timeout=30,
    )
    mesh.ns.stop(server)
    assert r.returncode == 0, r.stderr
    bits = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
    assert bits > 1e6  # it moves; speed is the benchmark's business


def dropped(doc: dict[str, object]) -> int:
    kf = doc.get("kernel_filter")
    kernel = kf.get("drops", {}) if isinstance(kf, dict) else {}
    drops = doc["drops"]
    assert isinstance(drops, dict) and isinstance(kernel, dict)
    return sum(drops.values()) + sum(kernel.values())


def test_garbage_on_the_udp_port_is_counted_not_fatal(mesh: Mesh) -> None:
    wait_for(lambda: all_sessions_up(mesh), 20, "every session up")
    script = (
        "import socket,os\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "for n in (0,1,3,16,32,148,92,64,2000):\n"
        "    s.sendto(os.urandom(n),('198.18.0.1',51820))\n"
        "for t in (1,2,3,4):\n"
        "    s.sendto(bytes([t])+os.urandom(200),('198.18.0.1',51820))\n"
    )
    run([sys.executable, "-c", script], ns=mesh.ns.name("n2"))
    # counted by the agent, or before it by its kernel filter (lanspan/agent/nftables.py)
    wait_for(lambda: dropped(mesh.show("n1")) >= 10, 10, "drops counted")
    assert mesh.agents["n1"].poll() is None
    assert mesh.ping(("n1", "a"), guest_ip("a", 2))


def test_sigterm_removes_created_devices(tmp_path: Path) -> None:
    with Netns() as ns:
        nns = ns.add("solo")
        key = generate_private_key()
        write_private_key(tmp_path / "k", key)
        (tmp_path / "net.toml").write_text(
            '[network]\nname = "solo"\n[[segment]]\nname = "a"\nvlan = 5\nipv4 = "198.18.9.0/24"\n'
            '[[node]]\nname = "x"\nsite = "s"\n'
            f'public_key = "{encode_key(public_key(key))}"\nendpoints = ["198.18.9.1:51820"]\n'
            'segments = ["a"]\n'
            '  [[node.port]]\n  kind = "access"\n  name = "vm1"\n  segment = "a"\n'
            '  [[node.port]]\n  kind = "host"\n  name = "h"\n  segment = "a"\n'
            '  address = ["198.18.9.5/24"]\n'
        )
        proc = ns.spawn(
            nns,
            [
                sys.executable,
                "-m",
                "lanspan",
                "agent",
                "--network",
                str(tmp_path / "net.toml"),
                "--node",
                "x",
                "--key",
                str(tmp_path / "k"),
                "--control",
                str(tmp_path / "s.sock"),
            ],
            log=tmp_path / "log",
        )
        links = lambda: run(["ip", "-o", "link"], ns=nns).stdout  # noqa: E731
        wait_for(lambda: "vm1" in links() and "ls-a" in links(), 20, "TAP devices")
        addrs = lambda: run(["ip", "-o", "addr"], ns=nns).stdout  # noqa: E731
        wait_for(lambda: "198.18.9.5/24" in addrs(), 20, "the host port's address")
        assert ns.stop(proc) == 0, (tmp_path / "log").read_text()
        assert "vm1" not in links() and "ls-a" not in links()
        assert not (tmp_path / "s.sock").exists()
