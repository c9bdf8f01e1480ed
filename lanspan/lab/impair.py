"""Underlay impairments on a site's uplink, applied in the lab's internet core.

Where the kernel has netem (probed once per run), netem qdiscs on both ends of
the uplink do it all. This kernel has neither netem nor NFQUEUE (both probed:
`tc qdisc add ... netem` says the kind is unknown, an nftables `queue` rule
fails with ENOENT), so an NFQUEUE impairer could not run here either; instead:

- a cut: nftables at the site router drops everything crossing its uplink;
- loss alone: nftables `numgen random` drops at the site router;
- delay, jitter, duplication, reordering, corruption (and loss with them): one
  userspace impairer per lab in the core (`lanspan.lab.inside.impairer`:
  nftables drops the kernel's copy of what crosses an impaired uplink, the
  impairer forwards its own, impaired). This module writes its table to a
  JSON file and tells it by SIGHUP.

Every impairment acts per direction, on everything crossing the uplink, so
lanspan and any other tunnel are measured under the same faults.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys

from lanspan.lab import netns
from lanspan.lab.model import Impairment
from lanspan.lab.state import State, alive_as, spawn
from lanspan.lab.topology import Plan


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


def apply(plan: Plan, state: State, site: str, imp: Impairment, tag: str) -> None:
    """Impair the site's uplink (both directions) until `remove` with the same tag."""
    state.impairments[f"{tag}:{site}"] = imp.model_dump()
    state.save()
    _enforce(plan, state, site)


def remove(plan: Plan, state: State, site: str, tag: str) -> None:
    if state.impairments.pop(f"{tag}:{site}", None) is None:
        return
    state.save()
    _enforce(plan, state, site)


def _enforce(plan: Plan, state: State, site: str) -> None:
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
    _reconfigure(plan, state)
    if userspace:
        present = netns.run(["nft", "list", "table", "inet", table], ns=core, check=False)
        if present.returncode != 0:
            _nft_table(core, table, [
                f"meta nfproto ipv4 iifname {sp.core_if} drop",
                f"meta nfproto ipv4 oifname {sp.core_if} drop",
            ])  # fmt: skip


def _reconfigure(plan: Plan, state: State) -> None:
    """One userspace impairer per lab, in the core, told its table by file + SIGHUP."""
    eff = {s: i for s, i in _effective(state).items() if i.needs_userspace}
    config = state.run_dir / "impair.json"
    log = state.log_dir / "impairer.log"
    helper = next((h for h in state.helpers if h.get("tag") == "impairer"), None)
    running = helper is not None and alive_as(helper["pid"], helper["argv"])
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
        argv = [
            sys.executable, "-m", "lanspan.lab.inside.impairer",
            "--config", str(config.resolve()),
        ]  # fmt: skip
        pid = spawn(plan.core_ns, argv, log)
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
