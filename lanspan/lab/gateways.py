"""Gateway checks and the kill-gateway fault (docs/gateways.md).

- `gateway`: every guest with an address reaches its segment's virtual gateway
  (and floating) addresses.
- `policy`: for each [[allow]], the flow passes; the same flow the other way,
  the same protocol to a port no rule lists, and TCP where only ICMP is
  allowed are judged by the file's rules (default deny) and must be refused
  when no rule lets them through. TCP/UDP with a tiny listener in the target
  (`lanspan.lab.inside.listener`), ICMP with ping. Towards the internet the
  reverse direction is not tried: the gateways masquerade, so the internet
  host has no address to aim at inside a segment.
- `dhcp`: each `dhcp = true` guest runs busybox udhcpc; the lease must come
  from the segment's [[dhcp]] range, with the segment's gateway as router,
  which must then answer.
- `kill-gateway`: the master of a segment's gateway (whoever holds the
  address now) loses its agent, keepalived and dnsmasq (SIGKILL, by PID); a
  continuous probe from a guest to the virtual address measures the outage;
  the agent is started again and the probe runs on for `settle` seconds: a
  second outage there counts against recovery unless the gateway preempts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, ip_interface
from pathlib import Path
from typing import Any

from lanspan.config import load_network
from lanspan.config.model import Allow, Gateway, Network
from lanspan.lab import netns
from lanspan.lab.model import Fault
from lanspan.lab.probe import Probe, ProbeResult, not_answering
from lanspan.lab.runner import LabRun
from lanspan.lab.state import reap
from lanspan.lab.topology import GuestPlan, Plan

Check = dict[str, Any]
Log = Callable[[str], None]
SERVICES = ("keepalived", "dnsmasq")
OTHER_PORT = 5001  # the TCP port tried where a rule allows only ICMP


def _ping(ns: str, addr: str, tries: int) -> bool:
    for _ in range(tries):
        argv = ["ping", "-n", "-c", "1", "-W", "1", addr]
        if netns.run(argv, ns=ns, check=False, timeout=10).returncode == 0:
            return True
    return False


def _v4(g: GuestPlan, segment: str) -> str | None:
    i = g.on(segment)
    if i is None:
        return None
    return next((str(ip_interface(a).ip) for a in i.addresses if ":" not in a), None)


def _static(plan: Plan, segment: str) -> list[GuestPlan]:
    return [g for g in plan.guests if g.kind == "access" and _v4(g, segment) is not None]


def _vip4(gw: Gateway) -> str | None:
    return next((str(a.ip) for a in gw.addresses if a.version == 4), None)


def network_of(run: LabRun) -> Network:
    return load_network(run.network_file)


# -- gateway --------------------------------------------------------------------


def gateway_checks(run: LabRun, plan: Plan) -> list[Check]:
    net = network_of(run)
    targets: list[tuple[str, str, str]] = []  # (segment, what, address)
    for gw in net.gateways:
        targets += [(gw.segment, "gateway", str(a.ip)) for a in gw.addresses if a.version == 4]
    for fl in net.floating:
        if fl.segment is not None:
            targets += [(fl.segment, f"floating {fl.name}", str(a.ip)) for a in fl.addresses
                        if a.version == 4]  # fmt: skip
    out: list[Check] = []
    for seg, what, addr in targets:
        for g in _static(plan, seg):
            ok = _ping(g.ns, addr, tries=5)
            out.append(
                {
                    "name": f"{seg}: {g.name} -> {what} {addr}",
                    "kind": "gateway",
                    "passed": ok,
                    "detail": "answers" if ok else "no answer",
                }
            )
    return out


# -- policy ---------------------------------------------------------------------

Dest = tuple[str, str]  # ("segment", name) | ("internet", "internet")


def _matches(a: Allow, src: str, dst: Dest, proto: str, port: int | None) -> bool:
    if a.source != src or 4 not in a.families:
        return False
    if (dst[0] == "segment") != (a.to_kind == "segment") or (
        a.to_kind == "segment" and a.to != dst[1]
    ):
        return False
    if a.to_kind == "uplink":
        return False
    if a.proto not in ("any", proto):
        return False
    if port is None or not a.ports:
        return True
    return any(lo <= port <= hi for lo, hi in a.ports)


def allowed(net: Network, src: str, dst: Dest, proto: str, port: int | None) -> bool:
    """Whether the file's rules let this IPv4 flow through the gateways (default deny)."""
    return any(_matches(a, src, dst, proto, port) for a in net.allows)


