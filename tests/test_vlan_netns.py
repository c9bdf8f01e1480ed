"""Segments as real VLANs: three sites, access and trunk guests, real agents.

Each of three nodes (one per site) has an access guest in segment "a" (VLAN
10), an access guest in segment "b" (VLAN 20) and a trunk guest on a trunk
port allowing VLANs 10 and 20 (on n3, VLAN 20 is the trunk's native VLAN and
travels untagged). Segments a and b use the same IPv4 subnet, so any leak
between them shows up as a successful ping. A third segment, "c" (VLAN 30),
exists in the network and on every node but not on the trunks.

Shown: reachability inside each segment across the three sites and isolation
across them; tags on trunk egress and none on access egress, both ways; a
disallowed VLAN dropped and counted (`lanspan show --json`); VLAN hopping from
an access port dropped, QinQ passing trunks only; a MAC move between sites
(`lanspan show macs --json`, counter `mac_moves`).

This kernel has no 802.1Q module: trunk guests send hand-built tagged frames
and read tags through AF_PACKET (PACKET_AUXDATA), see tests/vlanlib.py.

Negative checks ("this frame went nowhere else") are made after a barrier:
every source sends one more frame, and it is awaited everywhere it belongs.
Frames from one source travel one path in order, so a frame wrongly
forwarded before the barrier would have arrived before it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from vlanlib import GuestPort, Seen, add_tag, arp_request, mac, marker

from lanspan.config import encode_key, generate_private_key, public_key, write_private_key
from lanspan.control.client import ControlUnavailable, request
from lanspan.lab.netns import Netns, require_root, run, veth_between, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

NODES = ("n1", "n2", "n3")
SEGMENTS = ("a", "b")  # access segments, both on the trunks
VLAN = {"a": 10, "b": 20, "c": 30}
NOT_ON_TRUNK = (30, 99)  # a segment's VLAN the trunks do not allow, and no segment's
NATIVE = {"n3": "b"}  # n3's trunk carries segment b untagged (native_vlan = 20)
SUBNET = "198.18.100"  # the same /24 in segments a and b, on purpose
WAIT = 20.0  # generous upper bound for any single awaited state

Key = tuple[str, str]  # (node, "a" | "b" | "t"): a guest


def guest_ip(seg: str, node: str) -> str:
    return f"{SUBNET}.{(10 if seg == 'a' else 20) + NODES.index(node) + 1}"


def guest_mac(kind: str, node: str) -> str:
    """a: 02:00:00:0a:00:0N, b: ...:0b:..., trunk guest t: ...:0c:..."""
    return f"02:00:00:0{'abc'['abt'.index(kind)]}:00:0{NODES.index(node) + 1}"


def network_file(keys: dict[str, bytes], underlay: dict[str, str]) -> str:
    parts = [
        '[network]\nname = "vlantest"\nport = 51820\n',
        f'[[segment]]\nname = "a"\nvlan = {VLAN["a"]}\nipv4 = "{SUBNET}.0/24"\nmtu = 1400\n',
        # b shares a's subnet on purpose; the file leaves it out (overlap is refused)
        f'[[segment]]\nname = "b"\nvlan = {VLAN["b"]}\nmtu = 1400\n',
        f'[[segment]]\nname = "c"\nvlan = {VLAN["c"]}\nmtu = 1400\n',
    ]
    for node in NODES:
        parts.append(
            f'[[node]]\nname = "{node}"\nsite = "site-{node}"\n'
            f'public_key = "{encode_key(public_key(keys[node]))}"\n'
            f'endpoints = ["{underlay[node]}:51820"]\nsegments = ["a", "b", "c"]\n'
        )
        for seg in SEGMENTS:
            parts.append(
                f'  [[node.port]]\n  kind = "access"\n  name = "g{seg}"\n  segment = "{seg}"\n'
                f'  interface = "g{seg}"\n'
            )
        vlans = ", ".join(str(VLAN[s]) for s in SEGMENTS)
        native = f"  native_vlan = {VLAN[NATIVE[node]]}\n" if node in NATIVE else ""
        parts.append(
            f'  [[node.port]]\n  kind = "trunk"\n  name = "gt"\n  interface = "gt"\n'
            f"  vlans = [{vlans}]\n{native}"
        )
    return "\n".join(parts)


@dataclass
class Mesh:
    ns: Netns
    tmp: Path
    agents: dict[str, subprocess.Popen[bytes]]
    guests: dict[Key, str]  # guest -> its namespace
    ports: dict[Key, GuestPort]  # guest -> AF_PACKET socket on its eth0

    def sock(self, node: str) -> Path:
        return self.tmp / f"{node}.sock"

    def log(self, node: str) -> str:
        return (self.tmp / f"{node}.log").read_text(errors="replace")

    def _query(self, node: str, cli: bool, *args: str) -> object:
        """`lanspan show ARGS --json` on `node`, or the same request straight to its socket.

        Polling loops use the socket (no interpreter start per poll); what a
        test asserts at the end is read the way an operator reads it.
        """
        if cli:
            argv = [sys.executable, "-m", "lanspan", "show", *args, "--json"]
            return json.loads(run([*argv, "--socket", str(self.sock(node))]).stdout)
        if args[:1] == ("macs",):
            response = request(self.sock(node), "macs", segment=args[2])
        else:
            response = request(self.sock(node), "status")
        assert response.get("ok"), response
        return response["result"]

    def show(self, node: str, cli: bool = True) -> dict[str, Any]:
        doc = self._query(node, cli)
        assert isinstance(doc, dict)
        return doc

    def macs(self, node: str, segment: str, cli: bool = True) -> dict[str, str]:
        """MAC -> where ("port:ga", "peer:n3") in `segment` on `node`."""
        rows = self._query(node, cli, "macs", "--segment", segment)
        assert isinstance(rows, list)
        return {r["mac"]: r["where"] for r in rows}

    def drops(self, node: str, cli: bool = True) -> dict[str, int]:
        d = self.show(node, cli)["drops"]
        assert isinstance(d, dict)
        return d

    def counters(self, node: str, cli: bool = True) -> dict[str, int]:
        c = self.show(node, cli)["counters"]
        assert isinstance(c, dict)
        return c

    def wait_started(self, node: str) -> None:
        """Until the agent's control socket exists; fail at once with its log if it exits."""
        proc, sock = self.agents[node], self.sock(node)
        wait_for(lambda: sock.exists() or proc.poll() is not None, WAIT, f"agent {node}")
        assert proc.poll() is None, f"agent {node} exited:\n{self.log(node)}"

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        """`wait_for` with the agents' state in the failure message."""
        try:
            wait_for(predicate, WAIT, what)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.diagnosis()}") from None

    def diagnosis(self) -> str:
        lines = []
        for node in NODES:
            try:
                doc = self.show(node, cli=False)
                peers = {p["name"]: p["session"] for p in doc["peers"]}
                macs = self.macs(node, "a", cli=False)
            except (AssertionError, ControlUnavailable) as e:
                lines.append(f"{node}: {e}")
                continue
            alive = "running" if self.agents[node].poll() is None else "EXITED"
            lines.append(
                f"{node} ({alive}): peers {peers}\n  drops {doc['drops']}\n"
                f"  counters {doc['counters']}\n  macs a {macs}"
            )
        return "\n".join(lines)

    def ping(self, src: Key, ip: str, count: int = 1) -> bool:
        r = run(
            ["ping", "-c", str(count), "-W", "1", "-i", "0.2", ip], ns=self.guests[src], check=False
        )
        return r.returncode == 0


