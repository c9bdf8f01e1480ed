"""What the running kernel offers the kernel data plane, probed over netlink.

`probe()` creates an anonymous network namespace in a short-lived thread
(``unshare(CLONE_NEWNET)``: nothing is named in /run/netns, so nothing can be
left behind even if the process dies mid-probe), tries each feature there
with pyroute2 exactly as the kernel data plane would use it, and returns a
frozen `KernelCapabilities`. Every feature that is missing carries the errno
and a sentence saying why. The caller's namespace is never touched.

Probed, in order (a feature that needs one before it is "not probed" when
that one is missing):

- ``bridge``: ``RTM_NEWLINK`` kind ``bridge``
- ``vxlan``: kind ``vxlan`` with a VNI, UDP port and a local IPv4 address
- ``vxlan_nolearning``: the same with ``IFLA_VXLAN_LEARNING = 0``
- ``fdb_flood``: an all-zero FDB entry with a destination, appended twice
  (head-end replication to two VTEPs)
- ``fdb_mac``: a per-MAC FDB entry with a destination
- ``port_isolation``: ``IFLA_BRPORT_ISOLATED`` on a bridge port, read back
- ``vlan_filtering``: ``IFLA_BR_VLAN_FILTERING = 1`` on a bridge
- ``dot1q``: kind ``vlan`` (the 802.1Q module) on top of a bridge
- ``wireguard``: kind ``wireguard`` (not used yet; see docs/kernel-dataplane.md)
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from lanspan.records import record

__all__ = ["Feature", "KernelCapabilities", "probe"]

_CLONE_NEWNET = 0x40000000

# Inside the throwaway namespace only; never sent anywhere.
_PROBE_LOCAL = "198.18.255.1"
_PROBE_PEERS = ("198.18.255.2", "198.18.255.3")


@record(frozen=True, slots=True)
class Feature:
    """One kernel feature: there or not, and if not, the errno and why."""

    name: str
    available: bool
    errno: int | None = None
    why: str = ""

    def __str__(self) -> str:
        if self.available:
            return f"{self.name}: yes"
        code = f" ({errno.errorcode.get(self.errno, self.errno)})" if self.errno else ""
        return f"{self.name}: no{code}: {self.why}"


@record(frozen=True, slots=True)
class KernelCapabilities:
    """The result of one probe; what the kernel data plane may use."""

    bridge: Feature
    vxlan: Feature
    vxlan_nolearning: Feature
    fdb_flood: Feature
    fdb_mac: Feature
    port_isolation: Feature
    vlan_filtering: Feature
    dot1q: Feature
    wireguard: Feature

    def features(self) -> tuple[Feature, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def missing_for_access(self) -> tuple[Feature, ...]:
        """What is missing for a segment with access ports only (empty: it can run)."""
        need = (self.bridge, self.vxlan, self.fdb_flood, self.fdb_mac, self.port_isolation)
        return tuple(f for f in need if not f.available)

    def missing_for_trunks(self) -> tuple[Feature, ...]:
        """What is missing, beyond `missing_for_access`, for trunk ports in the kernel.

        A trunk's VLAN joins its segment's bridge as an 802.1Q sub-interface
        (one bridge per segment, so no VLAN-aware bridge is needed): ``dot1q``.
        """
        return tuple(f for f in (self.dot1q,) if not f.available)

    def summary(self) -> str:
        return "; ".join(str(f) for f in self.features())

    @classmethod
    def unavailable(cls, code: int | None, why: str) -> KernelCapabilities:
        """Every feature missing for one reason (no namespace, no netlink)."""
        return cls(**{f.name: Feature(f.name, False, code, why) for f in fields(cls)})


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)  # pyroute2 NetlinkError
    if isinstance(code, int):
        return code
    return getattr(exc, "errno", None)


def _why(exc: BaseException) -> str:
    code = _errno_of(exc)
    if code == errno.EOPNOTSUPP:
        return "the kernel does not support it (module missing or not built)"
    if code is not None:
        return os.strerror(code)
    return f"{type(exc).__name__}: {exc}"


class _Prober:
    def __init__(self, ipr: Any) -> None:
        self.ipr = ipr
        self.found: dict[str, Feature] = {}

    def attempt(self, name: str, action: Callable[[], object], *needs: str) -> bool:
        missing = [n for n in needs if not self.found[n].available]
        if missing:
            self.found[name] = Feature(name, False, None, f"not probed: needs {', '.join(missing)}")
            return False
        try:
            action()
        except Exception as e:  # NetlinkError or OSError: keep the errno
            self.found[name] = Feature(name, False, _errno_of(e), _why(e))
            return False
        self.found[name] = Feature(name, True)
        return True

    def index(self, ifname: str) -> int:
        return int(self.ipr.link_lookup(ifname=ifname)[0])

    def run(self) -> KernelCapabilities:
        ipr = self.ipr
        self.attempt("bridge", lambda: ipr.link("add", ifname="pbr0", kind="bridge"))
        self.attempt(
            "vxlan",
            lambda: ipr.link(
                "add", ifname="pvx0", kind="vxlan", vxlan_id=10, vxlan_port=4789,
                vxlan_local=_PROBE_LOCAL,
            ),
        )  # fmt: skip
        self.attempt(
            "vxlan_nolearning",
            lambda: ipr.link(
                "add", ifname="pvx1", kind="vxlan", vxlan_id=11, vxlan_port=4789,
                vxlan_local=_PROBE_LOCAL, vxlan_learning=0,
            ),
            "vxlan",
        )  # fmt: skip

        def flood() -> None:
            for dst in _PROBE_PEERS:
                ipr.fdb("append", ifindex=self.index("pvx0"), lladdr="00:00:00:00:00:00", dst=dst)
            got = {
                e.get("NDA_DST")
                for e in ipr.fdb("dump", ifindex=self.index("pvx0"))
                if e.get("NDA_LLADDR") == "00:00:00:00:00:00"
            }
            if got != set(_PROBE_PEERS):
                raise OSError(errno.EIO, f"all-zero entries read back as {sorted(got)}")

        self.attempt("fdb_flood", flood, "vxlan")
        self.attempt(
            "fdb_mac",
            lambda: ipr.fdb(
                "add", ifindex=self.index("pvx0"), lladdr="02:00:5e:00:00:01", dst=_PROBE_PEERS[0]
            ),
            "vxlan",
        )

        def isolate() -> None:
            ipr.link("set", index=self.index("pvx0"), master=self.index("pbr0"))
            ipr.brport("set", index=self.index("pvx0"), isolated=1)
            info = next(iter(ipr.brport("show", index=self.index("pvx0"))))
            if info.get_nested("IFLA_PROTINFO", "IFLA_BRPORT_ISOLATED") != 1:
                raise OSError(errno.EOPNOTSUPP, "IFLA_BRPORT_ISOLATED did not read back as 1")

        self.attempt("port_isolation", isolate, "bridge", "vxlan")
        self.attempt(
            "vlan_filtering",
            lambda: ipr.link("set", index=self.index("pbr0"), kind="bridge", br_vlan_filtering=1),
            "bridge",
        )
        self.attempt(
            "dot1q",
            lambda: ipr.link("add", ifname="pvl0", kind="vlan", link=self.index("pbr0"), vlan_id=5),
            "bridge",
        )
        self.attempt("wireguard", lambda: ipr.link("add", ifname="pwg0", kind="wireguard"))
        return KernelCapabilities(**self.found)


def _in_throwaway_namespace() -> KernelCapabilities:
    libc = ctypes.CDLL(None, use_errno=True)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            return KernelCapabilities.unavailable(
                code, f"cannot create a throwaway network namespace: {os.strerror(code)}"
            )
        try:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                return _Prober(ipr).run()
        finally:
            # The namespace goes away with its last reference: our netlink
            # socket (closed above) and this thread (moved back now).
            if libc.setns(back, _CLONE_NEWNET) != 0:  # pragma: no cover - would be a kernel bug
                code = ctypes.get_errno()
                raise OSError(code, f"setns back: {os.strerror(code)}")
    finally:
        os.close(back)


def probe() -> KernelCapabilities:
    """Probe the kernel once (some 50-100 ms); never raises for a missing feature."""
    result: list[KernelCapabilities] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            result.append(_in_throwaway_namespace())
        except Exception as e:
            failure.append(e)

    t = threading.Thread(target=body, name="lanspan-kernel-probe")
    t.start()
    t.join()
    if failure:
        e = failure[0]
        return KernelCapabilities.unavailable(_errno_of(e), f"probe failed: {_why(e)}")
    return result[0]