def _other_port(a: Allow) -> int:
    taken = {p for lo, hi in a.ports for p in range(lo, hi + 1)}
    p = max(hi for _, hi in a.ports) + 1 if a.ports else OTHER_PORT
    while p in taken or p > 65535:
        p = 1024 if p > 65535 else p + 1
    return p


Flow = tuple[str, Dest, str, int | None]  # source segment, destination, proto, port


def policy_flows(net: Network) -> list[tuple[Flow, bool]]:
    """The flows the policy check tries, each with whether it must pass."""
    flows: list[Flow] = []
    for a in net.allows:
        if a.to_kind == "uplink" or 4 not in a.families:
            continue
        dst: Dest = ("segment", a.to) if a.to_kind == "segment" else ("internet", "internet")
        proto = "icmp" if a.proto in ("icmp", "any") else a.proto
        port = None if proto == "icmp" else (a.ports[0][0] if a.ports else OTHER_PORT)
        flows.append((a.source, dst, proto, port))
        if proto != "icmp":
            flows.append((a.source, dst, proto, _other_port(a)))
        else:
            flows.append((a.source, dst, "tcp", OTHER_PORT))
        if a.to_kind == "segment":
            flows.append((a.to, ("segment", a.source), proto, port))
    seen: set[Flow] = set()
    out: list[tuple[Flow, bool]] = []
    for f in flows:
        if f not in seen:
            seen.add(f)
            out.append((f, allowed(net, *f)))
    return out


@contextmanager
def _listeners(specs: dict[str, set[str]]) -> Iterator[None]:
    """One listener per namespace for every `proto:port` aimed at it; stopped on exit."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for ns, wanted in specs.items():
            if not wanted:
                continue
            p = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    sys.executable,
                    "-m",
                    "lanspan.lab.inside.listener",
                    "serve",
                    *sorted(wanted),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            procs.append(p)
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"listener in {ns} did not start: {line.strip()}")
        yield
    finally:
        for p in procs:
            netns.terminate(p)


def policy_checks(run: LabRun, plan: Plan) -> list[Check]:
    net = network_of(run)
    out: list[Check] = []
    jobs: list[tuple[Flow, bool, GuestPlan, str, str, str]] = []
    specs: dict[str, set[str]] = {}
    for flow, must in policy_flows(net):
        src_seg, dst, proto, port = flow
        sources = _static(plan, src_seg)
        if dst[0] == "internet":
            if plan.internet_ns is None or plan.internet_addr is None:
                continue
            d_ns, d_addr, d_name = (
                plan.internet_ns,
                str(ip_interface(plan.internet_addr).ip),
                "internet",
            )
        else:
            targets = _static(plan, dst[1])
            if not targets:
                continue
            t = targets[-1]
            d_ns, d_addr, d_name = t.ns, _v4(t, dst[1]) or "", t.name
        if not sources:
            continue
        if port is not None:
            specs.setdefault(d_ns, set()).add(f"{proto}:{port}")
        jobs.append((flow, must, sources[0], d_ns, d_addr, d_name))
    with _listeners(specs):
        for (src_seg, dst, proto, port), must, src, _ns, d_addr, d_name in jobs:
            if proto == "icmp":
                passed_ = _ping(src.ns, d_addr, tries=3 if must else 1)
            else:
                argv = [sys.executable, "-m", "lanspan.lab.inside.listener", "connect",
                        proto, d_addr, str(port), "--timeout", "1.5"]  # fmt: skip
                tries = 3 if must else 1
                passed_ = any(
                    netns.run(argv, ns=src.ns, check=False, timeout=10).returncode == 0
                    for _ in range(tries)
                )
            what = proto if port is None else f"{proto}/{port}"
            arrow = "->" if must else "-/->"
            out.append(
                {
                    "name": f"{src_seg} {arrow} {dst[1]}: {src.name} -> {d_name} {what}",
                    "kind": "policy",
                    "passed": passed_ == must,
                    "detail": ("passes" if passed_ else "refused")
                    + (
                        "" if passed_ == must else f" (the file says {'allow' if must else 'deny'})"
                    ),
                }
            )
    return out


# -- dhcp -----------------------------------------------------------------------

UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc calls this with the lease in its environment
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    echo "LEASE ip=$ip mask=$mask router=$router"
    ;;
esac
exit 0
"""


