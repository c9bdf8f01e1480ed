"""The kernel data plane's pure parts: names, owner marks, probe verdicts (no namespaces)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from lanspan.dataplane.kernel import (
    KernelPlaneError,
    SegmentDevices,
    _parse_alias,
    owner_alias,
)
from lanspan.dataplane.kernel_probe import Feature, KernelCapabilities, _Prober


class NetlinkError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def test_device_names_fit_the_kernel_limit() -> None:
    for vni in (1, 10, 4094, (1 << 24) - 1):
        d = SegmentDevices.for_vni(vni)
        assert all(len(n.encode()) <= 15 for n in (d.bridge, d.vxlan, d.mesh))
        assert len({d.bridge, d.vxlan, d.mesh}) == 3
    for bad in (0, 1 << 24, -1):
        with pytest.raises(ValueError):
            SegmentDevices.for_vni(bad)


def test_owner_alias_round_trip_and_foreign_aliases() -> None:
    alias = owner_alias("acme", "gra-hv1", "vxlan", "lan")
    assert _parse_alias(alias) == ("acme", "gra-hv1", "vxlan", "lan")
    assert len(alias.encode()) < 256  # IFALIASZ
    for foreign in (None, "", "uplink to rack 3", "lanspan:acme:gra-hv1", "other:a:b:c:d"):
        assert _parse_alias(foreign) is None


def test_kernel_error_keeps_errno_and_step() -> None:
    e = KernelPlaneError("create vxlan lsx10", errno.EOPNOTSUPP, "not supported")
    assert e.errno == errno.EOPNOTSUPP and e.step == "create vxlan lsx10"
    assert errno.errorcode[errno.EOPNOTSUPP] in str(e) and "create vxlan lsx10" in str(e)


class FakeIPR:
    """Answers like a kernel with bridges and VXLAN but without `refuse` link kinds."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.links: dict[str, int] = {}
        self.fdb_dst: list[str] = []
        self.isolated = 0

    def link(self, command: str, **kw: Any) -> None:
        kind = kw.get("kind")
        if command == "add":
            if kind in self.refuse:
                raise NetlinkError(errno.EOPNOTSUPP)
            self.links[kw["ifname"]] = len(self.links) + 1
        elif command == "set" and kw.get("br_vlan_filtering") and "vlan_filtering" in self.refuse:
            raise NetlinkError(errno.EOPNOTSUPP)

    def link_lookup(self, ifname: str) -> list[int]:
        return [self.links[ifname]] if ifname in self.links else []

    def fdb(self, command: str, **kw: Any) -> list[dict[str, Any]]:
        if command == "append":
            self.fdb_dst.append(kw["dst"])
        if command == "dump":
            return [Entry({"NDA_LLADDR": "00:00:00:00:00:00", "NDA_DST": d}) for d in self.fdb_dst]
        return []

    def brport(self, command: str, **kw: Any) -> list[Any]:
        if command == "set":
            self.isolated = 0 if "isolation" in self.refuse else kw["isolated"]
            return []
        return [Entry({}, {"IFLA_BRPORT_ISOLATED": self.isolated})]


class Entry:
    def __init__(self, attrs: dict[str, Any], brport: dict[str, Any] | None = None) -> None:
        self.attrs = attrs
        self.brport = brport or {}

    def get(self, key: str) -> Any:
        return self.attrs.get(key)

    def get_nested(self, *path: str) -> Any:
        return self.brport.get(path[-1])


def test_probe_all_there_but_vlans() -> None:
    caps = _Prober(FakeIPR({"vlan", "wireguard", "vlan_filtering"})).run()
    assert caps.missing_for_access() == ()
    assert [f.name for f in caps.missing_for_trunks()] == ["dot1q"]  # 802.1Q sub-interfaces
    assert caps.dot1q == Feature("dot1q", False, errno.EOPNOTSUPP, caps.dot1q.why)
    assert "not support" in caps.dot1q.why
    assert f"dot1q: no ({errno.errorcode[errno.EOPNOTSUPP]})" in caps.summary()


def test_probe_without_vxlan_marks_what_depends_on_it() -> None:
    caps = _Prober(FakeIPR({"vxlan"})).run()
    assert not caps.vxlan.available and caps.vxlan.errno == errno.EOPNOTSUPP
    for dependent in (caps.vxlan_nolearning, caps.fdb_flood, caps.fdb_mac, caps.port_isolation):
        assert not dependent.available and dependent.errno is None
        assert dependent.why == "not probed: needs vxlan"
    assert caps.bridge.available and caps.vlan_filtering.available
    assert {f.name for f in caps.missing_for_access()} == {
        "vxlan", "fdb_flood", "fdb_mac", "port_isolation",
    }  # fmt: skip


def test_probe_notices_isolation_not_taking_effect() -> None:
    caps = _Prober(FakeIPR({"isolation"})).run()
    assert not caps.port_isolation.available
    assert caps.port_isolation.errno == errno.EOPNOTSUPP
    assert [f.name for f in caps.missing_for_access()] == ["port_isolation"]


def test_unavailable_names_one_reason_everywhere() -> None:
    caps = KernelCapabilities.unavailable(errno.EPERM, "cannot create a throwaway namespace")
    assert len(caps.missing_for_access()) == 5
    assert all(f.errno == errno.EPERM and not f.available for f in caps.features())


class RecordingIPR:
    """Records every link call; interfaces exist once added (or listed as existing)."""

    def __init__(self, existing: tuple[str, ...]) -> None:
        self.links: dict[str, int] = {name: i + 1 for i, name in enumerate(existing)}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def link(self, command: str, **kw: Any) -> None:
        self.calls.append((command, kw))
        if command == "add":
            self.links[kw["ifname"]] = len(self.links) + 1

    def link_lookup(self, ifname: str) -> list[int]:
        return [self.links[ifname]] if ifname in self.links else []

    def get_links(self, *idx: int) -> list[Entry]:
        return [Entry({})]

    def brport(self, command: str, **kw: Any) -> list[Any]:
        self.calls.append(("brport", kw))
        return []

    def close(self) -> None:
        pass


def test_a_trunk_vlan_joins_the_bridge_as_an_802_1q_subinterface() -> None:
    from ipaddress import IPv4Address

    from lanspan.dataplane.kernel import KernelSegment, KernelSegmentSpec, KernelTrunkVlan

    spec = KernelSegmentSpec(
        network="n", node="a", segment="lan", vni=10, mtu=1400,
        local=IPv4Address("198.18.0.1"), mesh=False,
        trunks=(KernelTrunkVlan("up", "eth1", 10),),
    )  # fmt: skip
    ipr = RecordingIPR(existing=("eth1",))
    seg = KernelSegment(spec, ipr)
    seg._build()
    adds = [kw for c, kw in ipr.calls if c == "add"]
    sub = next(kw for kw in adds if kw.get("kind") == "vlan")
    assert sub == {"ifname": "lst10_0", "kind": "vlan", "link": ipr.links["eth1"], "vlan_id": 10}
    sets = [kw for c, kw in ipr.calls if c == "set"]
    idx = ipr.links["lst10_0"]
    assert {"index": idx, "master": ipr.links["lsb10"]} in sets  # in the segment's bridge
    assert {"index": idx, "IFLA_IFALIAS": "lanspan:n:a:trunk:lan", "mtu": 1400} in sets  # ours
    assert not [kw for c, kw in ipr.calls if c == "brport" and kw.get("index") == idx]  # local
    assert {"index": ipr.links["eth1"], "state": "up"} in sets
    assert "lst10_0" in seg._made and "eth1" not in seg._made  # the trunk itself is never ours
