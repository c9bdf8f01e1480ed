"""`lab chaos`: random overlapping faults from a seeded schedule, and a heal check after each.

The schedule is pure (`schedule(lab, minutes, seed)`): episodes of one to
three overlapping faults of the lab's kinds (cut an uplink, block two sites,
kill and restart an agent, kill a hub, impair an uplink), each with a random
offset and duration; the same seed gives the same schedule. `run_chaos`
carries it out on a running lab: after every episode has cleared, every guest
pair of each segment must answer within `HEAL_S` seconds and no isolation
check may leak; anything else is a violation.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from lanspan.lab import impair
from lanspan.lab.checks import HealWatch, isolation
from lanspan.lab.model import Impairment, Lab
from lanspan.lab.runner import LabRun
from lanspan.lab.state import State
from lanspan.lab.topology import Plan
from lanspan.records import record

HEAL_S = 2.0  # every guest pair answers within this long after an episode clears
LINGER_S = 20.0  # how much longer a late pair is waited for (to say when it answered)
KINDS = ("cut-uplink", "block", "kill-agent", "kill-hub", "impair")
Log = Callable[[str], None]


@record(frozen=True)
class ChaosFault:
    """One fault of the schedule: `start` s after its episode begins, lasting `duration` s."""

    episode: int
    kind: str
    target: tuple[str, ...]  # a site, two sites, or a node
    start: float
    duration: float
    loss: float = 0.0  # impair
    delay_ms: float = 0.0  # impair
    replays: int | None = None  # the schedule's episode this one replays (`replay`)

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def key(self) -> tuple[str, ...]:
        """What it holds: two faults of one episode never hold the same thing."""
        kind = "agent" if self.kind in ("kill-agent", "kill-hub") else self.kind
        return (kind, *self.target)

    def describe(self) -> str:
        t = self.target
        if self.kind == "cut-uplink":
            what = f"cut the uplink of {t[0]}"
        elif self.kind == "block":
            what = f"block {t[0]} <-> {t[1]}"
        elif self.kind == "kill-agent":
            what = f"kill the agent of {t[0]}"
        elif self.kind == "kill-hub":
            what = f"kill hub {t[0]}"
        else:
            what = f"impair {t[0]} (loss {self.loss:g} %, delay {self.delay_ms:g} ms)"
        return f"{what} for {self.duration:.1f} s"


def _choices(lab: Lab) -> dict[str, list[tuple[str, ...]]]:
    """For each kind, what it can act on in this lab (kinds with nothing are left out)."""
    sites = [s.name for s in lab.site]
    public = {s.name for s in lab.site if not s.nat}
    hubs: list[tuple[str, ...]] = [(n.name,) for n in lab.node if n.site in public and n.relay]
    nat_nodes = any(n.site not in public for n in lab.node)
    out: dict[str, list[tuple[str, ...]]] = {
        "cut-uplink": [(s,) for s in sites],
        "block": [(a, b) for i, a in enumerate(sites) for b in sites[i + 1 :]],
        "kill-agent": [(n.name,) for n in lab.node],
        "kill-hub": hubs if nat_nodes else [],  # a hub matters when someone relays through it
        "impair": [(s,) for s in sites],
    }
    return {k: v for k, v in out.items() if v}


def schedule(lab: Lab, minutes: float, seed: int) -> list[ChaosFault]:
    """Episodes of random overlapping faults filling about `minutes` of fault time."""
    rng = random.Random(seed)
    choices = _choices(lab)
    kinds = sorted(choices)
    budget = minutes * 60.0
    out: list[ChaosFault] = []
    episode = 0
    while budget > 0:
        episode += 1
        held: set[tuple[str, ...]] = set()
        length = 0.0
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(kinds)
            target = rng.choice(choices[kind])
            fault = ChaosFault(
                episode=episode,
                kind=kind,
                target=target,
                start=round(rng.uniform(0.0, 1.5), 2),
                duration=round(rng.uniform(0.5, 4.0), 2),
                loss=round(rng.uniform(5, 40), 1) if kind == "impair" else 0.0,
                delay_ms=round(rng.choice([0.0, rng.uniform(5, 60)]), 1) if kind == "impair"
                else 0.0,
            )  # fmt: skip
            if fault.key in held:
                continue
            held.add(fault.key)
            out.append(fault)
            length = max(length, fault.end)
        budget -= max(length, 1.0)
    return out


def replay(faults: list[ChaosFault], episodes: list[int]) -> list[ChaosFault]:
    """The faults of these episodes of a schedule, in the order given (an episode given
    twice runs twice, renumbered after the first so that each run is checked on its
    own: the timeline names the original as `replays`)."""
    by_episode: dict[int, list[ChaosFault]] = {}
    for f in faults:
        by_episode.setdefault(f.episode, []).append(f)
    missing = sorted({e for e in episodes if e not in by_episode})
    if missing:
        last = max(by_episode, default=0)
        raise ValueError(f"no episode {missing[0]} in this schedule (episodes 1-{last})")
    out: list[ChaosFault] = []
    used: set[int] = set()
    extra = max(by_episode) if by_episode else 0
    for e in episodes:
        number = e
        if e in used:
            extra += 1
            number = extra
        used.add(e)
        out += [replace(f, episode=number, replays=e) for f in by_episode[e]]
    return out


# -- carrying it out ------------------------------------------------------------


def _inject(run: LabRun, plan: Plan, state: State, f: ChaosFault, tag: str) -> None:
    if f.kind == "cut-uplink":
        impair.cut(plan, f.target[0])
    elif f.kind == "block":
        impair.block(plan, f.target[0], f.target[1])
    elif f.kind in ("kill-agent", "kill-hub"):
        run.kill_agent(f.target[0], state)
    else:
        imp = Impairment(loss=f.loss, delay_ms=f.delay_ms)
        impair.apply(plan, state, f.target[0], imp, tag)


def _clear(run: LabRun, plan: Plan, state: State, f: ChaosFault, tag: str) -> None:
    if f.kind == "cut-uplink":
        impair.uncut(plan, f.target[0])
    elif f.kind == "block":
        impair.unblock(plan, f.target[0], f.target[1])
    elif f.kind in ("kill-agent", "kill-hub"):
        run.start_agent(f.target[0], plan, state)
    else:
        impair.remove(plan, state, f.target[0], tag)


def _episode(
    run: LabRun, plan: Plan, state: State, faults: list[ChaosFault], t0: float, log: Log
) -> list[dict[str, Any]]:
    """Inject and clear one episode's faults on their schedule; the timeline of what happened."""
    events = sorted(
        [(f.start, 0, i) for i, f in enumerate(faults)]
        + [(f.end, 1, i) for i, f in enumerate(faults)]
    )
    begin = time.monotonic()
    active: set[int] = set()
    timeline: list[dict[str, Any]] = []
    try:
        for at, is_end, i in events:
            time.sleep(max(0.0, begin + at - time.monotonic()))
            f = faults[i]
            tag = f"chaos{f.episode}-{i}"
            if is_end:
                _clear(run, plan, state, f, tag)
                active.discard(i)
            else:
                _inject(run, plan, state, f, tag)
                active.add(i)
            what = "cleared" if is_end else "injected"
            t = round(time.time() - t0, 2)
            timeline.append({"t": t, "event": what, "fault": f.describe()})
            log(f"{t:8.2f} s  {what:<8} {f.describe()}")
    finally:  # never leave a fault in place
        for i in sorted(active):
            _clear(run, plan, state, faults[i], f"chaos{faults[i].episode}-{i}")
    return timeline