def dhcp_checks(run: LabRun, plan: Plan) -> list[Check]:
    net = network_of(run)
    script = (run.run_dir / "udhcpc.sh").resolve()
    script.write_text(UDHCPC_SCRIPT)
    os.chmod(script, 0o755)
    out: list[Check] = []
    for g in run.lab.guest:
        if not g.dhcp or g.segment is None:
            continue
        gp = plan.guest(g.name)
        seg = g.segment
        dhcp = next((d for d in net.dhcp if d.segment == seg), None)
        gw = next((x for x in net.gateways if x.segment == seg), None)
        name = f"{seg}: {g.name} by DHCP"
        if dhcp is None or dhcp.range4 is None or gw is None:
            out.append(
                {
                    "name": name,
                    "kind": "dhcp",
                    "passed": False,
                    "detail": f"segment {seg!r} has no [[dhcp]] range and [[gateway]]",
                }
            )
            continue
        argv = ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "8", "-T", "1",
                "-A", "1", "-s", str(script)]  # fmt: skip
        proc = netns.run(argv, ns=gp.ns, check=False, timeout=30)
        lease = next((ln for ln in proc.stdout.splitlines() if ln.startswith("LEASE ")), None)
        if lease is None:
            out.append(
                {
                    "name": name,
                    "kind": "dhcp",
                    "passed": False,
                    "detail": "no lease: " + (proc.stdout + proc.stderr).strip()[-200:],
                }
            )
            continue
        fields = dict(kv.split("=", 1) for kv in lease.split()[1:] if "=" in kv)
        got = fields.get("ip", "")
        router = (fields.get("router") or "").split()
        lo, hi = dhcp.range4
        problems: list[str] = []
        try:
            in_range = lo <= IPv4Address(got) <= hi
        except ValueError:
            in_range = False
        if not in_range:
            problems.append(f"address {got or '-'} not in {lo}-{hi}")
        vip = _vip4(gw)
        if not router or router[0] != vip:
            problems.append(f"router {router or '-'} is not the gateway {vip}")
        elif not _ping(gp.ns, vip, tries=5):
            problems.append(f"the router {vip} does not answer")
        out.append(
            {
                "name": name,
                "kind": "dhcp",
                "passed": not problems,
                "detail": "; ".join(problems) or f"{got}/{fields.get('mask')} router {vip}",
            }
        )
    return out


# -- kill-gateway ---------------------------------------------------------------


def holder(plan: Plan, nodes: tuple[str, ...], addr: str) -> str | None:
    """The node among `nodes` whose namespace holds `addr` now (None: nobody)."""
    for n in nodes:
        out = netns.run(["ip", "-o", "addr", "show"], ns=plan.node(n).ns, check=False).stdout
        if f" {addr}/" in out:
            return n
    return None


def services_in(ns: str) -> list[int]:
    """PIDs of keepalived and dnsmasq running in namespace `ns` (the agent's children)."""
    pids: list[int] = []
    for pid in netns.pids_in(ns):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in SERVICES:
            pids.append(pid)
    return pids


