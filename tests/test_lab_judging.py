"""A lab that never misjudges: addresses unique across segments, isolation checks that
never aim at the source's own segment, faults whose probe crosses the faulted place."""

from __future__ import annotations

import base64
import os
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lanspan.errors import ConfigError
from lanspan.lab.checks import isolation_jobs
from lanspan.lab.model import load_lab, parse_lab
from lanspan.lab.topology import expand

ROOT = Path(__file__).resolve().parent.parent

# Two segments on one subnet, guests without addresses: auto-assigned.
SHARED = """
[lab]
name = "t"

[[segment]]
name = "lan"
vlan = 10
ipv4 = "198.18.70.0/24"

[[segment]]
name = "api"
vlan = 11
ipv4 = "198.18.70.0/24"

[[site]]
name = "gra"

[[site]]
name = "rbx"

[[site]]
name = "sbg"

[[node]]
name = "n1"
site = "gra"

[[node]]
name = "n2"
site = "rbx"

[[node]]
name = "n3"
site = "sbg"

[[guest]]
name = "g1-lan"
node = "n1"
segment = "lan"

[[guest]]
name = "g1-api"
node = "n1"
segment = "api"

[[guest]]
name = "g2-lan"
node = "n2"
segment = "lan"

[[guest]]
name = "g2-api"
node = "n2"
segment = "api"
"""


def _keys(names: list[str]) -> dict[str, str]:
    return {n: base64.b64encode(bytes([i + 1]) * 32).decode() for i, n in enumerate(names)}


def _parse(text: str) -> object:
    return parse_lab(tomllib.loads(text), "mem")


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_lab(tomllib.loads(text), "mem")
    return list(e.value.problems)


def _addresses(text: str) -> list[str]:
    lab = parse_lab(tomllib.loads(text), "mem")
    plan = expand(lab, "p", _keys([n.name for n in lab.node]))
    return [a for g in plan.guests for i in g.interfaces for a in i.addresses]


def test_auto_addresses_are_unique_across_segments_sharing_a_subnet() -> None:
    addrs = _addresses(SHARED)
    assert len(addrs) == 4
    assert len(set(addrs)) == 4, addrs
    assert addrs[0] == "198.18.70.101/24"


def test_auto_addresses_skip_an_explicit_address_of_another_segment() -> None:
    text = SHARED.replace(
        'name = "g1-api"\nnode = "n1"\nsegment = "api"\n',
        'name = "g1-api"\nnode = "n1"\nsegment = "api"\naddress = ["198.18.70.101/24"]\n',
    )
    addrs = _addresses(text)
    assert len(set(addrs)) == 4, addrs
    assert "198.18.70.101/24" in addrs


def test_an_explicit_address_used_in_two_segments_is_refused() -> None:
    text = SHARED.replace(
        'segment = "lan"\n\n[[guest]]\nname = "g1-api"\nnode = "n1"\nsegment = "api"\n',
        'segment = "lan"\naddress = ["198.18.70.5/24"]\n\n'
        '[[guest]]\nname = "g1-api"\nnode = "n1"\nsegment = "api"\naddress = ["198.18.70.5/24"]\n',
    )
    problems = _problems(text)
    assert any(
        p.startswith("guest[1].address: 198.18.70.5 is already used by guest 'g1-lan' in "
                     "segment 'lan'") and "isolation" in p
        for p in problems
    ), problems  # fmt: skip


