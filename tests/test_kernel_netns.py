"""The kernel data plane in namespaces: interop with hand-made VXLAN, isolation, cleanup.

One trusted site on one underlay bridge (namespace "u", 198.19.1.0/24):
n1 and n2 are programmed by `KernelSegment` (VNI 10, UDP 4789), n3 is built
by hand the way people do it today (``ip link add vxlan10 type vxlan …``,
``bridge fdb append 00:00:00:00:00:00 …``, a bridge br10). Each node has a
guest behind a veth (g1, g2, g3, 198.18.10.1-3/24).

Negative checks ("this frame went nowhere else") are made after a barrier:
the same source sends one more frame along the same path and it is awaited
where it belongs; a frame wrongly forwarded before it would have arrived
before it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address

import pytest
from vlanlib import GuestPort, marker

from lanspan.dataplane.kernel import (
    KernelAccessPort,
    KernelPlaneError,
    KernelSegment,
    KernelSegmentSpec,
    cleanup_leftovers,
    leftovers,
    owner_alias,
)
from lanspan.dataplane.kernel_probe import probe
from lanspan.lab.netns import Netns, entered, require_root, run, veth_between, wait_for
from lanspan.wire.vnet import with_zero_header

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

VNI = 10
NET = "kt"
UNDERLAY = "198.19.1"
GUESTS = "198.18.10"
WAIT = 15.0
TAP = KernelAccessPort


def ips(ns: str) -> None:
    """No IPv6 chatter (RS, MLD, DAD) in a namespace: the frames counted are ours."""
    run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], ns=ns)
    run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"], ns=ns)


def links(ns: str) -> set[str]:
    out = run(["ip", "-o", "link", "show"], ns=ns).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def guest_mac(nn: Netns, ns: str) -> str:
    return run(["cat", "/sys/class/net/eth0/address"], ns=ns).stdout.strip()


@dataclass
class Site:
    nn: Netns
    nodes: dict[str, str]  # short -> namespace
    guests: dict[str, str]
    segments: dict[str, KernelSegment]  # lanspan-programmed nodes only

    def ping(self, src: str, dst_ip: str) -> bool:
        proc = run(["ping", "-c1", "-W1", dst_ip], ns=self.guests[src], check=False)
        return proc.returncode == 0


def _node_spec(name: str, addr: str, mesh: bool = True) -> KernelSegmentSpec:
    return KernelSegmentSpec(
        network=NET,
        node=name,
        segment="lan",
        vni=VNI,
        mtu=1400,
        local=ip_address(addr),
        access=(KernelAccessPort("vm", "vm", create=False),),
        mesh=mesh,
    )


def _hand_made(ns: str, local: str, peers: list[str]) -> None:
    """n3: configured the way people do it today (iproute2 commands)."""
    run(["ip", "link", "add", "vxlan10", "type", "vxlan", "id", "10", "dstport", "4789",
         "local", local], ns=ns)  # fmt: skip
    run(["ip", "link", "add", "br10", "type", "bridge"], ns=ns)
    run(["ip", "link", "set", "vxlan10", "master", "br10"], ns=ns)
    run(["ip", "link", "set", "vm", "master", "br10"], ns=ns)
    for p in peers:
        run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan10", "dst", p], ns=ns)
    for dev in ("vxlan10", "br10", "vm"):
        run(["ip", "link", "set", dev, "up"], ns=ns)


@pytest.fixture
def site() -> Iterator[Site]:
    nn = Netns()
    segments: dict[str, KernelSegment] = {}
    try:
        u = nn.add("u")
        ips(u)
        run(["ip", "link", "add", "ub", "type", "bridge"], ns=u)
        run(["ip", "link", "set", "ub", "up"], ns=u)
        nodes, guests = {}, {}
        for i in (1, 2, 3):
            n, g = nn.add(f"n{i}"), nn.add(f"g{i}")
            ips(n)
            ips(g)
            nodes[f"n{i}"], guests[f"g{i}"] = n, g
            veth_between(n, "eth0", u, f"p{i}", mtu=1500)
            run(["ip", "link", "set", f"p{i}", "master", "ub"], ns=u)
            nn.address(n, "eth0", f"{UNDERLAY}.{i}/24")
            veth_between(g, "eth0", n, "vm", mtu=1400)
            nn.address(g, "eth0", f"{GUESTS}.{i}/24")
        addrs = {f"n{i}": f"{UNDERLAY}.{i}" for i in (1, 2, 3)}
        for name in ("n1", "n2"):
            with entered(nodes[name]):
                seg = KernelSegment.create(_node_spec(name, addrs[name]))
                segments[name] = seg
                seg.set_site_peers(a for n, a in addrs.items() if n != name)
        _hand_made(nodes["n3"], addrs["n3"], [addrs["n1"], addrs["n2"]])
        yield Site(nn, nodes, guests, segments)
    finally:
        for name, seg in segments.items():
            with entered(nodes[name]):
                seg.close()
        nn.close()


def test_probe_matches_the_kernel() -> None:
    """Each verdict agrees with iproute2 trying the same thing in a namespace of ours."""
    caps = probe()
    assert caps.missing_for_access() == ()  # this suite needs bridges, VXLAN, FDB, isolation
    with Netns() as nn:
        ns = nn.add("p")
        run(["ip", "link", "add", "b0", "type", "bridge"], ns=ns)
        tries = {
            "vlan_filtering": ["ip", "link", "set", "b0", "type", "bridge", "vlan_filtering", "1"],
            "dot1q": ["ip", "link", "add", "link", "b0", "name", "b0.5", "type", "vlan", "id", "5"],
            "wireguard": ["ip", "link", "add", "wg0", "type", "wireguard"],
        }
        for name, argv in tries.items():
            works = run(argv, ns=ns, check=False).returncode == 0
            feature = getattr(caps, name)
            assert feature.available == works, feature
            if not works:
                assert feature.errno is not None and feature.why


def test_interop_with_hand_made_vxlan(site: Site) -> None:
    """Ping and ARP in all directions between two lanspan nodes and a hand-made VTEP."""
    pairs = [(a, b) for a in (1, 2, 3) for b in (1, 2, 3) if a != b]
    for a, b in pairs:
        wait_for(lambda a=a, b=b: site.ping(f"g{a}", f"{GUESTS}.{b}"), WAIT,
                 f"g{a} → g{b} ping")  # fmt: skip
    macs = {g: guest_mac(site.nn, ns) for g, ns in site.guests.items()}
    for a, b in pairs:
        neigh = run(["ip", "neigh", "show", f"{GUESTS}.{b}", "dev", "eth0"],
                    ns=site.guests[f"g{a}"]).stdout  # fmt: skip
        assert macs[f"g{b}"] in neigh, f"g{a} resolved g{b} to the wrong MAC: {neigh!r}"
    # What n1's kernel learned: g1 on its access port, g2 and g3 behind their VTEPs.
    with entered(site.nodes["n1"]):
        learned = {m.mac: m for m in site.segments["n1"].macs()}
    assert learned[macs["g1"]].where == "local" and learned[macs["g1"]].port == "vm"
    for g, n in (("g2", 2), ("g3", 3)):
        assert learned[macs[g]].where == "site"
        assert learned[macs[g]].remote == ip_address(f"{UNDERLAY}.{n}")
    # The hand-made node's VXLAN learned the lanspan nodes' VTEPs.
    fdb = run(["bridge", "fdb", "show", "dev", "vxlan10"], ns=site.nodes["n3"]).stdout
    assert f"{macs['g1']} dst {UNDERLAY}.1" in fdb and f"{macs['g2']} dst {UNDERLAY}.2" in fdb


def test_mesh_and_vxlan_ports_are_isolated(site: Site) -> None:
    """From the mesh TAP only to local ports; from the site's VXLAN only to local ports."""
    n1 = site.segments["n1"]
    assert n1.mesh_port is not None
    g1, g2 = GuestPort(site.guests["g1"], "eth0"), GuestPort(site.guests["g2"], "eth0")
    try:
        g1_mac = bytes.fromhex(guest_mac(site.nn, site.guests["g1"]).replace(":", ""))
        g2_mac = bytes.fromhex(guest_mac(site.nn, site.guests["g2"]).replace(":", ""))
        # A broadcast from another site (written to n1's mesh TAP) reaches g1, not the site.
        remote = bytes.fromhex("02000000ff01")
        n1.mesh_port.write(with_zero_header(marker(remote, "from-mesh")))
        g1.wait(lambda s: s.is_marker("from-mesh"), WAIT, "mesh broadcast at the local guest")
        g1.send(marker(g1_mac, "barrier-1"))  # g1 → n1 bridge → VXLAN → n2 → g2
        g2.wait(lambda s: s.is_marker("barrier-1"), WAIT, "barrier from g1")
        assert not g2.find(lambda s: s.is_marker("from-mesh")), "mesh frame went out VXLAN"
        assert n1.mesh_port.counters.tx_errors == 0

        # A broadcast from the site (g2, over VXLAN) reaches g1, never n1's mesh TAP.
        while n1.mesh_port.read() is not None:
            pass
        g2.send(marker(g2_mac, "from-site"))
        g1.wait(lambda s: s.is_marker("from-site"), WAIT, "site broadcast at the local guest")
        g1.send(marker(g1_mac, "barrier-2"))  # local: flooded to the mesh TAP
        seen: list[bytes] = []

        def mesh_got_barrier() -> bool:
            while (data := n1.mesh_port.read()) is not None:  # type: ignore[union-attr]
                seen.append(data)
            return any(b"LSVT:barrier-2" in d for d in seen)

        wait_for(mesh_got_barrier, WAIT, "barrier from g1 on the mesh TAP")
        assert not [d for d in seen if b"LSVT:from-site" in d], "site frame went to the mesh"
        # The kernel counts it too: the site's frame came in on VXLAN, the barrier left by TAP.
        with entered(site.nodes["n1"]):
            c = n1.counters()
        assert c["lsx10"].rx_packets >= 1 and c["lsm10"].tx_packets >= 1
    finally:
        g1.close()
        g2.close()


