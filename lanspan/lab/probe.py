"""A continuous probe: `lanspan.lab.inside.prober` in a guest's namespace, parsed as it runs.

(Not ping: iputils ping slows down while replies are missing, so it would
under-count an outage.)

The outage is the longest run of unanswered probes times the interval (ms of
lost connectivity); the timeline (one bit per probe) feeds the report's plot.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import field
from typing import Any

from lanspan.lab.netns import terminate
from lanspan.records import record

REPLY = re.compile(r"^R (\d+) (\d+\.\d+) (\d+\.\d+)$")
SENT = re.compile(r"^S (\d+)$")
START = re.compile(r"^T (\d+\.\d+)$")


@record
class ProbeResult:
    source: str
    target: str
    interval_ms: float
    sent: int
    received: int
    outage_ms: float
    lost_ms_total: float
    timeline: list[int]  # 1 answered, 0 not, one entry per probe
    rtt_ms: dict[int, float] = field(default_factory=dict)  # seq -> round trip
    markers: dict[str, float] = field(default_factory=dict)  # label -> ms since probe start

    def counts(self) -> dict[str, Any]:
        """What every fault's result reports of its probe, as JSON fields."""
        return dict(
            lost_ms_total=self.lost_ms_total,
            sent=self.sent,
            received=self.received,
            interval_ms=self.interval_ms,
            timeline=self.timeline,
            markers=self.markers,
        )


def outage(answered: set[int], sent: int, interval_ms: float) -> tuple[float, float]:
    """(longest run of unanswered probes, all unanswered) in ms; seqs 1..sent."""
    longest = run = total = 0
    for seq in range(1, sent + 1):
        if seq in answered:
            run = 0
        else:
            run += 1
            total += 1
            longest = max(longest, run)
    return longest * interval_ms, total * interval_ms


class Probe:
    """ping `target` from namespace `ns` every `interval` s until `stop()`."""

    def __init__(self, ns: str, target: str, interval: float = 0.01, source: str = "") -> None:
        self.ns, self.target, self.interval = ns, target, interval
        self.source = source
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "lanspan.lab.inside.prober", target,
             "--interval", str(interval)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        self.t0 = time.time()
        self.answered: dict[int, float] = {}  # seq -> wall time of the reply
        self.sent = 0
        self.markers: dict[str, float] = {}
        self.rtt_ms: dict[int, float] = {}  # seq -> round trip
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            m = REPLY.match(line)
            if m:
                with self.lock:
                    seq = int(m.group(1))
                    self.answered.setdefault(seq, float(m.group(3)))
                    self.rtt_ms.setdefault(seq, (float(m.group(3)) - float(m.group(2))) * 1000)
                continue
            m = START.match(line)
            if m:
                self.t0 = float(m.group(1))
                continue
            m = SENT.search(line)
            if m:
                self.sent = int(m.group(1))

    def mark(self, label: str) -> None:
        self.markers[label] = (time.time() - self.t0) * 1000

    def seq_now(self) -> int:
        return int((time.time() - self.t0) / self.interval) + 1

    def wait_answering(self, count: int, since: float, timeout: float) -> float | None:
        """Wait for `count` consecutive answered probes replied after wall time `since`.

        Returns the wall time of the first reply of that run, or None on timeout.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                seqs = sorted(s for s, t in self.answered.items() if t >= since)
                first_reply = dict(self.answered)
            run_start, prev, run = None, None, 0
            for s in seqs:
                if prev is not None and s == prev + 1:
                    run += 1
                else:
                    run, run_start = 1, s
                prev = s
                if run >= count and run_start is not None:
                    return first_reply[run_start]
            time.sleep(0.02)
        return None

    def stop(self) -> ProbeResult:
        terminate(self.proc)
        self.reader.join(5)
        with self.lock:
            answered = set(self.answered)
        sent = self.sent or (max(answered) if answered else 0)
        longest, total = outage(answered, sent, self.interval * 1000)
        return ProbeResult(
            source=self.source,
            target=self.target,
            interval_ms=self.interval * 1000,
            sent=sent,
            received=len(answered),
            outage_ms=longest,
            lost_ms_total=total,
            timeline=[1 if s in answered else 0 for s in range(1, sent + 1)],
            markers=dict(self.markers),
            rtt_ms=dict(self.rtt_ms),
        )


FIRST = re.compile(r"^F (\S+) (\d+\.\d+)$")
ARMED = re.compile(r"^A (\d+\.\d+)$")


# The all-pairs probers of one check together send at most this many echoes a second
# (each at 50 a second until that many pairs): at 100 nodes, 198 pairs at 50 Hz were
# ~10 000 frames a second through the guests' agents on 2 cores while they started,
# the measurement loading what it measures (issue 10, bench/scale's cold start). At
# 2 000 a second (one echo per pair every 0.1 s) a restart of all 100 agents still
# had 14 and 48 of 198 pairs silent after 240 s in two runs; at 1 000 (every 0.2 s)
# all answered after 157 s (session 11, bench/README.md). The first answer is timed
# to within the interval, never early.
PAIRS_RATE = 1000.0
PAIRS_INTERVAL = 0.02


def pairs_interval(pairs: int) -> float:
    """The echo interval of each all-pairs prober when `pairs` pairs are probed at once."""
    return max(PAIRS_INTERVAL, pairs / PAIRS_RATE)


class AllPairs:
    """One prober in namespace `ns` echoing every address in `targets` until each answers.

    `first` maps each address to the wall time of its first reply (since the last
    `rearm`, if any).
    """

    def __init__(self, ns: str, targets: list[str], interval: float = PAIRS_INTERVAL) -> None:
        self.targets = list(dict.fromkeys(targets))
        self.first: dict[str, float] = {}
        self.started = threading.Event()
        self.armed = threading.Event()
        self.armed_at: float | None = None
        argv = [sys.executable, "-m", "lanspan.lab.inside.prober", self.targets[0],
                "--interval", str(interval)]  # fmt: skip
        for t in self.targets[1:]:
            argv += ["--also", t]
        if len(self.targets) == 1:
            argv += ["--also", self.targets[0]]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if START.match(line):
                self.started.set()
            m = ARMED.match(line)
            if m:  # every `F` line after this one is a first reply since the re-arm
                with self.lock:
                    self.first.clear()
                    self.armed_at = float(m.group(1))
                self.armed.set()
                continue
            m = FIRST.match(line)
            if m:
                with self.lock:
                    self.first.setdefault(m.group(1), float(m.group(2)))

    def wait_started(self, timeout: float) -> bool:
        return self.started.wait(timeout)

    def rearm(self) -> None:
        """Forget the first replies: from the prober's `A` line on, `first` counts afresh."""
        self.armed.clear()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGUSR1)

    def wait_armed(self, timeout: float) -> bool:
        return self.armed.wait(timeout)

    def done(self) -> bool:
        with self.lock:
            return len(self.first) >= len(self.targets)

    def stop(self) -> None:
        terminate(self.proc)
        self.reader.join(5)


