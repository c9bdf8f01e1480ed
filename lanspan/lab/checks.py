"""`lab test`: reachability, isolation, path MTU, throughput, then the fault scenarios.

Positive and negative expectations: every guest pings every other guest of each
segment it is on; no guest reaches a guest of a segment it is not on (the small
lab gives two segments the same subnet, so a leak would answer); the largest
unfragmented ping equals the segment's MTU; iperf3 between two sites.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_interface
from typing import Any

from lanspan.lab import impair, netns
from lanspan.lab.flood import run_flood
from lanspan.lab.kernel_checks import trusted_sites
from lanspan.lab.model import Fault
from lanspan.lab.probe import AllPairs, Probe, measured, pairs_interval
from lanspan.lab.runner import LabRun
from lanspan.lab.state import State, alive_as, reap
from lanspan.lab.topology import GuestPlan, Plan

Check = dict[str, Any]
Log = Callable[[str], None]


def _ping(ns: str, addr: str, tries: int, size: int | None = None, df: bool = False) -> bool:
    argv = ["ping", "-n", "-c", "1", "-W", "1"]
    if ":" in addr:
        argv.insert(1, "-6")
    if size is not None:
        argv += ["-s", str(size)]
    if df:
        argv += ["-M", "do"]
    for _ in range(tries):
        if netns.run([*argv, addr], ns=ns, check=False, timeout=10).returncode == 0:
            return True
    return False


def _ip(a: str) -> str:
    return str(ip_interface(a).ip)


def reachability(plan: Plan) -> list[Check]:
    jobs: list[tuple[str, GuestPlan, str, str]] = []
    for a in plan.guests:
        for b in plan.guests:
            if a is b:
                continue
            for ia in a.interfaces:
                ib = b.on(ia.segment)
                if ib is None:
                    continue
                fams = {ip_interface(x).version for x in ia.addresses}
                for addr in ib.addresses:
                    if ip_interface(addr).version in fams:
                        jobs.append((ia.segment, a, b.name, _ip(addr)))

    def one(job: tuple[str, GuestPlan, str, str]) -> Check:
        seg, a, b, addr = job
        ok = _ping(a.ns, addr, tries=5)
        return {
            "name": f"{seg}: {a.name} -> {b} ({addr})",
            "kind": "reachability",
            "passed": ok,
            "detail": "answers" if ok else "no answer",
        }

    with ThreadPoolExecutor(max_workers=8) as ex:
        return list(ex.map(one, jobs))


IsolationJob = tuple[GuestPlan, str, str, str, str]  # source, ifname, its segment, other, addr


def isolation_jobs(plan: Plan) -> list[IsolationJob]:
    """From each guest, one address per guest interface of every segment it is not on.

    Never an address present in a segment of the source itself: that one would
    answer from the source's own segment and read as a leak.
    """
    seg_addrs: dict[str, set[str]] = {}
    for g in plan.guests:
        for i in g.interfaces:
            seg_addrs.setdefault(i.segment, set()).update(_ip(a) for a in i.addresses)
    jobs: list[IsolationJob] = []
    for a in plan.guests:
        mine = {i.segment for i in a.interfaces}
        own = set().union(*(seg_addrs.get(s, set()) for s in mine))
        src = next((i for i in a.interfaces if i.addresses), None)
        if src is None:
            continue
        fams = {ip_interface(x).version for x in src.addresses}
        for b in plan.guests:
            for ib in b.interfaces:
                if ib.segment in mine:
                    continue
                for addr in ib.addresses:
                    if ip_interface(addr).version in fams and _ip(addr) not in own:
                        jobs.append((a, src.ifname, src.segment, ib.segment, _ip(addr)))
                        break
    return jobs


# Each isolation target is echoed for this long (every 0.5 s: two ARP/ND retries
# fit), all targets of a source at once and all sources side by side. One target
# after another (two 1 s pings each, 8 at a time) took 24 s for the 96 targets of a
# 12-node lab with two segments: nine tenths of each `lab chaos` episode there.
ISOLATION_WINDOW_S = 2.0


def _answered(ns: str, addrs: list[str], window: float) -> list[bool]:
    """Whether each of `addrs` answered an echo from `ns` within `window` s (one ping
    each, all at once). A ping that cannot send (no route) answers nothing."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for addr in addrs:
            six = ["-6"] if ":" in addr else []
            argv = ["ping", *six, "-n", "-q", "-i", "0.5", "-w", f"{window:g}", addr]
            procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, *argv],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        out = []
        for proc in procs:
            stdout, _ = proc.communicate(timeout=window + 10)
            got = re.search(r"(\d+) received", stdout)  # the summary line
            out.append(got is not None and int(got.group(1)) > 0)
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def isolation(plan: Plan) -> list[Check]:
    """A guest must not reach a guest of a segment it is not on, even on the same subnet."""
    by_source: dict[str, list[IsolationJob]] = {}
    for job in isolation_jobs(plan):
        by_source.setdefault(job[0].name, []).append(job)

    def from_source(jobs: list[IsolationJob]) -> list[Check]:
        ns = jobs[0][0].ns
        undo: list[list[str]] = []  # the routes this check added, and only those
        try:
            for _, ifname, _, _, addr in jobs:
                # An on-link route so the guest ARPs for the address on its own segment:
                # the question is whether anything on that segment answers for it.
                six = ["-6"] if ":" in addr else []
                route = [addr, "dev", ifname]
                made = netns.run(["ip", *six, "route", "add", *route], ns=ns, check=False)
                if made.returncode == 0:
                    undo.append(["ip", *six, "route", "del", *route])
                # a neighbour entry left by an earlier check must not answer for the segment
                netns.run(["ip", *six, "neigh", "flush", "to", addr], ns=ns, check=False)
            leaks = _answered(ns, [job[4] for job in jobs], ISOLATION_WINDOW_S)
        finally:
            for argv in undo:
                netns.run(argv, ns=ns, check=False)
        return [
            {
                "name": f"{seg_a} -/-> {seg_b}: {a.name} -> {addr}",
                "kind": "isolation",
                "passed": not leak,
                "detail": "LEAK: answered across segments" if leak else "isolated",
            }
            for (a, _, seg_a, seg_b, addr), leak in zip(jobs, leaks, strict=True)
        ]

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(by_source)))) as ex:
        return [c for checks in ex.map(from_source, by_source.values()) for c in checks]


