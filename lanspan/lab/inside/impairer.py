"""The userspace impairer, run in the lab's internet core by `lanspan.lab.impair`.

`python -m lanspan.lab.inside.impairer --config FILE` reads every IPv4 frame the
core receives that is to be forwarded into or out of an impaired uplink with
AF_PACKET (packet taps see a frame before the IP layer; nftables drops the
kernel's own copy in the forward hook), impairs it (loss, delay, jitter,
duplication, reordering, corruption) and forwards its copy itself: new
Ethernet addresses for the next hop, written on the egress interface with
AF_PACKET (which bypasses the forward hook). With PACKET_VNET_HDR on both
sockets, GSO superframes travel whole. It takes its table from a JSON file
written by the lab, reloaded on SIGHUP, and logs `config <generation> ...`
each time it loads one.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import ipaddress
import json
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lanspan.lab.model import Impairment
from lanspan.records import record

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_HOST = 0
VNET_LEN = 10


@record(frozen=True)
class Route:
    net: ipaddress.IPv4Network
    ifname: str
    mac: bytes


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Impairer:
    """Forward IPv4 frames crossing impaired interfaces: loss, delay, dups, reorder, corruption.

    `impaired` maps an interface to the impairment of that uplink; a frame
    entering by one impaired uplink and leaving by another gets both.
    """

    def __init__(
        self,
        routes: list[Route],
        impaired: dict[str, Impairment],
        seed: int | None = None,
        own_macs: dict[str, bytes] | None = None,
    ) -> None:
        """Open one packet socket per interface, unless `own_macs` is given (tests)."""
        self.routes = sorted(routes, key=lambda r: -r.net.prefixlen)
        self.impaired = dict(impaired)
        self.rng = random.Random(seed)
        self.socks: dict[str, socket.socket] = {}
        self.own: dict[str, bytes] = dict(own_macs or {})
        for name in {r.ifname for r in routes} if own_macs is None else ():
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((name, ETH_P_ALL))
            s.setblocking(False)
            self.socks[name] = s
            self.own[name] = _mac(Path(f"/sys/class/net/{name}/address").read_text().strip())
        self.queue: list[tuple[float, int, str, bytes]] = []
        self.held: dict[str, tuple[str, bytes, float]] = {}  # direction -> held frame
        self.seq = 0
        self.counts = {"in": 0, "lost": 0, "dup": 0, "reordered": 0, "corrupted": 0}

    def route(self, dst: ipaddress.IPv4Address) -> Route | None:
        for r in self.routes:
            if dst in r.net:
                return r
        return None

    def handle(self, in_if: str, data: bytes, now: float) -> None:
        frame = data[VNET_LEN:]
        if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
            return
        dst = ipaddress.IPv4Address(frame[30:34])
        r = self.route(dst)
        if r is None or r.ifname == in_if:
            return
        imps = [self.impaired[i] for i in (in_if, r.ifname) if i in self.impaired]
        if not imps:
            return  # not crossing an impaired uplink: the kernel forwards it
        self.counts["in"] += 1
        rng = self.rng
        out = bytearray(data)
        out[VNET_LEN : VNET_LEN + 6] = r.mac
        out[VNET_LEN + 6 : VNET_LEN + 12] = self.own[r.ifname]
        delay, copies, hold = 0.0, 1, False
        for imp in imps:
            if imp.loss and rng.random() * 100 < imp.loss:
                self.counts["lost"] += 1
                return
            if imp.corrupt and rng.random() * 100 < imp.corrupt:
                ihl = (frame[14] & 0x0F) * 4
                start = VNET_LEN + 14 + ihl + 8
                if len(out) > start:
                    pos = rng.randrange(start, len(out))
                    out[pos] ^= 1 << rng.randrange(8)
                    self.counts["corrupted"] += 1
            d = imp.delay_ms / 1000
            if imp.jitter_ms:
                d = max(0.0, d + rng.uniform(-imp.jitter_ms, imp.jitter_ms) / 1000)
            delay += d
            if imp.duplicate and rng.random() * 100 < imp.duplicate:
                copies = 2
            if imp.reorder and rng.random() * 100 < imp.reorder:
                hold = True
        if copies == 2:
            self.counts["dup"] += 1
        direction = f"{in_if}>{r.ifname}"
        if hold and direction not in self.held:
            # held back until the next frame in this direction has gone (at most 50 ms)
            self.held[direction] = (r.ifname, bytes(out), now + delay + 0.05)
            self.counts["reordered"] += 1
            return
        for _ in range(copies):
            self.schedule(now + delay, r.ifname, bytes(out))
        held = self.held.pop(direction, None)
        if held is not None:
            self.schedule(now + delay + 0.0001, held[0], held[1])

    def schedule(self, when: float, ifname: str, data: bytes) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, ifname, data))

    def send(self, ifname: str, data: bytes) -> None:
        with contextlib.suppress(OSError):  # full or oversize: the wire loses it
            self.socks[ifname].send(data)

    def run(self, stop: list[bool], reload: list[bool], on_reload: Callable[[], None]) -> None:
        by_fd = {s.fileno(): name for name, s in self.socks.items()}
        while not stop[0]:
            if reload[0]:
                reload[0] = False
                on_reload()
            now = time.monotonic()
            for direction, (ifname, data, deadline) in list(self.held.items()):
                if deadline <= now:
                    del self.held[direction]
                    self.schedule(now, ifname, data)
            while self.queue and self.queue[0][0] <= now:
                _, _, ifname, data = heapq.heappop(self.queue)
                self.send(ifname, data)
            deadlines = [q[0] for q in self.queue[:1]] + [h[2] for h in self.held.values()]
            timeout = max(0.0, min(deadlines) - now) if deadlines else 0.2
            try:
                ready, _, _ = select.select(list(by_fd), [], [], min(timeout, 0.2))
            except InterruptedError:
                continue
            now = time.monotonic()
            for fd in ready:
                name = by_fd[fd]
                sock = self.socks[name]
                for _ in range(64):
                    try:
                        data, addr = sock.recvfrom(70000)
                    except BlockingIOError:
                        break
                    if addr[2] == PACKET_HOST:
                        self.handle(name, data, now)


def load_config(path: Path) -> tuple[int, list[Route], dict[str, Impairment]]:
    doc = json.loads(path.read_text())
    routes = []
    for r in doc["routes"]:
        net, ifname, mac = r.split("=")
        routes.append(Route(ipaddress.IPv4Network(net), ifname, _mac(mac)))
    impaired = {k: Impairment(**v) for k, v in doc["impaired"].items()}
    return int(doc["generation"]), routes, impaired


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lanspan.lab.inside.impairer", description=__doc__)
    ap.add_argument("--config", required=True, type=Path, help="JSON written by the lab; SIGHUP")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    gen, routes, impaired = load_config(a.config)
    impairer = Impairer(routes, impaired, a.seed)
    stop, reload = [False], [False]

    def on_term(*_: object) -> None:
        stop[0] = True

    def on_hup(*_: object) -> None:
        reload[0] = True

    def reconfigure() -> None:
        gen, _, impaired = load_config(a.config)
        impairer.impaired = impaired
        print(f"config {gen} {_describe(impaired)} counts {impairer.counts}", flush=True)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    print(f"config {gen} {_describe(impaired)}", flush=True)
    impairer.run(stop, reload, reconfigure)
    print(f"stopped: {impairer.counts}", flush=True)
    return 0


def _describe(impaired: dict[str, Impairment]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in impaired.items()) or "(nothing impaired)"


if __name__ == "__main__":
    sys.exit(main())