def receivers(seg: str, source: Key | None) -> list[Key]:
    """Every guest a frame flooded in `seg` reaches: its access guests and all trunk guests."""
    keys = [(n, seg) for n in NODES] + [(n, "t") for n in NODES]
    return [k for k in keys if k != source]


def check_arrival(m: Mesh, key: Key, name: str, seg: str) -> Seen:
    """Wait for marker `name` at guest `key`; assert the tagging of its port kind."""
    port = m.ports[key]
    m.wait(lambda: bool(port.find(lambda s: s.is_marker(name))), f"marker {name} at {key}")
    seen = port.find(lambda s: s.is_marker(name))[0]
    if key[1] == "t" and NATIVE.get(key[0]) != seg:
        assert seen.vlan == VLAN[seg], f"{name} at trunk guest {key}: VLAN {seen.vlan}"
    else:
        assert not seen.tagged, f"{name} at access guest {key}: tagged {seen.vlan}"
        assert seen.aux_vlan is None and seen.data_vlan is None
    return seen


def flood(m: Mesh, source: Key, name: str, seg: str, src_mac: str | None = None) -> None:
    """`source` sends broadcast marker `name` in `seg` (tagged if it is a trunk guest)."""
    node, kind = source
    vlan = VLAN[seg] if kind == "t" and NATIVE.get(node) != seg else None
    m.ports[source].send(marker(mac(src_mac or guest_mac(kind, node)), name, vlan))


