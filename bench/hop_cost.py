"""Per-hop cost of a lone unicast frame through two in-process agents (issue 14).

Two real `Agent`s on loopback UDP with socketpair ports (tests/agent_inproc.py).
After both MACs are learned, a unicast frame is injected into n1's port; the
time and the Python calls (sys.setprofile, every call and C call counted) of
n1's frame out (frame read -> datagram sent) and of n2's datagram in
(datagram read -> frame written) are measured, one frame at a time.

    .venv/bin/python bench/hop_cost.py [--frames 1000] [--pause 0.0002] [--control]

--control gives each agent its control socket, as `lanspan agent --control` (and
bench/throughput) runs it. A pause of 15 ms (`--pause 0.015`) lets the CPU go idle
between frames, as bench/throughput's pings 10 ms apart do: each hop then runs cold.

Prints p50/p90 µs for each hop and the calls per hop. Run it under the lock.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest

from tests.agent_inproc import agent_pair, frame

MAC1 = bytes([2, 0, 0, 0, 0, 1])
MAC2 = bytes([2, 0, 0, 0, 0, 2])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--pause", type=float, default=0.0002)
    ap.add_argument("--control", action="store_true", help="agents with a control socket")
    args = ap.parse_args()
    mp = pytest.MonkeyPatch()
    with (
        tempfile.TemporaryDirectory() as tmp,
        agent_pair(Path(tmp), mp, control=args.control) as pair,
    ):
        a1, a2 = pair.agents["n1"], pair.agents["n2"]
        p1, p2 = pair.ports["n1"], pair.ports["n2"]
        pair.forwards("n1", "n2", b"warm-1")
        pair.forwards("n2", "n1", b"warm-2")
        # unicast both ways so each side has learned the other MAC
        for _ in range(3):
            p1.inject(frame(1, b"u", MAC2))
            p2.inject(frame(2, b"u", MAC1))
            pair.pump(lambda: True, "")
            for _ in range(20):
                a1.step(0.002)
                a2.step(0.002)
        p1.received(), p2.received()
        out_us: list[float] = []
        in_us: list[float] = []
        calls = {"out": 0, "in": 0}
        counting = [""]

        def prof(_frame: object, event: str, _arg: object) -> None:
            if event == "call" or event == "c_call":
                calls[counting[0]] += 1

        def step(agent: Any, which: str, profiled: bool) -> float:
            """One step of `agent`, in µs; its Python calls counted under `which` when
            `profiled` (then the time is not a sample: the profiler slows it)."""
            t0 = time.perf_counter_ns()
            if profiled:
                counting[0] = which
                sys.setprofile(prof)
            agent.step(0.0)
            if profiled:
                sys.setprofile(None)
            return (time.perf_counter_ns() - t0) / 1000

        udp2 = a2.udp.fileno() if hasattr(a2.udp, "fileno") else None
        for i in range(args.frames):
            prof_on = i % 10 == 0
            p1.inject(frame(1, b"x%d" % i, MAC2))
            select.select([a1_fd(a1)], [], [], 1.0)
            took_out = step(a1, "out", prof_on)
            if udp2 is not None:
                select.select([udp2], [], [], 1.0)
            took_in = step(a2, "in", prof_on)
            got = p2.received()
            if not got:
                a2.step(0.01)
                got = p2.received()
            if not prof_on:
                out_us.append(took_out)
                in_us.append(took_in)
            if args.pause:
                time.sleep(args.pause)
        samples = args.frames // 10
        res = {
            "out_p50_us": round(statistics.median(out_us), 1),
            "out_p90_us": round(statistics.quantiles(out_us, n=10)[-1], 1),
            "in_p50_us": round(statistics.median(in_us), 1),
            "in_p90_us": round(statistics.quantiles(in_us, n=10)[-1], 1),
            "out_calls": calls["out"] // samples,
            "in_calls": calls["in"] // samples,
            "loadavg": os.getloadavg()[0],
        }
        print(json.dumps(res))
    mp.undo()
    return 0


def a1_fd(agent: object) -> int:
    ports = agent.ports  # type: ignore[attr-defined]
    return int(next(iter(ports.values())).fileno())


if __name__ == "__main__":
    raise SystemExit(main())
