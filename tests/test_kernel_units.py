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
    assert [f.name for f in caps.missing_for_trunks()] == ["vlan_filtering"]
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