def flood_everywhere(m: Mesh, source: Key, name: str, seg: str) -> None:
    """`source` floods `name` in `seg`; it reaches every guest of `seg`, tagged as it should."""
    flood(m, source, name, seg)
    for key in receivers(seg, source):
        check_arrival(m, key, name, seg)


def barrier(m: Mesh, tag: str, sources: list[Key] | None = None) -> None:
    """Each source floods one more frame per segment it is in; await all of them."""
    for source in sources or [(n, s) for n in NODES for s in SEGMENTS]:
        for seg in SEGMENTS if source[1] == "t" else (source[1],):
            flood(m, source, f"{tag}-{source[0]}{source[1]}-{seg}", seg)
    for source in sources or [(n, s) for n in NODES for s in SEGMENTS]:
        for seg in SEGMENTS if source[1] == "t" else (source[1],):
            for key in receivers(seg, source):
                check_arrival(m, key, f"{tag}-{source[0]}{source[1]}-{seg}", seg)


def only_at(m: Mesh, name: str, keys: list[Key]) -> None:
    """After a barrier: marker `name` reached each of `keys` exactly once, and no other guest."""
    for key, port in m.ports.items():
        copies = len(port.find(lambda s: s.is_marker(name)))
        if key in keys:
            assert copies == 1, f"{name} reached {key} {copies} times"
        else:
            assert copies == 0, f"{name} leaked to {key}"


def all_sessions_up(m: Mesh) -> bool:
    for node in NODES:
        peers = m.show(node, cli=False)["peers"]
        assert isinstance(peers, list)
        if len(peers) != len(NODES) - 1 or not all(p["session"] == "up" for p in peers):
            return False
    return True


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("vlan")
    with Netns() as ns:
        ports: dict[Key, GuestPort] = {}
        try:
            core = ns.add("core")
            run(["ip", "link", "add", "br0", "type", "bridge"], ns=core)
            run(["ip", "link", "set", "br0", "up"], ns=core)
            keys = {n: generate_private_key() for n in NODES}
            underlay = {n: f"198.18.0.{i + 1}" for i, n in enumerate(NODES)}
            guests: dict[Key, str] = {}
            for node in NODES:
                nns = ns.add(node)
                ns.veth(nns, "up0", core, f"p{node}")
                run(["ip", "link", "set", f"p{node}", "master", "br0"], ns=core)
                ns.address(nns, "up0", f"{underlay[node]}/24")
                for kind in (*SEGMENTS, "t"):
                    g = ns.add(f"{node}{kind}")
                    # No IPv6 chatter from guests: every frame they send is one we chose
                    # or the kernel's answer to it (ARP, ICMP). No IPv6 at all: no chatter.
                    run(
                        ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                         "net.ipv6.conf.default.disable_ipv6=1"],
                        ns=g, check=False,
                    )  # fmt: skip
                    veth_between(g, "eth0", nns, f"g{kind}", mac_a=guest_mac(kind, node))
                    if kind != "t":
                        ns.address(g, "eth0", f"{guest_ip(kind, node)}/24")
                    guests[(node, kind)] = g
                write_private_key(tmp / f"{node}.key", keys[node])
            (tmp / "net.toml").write_text(network_file(keys, underlay))
            agents = {}
            for node in NODES:
                argv = [
                    sys.executable, "-m", "lanspan", "agent",
                    "--network", str(tmp / "net.toml"), "--node", node,
                    "--key", str(tmp / f"{node}.key"), "--control", str(tmp / f"{node}.sock"),
                ]  # fmt: skip
                agents[node] = ns.spawn(ns.name(node), argv, log=tmp / f"{node}.log")
            for key, g in guests.items():
                ports[key] = GuestPort(g, "eth0")
            m = Mesh(ns, tmp, agents, guests, ports)
            for node in NODES:
                m.wait_started(node)
            m.wait(lambda: all_sessions_up(m), "every session up")
            yield m
            for node, proc in agents.items():
                assert proc.poll() is None, f"agent {node} died:\n{m.log(node)}"
                assert ns.stop(proc) == 0, m.log(node)
        finally:
            for port in ports.values():
                port.close()


