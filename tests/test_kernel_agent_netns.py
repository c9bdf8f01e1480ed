"""Real agents with the kernel data plane: a trusted site, a hand-made VTEP, another site.

Underlay: one bridge, 198.18.0.0/24. Site "s" is trusted with underlay
198.18.0.0/30: agents a1 (.1) and a2 (.2) and a plain VTEP v3 (.3) configured
by hand with iproute2. Site "r" is not trusted: agent b1 (.4). Every node has
a guest on segment "a" (VNI 100).

Shown: each agent logs its choice; guests of the trusted site reach each other
through kernel VXLAN (device counters), and reach b1 through the encrypted
mesh; `show macs` lists what the kernel learned; stopping an agent removes
every device it made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentlib import PORT, Cluster, lanspan_cli

from lanspan.config import encode_key, public_key
from lanspan.lab.netns import Netns, require_root, run, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

WAIT = 20.0
AGENTS = ("a1", "a2", "b1")


def network_file(c: Cluster) -> str:
    out = [
        f'[network]\nname = "kt"\nport = {PORT}\n',
        "[network.timers]\nprobe_interval = 0.2\nhold_down = 1.0\n",
        '[[segment]]\nname = "a"\nvlan = 100\nipv4 = "198.18.100.0/24"\nmtu = 1400\n',
        '[[site]]\nname = "s"\ntrusted = true\nunderlay = ["198.18.0.0/30"]\n',
    ]
    for name in AGENTS:
        m = c.members[name]
        site = "r" if name == "b1" else "s"
        out.append(
            f'[[node]]\nname = "{name}"\nsite = "{site}"\n'
            f'public_key = "{encode_key(public_key(m.key))}"\n'
            f'endpoints = ["{m.endpoints[0]}:{PORT}"]\nsegments = ["a"]\n'
            '  [[node.port]]\n  kind = "access"\n  name = "ga"\n  segment = "a"\n'
            '  interface = "ga"\n'
        )
    out.append(
        '[[node]]\nname = "v3"\nsite = "s"\nvtep = true\nvxlan_address = "198.18.0.3"\n'
        'segments = ["a"]\n'
    )
    return "\n".join(out)


def hand_made_vtep(ns: str) -> None:
    run(["ip", "link", "add", "vxlan100", "type", "vxlan", "id", "100", "dstport", "4789",
         "local", "198.18.0.3"], ns=ns)  # fmt: skip
    run(["ip", "link", "add", "br100", "type", "bridge"], ns=ns)
    run(["ip", "link", "set", "vxlan100", "master", "br100"], ns=ns)
    run(["ip", "link", "set", "ga", "master", "br100"], ns=ns)
    for dst in ("198.18.0.1", "198.18.0.2"):
        run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan100", "dst", dst], ns=ns)
    for dev in ("vxlan100", "br100", "ga"):
        run(["ip", "link", "set", dev, "up"], ns=ns)


def vxlan_rx(ns: str) -> int:
    doc = json.loads(run(["ip", "-s", "-j", "link", "show", "lsx100"], ns=ns).stdout)
    return int(doc[0]["stats64"]["rx"]["packets"])


def broadcast_ping(c: Cluster, src: str) -> list[str]:
    """Sources of the replies (repeats included) to one broadcast echo request from `src`.

    One request (the next would go 10 s later), replies collected for 2 s.
    """
    r = run(["ping", "-b", "-c", "100", "-i", "10", "-w", "2", "198.18.100.255"],
            ns=c.members[src].guest, check=False)  # fmt: skip
    return re.findall(r"bytes from ([0-9.]+): icmp_seq=1 ", r.stdout)


def our_devices(ns: str) -> set[str]:
    out = run(["ip", "-o", "link", "show"], ns=ns).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return {n for n in names if n.startswith(("lsb", "lsx", "lsm"))}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Netns() as nn:
        c = Cluster(nn, tmp_path)
        c.setup_core()
        for name in ("a1", "a2", "v3", "b1"):
            c.add_member(name)  # underlay 198.18.0.1-4 in this order
        assert [c.members[n].endpoints[0] for n in ("a1", "a2", "v3", "b1")] == [
            f"198.18.0.{i}" for i in (1, 2, 3, 4)
        ]
        c.network_file.write_text(network_file(c))
        hand_made_vtep(c.members["v3"].ns)
        try:
            yield c
        finally:
            c.stop_all()


def test_trusted_site_in_the_kernel_other_sites_encrypted(cluster: Cluster) -> None:
    c = cluster
    for name in AGENTS:
        c.start(name)
    wait_for(lambda: c.mesh_up(list(AGENTS)), WAIT, "sessions between a1, a2 and b1")
    for name, plane in (("a1", "kernel"), ("a2", "kernel"), ("b1", "userspace")):
        assert f"segment a: {plane} data plane" in c.log(name).read_text()

    before = vxlan_rx(c.members["a1"].ns)
    inside = [("a1", "a2"), ("a2", "a1"), ("a1", "v3"), ("v3", "a1"), ("a2", "v3"), ("v3", "a2")]
    across = [("a1", "b1"), ("b1", "a1"), ("a2", "b1"), ("b1", "a2")]
    for src, dst in inside + across:
        wait_for(lambda s=src, d=dst: c.ping(s, d), WAIT, f"{src} → {dst}")  # type: ignore[misc]
    assert vxlan_rx(c.members["a1"].ns) > before  # site traffic came in through kernel VXLAN
    # A plain VTEP has no encrypted path: it reaches its own site only.
    assert not c.ping("v3", "b1")

    # A broadcast reaches every guest once: exactly one reply from each (none twice).
    for name in ("a2", "v3", "a1"):  # b1's guest stays silent: replies only from the others
        run(["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_broadcasts=0"],
            ns=c.members[name].guest)  # fmt: skip
    for src, expect in (("b1", {"a1", "a2"}), ("a1", {"a1", "a2", "v3"})):  # a1 answers itself
        replies = broadcast_ping(c, src)
        want = sorted(c.members[n].guest_ip for n in expect)
        assert sorted(replies) == want, f"{src}: replies from {replies}, want each of {want} once"

    r = lanspan_cli("show", "macs", "--json", "--socket", str(c.sock("a1")))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    wheres = {row["where"] for row in rows if isinstance(row, dict)}
    assert "kernel:ga" in wheres and "kernel:vxlan 198.18.0.3" in wheres, rows

    c.stop("a1")
    assert our_devices(c.members["a1"].ns) == set()


def split_network_file(c: Cluster) -> str:
    """a1 and a2 in trusted site s; a2 also has a host port in segment a: a2 carries it
    in userspace, a1 in the kernel. They must agree: a1 reaches a2 over the mesh."""
    out = [
        f'[network]\nname = "kp"\nport = {PORT}\n',
        "[network.timers]\nprobe_interval = 0.2\nhold_down = 1.0\n",
        '[[segment]]\nname = "a"\nvlan = 100\nipv4 = "198.18.100.0/24"\nmtu = 1400\n',
        '[[site]]\nname = "s"\ntrusted = true\nunderlay = ["198.18.0.0/30"]\n',
    ]
    for name in ("a1", "a2"):
        m = c.members[name]
        host = (
            '  [[node.port]]\n  kind = "host"\n  name = "h"\n  segment = "a"\n'
            '  address = ["198.18.100.50/24"]\n'
            if name == "a2"
            else ""
        )
        out.append(
            f'[[node]]\nname = "{name}"\nsite = "s"\n'
            f'public_key = "{encode_key(public_key(m.key))}"\n'
            f'endpoints = ["{m.endpoints[0]}:{PORT}"]\nsegments = ["a"]\n'
            '  [[node.port]]\n  kind = "access"\n  name = "ga"\n  segment = "a"\n'
            '  interface = "ga"\n' + host
        )
    return "\n".join(out)


def test_site_members_agree_a_member_in_userspace_is_reached_over_the_mesh(
    tmp_path: Path,
) -> None:
    with Netns() as nn:
        c = Cluster(nn, tmp_path)
        c.setup_core()
        for name in ("a1", "a2"):
            c.add_member(name)
        c.network_file.write_text(split_network_file(c))
        try:
            for name in ("a1", "a2"):
                c.start(name)
            wait_for(lambda: c.mesh_up(["a1", "a2"]), WAIT, "session between a1 and a2")
            assert "segment a: kernel data plane" in c.log("a1").read_text()
            assert "segment a: userspace data plane — host port h" in c.log("a2").read_text()
            wait_for(
                lambda: "site member a2 carries it in userspace" in c.log("a1").read_text(),
                WAIT,
                "a1 hearing a2's plane",
            )
            # no plain VXLAN towards a2 any more: only the mesh
            fdb = run(["bridge", "fdb", "show", "dev", "lsx100"], ns=c.members["a1"].ns).stdout
            assert "198.18.0.2" not in fdb, fdb
            for src, dst in (("a1", "a2"), ("a2", "a1")):
                wait_for(lambda s=src, d=dst: c.ping(s, d), WAIT, f"{src} → {dst}")  # type: ignore[misc]
            host = run(["ping", "-c", "1", "-W", "1", "198.18.100.50"],
                       ns=c.members["a1"].guest, check=False)  # fmt: skip
            assert host.returncode == 0, host.stdout
            peers = c.peers("a1")
            rows = {s["segment"]: s["plane"] for s in peers["a2"]["segments"]}
            assert rows == {"a": "mesh"}, peers["a2"]
        finally:
            c.stop_all()