def test_failover_moves_fdb_destinations(site: Site) -> None:
    """n2's underlay address moves: flood and per-MAC entries follow, traffic resumes."""
    n1_ns, n2_ns = site.nodes["n1"], site.nodes["n2"]
    wait_for(lambda: site.ping("g1", f"{GUESTS}.2"), WAIT, "g1 → g2 before")
    site.nn.address(n2_ns, "eth0", f"{UNDERLAY}.22/24")
    n1 = site.segments["n1"]
    with entered(n1_ns):
        n1.set_mac("02:00:00:00:aa:01", f"{UNDERLAY}.2")
        moved = n1.move_destination(f"{UNDERLAY}.2", f"{UNDERLAY}.22")
        assert moved >= 2  # the flood entry and the pinned MAC, plus what was learned
        assert ip_address(f"{UNDERLAY}.22") in n1.site_peers
        assert ip_address(f"{UNDERLAY}.2") not in n1.site_peers
    fdb = run(["bridge", "fdb", "show", "dev", "lsx10"], ns=n1_ns).stdout
    assert f"dst {UNDERLAY}.2 " not in fdb.replace("\n", " ") + " ", fdb
    assert f"02:00:00:00:aa:01 dst {UNDERLAY}.22" in fdb
    # Frames to g2 now go to n2's new address: an entry learned anew points there.
    run(["ip", "neigh", "flush", "all"], ns=site.guests["g1"])
    wait_for(lambda: site.ping("g1", f"{GUESTS}.2"), WAIT, "g1 → g2 after the move")


