"""Underlay impairments on a site's uplink, applied in the lab's internet core.

Where the kernel has netem (probed once per run), netem qdiscs on both ends of
the uplink do it all. This kernel has neither netem nor NFQUEUE (both probed:
`tc qdisc add ... netem` says the kind is unknown, an nftables `queue` rule
fails with ENOENT), so an NFQUEUE impairer could not run here either; instead:

- a cut: nftables at the site router drops everything crossing its uplink;
- loss alone: nftables `numgen random` drops at the site router;
- delay, jitter, duplication, reordering, corruption (and loss with them): one
  userspace impairer per lab (`python -m lanspan.lab.impair`, in the core).
  It reads every IPv4 frame the core receives that is to be forwarded into or
  out of an impaired uplink with AF_PACKET (packet taps see a frame before the
  IP layer), nftables drops the kernel's own copy in the forward hook, and the
  impairer forwards its copy itself after impairing it: new Ethernet addresses
  for the next hop, written on the egress interface with AF_PACKET (which
  bypasses the forward hook). With PACKET_VNET_HDR on both sockets, GSO
  superframes travel whole, as the kernel would have forwarded them. It takes
  its table from a JSON file, reloaded on SIGHUP.

Every impairment acts per direction, on everything crossing the uplink, so
lanspan and any other tunnel are measured under the same faults.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import ipaddress
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
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


def _nft_table(ns: str, table: str, rules: list[str]) -> None:
    """Create table `table` with a forward-hook chain holding `rules`, in one transaction."""
    script = "\n".join(
        [
            f"add table inet {table}",
            f"add chain inet {table} chain0 "
            "{ type filter hook forward priority -10 ; policy accept ; }",
            *(f"add rule inet {table} chain0 {r}" for r in rules),
        ]
    )
    netns.run(["nft", "-f", "-"], ns=ns, input=script + "\n")


def _nft_delete(ns: str, table: str) -> None:
    netns.run(["nft", "delete", "table", "inet", table], ns=ns, check=False)


def cut(plan: Plan, site: str) -> None:
    """Drop everything the site router forwards over its uplink, both ways.

    At the router, not in the core: the core's userspace impairer taps frames
    before the core's forward hook, and must not carry a cut site's traffic.
    """
    _nft_table(plan.site(site).ns, "cut_uplink", ["iifname up0 drop", "oifname up0 drop"])


def uncut(plan: Plan, site: str) -> None:
    _nft_delete(plan.site(site).ns, "cut_uplink")


def _provider_links(plan: Plan, site: str, uplink: int) -> list[tuple[str, str]]:
    """(namespace, device) of the router's links to its nodes through uplink 1 or 2."""
    sp = plan.site(site)
    nodes = [n for n in plan.nodes if n.site == site]
    return [(sp.ns, f"{'n' if uplink == 1 else 'm'}{j}") for j in range(1, len(nodes) + 1)]


def cut_one(plan: Plan, site: str, uplink: int, carrier: bool = False) -> None:
    """One provider of a two-uplink site goes dark: its core link drops everything,
    and its line to each node loses carrier (as a dead provider CPE or NIC link would),
    unless `carrier` (a cut further upstream: the nodes see nothing locally)."""
    dev = f"up{uplink - 1}"
    _nft_table(plan.site(site).ns, f"cut_uplink{uplink}", [f"iifname {dev} drop",
                                                           f"oifname {dev} drop"])  # fmt: skip
    if carrier:
        return
    for ns, link in _provider_links(plan, site, uplink):
        netns.run(["ip", "link", "set", link, "down"], ns=ns)


def uncut_one(plan: Plan, site: str, uplink: int) -> None:
    for ns, link in _provider_links(plan, site, uplink):
        netns.run(["ip", "link", "set", link, "up"], ns=ns, check=False)
    _nft_delete(plan.site(site).ns, f"cut_uplink{uplink}")


def site_addresses(plan: Plan, site: str) -> list[str]:
    """Every underlay address a site shows the internet: its prefixes, or its NAT's address."""
    sp = plan.site(site)
    if sp.nat:
        return [sp.public_addr]
    out = [sp.public_addr, *sp.prefixes()]
    if sp.public_addr2 is not None:
        out.append(sp.public_addr2)
    return out


def _block_table(a: str, b: str) -> str:
    return f"block_{a}_{b}".replace("-", "_")


def block(plan: Plan, a: str, b: str) -> None:
    """Drop, in the internet core, everything between two sites' underlay addresses."""
    sa = "{ " + ", ".join(site_addresses(plan, a)) + " }"
    sb = "{ " + ", ".join(site_addresses(plan, b)) + " }"
    _nft_table(plan.core_ns, _block_table(a, b), [
        f"ip saddr {sa} ip daddr {sb} drop",
        f"ip saddr {sb} ip daddr {sa} drop",
    ])  # fmt: skip


