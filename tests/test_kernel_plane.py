"""Choosing the data plane per segment, and the network the node core sees (no kernel)."""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest

from lanspan.agent.kernel_plane import KernelPlane, choose_planes, core_view, site_members
from lanspan.config import parse_network
from lanspan.config.model import Network
from lanspan.dataplane.kernel_probe import Feature, KernelCapabilities

KEYS = [
    "sGC8mXFbN0Wf+S6UUw7wh3Cy9p7Ldu6Bo9dHOZAZ6Ws=",
    "Bzrs0s0Cr2bmJPFOeHGjJ0CkT9jTIu0DphlN3NOuXg8=",
    "aGkW7R5ytpm+VHnLmYnU5wYa6rHrOWgAvG1Kp9HmT0Q=",
]

NET = f"""
[network]
name = "acme"

[[segment]]
name = "lan"
vlan = 10

[[segment]]
name = "api"
vlan = 11
ipv4 = "198.18.11.0/24"

[[segment]]
name = "dmz"
vlan = 12

[[site]]
name = "gra"
trusted = true
underlay = ["198.19.1.0/24"]

[[node]]
name = "gra-1"
site = "gra"
public_key = "{KEYS[0]}"
endpoints = ["198.19.1.1:51820"]
segments = ["lan", "api", "dmz"]
  [[node.port]]
  kind = "access"
  name = "vm1"
  segment = "lan"
  interface = "veth-vm1"
  [[node.port]]
  kind = "host"
  name = "api0"
  segment = "api"
  address = ["198.18.11.1/24"]

[[node]]
name = "gra-2"
site = "gra"
public_key = "{KEYS[1]}"
endpoints = ["198.19.1.2:51820"]
segments = ["lan", "api"]

[[node]]
name = "gra-old"
site = "gra"
vtep = true
vxlan_address = "198.19.1.9"
segments = ["lan"]

[[node]]
name = "rbx-1"
site = "rbx"
public_key = "{KEYS[2]}"
endpoints = ["198.19.2.1:51820"]
segments = ["lan", "api", "dmz"]

[[static_mac]]
segment = "lan"
mac = "02:aa:00:00:00:02"
node = "gra-2"

[[static_mac]]
segment = "lan"
mac = "02:aa:00:00:00:03"
node = "rbx-1"
"""


def net() -> Network:
    return parse_network(NET, "net.toml")


def full() -> KernelCapabilities:
    caps = KernelCapabilities.unavailable(None, "")
    return KernelCapabilities(
        **{f.name: Feature(f.name, True) for f in caps.features()}  # type: ignore[arg-type]
    )


def without_vlans() -> KernelCapabilities:
    base = full()
    no = Feature("vlan_filtering", False, errno.EOPNOTSUPP, "the kernel does not support it")
    return KernelCapabilities(**{**{f.name: f for f in base.features()}, "vlan_filtering": no})  # type: ignore[arg-type]


def test_choice_per_segment_with_reasons() -> None:
    choices = {c.segment: c for c in choose_planes(net(), "gra-1", without_vlans)}
    assert choices["lan"].plane == "kernel"
    assert "gra-2, gra-old" in choices["lan"].reason and "udp 4789" in choices["lan"].reason
    assert choices["api"].plane == "userspace"
    assert choices["api"].reason.startswith("host port api0 is in it")
    assert choices["dmz"].plane == "userspace"
    assert choices["dmz"].reason == "no other member of site gra carries it"
    rbx = {c.segment: c for c in choose_planes(net(), "rbx-1", without_vlans)}
    assert {c.plane for c in rbx.values()} == {"userspace"}
    assert rbx["lan"].reason == "site rbx is not trusted"


def test_missing_kernel_features_mean_userspace_with_the_errno() -> None:
    no_iso = KernelCapabilities(
        **{  # type: ignore[arg-type]
            **{f.name: f for f in full().features()},
            "port_isolation": Feature("port_isolation", False, errno.EOPNOTSUPP, "not here"),
        }
    )
    lan = next(c for c in choose_planes(net(), "gra-1", lambda: no_iso) if c.segment == "lan")
    assert lan.plane == "userspace"
    assert "port_isolation: no" in lan.reason and "not here" in lan.reason


def test_the_kernel_is_probed_only_when_a_segment_could_use_it() -> None:
    calls = []

    def caps() -> KernelCapabilities:
        calls.append(1)
        return full()

    choose_planes(net(), "rbx-1", caps)  # untrusted site
    assert calls == []
    choose_planes(net(), "gra-1", caps)
    assert calls == [1]  # once for all segments


TRUNK = NET.replace(
    '  [[node.port]]\n  kind = "host"',
    '  [[node.port]]\n  kind = "trunk"\n  name = "up"\n  interface = "eth1"\n'
    '  vlans = [10, 12]\n  [[node.port]]\n  kind = "host"',
)


