"""Underlay impairments on a site's uplink, applied in the lab's internet core.

Where the kernel has netem (probed once per run), netem qdiscs on both ends of
the uplink do it all. This kernel has neither netem nor NFQUEUE (both probed:
`tc qdisc add ... netem` says the kind is unknown, an nftables `queue` rule
fails with ENOENT), so an NFQUEUE impairer could not run here either; instead:

- loss alone: nftables `numgen random` drops in the core's forward hook;
- a cut: nftables drops everything entering or leaving the site's uplink;
- delay, jitter, duplication, reordering, corruption (and loss with them): a
  userspace impairer (`python -m lanspan.lab.impair`, run in the core). It reads
  every IPv4 frame the core receives that is to be forwarded into or out of the
  site's uplink with AF_PACKET (packet taps see a frame before the IP layer),
  nftables drops the kernel's own copy in the forward hook, and the impairer
  forwards its copy itself after impairing it: new Ethernet addresses for the
  next hop, written on the egress interface with AF_PACKET (which bypasses the
  forward hook). With PACKET_VNET_HDR on both sockets, GSO superframes travel
  whole, as the kernel would have forwarded them.

Every impairment acts per direction, on everything crossing the uplink, so
lanspan and any other tunnel are measured under the same faults.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import ipaddress
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lanspan.lab import netns
from lanspan.lab.model import Impairment

if TYPE_CHECKING:
    from lanspan.lab.runner import LabRun, State
    from lanspan.lab.topology import Plan

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_HOST = 0
VNET_LEN = 10


def _table(kind: str, site: str, tag: str) -> str:
    return f"{kind}_{tag}_{site}".replace("-", "_")


def _nft_table(core: str, table: str, rules: list[str]) -> None:
    netns.run(["nft", "add", "table", "inet", table], ns=core)
    netns.run(
        ["nft", "add", "chain", "inet", table, "chain0",
         "{ type filter hook forward priority -10 ; policy accept ; }"],
        ns=core,
    )  # fmt: skip
    for r in rules:
        netns.run(["nft", "add", "rule", "inet", table, "chain0", *r.split()], ns=core)


def _nft_delete(core: str, table: str) -> None:
    netns.run(["nft", "delete", "table", "inet", table], ns=core, check=False)


def cut(plan: Plan, site: str) -> None:
    """Drop everything entering or leaving the site's uplink."""
    ifname = plan.site(site).core_if
    _nft_table(plan.core_ns, _table("cut", site, "f"), [
        f"iifname {ifname} drop", f"oifname {ifname} drop",
    ])  # fmt: skip


def uncut(plan: Plan, site: str) -> None:
    _nft_delete(plan.core_ns, _table("cut", site, "f"))


def routes_of(plan: Plan) -> list[str]:
    """The core's forwarding table as impairer arguments: PREFIX=IFNAME=NEXTHOP_MAC."""
    out: list[str] = []
    for s in plan.sites:
        link = ipaddress.ip_interface(f"{s.core_addr}/30").network
        out.append(f"{link}={s.core_if}={s.router_mac}")
        if not s.nat:
            out.append(f"{s.prefix}={s.core_if}={s.router_mac}")
    return out


_NETEM: dict[str, bool] = {}


def netem_available(ns: str) -> bool:
    """Whether this kernel has netem (probed once, on loopback of a lab namespace)."""
    if "ok" not in _NETEM:
        add = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        ok = netns.run(add, ns=ns, check=False).returncode == 0
        if ok:
            netns.run(["tc", "qdisc", "del", "dev", "lo", "root"], ns=ns, check=False)
        _NETEM["ok"] = ok
    return _NETEM["ok"]


def netem_args(imp: Impairment) -> list[str]:
    args: list[str] = []
    if imp.delay_ms or imp.jitter_ms or imp.reorder:
        # netem reorders only packets it delays: give reordering 1 ms to act on
        args += ["delay", f"{max(imp.delay_ms, 1.0 if imp.reorder else 0.0)}ms"]
        if imp.jitter_ms:
            args.append(f"{imp.jitter_ms}ms")
    for name in ("loss", "duplicate", "reorder", "corrupt"):
        value = getattr(imp, name)
        if value:
            args += [name, f"{value}%"]
    return args


def apply(run: LabRun, plan: Plan, state: State, site: str, imp: Impairment, tag: str) -> None:
    """Impair the site's uplink (both directions) until `remove` with the same tag."""
    sp = plan.site(site)
    ifname = sp.core_if
    core = plan.core_ns
    if imp.needs_userspace and netem_available(core):
        # netem on both egresses of the uplink: core towards the site, router towards the core
        for ns, dev in ((core, ifname), (sp.ns, "up0")):
            tc = ["tc", "qdisc", "replace", "dev", dev, "root", "netem", *netem_args(imp)]
            netns.run(tc, ns=ns)
        state.helpers.append(
            {
                "what": f"netem {tag} {site}",
                "tag": f"{tag}:{site}",
                "netem": [[core, ifname], [sp.ns, "up0"]],
                "pid": 0,
                "argv": [],
            }
        )
        state.save()
        return
    if not imp.needs_userspace:
        n = round(imp.loss * 100)  # per 10 000
        _nft_table(core, _table("loss", site, tag), [
            f"iifname {ifname} numgen random mod 10000 < {n} drop",
            f"oifname {ifname} numgen random mod 10000 < {n} drop",
        ])  # fmt: skip
        return
    log = run.log_dir / f"impair-{tag}-{site}.log"
    log.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "lanspan.lab.impair", "--iface", ifname,
        "--loss", str(imp.loss), "--delay-ms", str(imp.delay_ms),
        "--jitter-ms", str(imp.jitter_ms), "--duplicate", str(imp.duplicate),
        "--reorder", str(imp.reorder), "--corrupt", str(imp.corrupt),
    ]  # fmt: skip
    for r in routes_of(plan):
        argv += ["--route", r]
    pid = run.spawn(core, argv, log)
    state.helpers.append(
        {"what": f"impairer {tag} {site}", "tag": f"{tag}:{site}", "ns": core, "pid": pid,
         "argv": argv}
    )  # fmt: skip
    state.save()
    netns.wait_for(
        lambda: log.exists() and "ready" in log.read_text(), 10.0, f"impairer on {ifname}"
    )
    _nft_table(core, _table("uimp", site, tag), [
        f"meta nfproto ipv4 iifname {ifname} drop",
        f"meta nfproto ipv4 oifname {ifname} drop",
    ])  # fmt: skip