def unblock(plan: Plan, a: str, b: str) -> None:
    _nft_delete(plan.core_ns, _block_table(a, b))


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


def merged(imps: list[Impairment]) -> Impairment:
    """Several impairments of one uplink at once: the worst of each."""
    return Impairment(**{k: max(getattr(i, k) for i in imps) for k in Impairment.model_fields})


def _effective(state: State) -> dict[str, Impairment]:
    """site -> the impairment in force on its uplink, from every active tag."""
    by_site: dict[str, list[Impairment]] = {}
    for key, d in state.impairments.items():
        by_site.setdefault(key.split(":", 1)[1], []).append(Impairment(**d))
    return {site: merged(imps) for site, imps in by_site.items()}


def apply(run: LabRun, plan: Plan, state: State, site: str, imp: Impairment, tag: str) -> None:
    """Impair the site's uplink (both directions) until `remove` with the same tag."""
    state.impairments[f"{tag}:{site}"] = imp.model_dump()
    state.save()
    _enforce(run, plan, state, site)


def remove(run: LabRun, plan: Plan, state: State, site: str, tag: str) -> None:
    if state.impairments.pop(f"{tag}:{site}", None) is None:
        return
    state.save()
    _enforce(run, plan, state, site)


def _enforce(run: LabRun, plan: Plan, state: State, site: str) -> None:
    """Make the site's uplink carry exactly the effective impairment."""
    sp = plan.site(site)
    core = plan.core_ns
    imp = _effective(state).get(site)
    if netem_available(core):
        # netem on both egresses of the uplink: core towards the site, router towards the core
        for ns, dev in ((core, sp.core_if), (sp.ns, "up0")):
            if imp is None:
                netns.run(["tc", "qdisc", "del", "dev", dev, "root"], ns=ns, check=False)
            else:
                tc = ["tc", "qdisc", "replace", "dev", dev, "root", "netem", *netem_args(imp)]
                netns.run(tc, ns=ns)
        return
    # loss alone: nftables at the site router, composable with anything in the core
    _nft_delete(sp.ns, "loss_uplink")
    if imp is not None and not imp.needs_userspace and imp.loss:
        n = round(imp.loss * 100)  # per 10 000
        _nft_table(sp.ns, "loss_uplink", [
            f"iifname up0 numgen random mod 10000 < {n} drop",
            f"oifname up0 numgen random mod 10000 < {n} drop",
        ])  # fmt: skip
    userspace = imp is not None and imp.needs_userspace
    table = _table("uimp", site, "core")
    if not userspace:
        _nft_delete(core, table)  # the kernel forwards again before the impairer lets go
    _reconfigure(run, plan, state)
    if userspace:
        present = netns.run(["nft", "list", "table", "inet", table], ns=core, check=False)
        if present.returncode != 0:
            _nft_table(core, table, [
                f"meta nfproto ipv4 iifname {sp.core_if} drop",
                f"meta nfproto ipv4 oifname {sp.core_if} drop",
            ])  # fmt: skip


def _reconfigure(run: LabRun, plan: Plan, state: State) -> None:
    """One userspace impairer per lab, in the core, told its table by file + SIGHUP."""
    from lanspan.lab.runner import _alive_as

    eff = {s: i for s, i in _effective(state).items() if i.needs_userspace}
    config = run.run_dir / "impair.json"
    log = run.log_dir / "impairer.log"
    helper = next((h for h in state.helpers if h.get("tag") == "impairer"), None)
    running = helper is not None and _alive_as(helper["pid"], helper["argv"])
    if not eff and not running:
        return
    gen = state.impair_generation + 1
    state.impair_generation = gen
    state.save()
    doc = {
        "generation": gen,
        "routes": routes_of(plan),
        "impaired": {plan.site(s).core_if: i.model_dump() for s, i in eff.items()},
    }
    tmp = config.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, config)
    if running:
        assert helper is not None
        os.kill(helper["pid"], signal.SIGHUP)
    else:
        argv = [sys.executable, "-m", "lanspan.lab.impair", "--config", str(config.resolve())]
        pid = run.spawn(plan.core_ns, argv, log)
        state.helpers = [h for h in state.helpers if h.get("tag") != "impairer"]
        state.helpers.append(
            {"what": "impairer", "tag": "impairer", "ns": plan.core_ns, "pid": pid, "argv": argv}
        )
        state.save()
    netns.wait_for(
        lambda: log.exists() and f"config {gen} " in log.read_text(),
        10.0,
        f"the impairer to load configuration {gen} (log {log})",
    )


# -- the userspace impairer ---------------------------------------------------


@dataclass(frozen=True)
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
    ap = argparse.ArgumentParser(prog="python -m lanspan.lab.impair", description=__doc__)
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
