"""Existing interfaces (veth to a guest, a NIC) attached over AF_PACKET.

One ``AF_PACKET / SOCK_RAW / ETH_P_ALL`` socket bound to the interface, with

- PACKET_VNET_HDR: superframes from a veth keep their GSO metadata, and
  frames we write may carry a GSO vnet header;
- PACKET_AUXDATA: the kernel strips 802.1Q tags into metadata (even without
  the 8021q module); the tag is put back into the frame, so trunk ports see
  real tags (and the vnet offsets are shifted by 4);
- PACKET_IGNORE_OUTGOING: our own writes are not read back (older kernels:
  frames of type PACKET_OUTGOING are dropped on read);
- promiscuous membership (reference-counted by the kernel, dropped on close:
  the interface's promiscuity is restored).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct

from lanspan.dataplane.ports import PortCounters
from lanspan.wire import vnet

__all__ = ["PacketPort"]

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4

TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

_AUX = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_CMSG_SPACE = socket.CMSG_SPACE(_AUX.size)
# A plain int: `flags & socket.MSG_TRUNC` is IntFlag arithmetic in Python, ~2 us a read.
_MSG_TRUNC = int(socket.MSG_TRUNC)
READ_SIZE = 65536 + 256
SOCKBUF = 4 << 20


def _mreq(ifindex: int) -> bytes:
    return struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")


class PacketPort:
    """An existing interface as a frame port (vnet header + frame)."""

    def __init__(self, name: str, device: str, sock: socket.socket, ignore_outgoing: bool) -> None:
        self.name = name
        self.device = device
        self.counters = PortCounters()
        self.ignore_outgoing = ignore_outgoing  # False: outgoing frames filtered on read
        self._sock = sock
        self._ifindex = socket.if_nametoindex(device)
        self._promisc = True

    @classmethod
    def attach(cls, ifname: str, name: str | None = None) -> PacketPort:
        """Bind to existing interface `ifname`; raises OSError (errno kept) on failure."""
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                ignore = True
            except OSError as e:
                if e.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
                    raise
                log.info("PACKET_IGNORE_OUTGOING unsupported; filtering outgoing on read")
                ignore = False
            for opt, force in (
                (socket.SO_RCVBUF, 33),  # SO_RCVBUFFORCE
                (socket.SO_SNDBUF, 32),  # SO_SNDBUFFORCE
            ):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, force, SOCKBUF)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKBUF)
            sock.bind((ifname, ETH_P_ALL))
            ifindex = socket.if_nametoindex(ifname)
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, _mreq(ifindex))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(name or ifname, ifname, sock, ignore)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> bytes | None:
        while True:
            try:
                data, anc, flags, addr = self._sock.recvmsg(READ_SIZE, _CMSG_SPACE)
            except BlockingIOError:
                return None
            except OSError as e:
                self.counters.count_rx_error(e)
                return None
            if not self.ignore_outgoing and addr[2] == PACKET_OUTGOING:
                continue
            if flags & _MSG_TRUNC:  # larger than any superframe we expect
                self.counters.count_rx_error(f"frame truncated at {len(data)} bytes")
                continue
            for level, typ, cdata in anc:
                if level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= _AUX.size:
                    status, _len, _snap, _mac, _net, tci, tpid = _AUX.unpack_from(cdata)
                    if status & TP_STATUS_VLAN_VALID:
                        data = _insert_tag(data, tci, tpid, status)
            return self.counters.count_rx(data)

    def write(self, data: bytes) -> None:
        self.counters.send_counted(self._sock.send, data)

    def close(self) -> None:
        if self._sock.fileno() < 0:
            return
        if self._promisc:
            # OSError: the interface is gone, nothing to restore
            with contextlib.suppress(OSError):
                self._sock.setsockopt(SOL_PACKET, PACKET_DROP_MEMBERSHIP, _mreq(self._ifindex))
            self._promisc = False
        self._sock.close()

    def __enter__(self) -> PacketPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PacketPort({self.name!r}, device={self.device!r})"


def _insert_tag(data: bytes, tci: int, tpid: int, status: int) -> bytes:
    """Put the 802.1Q tag the kernel took out back behind the MAC addresses."""
    if len(data) < vnet.VNET_HDR_LEN + 12:
        return data
    if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
        tpid = 0x8100
    hdr = vnet.parse_untrusted(data)
    if hdr != vnet.VnetHeader():
        try:
            hdr_bytes = hdr.shifted(4).to_bytes()
        except ValueError:
            hdr_bytes = data[: vnet.VNET_HDR_LEN]
    else:
        hdr_bytes = vnet.ZERO_HEADER
    o = vnet.VNET_HDR_LEN + 12
    return b"".join(
        (hdr_bytes, data[vnet.VNET_HDR_LEN : o], struct.pack("!HH", tpid, tci), data[o:])
    )