def with_caps(**changes: Feature) -> KernelCapabilities:
    return KernelCapabilities(**{**{f.name: f for f in full().features()}, **changes})  # type: ignore[arg-type]


def no(name: str) -> Feature:
    return Feature(name, False, errno.EOPNOTSUPP, "the kernel does not support it")


def lan_choice(text: str, caps: KernelCapabilities) -> tuple[str, str]:
    c = next(
        c
        for c in choose_planes(parse_network(text, "n"), "gra-1", lambda: caps)
        if c.segment == "lan"
    )
    return c.plane, c.reason


def test_trunks_stay_in_userspace_without_802_1q() -> None:
    """This kernel: no 802.1Q (and no VLAN filtering): one line says so, per segment."""
    plane, reason = lan_choice(
        TRUNK, with_caps(dot1q=no("dot1q"), vlan_filtering=no("vlan_filtering"))
    )
    assert plane == "userspace"
    assert reason.startswith("trunk port up carries it and the kernel lacks dot1q: no (")
    # what is probed decides, not the kernel version: VLAN filtering alone is not what it needs
    assert lan_choice(TRUNK, with_caps(vlan_filtering=no("vlan_filtering")))[0] == "kernel"


def test_trunks_join_the_kernel_where_802_1q_exists() -> None:
    assert lan_choice(TRUNK, full())[0] == "kernel"
    made = TRUNK.replace('name = "up"\n  interface = "eth1"', 'name = "up"')  # a TAP we make
    plane, reason = lan_choice(made, full())
    assert (plane, reason.split(" (")[0]) == ("userspace", "trunk port up is a TAP lanspan makes")
    native = TRUNK.replace("vlans = [10, 12]", "vlans = [10, 12]\n  native_vlan = 10")
    assert lan_choice(native, full()) == (
        "userspace",
        "trunk port up carries it untagged (native VLAN: in userspace)",
    )


def test_core_view_takes_the_kernels_vlans_off_a_trunk() -> None:
    n = parse_network(TRUNK, "n")
    view = core_view(n, "gra-1", {"lan"})
    up = view.node("gra-1").port("up")
    assert up.vlans == (12,)  # type: ignore[union-attr]  # dmz stays in userspace on it
    gone = core_view(
        parse_network(TRUNK.replace("vlans = [10, 12]", "vlans = [10]"), "n"), "gra-1", {"lan"}
    )
    assert [p.name for p in gone.node("gra-1").ports] == ["api0", "lsm10"]  # all the kernel's


def test_site_members_include_plain_vteps() -> None:
    n = net()
    assert site_members(n, n.node("gra-1"), "lan") == {
        "gra-2": IPv4Address("198.19.1.2"),
        "gra-old": IPv4Address("198.19.1.9"),
    }
    assert site_members(n, n.node("gra-1"), "dmz") == {}


def test_core_view_hands_the_core_the_mesh_tap_only() -> None:
    n = net()
    view = core_view(n, "gra-1", {"lan"})
    me = view.node("gra-1")
    assert [p.name for p in me.ports] == ["api0", "lsm10"]
    mesh = me.port("lsm10")
    assert mesh.kind == "access" and mesh.segment == "lan" and mesh.create  # type: ignore[union-attr]
    # gra-2 is reached over plain VXLAN for lan: the core neither floods it there nor accepts it.
    assert view.node("gra-2").segments == ("api",)
    assert view.node("rbx-1").segments == ("lan", "api", "dmz")  # other sites: the mesh
    # The static MAC behind gra-2 goes to the VXLAN FDB; the one behind rbx-1 stays in the core.
    assert [m.node for m in view.static_macs] == ["rbx-1"]
    assert core_view(n, "gra-1", set()) is n


def test_start_in_an_untrusted_site_builds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """rbx-1: cleanup of leftovers (none here), one log line per segment, no kernel segment."""
    caplog.set_level(logging.INFO, logger="lanspan.agent.kernel")
    plane = KernelPlane.start(net(), "rbx-1", caps=full)
    try:
        assert plane.kernel_segments == set()
        assert not [r for r in caplog.records if r.getMessage().startswith("segment ")]
        # logged by the agent once it is up (a failed start prints only its error)
        lines = [m for _, m in plane.take_startup_log() if m.startswith("segment ")]
        assert lines == [
            f"segment {s}: userspace data plane — site rbx is not trusted"
            for s in ("lan", "api", "dmz")
        ]
        assert plane.core_view() == net()
        plane.check_reload(net())  # nothing moves between planes
    finally:
        plane.close()