def measured(
    pr: ProbeResult, duration_s: float, back: float | None, t_end: float
) -> dict[str, Any]:
    """What the continuous probe saw: outage, recovery, loss and RTT before and during.

    `back` is when the probe answered again, `t_end` when the fault cleared. The
    markers: "fault" just before the fault was applied (what came before it is
    "before"); "during" runs from "applied" (once it was) to "clearing" (when
    clearing began), each falling back to "fault" and "cleared" where a caller
    sets only those. The outage is the longest unanswered run of the whole
    probe, whatever the markers.
    """
    out: dict[str, Any] = dict(
        outage_ms=pr.outage_ms,
        recovered=back is not None,
        recovery_ms=round((back - t_end) * 1000, 1) if back is not None else None,
        **pr.counts(),
        duration_ms=duration_s * 1000,
    )
    if "fault" in pr.markers and "cleared" in pr.markers:
        m = pr.markers
        out["during"] = window(pr, m.get("applied", m["fault"]), m.get("clearing", m["cleared"]))
        out["before"] = window(pr, 0.0, pr.markers["fault"])
    return out


def not_answering(probe: Probe, detail: str) -> dict[str, object]:
    """Stop `probe` and say why the fault was not run: no answers before it."""
    pr = probe.stop()
    return {
        "outage_ms": None,
        "recovered": False,
        "timeline": pr.timeline,
        "interval_ms": pr.interval_ms,
        "detail": detail,
    }


def window(r: ProbeResult, start_ms: float, end_ms: float) -> dict[str, float | None]:
    """Loss % and median RTT of the probes sent between two marker times."""
    a = max(0, int(start_ms / r.interval_ms))
    b = min(len(r.timeline), int(end_ms / r.interval_ms))
    sent = r.timeline[a:b]
    rtts = sorted(r.rtt_ms[s + 1] for s in range(a, b) if (s + 1) in r.rtt_ms)
    return {
        "loss_pct": round(100 * (1 - sum(sent) / len(sent)), 1) if sent else None,
        "rtt_ms_median": round(rtts[len(rtts) // 2], 2) if rtts else None,
    }


__all__ = ["AllPairs", "Probe", "ProbeResult", "outage", "window"]