def test_segments_span_sites_and_same_subnet_stays_isolated(mesh: Mesh) -> None:
    for seg in SEGMENTS:
        for src in NODES:
            for dst in NODES:
                if src != dst:
                    ip = guest_ip(seg, dst)
                    assert mesh.ping((src, seg), ip, count=3), f"{src}/{seg} -> {dst} {ip}"
    # Same subnet, other segment: a leak would answer.
    for src in NODES:
        other = NODES[(NODES.index(src) + 1) % len(NODES)]
        assert not mesh.ping((src, "a"), guest_ip("b", src)), f"leak {src}/a -> {src}/b"
        assert not mesh.ping((src, "b"), guest_ip("a", other)), f"leak {src}/b -> {other}/a"


def test_access_frames_leave_trunks_tagged_and_access_ports_untagged(mesh: Mesh) -> None:
    # From access guests: tagged with the segment's VLAN on every trunk (local and
    # remote sites), untagged at the segment's other access guests.
    flood_everywhere(mesh, ("n2", "a"), "acc-a-n2", "a")
    flood_everywhere(mesh, ("n3", "b"), "acc-b-n3", "b")
    barrier(mesh, "acc")
    only_at(mesh, "acc-a-n2", receivers("a", ("n2", "a")))
    only_at(mesh, "acc-b-n3", receivers("b", ("n3", "b")))


def test_tagged_frames_from_a_trunk_reach_access_guests_untagged(mesh: Mesh) -> None:
    for seg in SEGMENTS:
        flood_everywhere(mesh, ("n1", "t"), f"trunk-{seg}-n1", seg)
    barrier(mesh, "trk", [("n1", "t")])
    for seg in SEGMENTS:
        only_at(mesh, f"trunk-{seg}-n1", receivers(seg, ("n1", "t")))
    # Untagged, the frame is the one the trunk guest sent minus its tag.
    sent = marker(mac(guest_mac("t", "n1")), "trunk-a-n1", VLAN["a"])
    (got,) = mesh.ports[("n2", "a")].find(lambda s: s.is_marker("trunk-a-n1"))
    assert got.data == sent[:12] + sent[16:]


def test_native_vlan_travels_untagged_on_its_trunk(mesh: Mesh) -> None:
    """n3's trunk: untagged frames join segment b, which leaves there untagged."""
    flood_everywhere(mesh, ("n3", "t"), "native-n3", "b")  # sent untagged
    flood_everywhere(mesh, ("n2", "b"), "to-native-n2", "b")  # untagged at n3's trunk only
    barrier(mesh, "nat", [("n3", "t"), ("n2", "b")])
    only_at(mesh, "native-n3", receivers("b", ("n3", "t")))
    only_at(mesh, "to-native-n2", receivers("b", ("n2", "b")))
    (at_n3,) = mesh.ports[("n3", "t")].find(lambda s: s.is_marker("to-native-n2"))
    (at_n1,) = mesh.ports[("n1", "t")].find(lambda s: s.is_marker("to-native-n2"))
    assert not at_n3.tagged and at_n1.vlan == VLAN["b"]


