"""The kernel data plane of one segment on one node, programmed over netlink (pyroute2).

Inside a trusted site, frames between the site's nodes stay in the kernel::

    access ports ──┐
    (veth, TAP)    │
    trunk VLANs  ──┤  (802.1Q sub-interface lst<vni>_<i> of an existing trunk interface)
                   ├─ bridge lsb<vni> ─┬─ vxlan lsx<vni>  isolated ─ plain VXLAN (RFC 7348)
                   │                   │                              to the site's other nodes
                   │                   └─ TAP lsm<vni>    isolated ─ read by the agent: the
                   │                                                  encrypted path to other sites
                   └─ (the bridge learns MAC → port; the VXLAN FDB: MAC → remote VTEP)

- The VXLAN device floods broadcast, unknown unicast and multicast by
  head-end replication: one all-zero FDB entry per other node of the site
  (`set_site_peers`), no multicast group. Per-MAC entries are learned by the
  kernel (``learning`` on) or set by the agent (`set_mac`).
- Both mesh-facing ports are isolated (``IFLA_BRPORT_ISOLATED``): isolated
  ports never forward to each other, so a frame from the site's VXLAN reaches
  only local ports (every node of the site has its own encrypted path to the
  other sites, so the sender's node already sent it there), and a frame from
  another site (mesh TAP) reaches only local ports (the remote sender sent it
  to every node of this site itself). Nothing is delivered twice, nothing
  loops between VXLAN and the mesh.
- Every device made carries an owner mark in its ifalias,
  ``lanspan:<network>:<node>:<role>:<segment>``; `cleanup_leftovers` finds
  them after a kill -9 and removes them. Existing interfaces attached as
  access ports are never marked and never deleted: removing the bridge
  releases them.

`KernelSegment.create` is all or nothing: on any error it removes what it
made and raises `KernelPlaneError` naming the step and keeping the errno.

Netlink calls use one `IPRoute` opened by `create` in the calling thread's
network namespace and kept for the segment's lifetime.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Literal

from lanspan.dataplane.links import link_aliases
from lanspan.dataplane.tap import TapPort
from lanspan.records import record

__all__ = [
    "DEFAULT_VXLAN_PORT",
    "OWNER_PREFIX",
    "DeviceCounters",
    "KernelAccessPort",
    "KernelMac",
    "KernelPlaneError",
    "KernelSegment",
    "KernelSegmentSpec",
    "KernelTrunkVlan",
    "SegmentDevices",
    "cleanup_leftovers",
    "leftovers",
    "owner_alias",
]

log = logging.getLogger(__name__)

DEFAULT_VXLAN_PORT = 4789
OWNER_PREFIX = "lanspan"
ZERO_MAC = "00:00:00:00:00:00"

Addr = IPv4Address | IPv6Address

_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000

_NUD_PERMANENT = 0x80
_NUD_NOARP = 0x40
_NTF_SELF = 0x02
_NTF_MASTER = 0x04
_IN6_ADDR_GEN_MODE_NONE = 1


class KernelPlaneError(OSError):
    """A netlink or device operation failed; `step` says which, `errno` is the kernel's."""

    def __init__(self, step: str, code: int | None, detail: str) -> None:
        super().__init__(code, f"{step}: {detail}")
        self.step = step
        self.detail = detail

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, str(self.errno)) if self.errno is not None else "?"
        return f"{self.step}: {self.detail} ({name})"


def owner_alias(network: str, node: str, role: str, segment: str) -> str:
    """The ifalias marking a device as made by this agent."""
    return f"{OWNER_PREFIX}:{network}:{node}:{role}:{segment}"


def _parse_alias(alias: str | None) -> tuple[str, str, str, str] | None:
    if not alias:
        return None
    parts = alias.split(":")
    if len(parts) != 5 or parts[0] != OWNER_PREFIX:
        return None
    return parts[1], parts[2], parts[3], parts[4]