def test_isolation_never_aims_at_an_address_of_the_source_segment() -> None:
    lab = parse_lab(tomllib.loads(SHARED), "mem")
    plan = expand(lab, "p", _keys([n.name for n in lab.node]))
    jobs = isolation_jobs(plan)
    assert jobs
    own = {
        g.name: {a.split("/")[0] for h in plan.guests for i in h.interfaces
                 if i.segment in {x.segment for x in g.interfaces} for a in i.addresses}
        for g in plan.guests
    }  # fmt: skip
    assert all(addr not in own[src.name] for src, _, _, _, addr in jobs)
    # a plan whose api guest holds the address of a lan guest (built by hand: the lab
    # file refuses it): the isolation check from lan leaves that address out
    g2api = plan.guest("g2-api")
    clash = replace(g2api, interfaces=(replace(g2api.interfaces[0], addresses=(
        plan.guest("g1-lan").interfaces[0].addresses[0],)),))  # fmt: skip
    bad = replace(plan, guests=tuple(clash if g.name == "g2-api" else g for g in plan.guests))
    targets = {(s.name, addr) for s, _, _, _, addr in isolation_jobs(bad)}
    g1lan_ip = plan.guest("g1-lan").interfaces[0].addresses[0].split("/")[0]
    assert ("g1-lan", g1lan_ip) not in targets
    assert ("g2-lan", g1lan_ip) not in targets
    assert ("g1-api", g1lan_ip) not in targets  # api holds it too now (g2-api)
    assert {s for s, _ in targets} == {g.name for g in plan.guests}  # the rest still checked


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (  # the case: a block of two sites the probe's guests are not in
            'kind = "block"\nsites = ["rbx", "sbg"]\n'
            'probe = { source = "g1-lan", target = "g2-lan" }\n',
            "fault[0] 'f': its probe 'g1-lan' (gra) -> 'g2-lan' (rbx) never crosses the block",
        ),
        (
            'kind = "cut-uplink"\nsite = "sbg"\nprobe = { source = "g1-lan", target = "g2-lan" }\n',
            "never crosses the uplink of site 'sbg'",
        ),
        (
            'kind = "impair"\nsite = "sbg"\nimpair = { loss = 5 }\n'
            'probe = { source = "g1-lan", target = "g2-lan" }\n',
            "never crosses the uplink of site 'sbg'",
        ),
        (
            'kind = "kill-agent"\nnode = "n3"\nprobe = { source = "g1-lan", target = "g2-lan" }\n',
            "never crosses node 'n3'",
        ),
        (  # no probe, and no guest at sbg: no default probe either
            'kind = "block"\nsites = ["gra", "sbg"]\n',
            "fault[0] 'f': no pair of guests on one segment crosses the block of ['gra', 'sbg']",
        ),
    ],
)
def test_a_fault_whose_probe_misses_the_faulted_place_is_refused(fault: str, expected: str) -> None:
    problems = _problems(SHARED + '\n[[fault]]\nname = "f"\n' + fault)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "fault",
    [
        'kind = "block"\nsites = ["rbx", "gra"]\n'
        'probe = { source = "g1-lan", target = "g2-lan" }\n',
        'kind = "cut-uplink"\nsite = "rbx"\nprobe = { source = "g1-lan", target = "g2-lan" }\n',
        'kind = "kill-agent"\nnode = "n2"\n',
        'kind = "block"\nsites = ["gra", "rbx"]\n',
    ],
)
def test_a_fault_whose_probe_crosses_loads(fault: str) -> None:
    _parse(SHARED + '\n[[fault]]\nname = "f"\n' + fault)


@pytest.mark.parametrize("example", ["small", "three-datacenters", "hubs-nat", "redundancy"])
def test_every_example_loads(example: str) -> None:
    load_lab(ROOT / "examples" / f"{example}.toml")


class _World:
    """A fake clock and a faulted path: probes sent in [down_from, down_until) are lost."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.down_from = self.down_until = float("inf")


class _FakeProbe:
    """`Probe` on the fake clock: one probe every 10 ms, lost while the world is down."""

    def __init__(self, world: _World, ns: str, target: str, source: str = "") -> None:
        self.world, self.interval, self.source, self.target = world, 0.01, source, target
        self.t0 = world.now
        self.markers: dict[str, float] = {}
        self.proc = self  # `proc.poll()` below: the fake prober has stopped

    def poll(self) -> int:
        return 0

    def mark(self, label: str) -> None:
        self.markers[label] = (self.world.now - self.t0) * 1000

    def wait_answering(self, count: int, since: float, timeout: float) -> float:
        """Answered 200 ms after `since`, and seen 300 ms after that."""
        self.world.now = since + 0.5
        return since + 0.2

    def stop(self) -> Any:
        from lanspan.lab.probe import ProbeResult, outage

        sent = int((self.world.now - self.t0) / self.interval)
        w = self.world
        timeline = [
            0 if w.down_from <= self.t0 + s * self.interval < w.down_until else 1
            for s in range(sent)
        ]
        answered = {s + 1 for s, ok in enumerate(timeline) if ok}
        longest, total = outage(answered, sent, 10.0)
        return ProbeResult(self.source, self.target, 10.0, sent, len(answered), longest, total,
                           timeline, {s: 1.0 for s in answered}, dict(self.markers))  # fmt: skip


def test_probes_lost_to_the_fault_never_count_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault takes hold while it is being applied (the first nft rule or the link
    going down, then more commands for 50 ms): "before" must stay at 0 % loss, the outage
    is the whole time the path was down."""
    from types import SimpleNamespace

    from lanspan.lab import checks
    from lanspan.lab.model import Fault

    world = _World()

    def inject(*_: object) -> None:
        world.now += 0.01
        world.down_from = world.now  # in force from here, `_inject` not yet returned
        world.now += 0.05

    def hold(run: object, fault: Fault, *_: object) -> list[str]:
        world.now += fault.duration
        return []

    def clear(*_: object) -> None:
        world.now += 0.01
        world.down_until = world.now
        world.now += 0.02

    src = SimpleNamespace(ns="src-ns", name="g1", node="n1")
    dst = SimpleNamespace(ns="dst-ns", name="g2", node="n2")
    monkeypatch.setattr(
        checks, "Probe", lambda ns, target, source="": _FakeProbe(world, ns, target, source)
    )
    monkeypatch.setattr(checks, "_probe_pair", lambda plan, fault: (src, dst, "lan"))
    monkeypatch.setattr(checks, "_v4", lambda guest, seg: "198.18.70.102")
    monkeypatch.setattr(checks, "_inject", inject)
    monkeypatch.setattr(checks, "_hold", hold)
    monkeypatch.setattr(checks, "_clear", clear)
    monkeypatch.setattr(time, "time", lambda: world.now)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    run = SimpleNamespace(state=lambda: object())
    fault = Fault(name="cut-rbx", kind="cut-uplink", site="rbx", duration=2.0)

    result = checks.run_fault(run, SimpleNamespace(), fault, print)  # type: ignore[arg-type]

    assert result["before"]["loss_pct"] == 0.0, result["markers"]
    assert result["during"]["loss_pct"] == 100.0
    assert result["outage_ms"] == pytest.approx(2060.0, abs=10.0)  # 50 + 2000 + 10 ms down
    assert result["recovered"] and result["recovery_ms"] == pytest.approx(200.0, abs=1.0)
    m = result["markers"]
    assert m["fault"] < m["applied"] < m["clearing"] < m["cleared"] < m["recovered"]