def test_trunk_guest_talks_to_each_segment_through_its_tag(mesh: Mesh) -> None:
    """ARP through the trunk: the same IP plan answers per VLAN, replies come back tagged."""
    trunk = mesh.ports[("n1", "t")]
    me = mac(guest_mac("t", "n1"))

    def reply_from(ip: str) -> list[Seen]:
        return trunk.find(lambda s: (r := s.arp_reply()) is not None and r[1] == ip)

    trunk.clear()
    trunk.send(arp_request(me, f"{SUBNET}.201", guest_ip("a", "n2"), vlan=VLAN["a"]))
    mesh.wait(lambda: bool(reply_from(guest_ip("a", "n2"))), "ARP reply in VLAN 10")
    (r10,) = reply_from(guest_ip("a", "n2"))
    assert r10.vlan == VLAN["a"] and r10.dst == me
    assert r10.src == mac(guest_mac("a", "n2"))
    # Ask segment b (VLAN 20) for segment a's address, then for b's own guest.
    trunk.send(arp_request(me, f"{SUBNET}.202", guest_ip("a", "n3"), vlan=VLAN["b"]))
    trunk.send(arp_request(me, f"{SUBNET}.202", guest_ip("b", "n3"), vlan=VLAN["b"]))
    mesh.wait(lambda: bool(reply_from(guest_ip("b", "n3"))), "ARP reply in VLAN 20")
    (r20,) = reply_from(guest_ip("b", "n3"))
    assert r20.vlan == VLAN["b"] and r20.src == mac(guest_mac("b", "n3"))
    assert not reply_from(guest_ip("a", "n3")), "segment a answered an ARP sent in VLAN 20"


def test_vlan_not_allowed_on_the_trunk_is_dropped_and_counted(mesh: Mesh) -> None:
    before = mesh.drops("n1", cli=False).get("switch.vlan_not_allowed", 0)
    trunk = mesh.ports[("n1", "t")]
    me = mac(guest_mac("t", "n1"))
    for vid in NOT_ON_TRUNK:
        trunk.send(marker(me, f"vid{vid}", vid))
    trunk.send(marker(me, "untagged"))  # no native VLAN on this trunk
    barrier(mesh, "nal", [("n1", "t")])
    for name in [f"vid{v}" for v in NOT_ON_TRUNK] + ["untagged"]:
        only_at(mesh, name, [])
    mesh.wait(
        lambda: mesh.drops("n1", cli=False).get("switch.vlan_not_allowed", 0) >= before + 3,
        "vlan_not_allowed drops counted on n1",
    )
    assert (
        mesh.drops("n1")["switch.vlan_not_allowed"] >= before + 3
    )  # as `lanspan show --json` says
    # Only this port was concerned: the agent and the other VLANs carry on.
    assert mesh.agents["n1"].poll() is None
    assert mesh.ping(("n1", "a"), guest_ip("a", "n2"))


def test_tags_that_must_not_cross_and_priority_tags_that_may(mesh: Mesh) -> None:
    """VLAN hopping from an access port, QinQ through trunks only, priority tags accepted."""
    drops = {node: mesh.drops(node, cli=False) for node in NODES}
    n1a, n1b, n1t = ("n1", "a"), ("n1", "b"), ("n1", "t")
    # An access guest tagging its frame for the other segment reaches nobody.
    mesh.ports[n1a].send(marker(mac(guest_mac("a", "n1")), "hop", VLAN["b"]))
    # A priority tag (VID 0) on an access port is the port's own segment.
    prio = marker(mac(guest_mac("b", "n1")), "prio", 0)
    mesh.ports[n1b].send(prio)
    # QinQ from a trunk: outer VLAN 10 allowed, inner tag 100 kept; it may leave
    # only through trunks, where it gets its outer tag back.
    mesh.ports[n1t].send(add_tag(marker(mac(guest_mac("t", "n1")), "qinq", 100), VLAN["a"]))
    # In segment b, n3's trunk is untagged: the inner tag would become the outer one
    # there (double-tagging VLAN hop), so that copy is not written.
    mesh.ports[n1t].send(add_tag(marker(mac(guest_mac("t", "n1")), "qinq-b", 100), VLAN["b"]))
    barrier(mesh, "tags", [n1a, n1b, n1t])
    only_at(mesh, "hop", [])
    only_at(mesh, "prio", receivers("b", n1b))
    for key in receivers("b", n1b):
        check_arrival(mesh, key, "prio", "b")
    (got,) = mesh.ports[("n2", "b")].find(lambda s: s.is_marker("prio"))
    assert got.data == prio[:12] + prio[16:]  # the priority tag was removed, nothing else
    trunks = [("n2", "t"), ("n3", "t")]
    only_at(mesh, "qinq", trunks)
    for key in trunks:
        (q,) = mesh.ports[key].find(lambda s: s.is_marker("qinq"))
        assert (q.aux_vlan, q.data_vlan) == (VLAN["a"], 100), (key, q)
    only_at(mesh, "qinq-b", [("n2", "t")])
    (q,) = mesh.ports[("n2", "t")].find(lambda s: s.is_marker("qinq-b"))
    assert (q.aux_vlan, q.data_vlan) == (VLAN["b"], 100), q
    mesh.wait(
        lambda: (
            mesh.drops("n1", cli=False).get("switch.tagged_on_access", 0)
            > drops["n1"].get("switch.tagged_on_access", 0)
        ),
        "tagged_on_access counted on n1",
    )
    for node in NODES:  # every site has an access port in segment a it must skip
        assert mesh.drops(node).get("switch.inner_tag_on_untagged_port", 0) > drops[node].get(
            "switch.inner_tag_on_untagged_port", 0
        ), node