def heal_check(plan: Plan, within: float = HEAL_S) -> list[str]:
    """Every guest pair of each segment answers within `within` s from now (IPv4); the pairs
    that did not."""
    watch = HealWatch(plan)
    try:
        since = time.time()
        watch.arm()
        return watch.wait(since, within)[1]
    finally:
        watch.stop()


def run_chaos(run: LabRun, faults: list[ChaosFault], seed: int, log: Log = print) -> dict[str, Any]:
    """Carry out the schedule; after each episode, heal and isolation checks."""
    plan = run.plan()
    state = run.state()
    assert state is not None
    t0 = time.time()  # the timeline's t = 0 (`started_at`, to line it up with agent logs)
    timeline: list[dict[str, Any]] = []
    violations: list[dict[str, Any]] = []
    episodes = list(dict.fromkeys(f.episode for f in faults))  # in order (`replay`)
    worst: float | None = None
    for ep in episodes:
        mine = [f for f in faults if f.episode == ep]
        # the heal probers start before the episode, so that the 2 s count from the moment
        # its last fault cleared (re-armed then), not from when the probers were ready
        watch = HealWatch(plan)
        try:
            timeline += _episode(run, plan, state, mine, t0, log)
            cleared = time.time()
            watch.arm()
            # replies count from the probers' re-arm on: that late after the clear, so a
            # pair's time is at least this (said with a violation, to judge it fairly)
            armed = watch.armed_at()
            arm_ms = round(max(0.0, armed - cleared) * 1000) if armed else 0
            # a pair late is waited for up to LINGER_S more: the violation says how late
            times, silent = watch.wait(cleared, HEAL_S, linger=LINGER_S)
        finally:
            watch.stop()
        t = round(cleared - t0, 2)
        slowest = max((v for v in times.values() if v <= HEAL_S * 1000), default=None)
        if slowest is not None and not silent:
            worst = slowest if worst is None else max(worst, slowest)
        if silent:
            v = {"t": t, "episode": ep, "kind": "not healed",
                 "detail": f"no answer within {HEAL_S:g} s: " + ", ".join(silent)
                 + f" (probers re-armed {arm_ms} ms after the clear)"}  # fmt: skip
            violations.append(v)
            log(f"{t:8.2f} s  VIOLATION {v['detail']}")
            # let it settle before the next episode, so one failure is reported once
            run.wait_sessions(plan, 20.0)
        leaks = [c for c in isolation(plan) if not c["passed"]]
        if leaks:
            v = {"t": t, "episode": ep, "kind": "leak",
                 "detail": "; ".join(c["name"] for c in leaks)}  # fmt: skip
            violations.append(v)
            log(f"{t:8.2f} s  VIOLATION leak: {v['detail']}")
        timeline.append({"t": t, "event": "checked", "fault": f"episode {ep}",
                         "healed": not silent, "isolated": not leaks,
                         "heal_ms": slowest, "arm_ms": arm_ms})  # fmt: skip
        if not silent and not leaks:
            log(f"{t:8.2f} s  episode {ep}: every pair answered within {slowest or 0:.0f} ms "
                f"of the clear (limit {HEAL_S:g} s), isolated")  # fmt: skip
    return {
        "lab": run.lab.name,
        "seed": seed,
        "started_at": round(t0, 3),
        "passed": not violations,
        "faults": [asdict(f) | {"description": f.describe()} for f in faults],
        "violations": violations,
        "timeline": timeline,
        "episodes": len(episodes),
        "heal_ms_max": worst,  # slowest pair of the episodes that healed in time
        "seconds": round(time.time() - t0, 1),
    }


__all__ = ["HEAL_S", "LINGER_S", "ChaosFault", "heal_check", "replay", "run_chaos", "schedule"]
