"""TAP devices with virtio_net_hdr and TSO/USO offloads: superframes in and out.

Opened with ``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR``, a 10-byte vnet header and
the offloads the kernel accepts (TUN_F_CSUM | TSO4 | TSO6, plus USO4 | USO6
where the kernel has them), so a TCP flow from the local stack is read as
56–64 KiB superframes and written back the same way. The device is not
persistent: it disappears when the port is closed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from collections.abc import Iterable

from lanspan.dataplane.ports import PortCounters
from lanspan.wire.vnet import VNET_HDR_LEN as VNET_HDR_SZ

__all__ = [
    "TUN_F_CSUM",
    "TUN_F_TSO4",
    "TUN_F_TSO6",
    "TUN_F_USO4",
    "TUN_F_USO6",
    "TapPort",
]

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

READ_SIZE = 65536 + 256  # largest superframe + headers


def _set_offloads(fd: int) -> int:
    """Enable the offloads the kernel takes; return the mask in force."""
    base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
    for mask in (base | TUN_F_USO4 | TUN_F_USO6, base, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, mask)
            return mask
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    return 0


class TapPort:
    """A TAP device lanspan created; reads and writes vnet header + frame."""

    def __init__(self, name: str, device: str, fd: int, offloads: int) -> None:
        self.name = name
        self.device = device
        self.offloads = offloads  # TUN_F_* mask accepted by the kernel
        self.counters = PortCounters()
        self._fd = fd

    @classmethod
    def create(
        cls, name: str, mtu: int, mac: bytes | None = None, *, device: str | None = None
    ) -> TapPort:
        """Create TAP `device` (default: `name`), set MTU and MAC, bring it up.

        Raises OSError (errno kept) when /dev/net/tun or the ioctls fail.
        """
        dev = device or name
        if not 0 < len(dev.encode()) <= 15:
            raise ValueError(f"interface name {dev!r} must be 1..15 bytes")
        if mac is not None and len(mac) != 6:
            raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            ifr = struct.pack("16sH22x", dev.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
            res = fcntl.ioctl(fd, TUNSETIFF, ifr)
            actual = res[:16].rstrip(b"\0").decode()
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SZ))
            offloads = _set_offloads(fd)
            _link_up(actual, mtu, mac)
        except BaseException:
            os.close(fd)
            raise
        log.debug("TAP %s up, mtu %d, offloads 0x%02x", actual, mtu, offloads)
        return cls(name, actual, fd, offloads)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes | None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as e:
            self.counters.count_rx_error(e)
            return None
        return self.counters.count_rx(data)

    def write(self, data: bytes) -> None:
        self.counters.send_counted(self._write, data)

    def _write(self, data: bytes) -> None:
        os.write(self._fd, data)

    def addresses(self, cidrs: Iterable[str]) -> None:
        """Add host addresses (CIDR strings) to the device."""
        for cidr in cidrs:
            _add_address(self.device, str(cidr))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TapPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TapPort({self.name!r}, device={self.device!r}, fd={self._fd})"


def _link_up(device: str, mtu: int, mac: bytes | None) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=device)[0]
        kw: dict[str, object] = {"mtu": mtu}
        if mac is not None:
            kw["address"] = ":".join(f"{b:02x}" for b in mac)
        ipr.link("set", index=idx, **kw)
        ipr.link("set", index=idx, state="up")


def _add_address(device: str, cidr: str) -> None:
    from ipaddress import ip_interface

    from pyroute2 import IPRoute

    iface = ip_interface(cidr)
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=device)[0]
        kw: dict[str, object] = {}
        if iface.version == 6:
            kw["flags"] = 0x02  # IFA_F_NODAD: usable at once
        try:
            ipr.addr(
                "add",
                index=idx,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                **kw,
            )
        except Exception as e:  # pyroute2 NetlinkError: already there is fine
            if getattr(e, "code", None) != errno.EEXIST:
                raise