@record(frozen=True, slots=True)
class SegmentDevices:
    """Kernel device names of one segment (15 bytes at most: VNI < 2**24 fits)."""

    bridge: str
    vxlan: str
    mesh: str

    @classmethod
    def for_vni(cls, vni: int) -> SegmentDevices:
        if not 0 < vni < 1 << 24:
            raise ValueError(f"VNI {vni} outside 1..16777215")
        return cls(f"lsb{vni}", f"lsx{vni}", f"lsm{vni}")


@record(frozen=True, slots=True)
class KernelAccessPort:
    """An untagged local port bridged in the kernel: a TAP we make or an existing interface."""

    name: str  # lanspan's port name (shown in `show macs`)
    device: str  # kernel interface name
    create: bool  # True: a persistent TAP made (and removed) by us


@record(frozen=True, slots=True)
class KernelTrunkVlan:
    """One VLAN of an existing trunk interface, bridged as an 802.1Q sub-interface."""

    name: str  # lanspan's trunk port name (shown in `show macs`)
    device: str  # the trunk's kernel interface (never created, never deleted by us)
    vlan: int  # the segment's VLAN id on the trunk

    def subinterface(self, vni: int, index: int) -> str:
        """The sub-interface we make: ``lst<vni>_<index>`` (at most 15 bytes)."""
        name = f"lst{vni}_{index}"
        if len(name) > 15:
            raise ValueError(f"trunk sub-interface name {name} longer than 15 bytes")
        return name


@record(frozen=True, slots=True)
class KernelSegmentSpec:
    """Everything `KernelSegment.create` needs; no config objects below the agent."""

    network: str
    node: str
    segment: str
    vni: int
    mtu: int
    local: Addr  # this node's underlay address inside the trusted site
    vxlan_port: int = DEFAULT_VXLAN_PORT
    access: tuple[KernelAccessPort, ...] = ()
    trunks: tuple[KernelTrunkVlan, ...] = ()  # needs 802.1Q (KernelCapabilities.dot1q)
    learning: bool = True  # kernel VXLAN learns MAC → remote VTEP from what it receives
    mesh: bool = True  # make the mesh TAP (the encrypted path to other sites)
    ageing: float = 300.0  # bridge MAC ageing, seconds

    @property
    def devices(self) -> SegmentDevices:
        return SegmentDevices.for_vni(self.vni)


@record(frozen=True, slots=True)
class KernelMac:
    """One MAC the kernel bridge knows, and where it is."""

    mac: str  # "aa:bb:cc:dd:ee:ff"
    where: Literal["local", "site", "mesh"]  # an access port, a site node over VXLAN, other sites
    port: str  # the access port's name, the VXLAN or the mesh device
    remote: Addr | None  # for "site": the VTEP the VXLAN FDB sends it to (None: flooded)
    static: bool  # set by the agent, not learned


@record(frozen=True, slots=True)
class DeviceCounters:
    """Kernel interface counters (IFLA_STATS64)."""

    device: str
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    tx_dropped: int


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)  # pyroute2 NetlinkError
    if isinstance(code, int):
        return code
    return getattr(exc, "errno", None)


def _detail(exc: BaseException) -> str:
    code = _code(exc)
    if code is not None and code > 0:
        return os.strerror(code)
    return str(exc)