def test_close_leaves_nothing() -> None:
    with Netns() as nn:
        ns = nn.add("c")
        veth_between(ns, "guest", ns, "vm")
        before = links(ns)
        with entered(ns):
            spec = KernelSegmentSpec(
                NET, "n1", "lan", 77, 1400, ip_address("198.19.1.1"),
                access=(KernelAccessPort("vm", "vm", False), TAP("t1", "lstap77", True)),
            )  # fmt: skip
            seg = KernelSegment.create(spec)
            seg.set_site_peers(["198.19.1.2", "198.19.1.3"])
            seg.set_mac("02:00:00:00:00:07", "198.19.1.2")
            assert set(leftovers(NET, "n1")) == {"lsb77", "lsx77", "lsm77", "lstap77"}
            seg.close()
            seg.close()  # idempotent
            assert leftovers(NET, "n1") == []
        assert links(ns) == before
        master = run(["ip", "-o", "link", "show", "vm"], ns=ns).stdout
        assert "master" not in master


def test_create_is_all_or_nothing() -> None:
    """A failure halfway (an access interface that does not exist) leaves nothing made."""
    with Netns() as nn:
        ns = nn.add("f")
        before = links(ns)
        with entered(ns):
            spec = KernelSegmentSpec(
                NET, "n1", "lan", 78, 1400, ip_address("198.19.1.1"),
                access=(TAP("t1", "lstap78", True), KernelAccessPort("x", "nope0", False)),
            )  # fmt: skip
            with pytest.raises(KernelPlaneError) as err:
                KernelSegment.create(spec)
            assert err.value.errno is not None and "nope0" in str(err.value)
        assert links(ns) == before


def test_leftovers_after_kill_9_are_removed() -> None:
    """An agent killed with SIGKILL: the next start finds its devices by owner mark."""
    with Netns() as nn:
        ns = nn.add("k")
        veth_between(ns, "guest", ns, "vm")
        before = links(ns)
        # A device another node made (same network) must survive the cleanup.
        run(["ip", "link", "add", "lsb99", "type", "bridge"], ns=ns)
        mark = owner_alias(NET, "other", "bridge", "x")
        run(["ip", "link", "set", "lsb99", "alias", mark], ns=ns)
        code = (
            "import sys, time\n"
            "from ipaddress import ip_address\n"
            "from lanspan.dataplane.kernel import *\n"
            f"spec = KernelSegmentSpec({NET!r}, 'n1', 'lan', 79, 1400, ip_address('198.19.1.1'),"
            " access=(KernelAccessPort('vm', 'vm', False),"
            " KernelAccessPort('t', 'lstap79', True)))\n"
            "seg = KernelSegment.create(spec)\n"
            "seg.set_site_peers(['198.19.1.2'])\n"
            "print('ready', flush=True)\n"
            "time.sleep(600)\n"
        )
        proc = nn.spawn(ns, [sys.executable, "-c", code])

        def made() -> bool:
            with entered(ns):
                return {"lsb79", "lsx79", "lstap79"} <= set(leftovers(NET, "n1"))

        wait_for(made, WAIT, "the child's kernel segment")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
        with entered(ns):
            left = set(leftovers(NET, "n1"))
            assert {"lsb79", "lsx79", "lstap79"} <= left  # the mesh TAP went with the process
            removed = cleanup_leftovers(NET, "n1")
            assert set(removed) == left
            assert leftovers(NET, "n1") == []
            assert leftovers(NET, "other") == ["lsb99"]
        assert links(ns) == before | {"lsb99"}