def remove(run: LabRun, plan: Plan, state: State, site: str, tag: str) -> None:
    core = plan.core_ns
    _nft_delete(core, _table("loss", site, tag))
    _nft_delete(core, _table("uimp", site, tag))
    from lanspan.lab.runner import _alive_as, _reap

    keep = []
    for h in state.helpers:
        if h.get("tag") == f"{tag}:{site}":
            for ns, dev in h.get("netem", []):
                netns.run(["tc", "qdisc", "del", "dev", dev, "root"], ns=ns, check=False)
            if h["pid"] and _alive_as(h["pid"], h["argv"]):
                import os

                os.kill(h["pid"], signal.SIGTERM)
                _reap(h["pid"], 5.0)
        else:
            keep.append(h)
    state.helpers = keep
    state.save()


# -- the userspace impairer ---------------------------------------------------


@dataclass(frozen=True)
class Route:
    net: ipaddress.IPv4Network
    ifname: str
    mac: bytes


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Impairer:
    """Forward IPv4 frames into/out of one interface with loss, delay, dups, reorder, corruption."""

    def __init__(
        self,
        iface: str,
        routes: list[Route],
        imp: Impairment,
        seed: int | None,
        own_macs: dict[str, bytes] | None = None,
    ) -> None:
        """Open one packet socket per interface, unless `own_macs` is given (tests)."""
        self.iface = iface
        self.routes = sorted(routes, key=lambda r: -r.net.prefixlen)
        self.imp = imp
        self.rng = random.Random(seed)
        self.socks: dict[str, socket.socket] = {}
        self.own: dict[str, bytes] = dict(own_macs or {})
        for name in {r.ifname for r in routes} | {iface} if own_macs is None else ():
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
        if in_if != self.iface and r.ifname != self.iface:
            return  # not crossing the impaired uplink: the kernel forwards it
        self.counts["in"] += 1
        imp, rng = self.imp, self.rng
        if imp.loss and rng.random() * 100 < imp.loss:
            self.counts["lost"] += 1
            return
        out = bytearray(data)
        out[VNET_LEN : VNET_LEN + 6] = r.mac
        out[VNET_LEN + 6 : VNET_LEN + 12] = self.own[r.ifname]
        if imp.corrupt and rng.random() * 100 < imp.corrupt:
            ihl = (frame[14] & 0x0F) * 4
            start = VNET_LEN + 14 + ihl + 8
            if len(out) > start:
                pos = rng.randrange(start, len(out))
                out[pos] ^= 1 << rng.randrange(8)
                self.counts["corrupted"] += 1
        delay = imp.delay_ms / 1000
        if imp.jitter_ms:
            delay = max(0.0, delay + rng.uniform(-imp.jitter_ms, imp.jitter_ms) / 1000)
        copies = 2 if imp.duplicate and rng.random() * 100 < imp.duplicate else 1
        if copies == 2:
            self.counts["dup"] += 1
        direction = f"{in_if}>{r.ifname}"
        if imp.reorder and direction not in self.held and rng.random() * 100 < imp.reorder:
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

    def run(self, stop: list[bool]) -> None:
        by_fd = {s.fileno(): name for name, s in self.socks.items()}
        while not stop[0]:
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
            ready, _, _ = select.select(list(by_fd), [], [], min(timeout, 0.2))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lanspan.lab.impair", description=__doc__)
    ap.add_argument("--iface", required=True, help="the impaired interface (in this namespace)")
    ap.add_argument("--route", action="append", default=[], help="PREFIX=IFNAME=NEXTHOP_MAC")
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--duplicate", type=float, default=0.0)
    ap.add_argument("--reorder", type=float, default=0.0)
    ap.add_argument("--corrupt", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    routes = []
    for r in a.route:
        net, ifname, mac = r.split("=")
        routes.append(Route(ipaddress.IPv4Network(net), ifname, _mac(mac)))
    imp = Impairment(
        loss=a.loss,
        delay_ms=a.delay_ms,
        jitter_ms=a.jitter_ms,
        duplicate=a.duplicate,
        reorder=a.reorder,
        corrupt=a.corrupt,
    )
    impairer = Impairer(a.iface, routes, imp, a.seed)
    stop = [False]

    def on_term(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(f"ready: impairing {a.iface}: {imp}", flush=True)
    impairer.run(stop)
    print(f"stopped: {impairer.counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