def _create_persistent_tap(device: str) -> None:
    """A TAP that outlives our fd (a VM attaches to it by name); removed by RTM_DELLINK."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", device.encode(), _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR)
        fcntl.ioctl(fd, _TUNSETIFF, ifr)
        fcntl.ioctl(fd, _TUNSETPERSIST, 1)
    finally:
        os.close(fd)


class KernelSegment:
    """One segment's bridge, VXLAN device, mesh TAP and access ports in the kernel."""

    def __init__(self, spec: KernelSegmentSpec, ipr: Any) -> None:
        self.spec = spec
        self.devices = spec.devices
        self.mesh_port: TapPort | None = None  # the agent reads and writes it (other sites)
        self._ipr = ipr
        self._made: list[str] = []  # devices we created, in order
        self._attached: list[str] = []  # existing interfaces we enslaved
        self._peers: list[Addr] = []  # all-zero FDB destinations, in the order set
        self._static: dict[str, Addr] = {}  # per-MAC FDB entries we set
        self._closed = False

    # -- building ----------------------------------------------------------

    @classmethod
    def create(cls, spec: KernelSegmentSpec) -> KernelSegment:
        """Build the segment in the caller's namespace; all or nothing."""
        from pyroute2 import IPRoute

        seg = cls(spec, IPRoute())
        try:
            seg._build()
        except BaseException:
            seg.close()  # never half-configured
            raise
        log.info(
            "segment %s: kernel bridge %s, vxlan %s (vni %d, %s:%d)%s",
            spec.segment, seg.devices.bridge, seg.devices.vxlan, spec.vni,
            spec.local, spec.vxlan_port,
            f", mesh {seg.devices.mesh}" if spec.mesh else "",
        )  # fmt: skip
        return seg

    def _step(self, what: str, action: Callable[[], object]) -> Any:
        try:
            return action()
        except KernelPlaneError:
            raise
        except Exception as e:  # NetlinkError / OSError: keep the errno
            raise KernelPlaneError(what, _code(e), _detail(e)) from e

    def _index(self, device: str) -> int:
        found = self._ipr.link_lookup(ifname=device)
        if not found:
            raise KernelPlaneError(f"look up {device}", errno.ENODEV, "no such interface")
        return int(found[0])

    def _alias(self, role: str) -> str:
        s = self.spec
        return owner_alias(s.network, s.node, role, s.segment)

    def _refuse_existing(self, device: str) -> None:
        found = self._ipr.link_lookup(ifname=device)
        if found:
            link = self._ipr.get_links(found[0])[0]
            owner = link.get("IFLA_IFALIAS") or "no lanspan owner mark"
            raise KernelPlaneError(
                f"create {device}",
                errno.EEXIST,
                f"{device} already exists ({owner}); "
                "if it is a leftover of this node, cleanup_leftovers removes it",
            )

    def _quiet_ipv6(self, index: int) -> None:
        """No link-local address on our devices: the host never speaks into the segment."""
        spec = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]}
        try:
            self._ipr.link("set", index=index, IFLA_AF_SPEC=spec)
        except Exception as e:  # no IPv6 in this kernel: nothing to quiet
            if _code(e) not in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT, errno.EINVAL):
                raise

    def _build(self) -> None:
        s, d, ipr = self.spec, self.devices, self._ipr
        for dev in (d.bridge, d.vxlan, *((d.mesh,) if s.mesh else ())):
            self._refuse_existing(dev)

        self._step(
            f"create bridge {d.bridge}",
            lambda: ipr.link(
                "add", ifname=d.bridge, kind="bridge", br_stp_state=0,
                br_ageing_time=int(s.ageing * 100),
            ),
        )  # fmt: skip
        self._made.append(d.bridge)
        br = self._index(d.bridge)
        self._step(f"configure {d.bridge}", lambda: self._mark(br, "bridge"))

        local = (
            {"vxlan_local6": str(s.local)}
            if isinstance(s.local, IPv6Address)
            else {"vxlan_local": str(s.local)}
        )
        self._step(
            f"create vxlan {d.vxlan} (vni {s.vni}, port {s.vxlan_port})",
            lambda: ipr.link(
                "add", ifname=d.vxlan, kind="vxlan", vxlan_id=s.vni, vxlan_port=s.vxlan_port,
                vxlan_learning=1 if s.learning else 0, **local,
            ),
        )  # fmt: skip
        self._made.append(d.vxlan)
        vx = self._index(d.vxlan)
        self._step(f"configure {d.vxlan}", lambda: self._mark(vx, "vxlan"))
        self._enslave(d.vxlan, br, isolated=True)

        if s.mesh:
            self.mesh_port = self._step(
                f"create mesh TAP {d.mesh}",
                lambda: TapPort.create(f"kernel:{s.segment}", s.mtu, device=d.mesh),
            )
            self._made.append(d.mesh)
            mesh = self._index(d.mesh)
            self._step(f"configure {d.mesh}", lambda: self._mark(mesh, "mesh"))
            self._enslave(d.mesh, br, isolated=True)

        for port in s.access:
            if port.create:
                self._refuse_existing(port.device)
                self._step(
                    f"create TAP {port.device} (port {port.name})",
                    lambda p=port: _create_persistent_tap(p.device),  # type: ignore[misc]
                )
                self._made.append(port.device)
                idx = self._index(port.device)
                self._step(f"configure {port.device}", lambda i=idx: self._mark(i, "tap"))  # type: ignore[misc]
            else:
                idx = self._index(port.device)
                master = self._ipr.get_links(idx)[0].get("IFLA_MASTER")
                if master:
                    raise KernelPlaneError(
                        f"attach {port.device} (port {port.name})",
                        errno.EBUSY,
                        f"{port.device} is already a port of another bridge or bond",
                    )
                self._attached.append(port.device)
            self._enslave(port.device, br, isolated=False)

        for i, t in enumerate(s.trunks):
            sub = t.subinterface(s.vni, i)
            self._refuse_existing(sub)
            parent = self._index(t.device)
            self._step(
                f"create 802.1Q sub-interface {sub} (vlan {t.vlan} of trunk {t.name})",
                lambda p=parent, n=sub, v=t.vlan: ipr.link(  # type: ignore[misc]
                    "add", ifname=n, kind="vlan", link=p, vlan_id=v
                ),
            )
            self._made.append(sub)
            idx = self._index(sub)
            self._step(f"configure {sub}", lambda i=idx: self._mark(i, "trunk"))  # type: ignore[misc]
            self._enslave(sub, br, isolated=False)
            self._step(
                f"bring trunk {t.device} up",
                lambda p=parent: ipr.link("set", index=p, state="up"),  # type: ignore[misc]
            )

        for dev in [*self._made, *self._attached]:
            idx = self._index(dev)
            self._step(f"bring {dev} up", lambda i=idx: ipr.link("set", index=i, state="up"))  # type: ignore[misc]

    def _mark(self, index: int, role: str) -> None:
        self._ipr.link("set", index=index, IFLA_IFALIAS=self._alias(role), mtu=self.spec.mtu)
        self._quiet_ipv6(index)

    def _enslave(self, device: str, bridge: int, *, isolated: bool) -> None:
        idx = self._index(device)
        self._step(
            f"add {device} to {self.devices.bridge}",
            lambda: self._ipr.link("set", index=idx, master=bridge),
        )
        if isolated:
            self._step(
                f"isolate bridge port {device}",
                lambda: self._ipr.brport("set", index=idx, isolated=1),
            )

    # -- FDB: head-end replication, per-MAC entries, failover ---------------

    @property
    def site_peers(self) -> tuple[Addr, ...]:
        return tuple(self._peers)

    def _check_peer(self, addr: Addr) -> None:
        if addr.version != self.spec.local.version:
            raise ValueError(
                f"VTEP {addr} is IPv{addr.version}; {self.devices.vxlan} uses "
                f"IPv{self.spec.local.version} (local {self.spec.local})"
            )
        if addr == self.spec.local:
            raise ValueError(f"VTEP {addr} is this node's own local address")

    def _fdb(self, command: str, mac: str, dst: Addr, what: str) -> None:
        vx = self._index(self.devices.vxlan)
        kw: dict[str, object] = {
            "ifindex": vx,
            "lladdr": mac,
            "dst": str(dst),
            "state": _NUD_PERMANENT | _NUD_NOARP,
            "flags": _NTF_SELF,  # the VXLAN device's own table, not the bridge's
        }
        self._step(what, lambda: self._ipr.fdb(command, **kw))

    def set_site_peers(self, addresses: Iterable[Addr | str]) -> None:
        """Replace the head-end replication list (all-zero FDB entries); no gap for the kept."""
        new: list[Addr] = []
        for a in addresses:
            addr = ip_address(a) if isinstance(a, str) else a
            self._check_peer(addr)
            if addr not in new:
                new.append(addr)
        for addr in new:
            if addr not in self._peers:
                self._fdb(
                    "append", ZERO_MAC, addr, f"flood entry to {addr} on {self.devices.vxlan}"
                )
                self._peers.append(addr)
        for addr in [a for a in self._peers if a not in new]:
            self._fdb("del", ZERO_MAC, addr, f"remove flood entry to {addr}")
            self._peers.remove(addr)

    def set_mac(self, mac: str, dst: Addr | str) -> None:
        """Pin `mac` behind the site VTEP `dst` (a static per-MAC FDB entry)."""
        addr = ip_address(dst) if isinstance(dst, str) else dst
        self._check_peer(addr)
        mac = mac.lower()
        self._fdb("replace", mac, addr, f"FDB entry {mac} → {addr}")
        self._static[mac] = addr

    def remove_mac(self, mac: str) -> None:
        mac = mac.lower()
        addr = self._static.pop(mac, None)
        if addr is not None:
            self._fdb("del", mac, addr, f"remove FDB entry {mac}")

    def _vxlan_entries(self) -> Iterator[tuple[str, Addr, bool]]:
        """(mac, dst, static) of the VXLAN device's own FDB (NTF_SELF) entries."""
        vx = self._index(self.devices.vxlan)
        for e in self._step("dump VXLAN FDB", lambda: list(self._ipr.fdb("dump", ifindex=vx))):
            dst = e.get("NDA_DST")
            if e["ifindex"] != vx or dst is None or e.get("NDA_MASTER"):
                continue
            yield e.get("NDA_LLADDR"), ip_address(dst), bool(e["state"] & _NUD_PERMANENT)

    def move_destination(self, old: Addr | str, new: Addr | str) -> int:
        """A site node's path moved from `old` to `new`: move every FDB entry; return how many.

        The flood entry is appended at `new` before `old` is removed (no gap);
        static per-MAC entries are replaced; learned ones towards `old` are
        deleted (the kernel floods to `new` and learns them again).
        """
        o = ip_address(old) if isinstance(old, str) else old
        n = ip_address(new) if isinstance(new, str) else new
        self._check_peer(n)
        moved = 0
        if o in self._peers:
            peers = [n if a == o else a for a in self._peers]
            self.set_site_peers(peers)
            moved += 1
        for mac, addr in list(self._static.items()):
            if addr == o:
                self.set_mac(mac, n)
                moved += 1
        for mac, dst, static in list(self._vxlan_entries()):
            if mac != ZERO_MAC and dst == o and not static:
                self._fdb("del", mac, o, f"forget learned {mac} → {o}")
                moved += 1
        return moved

    def prune_foreign(self, allowed: Callable[[Addr], bool]) -> list[tuple[str, Addr]]:
        """Delete learned entries whose VTEP is not `allowed` (outside the site's underlay)."""
        pruned = []
        for mac, dst, static in list(self._vxlan_entries()):
            if not static and not allowed(dst):
                self._fdb("del", mac, dst, f"forget foreign {mac} → {dst}")
                pruned.append((mac, dst))
        return pruned

    # -- state ---------------------------------------------------------------

    def macs(self) -> list[KernelMac]:
        """What the kernel bridge learned (and what we pinned), for `show macs`."""
        d = self.devices
        br = self._index(d.bridge)
        names: dict[int, tuple[Literal["local", "site", "mesh"], str]] = {
            self._index(d.vxlan): ("site", d.vxlan)
        }
        if self.spec.mesh:
            names[self._index(d.mesh)] = ("mesh", d.mesh)
        for p in self.spec.access:
            names[self._index(p.device)] = ("local", p.name)
        for i, t in enumerate(self.spec.trunks):
            names[self._index(t.subinterface(self.spec.vni, i))] = ("local", t.name)
        remote: dict[str, Addr] = {}
        for mac, dst, _static in self._vxlan_entries():
            if mac != ZERO_MAC:
                remote[mac] = dst
        out = []
        for e in self._step("dump bridge FDB", lambda: list(self._ipr.fdb("dump"))):
            if e.get("NDA_MASTER") != br or e["ifindex"] not in names:
                continue
            if e["state"] & _NUD_PERMANENT:
                continue  # the ports' own addresses
            mac = e.get("NDA_LLADDR")
            where, port = names[e["ifindex"]]
            out.append(
                KernelMac(
                    mac=mac,
                    where=where,
                    port=port,
                    remote=remote.get(mac) if where == "site" else None,
                    static=mac in self._static,
                )
            )
        return sorted(out, key=lambda m: m.mac)

    def counters(self) -> dict[str, DeviceCounters]:
        """Kernel counters of the bridge's mesh-facing devices (VXLAN, mesh TAP)."""
        out = {}
        devs = [self.devices.vxlan, *([self.devices.mesh] if self.spec.mesh else [])]
        for dev in devs:
            link = self._ipr.get_links(self._index(dev))[0]
            st = link.get("IFLA_STATS64") or {}
            out[dev] = DeviceCounters(
                device=dev,
                rx_packets=int(st.get("rx_packets", 0)),
                rx_bytes=int(st.get("rx_bytes", 0)),
                tx_packets=int(st.get("tx_packets", 0)),
                tx_bytes=int(st.get("tx_bytes", 0)),
                tx_dropped=int(st.get("tx_dropped", 0)),
            )
        return out

    # -- teardown -------------------------------------------------------------

    def close(self) -> None:
        """Remove every device we made (existing interfaces are released, not deleted)."""
        if self._closed:
            return
        self._closed = True
        if self.mesh_port is not None:
            self.mesh_port.close()  # a non-persistent TAP: gone with its fd
        for dev in reversed(self._made):
            found = self._ipr.link_lookup(ifname=dev)
            if not found:
                continue
            try:
                self._ipr.link("del", index=found[0])
            except Exception as e:
                if _code(e) != errno.ENODEV:
                    log.warning("removing %s: %s", dev, _detail(e))
        self._made.clear()
        self._attached.clear()
        self._peers.clear()
        self._static.clear()
        self._ipr.close()

    def __enter__(self) -> KernelSegment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KernelSegment({self.spec.segment!r}, vni={self.spec.vni}, {self.devices})"


