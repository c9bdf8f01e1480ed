"""Hand-built 802.1Q frames and AF_PACKET guest ports for the VLAN namespace test.

This kernel has no 802.1Q module, so a trunk guest cannot have VLAN
sub-interfaces: the test writes tagged frames itself and reads tags itself.
On receive the kernel lifts an 802.1Q tag out of the frame into packet
metadata (with or without the module), so a `GuestPort` reads it back from
PACKET_AUXDATA (`tp_vlan_tci` with TP_STATUS_VLAN_VALID) and also notices a
tag left in the frame data.

A `GuestPort` is an AF_PACKET socket opened inside a guest's namespace (the
socket stays there; the calling thread returns to its own namespace), bound
to one interface: it sends raw frames and keeps every frame it receives.

Frame layouts (network byte order)::

    Ethernet      dst(6) src(6) [TPID 0x8100(2) TCI(2)] ethertype(2) payload
    TCI           PCP(3 bits) DEI(1) VID(12)
    ARP/IPv4      htype=1(2) ptype=0x0800(2) hlen=6 plen=4 oper(2)
                  sha(6) spa(4) tha(6) tpa(4)
    marker frame  ethertype 0x88B5 (IEEE local experimental), payload b"LSVT:" + name
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from lanspan.lab.netns import entered, wait_for

__all__ = [
    "BROADCAST",
    "ETHERTYPE_ARP",
    "ETHERTYPE_MARK",
    "GuestPort",
    "Seen",
    "add_tag",
    "arp_request",
    "ether",
    "mac",
    "marker",
]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TPID_8021Q = 0x8100
ETHERTYPE_ARP = 0x0806
ETHERTYPE_MARK = 0x88B5
MARK = b"LSVT:"
BROADCAST = b"\xff" * 6
_AUX = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_MIN_FRAME = 60  # without FCS


def mac(text: str) -> bytes:
    """`"02:00:00:0a:00:01"` -> 6 bytes."""
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return raw


def ether(dst: bytes, src: bytes, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    """An Ethernet frame, 802.1Q-tagged with VID `vlan` when given, padded to 60 bytes."""
    tag = b"" if vlan is None else struct.pack("!HH", TPID_8021Q, vlan & 0x0FFF)
    frame = dst + src + tag + struct.pack("!H", ethertype) + payload
    return frame.ljust(_MIN_FRAME, b"\0")


def add_tag(frame: bytes, vlan: int) -> bytes:
    """Push an outer 802.1Q tag; a tag already there becomes the inner one (QinQ)."""
    return frame[:12] + struct.pack("!HH", TPID_8021Q, vlan & 0x0FFF) + frame[12:]


def marker(src: bytes, name: str, vlan: int | None = None, dst: bytes = BROADCAST) -> bytes:
    """A frame no stack answers, recognisable by `name` wherever it is captured."""
    return ether(dst, src, ETHERTYPE_MARK, MARK + name.encode(), vlan)


def arp_request(src: bytes, sender_ip: str, target_ip: str, vlan: int | None = None) -> bytes:
    """A broadcast ARP request "who has `target_ip`? tell `sender_ip` at `src`"."""
    body = _ARP.pack(
        1, 0x0800, 6, 4, 1, src,
        ipaddress.IPv4Address(sender_ip).packed, b"\0" * 6,
        ipaddress.IPv4Address(target_ip).packed,
    )  # fmt: skip
    return ether(BROADCAST, src, ETHERTYPE_ARP, body, vlan)


@dataclass(frozen=True, slots=True)
class Seen:
    """One frame a guest port received, with where its 802.1Q tag was found."""

    data: bytes  # as read: a tag the kernel lifted into metadata is not in it
    aux_vlan: int | None  # VID from PACKET_AUXDATA when TP_STATUS_VLAN_VALID
    data_vlan: int | None  # VID of an 802.1Q tag still in the data

    @property
    def vlan(self) -> int | None:
        """The frame's VLAN on the wire, wherever the kernel left the tag."""
        return self.aux_vlan if self.aux_vlan is not None else self.data_vlan

    @property
    def tagged(self) -> bool:
        return self.aux_vlan is not None or self.data_vlan is not None

    @property
    def dst(self) -> bytes:
        return self.data[0:6]

    @property
    def src(self) -> bytes:
        return self.data[6:12]

    @property
    def ethertype(self) -> int:
        """The EtherType behind a tag left in the data, if any."""
        at = 16 if self.data_vlan is not None else 12
        return int(struct.unpack_from("!H", self.data, at)[0]) if len(self.data) >= at + 2 else -1

    @property
    def payload(self) -> bytes:
        return self.data[18:] if self.data_vlan is not None else self.data[14:]

    def is_marker(self, name: str) -> bool:
        return (
            self.ethertype == ETHERTYPE_MARK and self.payload.rstrip(b"\0") == MARK + name.encode()
        )

    def arp_reply(self) -> tuple[bytes, str, str] | None:
        """(sender MAC, sender IP, target IP) when this is an ARP reply."""
        if self.ethertype != ETHERTYPE_ARP or len(self.payload) < _ARP.size:
            return None
        _h, _p, _hl, _pl, oper, sha, spa, _tha, tpa = _ARP.unpack_from(self.payload)
        if oper != 2:
            return None
        return sha, str(ipaddress.IPv4Address(spa)), str(ipaddress.IPv4Address(tpa))


class GuestPort:
    """An AF_PACKET socket on interface `ifname` inside namespace `ns`: send and capture."""

    def __init__(self, ns: str, ifname: str) -> None:
        self.ns = ns
        self.ifname = ifname
        self.seen: list[Seen] = []
        with entered(ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
                sock.bind((ifname, ETH_P_ALL))
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
        self._sock = sock

    def send(self, *frames: bytes) -> None:
        for f in frames:
            self._sock.send(f)

    def poll(self) -> list[Seen]:
        """Read what arrived since the last poll (frames we sent ourselves excluded)."""
        new: list[Seen] = []
        while True:
            try:
                data, anc, _flags, addr = self._sock.recvmsg(65536, socket.CMSG_SPACE(_AUX.size))
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            aux_vlan: int | None = None
            for level, typ, cdata in anc:
                if level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= _AUX.size:
                    status, _len, _snap, _mac, _net, tci, _tpid = _AUX.unpack_from(cdata)
                    if status & TP_STATUS_VLAN_VALID:
                        aux_vlan = tci & 0x0FFF
            data_vlan: int | None = None
            if len(data) >= 18 and struct.unpack_from("!H", data, 12)[0] == TPID_8021Q:
                data_vlan = struct.unpack_from("!H", data, 14)[0] & 0x0FFF
            new.append(Seen(data, aux_vlan, data_vlan))
        self.seen.extend(new)
        return new

    def find(self, pred: Callable[[Seen], bool]) -> list[Seen]:
        self.poll()
        return [s for s in self.seen if pred(s)]

    def wait(self, pred: Callable[[Seen], bool], timeout: float, what: str) -> Seen:
        """Poll until a frame matching `pred` has arrived; return the first one."""
        wait_for(lambda: bool(self.find(pred)), timeout, f"{what} on {self.ns}/{self.ifname}")
        return self.find(pred)[0]

    def clear(self) -> None:
        self.poll()
        self.seen.clear()

    def close(self) -> None:
        self._sock.close()

    def __repr__(self) -> str:
        return f"GuestPort({self.ns!r}, {self.ifname!r})"