def test_vxlan_outside_the_underlay_is_refused_at_run_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plane = KernelPlane(net(), "gra-1")
    assert plane.peer_address("gra-2", IPv4Address("203.0.113.7")) is False
    assert plane.peer_address("gra-2", IPv4Address("203.0.113.7")) is False
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1  # logged once
    assert "outside site gra's underlay 198.19.1.0/24" in refused[0].getMessage()


class FakeSegment:
    """Stands for a KernelSegment: records FDB moves, flood lists and pinned MACs."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []
        self.flood: list[str] | None = None  # the last set_site_peers
        self.pinned: dict[str, str] = {}
        self.learned: dict[str, str] = {}  # MAC -> VTEP the kernel learned

    def move_destination(self, old: object, new: object) -> int:
        self.moves.append((str(old), str(new)))
        return 1

    def set_site_peers(self, addresses: object) -> None:
        self.flood = sorted(str(a) for a in addresses)  # type: ignore[attr-defined]

    def set_mac(self, mac: str, dst: object) -> None:
        self.pinned[mac] = str(dst)

    def remove_mac(self, mac: str) -> None:
        self.pinned.pop(mac, None)

    def prune_foreign(self, allowed: Callable[[object], bool]) -> list[tuple[str, object]]:
        gone = [(m, d) for m, d in self.learned.items() if not allowed(IPv4Address(d))]
        for m, _ in gone:
            del self.learned[m]
        return gone  # type: ignore[return-value]


def kernel_lan(text: str = NET) -> tuple[KernelPlane, FakeSegment]:
    """gra-1 with lan in the kernel (a fake segment), as `KernelPlane.start` leaves it."""
    n = parse_network(text, "net.toml")
    plane = KernelPlane(n, "gra-1")
    fake = FakeSegment()
    plane.segments["lan"] = fake  # type: ignore[assignment]
    plane._at["lan"] = site_members(n, n.node("gra-1"), "lan")
    plane.choices = {c.segment: c for c in choose_planes(n, "gra-1", without_vlans)}
    return plane, fake


def test_vxlan_follows_a_site_members_path_switch_inside_the_underlay() -> None:
    plane, fake = kernel_lan(
        NET.replace(
            'endpoints = ["198.19.1.2:51820"]',
            'endpoints = ["198.19.1.2:51820", "198.19.1.22:51820"]',
        )
    )
    assert plane.follow("path_switch", {"peer": "gra-2", "path": "198.19.1.22:51820"})
    assert fake.moves == [("198.19.1.2", "198.19.1.22")]
    # Already there, a relay path, another kind, a peer of another site: nothing moves.
    assert not plane.follow("path_switch", {"peer": "gra-2", "path": "198.19.1.22:51820"})
    assert not plane.follow("path_switch", {"peer": "gra-2", "path": "via rbx-1"})
    assert not plane.follow("path_up", {"peer": "gra-2", "path": "198.19.1.2:51820"})
    assert not plane.follow("path_switch", {"peer": "rbx-1", "path": "198.19.1.30:51820"})
    # Outside the site's underlay: refused, the entries stay where they were.
    assert not plane.follow("path_switch", {"peer": "gra-2", "path": "203.0.113.7:51820"})
    assert plane.follow("path_switch", {"peer": "gra-2", "path": "198.19.1.2:51820"})
    assert fake.moves == [("198.19.1.2", "198.19.1.22"), ("198.19.1.22", "198.19.1.2")]


def test_a_vxlan_address_apart_from_the_endpoints_stays_put() -> None:
    plane, fake = kernel_lan(
        NET.replace(
            'endpoints = ["198.19.1.2:51820"]',
            'endpoints = ["198.19.1.2:51820"]\nvxlan_address = "198.19.1.42"',
        )
    )
    assert plane._at["lan"]["gra-2"] == IPv4Address("198.19.1.42")
    assert not plane.follow("path_switch", {"peer": "gra-2", "path": "198.19.1.2:51820"})
    assert fake.moves == []


def test_status_says_the_plane_per_segment_and_per_peer() -> None:
    from lanspan.node.core import NodeCore

    plane, _ = kernel_lan()
    core_net = plane.core_view()
    rng = random.Random(1)
    node = NodeCore(
        core_net, "gra-1", bytes(range(32)), random_bytes=rng.randbytes,
        wall_time=lambda: 0.0, now=0.0,
    )  # fmt: skip
    st = plane.node_status(node, 1.0)
    segs = {s.name: s for s in st.segments}
    assert (segs["lan"].plane, segs["api"].plane, segs["dmz"].plane) == (
        "kernel", "userspace", "userspace",
    )  # fmt: skip
    assert segs["api"].plane_reason is not None
    assert segs["api"].plane_reason.startswith("host port api0 is in it")
    peers = {p.name: {(x.segment, x.plane, x.vtep) for x in p.segments} for p in st.peers}
    assert peers["gra-2"] == {("lan", "kernel_vxlan", "198.19.1.2"), ("api", "mesh", None)}
    assert peers["rbx-1"] == {("lan", "mesh", None), ("api", "mesh", None), ("dmz", "mesh", None)}

    from lanspan.control.render import render_status

    text = render_status(st)
    assert "segments: lan kernel vxlan 198.19.1.2, api mesh" in text
    assert "api: userspace data plane — host port api0 is in it" in text


def test_a_site_member_in_userspace_is_reached_over_the_mesh_and_back() -> None:
    plane, fake = kernel_lan()
    fake.pinned["02:aa:00:00:00:02"] = "198.19.1.2"  # as _build left it
    fake.learned = {"02:bb:00:00:00:01": "198.19.1.2", "02:bb:00:00:00:09": "198.19.1.9"}
    assert plane.core_view().node("gra-2").segments == ("api",)
    assert plane.follow("peer_planes", {"peer": "gra-2", "planes": {"lan": "userspace"}})
    assert plane.view_changed
    assert fake.flood == ["198.19.1.9"]  # no plain VXLAN to gra-2, the plain VTEP stays
    assert fake.pinned == {}
    assert fake.learned == {"02:bb:00:00:00:09": "198.19.1.9"}  # learned behind it: forgotten
    view = plane.core_view()
    assert view.node("gra-2").segments == ("lan", "api")  # the core carries lan to it
    assert sorted(m.node for m in view.static_macs) == ["gra-2", "rbx-1"]  # its MAC: the core
    # told again (every probe round until acked): nothing changes
    plane.view_changed = False
    assert not plane.follow("peer_planes", {"peer": "gra-2", "planes": {"lan": "userspace"}})
    assert not plane.view_changed
    # its path moves: no VXLAN entry to move any more
    assert not plane.follow("path_switch", {"peer": "gra-2", "path": "198.19.1.2:51820"})
    assert fake.moves == []
    # it carries lan in the kernel again (restarted with what it lacked)
    assert plane.follow("peer_planes", {"peer": "gra-2", "planes": {"lan": "kernel"}})
    assert fake.flood == ["198.19.1.2", "198.19.1.9"]
    assert fake.pinned == {"02:aa:00:00:00:02": "198.19.1.2"}
    assert plane.core_view().node("gra-2").segments == ("api",)


def test_planes_that_change_nothing_are_ignored() -> None:
    plane, fake = kernel_lan()
    for fields in (
        {"peer": "rbx-1", "planes": {"lan": "userspace"}},  # another site
        {"peer": "gra-2", "planes": {"api": "userspace"}},  # not a kernel segment here
        {"peer": "gra-2", "planes": {"lan": "fast"}},  # not a plane
        {"peer": "gra-2", "planes": {"lan": "kernel"}},  # what we assumed
        {"peer": "nobody", "planes": {"lan": "userspace"}},
        {"peer": "gra-2", "planes": "lan"},
    ):
        assert not plane.follow("peer_planes", fields), fields
    assert fake.flood is None and not plane.view_changed


def test_what_a_node_tells_its_site() -> None:
    plane, _ = kernel_lan()
    plane.choices = {c.segment: c for c in choose_planes(plane.network, "gra-1", without_vlans)}
    assert plane.advertised() == {"lan": "kernel", "api": "userspace", "dmz": "userspace"}
    assert KernelPlane(net(), "rbx-1").advertised() == {}  # an untrusted site: nothing to agree


def test_metrics_say_the_plane_per_segment_and_per_peer() -> None:
    from lanspan.control.metrics import render_prometheus
    from lanspan.node.core import NodeCore

    plane, _ = kernel_lan()
    node = NodeCore(
        plane.core_view(), "gra-1", bytes(range(32)), random_bytes=random.Random(1).randbytes,
        wall_time=lambda: 0.0, now=0.0,
    )  # fmt: skip
    prom = render_prometheus(plane.node_status(node, 1.0))
    assert 'lanspan_segment_plane{segment="lan",plane="kernel"} 1' in prom
    assert 'lanspan_segment_plane{segment="api",plane="userspace"} 1' in prom
    assert 'lanspan_peer_segment_plane{peer="gra-2",segment="lan",plane="kernel_vxlan"} 1' in prom
    assert 'lanspan_peer_segment_plane{peer="gra-2",segment="api",plane="mesh"} 1' in prom
    assert 'lanspan_peer_segment_plane{peer="rbx-1",segment="lan",plane="mesh"} 1' in prom
    # a member that said userspace: mesh from then on
    plane.follow("peer_planes", {"peer": "gra-2", "planes": {"lan": "userspace"}})
    node.reconfigure(plane.core_view(), 2.0)
    prom = render_prometheus(plane.node_status(node, 2.0))
    assert 'lanspan_peer_segment_plane{peer="gra-2",segment="lan",plane="mesh"} 1' in prom
