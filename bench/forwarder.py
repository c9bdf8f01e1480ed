#!/usr/bin/env python3
"""A minimal encrypted port ↔ UDP forwarder on lanspan's I/O adapters (benchmark only).

Not lanspan: no handshake, no replay window, a fixed pre-shared AES-256-GCM
key and a fixed peer. It measures what the data plane adapters
(`PacketPort`/`TapPort`, `UdpEndpoint` with GSO/GRO) carry when each
superframe costs one AEAD: the ceiling a full agent can approach.

Each superframe read from the port (vnet header + frame) is sealed whole and
cut into datagrams of at most `--chunk` bytes, each with an 8-byte header
(u32 counter, u8 index, u8 count, u16 reserved); the receiver reassembles,
opens and writes the superframe to the port after `validate_untrusted`.

    python bench/forwarder.py --interface vl --listen 51821 --peer 198.18.0.2:51821 --key HEX
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lanspan.dataplane import FramePort, PacketPort, TapPort, UdpEndpoint
from lanspan.errors import BadPacket
from lanspan.wire import vnet

HDR = struct.Struct("!IBBH")
PENDING = 64  # superframes being reassembled at most


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--interface", help="attach an existing interface (AF_PACKET)")
    ap.add_argument("--tap", help="create a TAP of this name instead")
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--peer", required=True, help="host:port")
    ap.add_argument("--key", required=True, help="64 hex digits")
    ap.add_argument("--chunk", type=int, default=1400)
    args = ap.parse_args()
    host, _, port_s = args.peer.rpartition(":")
    peer = (host.strip("[]"), int(port_s))
    aead = AESGCM(bytes.fromhex(args.key))
    port: FramePort = (
        TapPort.create(args.tap, 1400) if args.tap else PacketPort.attach(args.interface)
    )
    udp = UdpEndpoint.bind(args.listen)
    salt = os.urandom(4)  # nonces unique per sender run
    counter = 0
    pending: dict[tuple[bytes, int], tuple[list[bytes | None], list[int]]] = {}
    drops = 0
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    chunk = args.chunk
    print(f"forwarding {port.device} <-> {peer}, gso={udp.gso} gro={udp.gro}", flush=True)
    poller = select.epoll()
    poller.register(port.fileno(), select.EPOLLIN)
    poller.register(udp.fileno(), select.EPOLLIN)
    while not stop:
        try:
            poller.poll(1.0)
        except InterruptedError:
            continue
        # port -> UDP
        for _ in range(64):
            data = port.read()
            if data is None:
                break
            counter = (counter + 1) & 0xFFFFFFFF
            ct = aead.encrypt(salt + struct.pack("!Q", counter), data, None)
            pieces = [ct[i : i + chunk] for i in range(0, len(ct), chunk)]
            n = len(pieces)
            dgrams = [salt + HDR.pack(counter, i, n, 0) + p for i, p in enumerate(pieces)]
            udp.send_batch(peer, dgrams)
        # UDP -> port
        for _ in range(64):
            got = udp.recv_batch()
            if got is None:
                break
            for d in got[0]:
                if len(d) < 4 + HDR.size:
                    drops += 1
                    continue
                s = d[:4]
                ctr, idx, n, _ = HDR.unpack_from(d, 4)
                key = (s, ctr)
                entry = pending.get(key)
                if entry is None:
                    if len(pending) >= PENDING:
                        del pending[next(iter(pending))]
                        drops += 1
                    entry = pending[key] = ([None] * n, [n])
                parts, left = entry
                if idx >= len(parts) or parts[idx] is not None:
                    drops += 1
                    continue
                parts[idx] = d[4 + HDR.size :]
                left[0] -= 1
                if not left[0]:
                    del pending[key]
                    ct = b"".join(p for p in parts if p is not None)
                    try:
                        pt = aead.decrypt(s + struct.pack("!Q", ctr), ct, None)
                        h = vnet.parse_untrusted(pt)
                        vnet.validate_untrusted(h, len(pt) - vnet.VNET_HDR_LEN)
                    except (BadPacket, InvalidTag):
                        drops += 1
                        continue
                    port.write(pt)
    print(f"port {port.counters} udp {udp.counters} drops {drops}", flush=True)
    port.close()
    udp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