def leftovers(network: str, node: str, ipr: Any | None = None) -> list[str]:
    """Devices in this namespace marked as made by (network, node).

    Without `ipr`, one netlink dump of names and aliases (`links.link_aliases`):
    no pyroute2 import for the common answer, none.
    """
    if ipr is None:
        return [
            name
            for name, alias in link_aliases().items()
            if (mark := _parse_alias(alias)) and mark[0] == network and mark[1] == node
        ]
    found = []
    for link in ipr.get_links():
        mark = _parse_alias(link.get("IFLA_IFALIAS"))
        if mark and mark[0] == network and mark[1] == node:
            found.append(str(link.get("IFLA_IFNAME")))
    return found


def cleanup_leftovers(network: str, node: str) -> list[str]:
    """Remove what an earlier agent of (network, node) left (kill -9); return the names removed.

    Looks first without pyroute2 (`leftovers`); imports it only to remove what it found.
    """
    try:
        marked = leftovers(network, node)
    except OSError as e:
        raise KernelPlaneError("list links", e.errno, e.strerror or str(e)) from e
    if not marked:
        return []
    from pyroute2 import IPRoute

    removed = []
    with IPRoute() as ipr:
        for dev in marked:
            found = ipr.link_lookup(ifname=dev)
            if not found:
                continue  # went with a bridge removed before it
            try:
                ipr.link("del", index=found[0])
            except Exception as e:
                if _code(e) != errno.ENODEV:
                    raise KernelPlaneError(f"remove leftover {dev}", _code(e), _detail(e)) from e
            removed.append(dev)
    if removed:
        log.info("removed leftovers of %s/%s: %s", network, node, ", ".join(removed))
    return removed