def _pairs_across_sites(plan: Plan, segment: str) -> list[tuple[GuestPlan, GuestPlan]]:
    site = {n.name: n.site for n in plan.nodes}
    on = [
        g
        for g in plan.guests
        if (i := g.on(segment)) is not None
        and any(ip_interface(a).version == 4 for a in i.addresses)
    ]
    on.sort(key=lambda g: g.kind != "access")  # access guests first
    pairs = [(a, b) for a in on for b in on if a is not b and site[a.node] != site[b.node]]
    return pairs or [(a, b) for a in on for b in on if a is not b]


def _v4(g: GuestPlan, segment: str) -> str:
    i = g.on(segment)
    assert i is not None
    return next(_ip(a) for a in i.addresses if ip_interface(a).version == 4)


def mtu(run: LabRun, plan: Plan) -> list[Check]:
    out: list[Check] = []
    for seg in run.lab.segment:
        pairs = _pairs_across_sites(plan, seg.name)
        if not pairs:
            continue
        a, b = pairs[0]
        addr = _v4(b, seg.name)
        fits = _ping(a.ns, addr, tries=3, size=seg.mtu - 28, df=True)
        over = _ping(a.ns, addr, tries=1, size=seg.mtu - 27, df=True)
        measured = seg.mtu if fits and not over else None
        if not fits:
            # find what does pass, for the message
            lo, hi = 0, seg.mtu - 28
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _ping(a.ns, addr, tries=1, size=mid, df=True):
                    lo = mid
                else:
                    hi = mid - 1
            measured = lo + 28 if lo else None
        out.append(
            {
                "name": f"{seg.name}: path MTU {a.name} -> {b.name}",
                "kind": "mtu",
                "passed": fits and not over,
                "advertised": seg.mtu,
                "measured": measured,
                "detail": f"largest unfragmented packet {measured} (advertised {seg.mtu})",
            }
        )
    return out


