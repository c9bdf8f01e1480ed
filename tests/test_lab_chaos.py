"""`lab chaos`: the schedule is a pure function of the lab, the minutes and the seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lanspan.lab import chaos_report
from lanspan.lab.chaos import KINDS, replay, schedule
from lanspan.lab.model import load_lab

ROOT = Path(__file__).resolve().parent.parent


def test_the_seed_reproduces_the_schedule() -> None:
    lab = load_lab(ROOT / "examples" / "redundancy.toml")
    a, b = schedule(lab, 2.0, seed=7), schedule(lab, 2.0, seed=7)
    assert a == b and len(a) > 10
    assert schedule(lab, 2.0, seed=8) != a


def test_schedule_overlaps_and_stays_in_the_lab() -> None:
    lab = load_lab(ROOT / "examples" / "redundancy.toml")
    faults = schedule(lab, 5.0, seed=1)
    sites = {s.name for s in lab.site}
    nodes = {n.name for n in lab.node}
    assert {f.kind for f in faults} == set(KINDS)  # hubs too: the lab has NAT'd branches
    overlapping = 0
    for ep in {f.episode for f in faults}:
        mine = [f for f in faults if f.episode == ep]
        assert len({f.key for f in mine}) == len(mine)  # never twice the same thing at once
        overlapping += any(
            x.start < y.end and y.start < x.end for x in mine for y in mine if x is not y
        )
    assert overlapping > 0
    for f in faults:
        assert f.describe().endswith(f"for {f.duration:.1f} s")
        assert 0.5 <= f.duration <= 4.0
        if f.kind in ("kill-agent", "kill-hub"):
            assert f.target[0] in nodes
        else:
            assert set(f.target) <= sites
    episodes = {f.episode for f in faults}
    fault_time = sum(max(g.end for g in faults if g.episode == e) for e in episodes)
    assert fault_time >= 5 * 60 - len(episodes)  # about the minutes asked for


def test_no_hub_kills_without_nat() -> None:
    lab = load_lab(ROOT / "examples" / "small.toml")
    assert "kill-hub" not in {f.kind for f in schedule(lab, 3.0, seed=3)}


def test_report_page(tmp_path: Path) -> None:
    result = {"lab": "small", "seed": 1, "passed": False, "episodes": 1, "seconds": 3.0,
              "faults": [{"kind": "block"}],
              "violations": [{"t": 2.5, "episode": 1, "kind": "leak", "detail": "a <b>"}],
              "timeline": [{"t": 0.1, "event": "injected", "fault": "block gra <-> rbx"},
                           {"t": 2.5, "event": "checked", "fault": "episode 1",
                            "healed": True, "isolated": False}]}  # fmt: skip
    page = chaos_report.write(tmp_path, result).read_text()
    assert "FAILED (1 violations)" in page and "a &lt;b&gt;" in page
    assert "block gra &lt;-&gt; rbx" in page
    assert (tmp_path / "chaos.json").read_text().count("\n") == 1


def test_replay_picks_episodes_in_the_order_given() -> None:
    lab = load_lab(ROOT / "examples" / "redundancy.toml")
    faults = schedule(lab, 10.0, seed=1)
    again = replay(faults, [77, 3, 77])
    ep77 = [f for f in faults if f.episode == 77]
    assert [f.kind for f in again] == [
        f.kind for f in ep77 + [f for f in faults if f.episode == 3] + ep77
    ]
    numbers = list(dict.fromkeys(f.episode for f in again))
    assert numbers[:2] == [77, 3] and numbers[2] > max(f.episode for f in faults)
    assert {f.replays for f in again} == {77, 3}
    assert [(f.start, f.duration, f.target) for f in again[-len(ep77) :]] == [
        (f.start, f.duration, f.target) for f in ep77
    ]
    with pytest.raises(ValueError, match="no episode 999"):
        replay(faults, [999])