def _kill_services(ns: str) -> None:
    for pid in services_in(ns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        reap(pid, 5.0)


def longest_gap(pr: ProbeResult, start_ms: float, end_ms: float) -> float:
    """The longest run of unanswered probes sent between two marker times, in ms."""
    a = max(0, int(start_ms / pr.interval_ms))
    b = min(len(pr.timeline), int(end_ms / pr.interval_ms))
    longest = run = 0
    for bit in pr.timeline[a:b]:
        run = 0 if bit else run + 1
        longest = max(longest, run)
    return longest * pr.interval_ms


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def kill_gateway(run: LabRun, plan: Plan, fault: Fault, log: Log) -> dict[str, Any]:
    state = run.state()
    assert state is not None
    net = network_of(run)
    gw = next((g for g in net.gateways if fault.segment in (None, g.segment)), None)
    result: dict[str, Any] = {"name": fault.name, "kind": fault.kind}
    vip = _vip4(gw) if gw is not None else None
    if gw is None or vip is None:
        result.update(outage_ms=None, recovered=False, detail="no IPv4 gateway to probe")
        return result
    if fault.probe is not None:
        src: GuestPlan | None = plan.guest(fault.probe.source)
    else:
        src = next((g for g in _static(plan, gw.segment) if g.node not in gw.nodes), None)
    if src is None:
        result.update(
            outage_ms=None,
            recovered=False,
            detail=f"no guest of {gw.segment} outside the gateway nodes to probe from",
        )
        return result
    result["probe"] = f"{src.name} -> gateway {vip}"
    master = holder(plan, gw.nodes, vip)
    if master is None:
        result.update(outage_ms=None, recovered=False, detail=f"nobody holds {vip}")
        return result
    result["target"] = master
    ns = plan.node(master).ns
    probe = Probe(src.ns, vip, source=src.name)
    try:
        if probe.wait_answering(20, time.time(), 15.0) is None:
            result.update(not_answering(probe, "no answer before the fault"))
            return result
        probe.mark("fault")
        run.kill_agent(master, state)
        _kill_services(ns)
        try:
            new = None
            deadline = time.monotonic() + fault.duration
            while time.monotonic() < deadline:
                new = new or holder(plan, tuple(n for n in gw.nodes if n != master), vip)
                time.sleep(0.05)
        finally:
            run.start_agent(master, plan, state)
        probe.mark("cleared")
        t_end = time.time()
        back = probe.wait_answering(20, t_end - fault.duration, fault.recovery_timeout)
        missing = run.wait_sessions(plan, fault.recovery_timeout)
        restarted = _wait(lambda: "keepalived" in _comms(ns), fault.recovery_timeout)
        probe.mark("restarted")
        time.sleep(fault.settle)  # the second window: the probe keeps running
        probe.mark("settled")
        pr = probe.stop()
    finally:
        if probe.proc.poll() is None:
            probe.stop()
    first = longest_gap(pr, pr.markers["fault"], pr.markers["cleared"])
    second = longest_gap(pr, pr.markers["cleared"], pr.markers["settled"])
    after = holder(plan, gw.nodes, vip)
    limit = fault.max_outage_ms
    second_ok = second <= limit if gw.preempt else second <= 5 * pr.interval_ms
    result.update(
        outage_ms=first,
        second_outage_ms=second,
        new_master=new,
        master_after=after,
        preempt=gw.preempt,
        sessions_back=not missing,
        recovery_ms=None,
        **pr.counts(),
        duration_ms=fault.duration * 1000,
    )
    problems: list[str] = []
    if back is None:
        problems.append("the gateway never answered again")
    if new is None:
        problems.append(f"no other gateway took {vip} over")
    if first > limit:
        problems.append(f"outage {first:.0f} ms > {limit:.0f} ms")
    if not second_ok:
        problems.append(f"second outage {second:.0f} ms after {master} came back")
    if missing:
        problems.append("sessions not back")
    if not restarted:
        problems.append(f"keepalived of {master} not running again")
    if not gw.preempt and after == master:
        problems.append(f"{master} took {vip} back although preempt = false")
    result["recovered"] = not problems
    result["detail"] = "; ".join(problems) or (
        f"killed {master} (agent, keepalived, dnsmasq); {new} took over in {first:.0f} ms; "
        f"{master} back as backup, second outage {second:.0f} ms"
    )
    return result


def _comms(ns: str) -> set[str]:
    out: set[str] = set()
    for pid in netns.pids_in(ns):
        try:
            out.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return out


__all__ = [
    "allowed",
    "dhcp_checks",
    "gateway_checks",
    "holder",
    "kill_gateway",
    "policy_checks",
    "policy_flows",
]