def test_mac_move_to_another_site(mesh: Mesh) -> None:
    """Guest a@n1's MAC shows up at n3 (a VM migrated), then on n2's trunk, then back home.

    While it is away the guest at n1 is kept silent (ARP off, no IPv6), so that
    only the frames sent here from the other sites speak for its MAC.
    """
    vm = guest_mac("a", "n1")
    home: Key = ("n1", "a")

    def located(expect: dict[str, str], cli: bool = False) -> bool:
        return all(mesh.macs(node, "a", cli).get(vm) == w for node, w in expect.items())

    flood(mesh, home, "vm-home", "a")
    at_n1 = {"n1": "port:ga", "n2": "peer:n1", "n3": "peer:n1"}
    mesh.wait(lambda: located(at_n1), f"{vm} learned behind n1")
    moves = {node: mesh.counters(node, cli=False).get("mac_moves", 0) for node in NODES}

    run(["ip", "link", "set", "eth0", "arp", "off"], ns=mesh.guests[home])
    try:
        # The VM now speaks from n3's access port.
        flood(mesh, ("n3", "a"), "vm-at-n3", "a", src_mac=vm)
        at_n3 = {"n1": "peer:n3", "n2": "peer:n3", "n3": "port:ga"}
        mesh.wait(lambda: located(at_n3), f"{vm} moved behind n3")
        assert located(at_n3, cli=True)  # as `lanspan show macs --json` says
        # Unicast to it goes to n3 only: not to its old site, not flooded.
        src = mac(guest_mac("a", "n2"))
        mesh.ports[("n2", "a")].send(marker(src, "to-vm", dst=mac(vm)))
        check_arrival(mesh, ("n3", "a"), "to-vm", "a")
        barrier(mesh, "mv", [("n2", "a")])
        only_at(mesh, "to-vm", [("n3", "a")])

        # Then behind n2's trunk, tagged with the segment's VLAN.
        flood(mesh, ("n2", "t"), "vm-at-n2-trunk", "a", src_mac=vm)
        at_n2 = {"n1": "peer:n2", "n2": "port:gt", "n3": "peer:n2"}
        mesh.wait(lambda: located(at_n2), f"{vm} moved behind n2's trunk")
        assert located(at_n2, cli=True)
    finally:
        run(["ip", "link", "set", "eth0", "arp", "on"], ns=mesh.guests[home])

    # And home again: the guest's own traffic moves it back and it is reachable.
    flood(mesh, home, "vm-back", "a")
    mesh.wait(lambda: located(at_n1), f"{vm} back behind n1")
    for node in NODES:  # three moves each, as `lanspan show --json` counts them
        assert mesh.counters(node)["mac_moves"] >= moves[node] + 3, node
    log = mesh.log("n2")
    assert "mac_move" in log and vm in log, log
    assert mesh.ping(("n2", "a"), guest_ip("a", "n1"), count=3)
