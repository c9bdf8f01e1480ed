"""VLAN sub-interfaces for a trunk guest on a kernel without the 802.1Q module.

Run inside the trunk guest's namespace: `python -m lanspan.lab.inside.vlantap eth0
VLAN:IFNAME:MTU:ADDR[,ADDR...] ...`. For each VLAN it creates a TAP device
`IFNAME` holding the addresses; frames written by the guest's stack to the TAP
leave `eth0` tagged with VLAN, and tagged frames arriving on `eth0` are
untagged onto the TAP. Untagged frames stay with the kernel's `eth0` (the
native VLAN). The kernel lifts a received tag into packet metadata before
packet sockets see it, so the tag is read from PACKET_AUXDATA.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
AUX = struct.Struct("=IIIHHHH")


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main(argv: list[str]) -> int:
    trunk, specs = argv[0], argv[1:]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((trunk, ETH_P_ALL))
    sock.setblocking(False)
    taps: dict[int, int] = {}  # vlan -> tap fd
    by_fd: dict[int, int] = {}  # tap fd -> vlan
    for spec in specs:
        vlan_s, ifname, mtu, addrs = spec.split(":", 3)
        fd = open_tap(ifname)
        taps[int(vlan_s)], by_fd[fd] = fd, int(vlan_s)
        subprocess.run(["ip", "link", "set", ifname, "mtu", mtu, "up"], check=True)
        for a in filter(None, addrs.split(",")):
            flags = ["nodad"] if ":" in a else []
            subprocess.run(["ip", "addr", "add", a, "dev", ifname, *flags], check=True)
    stop = [False]

    def on_term(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    print(f"ready: {trunk} -> {specs}", flush=True)
    while not stop[0]:
        ready, _, _ = select.select([sock.fileno(), *by_fd], [], [], 0.5)
        for fd in ready:
            if fd == sock.fileno():
                for _ in range(64):
                    try:
                        data, anc, _, addr = sock.recvmsg(65536, socket.CMSG_SPACE(AUX.size))
                    except BlockingIOError:
                        break
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    vlan: int | None = None
                    for level, typ, cdata in anc:
                        if level == SOL_PACKET and typ == PACKET_AUXDATA:
                            status, _, _, _, _, tci, _ = AUX.unpack_from(cdata)
                            if status & TP_STATUS_VLAN_VALID:
                                vlan = tci & 0x0FFF
                    if vlan is None and len(data) >= 18 and data[12:14] == b"\x81\x00":
                        vlan = struct.unpack_from("!H", data, 14)[0] & 0x0FFF
                        data = data[:12] + data[16:]
                    if vlan is not None and vlan in taps:
                        with contextlib.suppress(OSError):
                            os.write(taps[vlan], data)
            else:
                out_vlan = by_fd[fd]
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                tagged = frame[:12] + struct.pack("!HH", 0x8100, out_vlan) + frame[12:]
                with contextlib.suppress(OSError):
                    sock.send(tagged)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