def test_heal_counts_only_replies_after_the_clear_and_in_time() -> None:
    from lanspan.lab.checks import heal_times

    since = 100.0
    first = {"a": 99.9, "b": 100.4, "c": 102.5}  # a: before the clear (still the fault's time)
    ms, late = heal_times(first, ["a", "b", "c", "d"], since, 2.0)
    assert ms == {"b": 400.0, "c": 2500.0}
    assert late == ["a", "c", "d"]  # a: no reply since, c: too late, d: silent
    assert heal_times({"a": 101.999}, ["a"], since, 2.0)[1] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the prober needs a raw socket")
def test_prober_rearmed_reports_first_replies_afresh() -> None:
    """SIGUSR1: an `A` line, then one `F` per address again (loopback only)."""
    import signal
    import subprocess
    import sys

    argv = [sys.executable, "-m", "lanspan.lab.inside.prober", "127.0.0.1",
            "--also", "127.0.0.2", "--interval", "0.01"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None

        def until_two_firsts() -> list[str]:
            seen: list[str] = []
            while sum(x.startswith("F ") for x in seen) < 2:
                line = proc.stdout.readline().strip() if proc.stdout else ""
                assert line, seen
                seen.append(line)
            return seen

        try:
            before = until_two_firsts()
            assert before[0].startswith("T ")
            proc.send_signal(signal.SIGUSR1)
            after = until_two_firsts()
            armed = next(i for i, x in enumerate(after) if x.startswith("A "))
            firsts = [x.split()[1] for x in after[armed:] if x.startswith("F ")]
            assert sorted(firsts) == ["127.0.0.1", "127.0.0.2"]
        finally:
            proc.terminate()


def test_heal_within_is_a_fault_field() -> None:
    lab = load_lab(ROOT / "examples" / "long-outage.toml")
    (f,) = [f for f in lab.fault if f.kind == "cut-uplink"]
    assert f.duration == 300.0 and f.heal_within == 2.0


def test_a_late_pair_says_how_late() -> None:
    """The heal watch judges on the replies' own times and names late and silent pairs."""
    import threading
    from types import SimpleNamespace

    from lanspan.lab.checks import HealWatch

    since = time.time() - 3.0
    fake = SimpleNamespace(
        lock=threading.Lock(),
        targets=["a", "b", "c"],
        first={"a": since + 0.5, "b": since + 2.5},
        done=lambda: False,
    )
    watch = HealWatch.__new__(HealWatch)
    watch.probers = [("g1", fake)]  # type: ignore[list-item]
    watch.names = {("g1", "a"): "A", ("g1", "b"): "B", ("g1", "c"): "C"}
    times, late = watch.wait(since, 2.0, linger=0.5)
    assert times == {"g1 -> A": 500.0, "g1 -> B": 2500.0}
    assert late == ["g1 -> B (b) after 2500 ms", "g1 -> C (c) silent for 2.5 s"]


def _plan(path: Path) -> Any:
    lab = load_lab(path)
    return expand(lab, "p", _keys([n.name for n in lab.node]))


def test_segment_pairs_skip_guests_that_get_their_address_by_dhcp() -> None:
    """examples/gateways.toml has a DHCP guest (no address in the plan): it raised
    StopIteration; now it is neither a source nor a target, the others all are."""
    from lanspan.lab.checks import segment_pairs

    plan = _plan(ROOT / "examples" / "gateways.toml")
    dhcp = [g.name for g in plan.guests if any(not i.addresses for i in g.interfaces)]
    assert dhcp, "the example no longer has a DHCP guest"
    wanted, names = segment_pairs(plan)
    assert not set(dhcp) & set(wanted) and not set(dhcp) & set(names.values())
    addressed = [g for g in plan.guests if g.name not in dhcp]
    for g in addressed:
        for i in g.interfaces:
            peers = [h for h in addressed if h is not g and (j := h.on(i.segment)) and j.addresses]
            assert {names[(g.name, a)] for a in wanted.get(g.name, [])} >= {h.name for h in peers}


def test_cold_start_bound_is_a_fault_field() -> None:
    lab = load_lab(ROOT / "examples" / "three-datacenters.toml")
    (cold,) = [f for f in lab.fault if f.kind == "cold-start"]
    assert cold.within_ms == 2000.0
    text = SHARED + '\n[[fault]]\nname = "c"\nkind = "cold-start"\nwithin_ms = 500\n'
    assert [f.within_ms for f in parse_lab(tomllib.loads(text), "mem").fault] == [500.0]  # type: ignore[attr-defined]
    bad = SHARED + '\n[[fault]]\nname = "k"\nkind = "kill-agent"\nnode = "n1"\nwithin_ms = 500\n'
    assert any("`within_ms` is for cold-start faults" in p for p in _problems(bad))


class _ColdPairs:
    """Every target answers `after` s after the agents were started."""

    after = 0.0
    started: float = 0.0

    def __init__(self, ns: str, targets: list[str], interval: float = 0.02) -> None:
        self.targets = list(targets)
        self.first: dict[str, float] = {}

    def wait_started(self, timeout: float) -> None:
        pass

    def done(self) -> bool:
        self.first = {a: _ColdPairs.started + _ColdPairs.after for a in self.targets}
        return True

    def stop(self) -> None:
        pass


class _ColdProbe:
    def __init__(self, ns: str, target: str, source: str) -> None:
        self.proc = type("P", (), {"poll": staticmethod(lambda: 0)})()
        self.answered = {1: _ColdPairs.started + _ColdPairs.after}

    def mark(self, what: str) -> None:
        pass

    def wait_answering(self, n: int, since: float, timeout: float) -> float:
        return _ColdPairs.started + _ColdPairs.after

    def stop(self) -> Any:
        return type("R", (), {"outage_ms": 0.0, "counts": staticmethod(lambda: {})})()


class _ColdRun:
    def __init__(self) -> None:
        self.started: list[str] = []

    def state(self) -> Any:
        return type("S", (), {"agents": {}})()

    def start_agents(self, nodes: list[str], plan: object, state: object) -> None:
        _ColdPairs.started = time.time() if not self.started else _ColdPairs.started
        self.started.extend(nodes)

    def wait_sessions(self, plan: object, timeout: float) -> dict[str, list[str]]:
        return {}


@pytest.mark.parametrize(("after", "passed"), [(0.4, True), (2.5, False)])
def test_a_slow_cold_start_is_judged_failed(
    monkeypatch: pytest.MonkeyPatch, after: float, passed: bool
) -> None:
    """Every pair answered, but 2.5 s after the start: over the 2000 ms bound, failed
    (it used to pass whatever the time); 0.4 s: in time."""
    from lanspan.lab import checks

    plan = _plan(ROOT / "examples" / "three-datacenters.toml")
    lab = load_lab(ROOT / "examples" / "three-datacenters.toml")
    (fault,) = [f for f in lab.fault if f.kind == "cold-start"]
    monkeypatch.setattr(checks, "AllPairs", _ColdPairs)
    monkeypatch.setattr(checks, "Probe", _ColdProbe)
    monkeypatch.setattr(checks, "_kill", lambda run, state, node: None)
    monkeypatch.setattr(_ColdPairs, "after", after)
    run = _ColdRun()
    r = checks.cold_start(run, plan, fault, lambda m: None)  # type: ignore[arg-type]
    assert run.started == [n.name for n in plan.nodes]
    assert r["within_ms"] == 2000.0 and r["pairs_answered"] == r["pairs"] > 0
    assert r["cold_start_ms"] == pytest.approx(after * 1000, abs=1)
    assert r["recovered"] is passed
    assert ("over the bound of 2000 ms" in r["detail"]) is not passed
    table = checks.table({"checks": [], "faults": [r], "passed": passed})
    assert ("  NO " in table.splitlines()[3]) is not passed
    assert table.endswith("PASSED") is passed