def throughput(run: LabRun, plan: Plan) -> list[Check]:
    seg = run.lab.segment[0]
    pairs = _pairs_across_sites(plan, seg.name)
    if not pairs:
        return []
    a, b = pairs[0]
    addr = _v4(b, seg.name)
    seconds = run.lab.lab.throughput_seconds
    server = subprocess.Popen(
        ["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1", "-B", addr, "-p", "5201"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    mbps, err = 0.0, ""
    try:
        deadline = time.monotonic() + 5
        data: dict[str, Any] = {}
        while time.monotonic() < deadline:
            proc = netns.run(
                ["iperf3", "-c", addr, "-p", "5201", "-t", str(seconds), "-J",
                 "--connect-timeout", "2000"],
                ns=a.ns, check=False, timeout=seconds + 30,
            )  # fmt: skip
            try:
                data = json.loads(proc.stdout)
            except json.JSONDecodeError:
                data = {"error": proc.stderr.strip() or "no output"}
            if "error" not in data:
                break
            time.sleep(0.2)
        if "error" in data:
            err = str(data["error"])
        else:
            mbps = data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
    need = run.lab.lab.min_throughput_mbps
    return [
        {
            "name": f"{seg.name}: iperf3 {a.name} -> {b.name}",
            "kind": "throughput",
            "passed": not err and mbps >= need,
            "mbps": round(mbps, 1),
            "detail": err or f"{mbps:.1f} Mbit/s (need {need})",
        }
    ]


# -- faults -------------------------------------------------------------------


def _default_probe(plan: Plan, fault: Fault) -> tuple[GuestPlan, GuestPlan, str] | None:
    """A pair of guests on one segment, the target behind the faulted site or node."""
    site = {n.name: n.site for n in plan.nodes}

    def behind(g: GuestPlan) -> bool:
        if fault.sites is not None:
            return site[g.node] == fault.sites[1]
        if fault.node is not None:
            return g.node == fault.node
        if fault.site is None:  # cold-start: any pair across sites
            return True
        return site[g.node] == fault.site

    def source_ok(g: GuestPlan) -> bool:
        if fault.sites is not None:
            return site[g.node] == fault.sites[0]
        if fault.kind == "cold-start":
            return True
        return not behind(g)

    for t in plan.guests:
        if not behind(t):
            continue
        for s in plan.guests:
            if s is t or not source_ok(s):
                continue
            if fault.kind == "cold-start" and site[s.node] == site[t.node]:
                continue
            for i in s.interfaces:
                if t.on(i.segment) is not None and i.addresses:
                    return s, t, i.segment
    return None


def _peer_entry(run: LabRun, node: str, peer: str) -> dict[str, Any] | None:
    """`lanspan show --json` of `node`: its entry for `peer`, None if it does not answer."""
    shown = run.show(node)
    if shown is None:
        return None
    return next((p for p in shown.get("peers", []) if p.get("name") == peer), None)


def _active_uplink(run: LabRun, plan: Plan, src: GuestPlan, dst: GuestPlan, site: str) -> int:
    """Which uplink of two-uplink `site` carries the probe: the address the far node sends to."""
    here, there = (src, dst) if plan.node(dst.node).site == site else (dst, src)
    entry = _peer_entry(run, here.node, there.node)
    node = plan.node(there.node)
    endpoint = (entry or {}).get("endpoint") or ""
    if node.endpoint2 is not None and endpoint == node.endpoint2:
        return 2
    return 1


def _probe_pair(plan: Plan, fault: Fault) -> tuple[GuestPlan, GuestPlan, str] | None:
    """The fault's probe (source, target, segment): the lab file's, else a default one."""
    if fault.probe is not None:
        src, dst = plan.guest(fault.probe.source), plan.guest(fault.probe.target)
        seg = next(i.segment for i in src.interfaces if dst.on(i.segment) is not None)
        return src, dst, seg
    return _default_probe(plan, fault)


def _hold(run: LabRun, fault: Fault, src: GuestPlan, dst: GuestPlan) -> list[str]:
    """Wait while the fault lasts; for a block, the relays the source's node sends through."""
    vias: list[str] = []
    if fault.kind != "block":
        time.sleep(fault.duration)
        return vias
    end = time.monotonic() + fault.duration
    while time.monotonic() < end:
        entry = _peer_entry(run, src.node, dst.node)
        via = (entry or {}).get("via")
        if via and via not in vias:
            vias.append(str(via))
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
    return vias


def _explain(
    run: LabRun,
    plan: Plan,
    fault: Fault,
    result: dict[str, Any],
    target: str,
    vias: list[str],
    src: GuestPlan,
    dst: GuestPlan,
) -> None:
    """Per kind: what was done (detail), and what else must hold for it to count as recovered."""
    if fault.kind == "impair":
        result["impair"] = {k: v for k, v in fault.impair.model_dump().items() if v}
    if fault.kind == "cut-uplink" and target:
        active = " (the one carrying the probe)" if fault.uplink == "active" else ""
        how = ", upstream only (carrier kept)" if fault.upstream_only else ""
        result["detail"] = f"cut {target} of {fault.site}{active}{how}"
    if fault.kind == "block":
        result["relays"] = vias
        if not vias:
            result["recovered"] = False
            result["detail"] = (
                f"{src.node} never sent to {dst.node} through a relay while blocked "
                "(`via` stayed empty in lanspan show)"
            )
        else:
            result["detail"] = f"through relay {', '.join(vias)}"
    if fault.kind in ("kill-agent", "kill-relay"):
        if fault.kind == "kill-relay":
            result["detail"] = f"killed relay {target}"
        missing = run.wait_sessions(plan, fault.recovery_timeout)
        result["sessions_back"] = not missing
        if missing:
            result["recovered"] = False
            result["detail"] = "sessions not back: " + "; ".join(
                f"{n}: {', '.join(p)}" for n, p in missing.items()
            )


def run_fault(run: LabRun, plan: Plan, fault: Fault, log: Log) -> dict[str, Any]:
    """Inject one fault under a continuous probe, clear it, and measure the outage."""
    if fault.kind == "cold-start":
        return cold_start(run, plan, fault, log)
    if fault.kind == "kill-gateway":
        from lanspan.lab.gateways import kill_gateway

        return kill_gateway(run, plan, fault, log)
    state = run.state()
    assert state is not None
    found = _probe_pair(plan, fault)
    if found is None:
        return {"name": fault.name, "kind": fault.kind, "outage_ms": None, "recovered": False,
                "detail": "no pair of guests across the faulted place to probe"}  # fmt: skip
    src, dst, seg = found
    if fault.kind == "flood":
        return run_flood(run, plan, fault, src, dst, _v4(dst, seg))
    result: dict[str, Any] = {
        "name": fault.name,
        "kind": fault.kind,
        "probe": f"{src.name} -> {dst.name}",
    }
    probe = Probe(src.ns, _v4(dst, seg), source=src.name)
    watch: HealWatch | None = None
    try:

        def failed(detail: str) -> dict[str, Any]:
            pr = probe.stop()
            result.update(outage_ms=None, recovered=False, detail=detail,
                          timeline=pr.timeline, interval_ms=pr.interval_ms)  # fmt: skip
            return result

        if probe.wait_answering(20, time.time(), 15.0) is None:
            return failed("no connectivity before the fault")
        target = _target(run, plan, fault, src, dst)
        if target is None:
            return failed("no relay carries the probe's traffic: nothing to kill")
        if target:
            result["target"] = target
        # "fault" before the fault is applied: a probe lost to it is never counted as "before";
        # "during" is only while it surely held: from "applied" (`_inject` returned) to
        # "clearing" (`_clear` called); recovery counts from "cleared"
        probe.mark("fault")
        _inject(run, plan, state, fault, target)
        probe.mark("applied")
        try:
            if fault.heal_within is not None:
                watch = HealWatch(plan)
            vias = _hold(run, fault, src, dst)
        finally:  # even on Ctrl-C: never leave a fault in place
            probe.mark("clearing")
            _clear(run, plan, state, fault, target)
        probe.mark("cleared")
        t_end = time.time()
        heal: tuple[dict[str, float], list[str]] | None = None
        if watch is not None:
            assert fault.heal_within is not None
            watch.arm()
            heal = watch.wait(t_end, fault.heal_within, linger=fault.recovery_timeout)
        back = probe.wait_answering(20, t_end, fault.recovery_timeout)
        if back is not None:
            probe.mark("recovered")
            time.sleep(0.3)
        pr = probe.stop()
    finally:
        if probe.proc.poll() is None:
            probe.stop()
        if watch is not None:
            watch.stop()
    result.update(measured(pr, fault.duration, back, t_end))
    _explain(run, plan, fault, result, target, vias, src, dst)
    if heal is not None:
        _judge_heal(result, heal, watch.pairs if watch else 0, fault)
    return result


def _judge_heal(
    result: dict[str, Any], heal: tuple[dict[str, float], list[str]], pairs: int, fault: Fault
) -> None:
    """`heal_within`: every guest pair answered that soon after the fault cleared, or not."""
    times, late = heal
    limit = (fault.heal_within or 0.0) * 1000
    worst = max((v for v in times.values() if v <= limit), default=None)
    result["heal"] = {
        "within_s": fault.heal_within,
        "pairs": pairs,
        "late": late,
        "max_ms": worst,  # of the pairs in time; `pairs_ms` has the late ones too
        "pairs_ms": dict(sorted(times.items(), key=lambda kv: -kv[1])),
    }
    said = result.get("detail", "")
    if late:
        result["recovered"] = False
        result["detail"] = (said + "; " if said else "") + (
            f"not every guest pair answered within {fault.heal_within:g} s of the heal: "
            + ", ".join(late)
        )
    else:
        result["detail"] = (said + "; " if said else "") + (
            f"every guest pair ({pairs}) answered within {worst or 0:.0f} ms of the heal"
        )


def _target(run: LabRun, plan: Plan, fault: Fault, src: GuestPlan, dst: GuestPlan) -> str | None:
    """What the fault acts on, resolved now: the relay to kill, the uplink to cut ("" if fixed)."""
    if fault.kind == "kill-relay":
        entry = _peer_entry(run, src.node, dst.node)
        via = (entry or {}).get("via")
        return str(via) if via else None
    if fault.kind == "cut-uplink" and fault.uplink is not None:
        assert fault.site is not None
        n = (
            _active_uplink(run, plan, src, dst, fault.site)
            if fault.uplink == "active"
            else fault.uplink
        )
        return f"uplink {n}"
    return ""


def _kill(run: LabRun, state: State, node: str) -> None:
    a = state.agents[node]
    if alive_as(a["pid"], a["argv"]):
        os.kill(a["pid"], signal.SIGKILL)
        reap(a["pid"], 5.0)


def _inject(run: LabRun, plan: Plan, state: State, fault: Fault, target: str) -> None:
    if fault.kind == "cut-uplink":
        assert fault.site is not None
        if target:
            impair.cut_one(plan, fault.site, int(target.split()[-1]), carrier=fault.upstream_only)
        else:
            impair.cut(plan, fault.site)
    elif fault.kind == "kill-agent":
        assert fault.node is not None
        _kill(run, state, fault.node)
    elif fault.kind == "kill-relay":
        _kill(run, state, target)
    elif fault.kind == "block":
        assert fault.sites is not None
        impair.block(plan, *fault.sites)
    else:
        assert fault.site is not None
        impair.apply(plan, state, fault.site, fault.impair, "fault")  # merged with uplink


def _clear(run: LabRun, plan: Plan, state: State, fault: Fault, target: str) -> None:
    if fault.kind == "cut-uplink":
        assert fault.site is not None
        if target:
            impair.uncut_one(plan, fault.site, int(target.split()[-1]))
        else:
            impair.uncut(plan, fault.site)
    elif fault.kind == "kill-agent":
        assert fault.node is not None
        run.start_agent(fault.node, plan, state)
    elif fault.kind == "kill-relay":
        run.start_agent(target, plan, state)
    elif fault.kind == "block":
        assert fault.sites is not None
        impair.unblock(plan, *fault.sites)
    else:
        assert fault.site is not None
        impair.remove(plan, state, fault.site, "fault")


def segment_pairs(plan: Plan) -> tuple[dict[str, list[str]], dict[tuple[str, str], str]]:
    """Every guest -> every other guest of each segment it is on, IPv4.

    (source guest -> target addresses, (source guest, address) -> target guest).
    Guests with no IPv4 address in the plan (DHCP clients: their lease is not known
    before they ask) are neither sources nor targets there.
    """
    wanted: dict[str, list[str]] = {}
    names: dict[tuple[str, str], str] = {}
    for a in plan.guests:
        for ia in a.interfaces:
            if _v4_of(ia.addresses) is None:
                continue
            for b in plan.guests:
                ib = b.on(ia.segment) if b is not a else None
                addr = _v4_of(ib.addresses) if ib is not None else None
                if addr is not None:
                    wanted.setdefault(a.name, []).append(addr)
                    names[(a.name, addr)] = b.name
    return wanted, names


def _v4_of(addresses: tuple[str, ...]) -> str | None:
    return next((_ip(a) for a in addresses if ip_interface(a).version == 4), None)


def heal_times(
    first: dict[str, float], targets: list[str], since: float, within: float
) -> tuple[dict[str, float], list[str]]:
    """(ms from `since` to each target's first reply, the targets late or silent).

    A reply counts only if it came after `since` and at most `within` s later.
    """
    ms = {a: round((t - since) * 1000, 1) for a, t in first.items() if t >= since}
    late = [a for a in targets if a not in ms or ms[a] > within * 1000]
    return ms, late


class HealWatch:
    """Every guest pair of each segment, answering again after a heal (IPv4).

    Start it while the fault still holds (the probers take a moment to start),
    `arm()` once everything is cleared, then `wait(since, within)`: each pair
    must have a reply received after `since` and at most `within` s after it,
    judged on the replies' own timestamps, not on when the lab read them.
    """

    def __init__(self, plan: Plan) -> None:
        wanted, self.names = segment_pairs(plan)
        every = pairs_interval(sum(len(set(a)) for a in wanted.values()))
        self.probers = [
            (g, AllPairs(plan.guest(g).ns, addrs, every)) for g, addrs in wanted.items() if addrs
        ]
        self.pairs = sum(len(ap.targets) for _, ap in self.probers)
        for _, ap in self.probers:
            ap.wait_started(5.0)

    def arm(self) -> None:
        for _, ap in self.probers:
            ap.rearm()
        for _, ap in self.probers:
            ap.wait_armed(2.0)

    def armed_at(self) -> float:
        """Wall time the last prober re-armed (replies count from then on); 0 if none."""
        return max((ap.armed_at or 0.0 for _, ap in self.probers), default=0.0)

    def wait(
        self, since: float, within: float, linger: float = 0.0
    ) -> tuple[dict[str, float], list[str]]:
        """(ms to the first reply per pair "src -> dst", the pairs late or silent).

        With `linger`, a pair not answering in time is waited for that much longer, so
        that a late one says how late ("after N ms") rather than only that it was late.
        """
        deadline = since + within + linger
        while time.time() < deadline and not all(ap.done() for _, ap in self.probers):
            time.sleep(0.02)
        time.sleep(0.1)  # the readers catch up with replies received by the deadline
        times: dict[str, float] = {}
        late: list[str] = []
        for g, ap in self.probers:
            with ap.lock:
                first = dict(ap.first)
            ms, silent = heal_times(first, ap.targets, since, within)
            times.update({f"{g} -> {self.names[(g, a)]}": v for a, v in ms.items()})
            late += [
                f"{g} -> {self.names[(g, a)]} ({a}) "
                + (f"after {ms[a]:.0f} ms" if a in ms else f"silent for {within + linger:g} s")
                for a in silent
            ]
        return times, late

    def stop(self) -> None:
        for _, ap in self.probers:
            ap.stop()


def cold_start(run: LabRun, plan: Plan, fault: Fault, log: Log) -> dict[str, Any]:
    """Stop every agent, start them all at once, and time connectivity.

    `cold_start_ms`: from the first agent started until every guest pair of every
    segment has answered (one ICMP prober per guest, to all its peers);
    `first_answer_ms`: until the continuous probe (a pair across sites) first answered.
    """
    state = run.state()
    assert state is not None
    result: dict[str, Any] = {"name": fault.name, "kind": fault.kind}
    found = _probe_pair(plan, fault)
    if found is None:
        result.update(outage_ms=None, recovered=False, detail="no pair of guests to probe")
        return result
    src, dst, seg = found
    result["probe"] = f"{src.name} -> {dst.name}"
    for node in plan.nodes:
        _kill(run, state, node.name)
    wanted, names = segment_pairs(plan)
    sources = [g for g, addrs in wanted.items() if addrs]
    every = pairs_interval(sum(len(set(wanted[g])) for g in sources))
    all_pairs = [AllPairs(plan.guest(g).ns, wanted[g], every) for g in sources]
    probe = Probe(src.ns, _v4(dst, seg), source=src.name)
    t_start = 0.0
    try:
        for ap in all_pairs:
            ap.wait_started(5.0)
        probe.mark("fault")  # agents stopped
        t_start = time.time()
        run.start_agents([node.name for node in plan.nodes], plan, state)  # all at once
        probe.mark("cleared")  # agents started
        t_end = time.time()
        deadline = time.monotonic() + fault.recovery_timeout
        while time.monotonic() < deadline and not all(ap.done() for ap in all_pairs):
            time.sleep(0.05)
        back = probe.wait_answering(20, t_start, max(0.1, deadline - time.monotonic()))
        if back is not None:
            probe.mark("recovered")
            time.sleep(0.3)
        pr = probe.stop()
    finally:
        if probe.proc.poll() is None:
            probe.stop()
        for ap in all_pairs:
            ap.stop()
    firsts = [t for ap in all_pairs for t in ap.first.values()]
    per_pair = {
        f"{g} -> {names[(g, addr)]}": round((t - t_start) * 1000, 1)
        for g, ap in zip(sources, all_pairs, strict=True)
        for addr, t in ap.first.items()
        if (g, addr) in names
    }
    n_pairs = sum(len(ap.targets) for ap in all_pairs)
    done = all(ap.done() for ap in all_pairs)
    first_probe = min((t for s, t in probe.answered.items() if t >= t_start), default=None)
    cold_ms = round((max(firsts) - t_start) * 1000, 1) if done and firsts else None
    in_time, detail = judge_cold_start(cold_ms, fault.within_ms, len(firsts), n_pairs)
    result.update(
        outage_ms=pr.outage_ms,
        recovered=in_time and back is not None,
        cold_start_ms=cold_ms,
        within_ms=fault.within_ms,
        started_at=round(t_start, 3),  # epoch s: lines the figures up with the agents' logs
        first_answer_ms=round((first_probe - t_start) * 1000, 1) if first_probe else None,
        start_spread_ms=round((t_end - t_start) * 1000, 1),
        pairs=n_pairs,
        pairs_answered=len(firsts),
        pairs_ms=dict(sorted(per_pair.items(), key=lambda kv: -kv[1])),
        recovery_ms=round((back - t_start) * 1000, 1) if back is not None else None,
        **pr.counts(),
        detail=detail,
    )
    missing = run.wait_sessions(plan, fault.recovery_timeout)
    result["sessions_back"] = not missing
    if missing:
        result["recovered"] = False
    return result


def judge_cold_start(
    cold_start_ms: float | None, within_ms: float, answered: int, pairs: int
) -> tuple[bool, str]:
    """(in time, detail) of a cold start: every guest pair answered within `within_ms`.

    `cold_start_ms` is None when some pair never answered (`answered` of `pairs`).
    """
    if cold_start_ms is None:
        return False, (f"{answered}/{pairs} guest pairs answered; the bound is {within_ms:g} ms")
    said = f"every guest pair ({pairs}) answered {cold_start_ms:.0f} ms after the agents started"
    if cold_start_ms > within_ms:
        return False, f"{said}: over the bound of {within_ms:g} ms (within_ms)"
    return True, f"{said} (bound {within_ms:g} ms)"


def run_all(run: LabRun, faults: bool = True, log: Log = print) -> dict[str, Any]:
    plan = run.plan()
    missing = run.missing_sessions(plan)
    checks: list[Check] = []
    checks.append(
        {
            "name": "sessions up",
            "kind": "sessions",
            "passed": not missing,
            "detail": "; ".join(f"{n}: {', '.join(p)}" for n, p in missing.items()) or "all up",
        }
    )
    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        ("reachability", lambda: reachability(plan)),
        ("isolation", lambda: isolation(plan)),
        ("mtu", lambda: mtu(run, plan)),
        ("throughput", lambda: throughput(run, plan)),
        ("trusted sites", lambda: trusted_sites(run, plan)),  # kernel inside, encrypted out
    ]
    if run.lab.gateway or run.lab.floating:
        from lanspan.lab import gateways as gw

        steps += [
            ("dhcp", lambda: gw.dhcp_checks(run, plan)),
            ("gateway", lambda: gw.gateway_checks(run, plan)),
            ("policy", lambda: gw.policy_checks(run, plan)),
        ]
    for title, fn in steps:
        t = time.monotonic()
        got = fn()
        bad = sum(1 for c in got if not c["passed"])
        log(f"{title}: {len(got) - bad}/{len(got)} passed ({time.monotonic() - t:.1f} s)")
        checks += got
    fault_results: list[dict[str, Any]] = []
    if faults:
        for f in run.lab.fault:
            log(f"fault {f.name} ({f.kind}) ...")
            r = run_fault(run, plan, f, log)
            log(f"  outage {r.get('outage_ms')} ms, recovered {r.get('recovered')}")
            fault_results.append(r)
    passed = all(c["passed"] for c in checks) and all(r["recovered"] for r in fault_results)
    return {
        "lab": run.lab.name,
        "passed": passed,
        "checks": checks,
        "faults": fault_results,
        "topology": plan.to_json(),
        "uplinks": {
            s.name: ", ".join(f"{k}={v:g}" for k, v in s.uplink.model_dump().items() if v)
            for s in run.lab.site
            if not s.uplink.empty
        },
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'check':<58} {'kind':<12} {'result':<6} detail"]
    for c in result["checks"]:
        ok = "ok" if c["passed"] else "FAIL"
        lines.append(f"{c['name'][:58]:<58} {c['kind']:<12} {ok:<6} {c.get('detail', '')}")
    if result["faults"]:
        lines.append("")
        lines.append(
            f"{'fault':<24} {'kind':<12} {'outage ms':>10} {'recovery ms':>12} "
            f"{'loss %':>7} {'rtt ms':>7}  recovered"
        )
        for f in result["faults"]:
            out = "-" if f.get("outage_ms") is None else f"{f['outage_ms']:.0f}"
            rec = "-" if f.get("recovery_ms") is None else f"{f['recovery_ms']:.0f}"
            during = f.get("during") or {}
            loss = "-" if during.get("loss_pct") is None else f"{during['loss_pct']:g}"
            rtt = "-" if during.get("rtt_ms_median") is None else f"{during['rtt_ms_median']:.1f}"
            lines.append(
                f"{f['name']:<24} {f['kind']:<12} {out:>10} {rec:>12} {loss:>7} {rtt:>7}  "
                f"{'yes' if f['recovered'] else 'NO'} {f.get('detail', '')}"
            )
    n_bad = sum(1 for c in result["checks"] if not c["passed"]) + sum(
        1 for f in result["faults"] if not f["recovered"]
    )
    lines.append("")
    lines.append("PASSED" if result["passed"] else f"FAILED ({n_bad} failing)")
    return "\n".join(lines)


__all__ = ["isolation", "mtu", "reachability", "run_all", "run_fault", "table", "throughput"]
