"""How fast an agent restarted alone gets its sessions back, sans-IO (issue 10).

N nodes on a fake clock (tests/idlesim.py EventNet, every node public, a
millisecond's latency or `--latency` s one way) get every session up; then each of
`--restarts` nodes in turn is restarted (a new core, same key and file: every
session and path forgotten, its peers keep theirs) and run alone until all its
sessions are back. Its peers do not dial it (their sessions still look fine), so
its own initiations, paced by its budget, are what brings each pair back.

Prints one line per restart and, with --json, one JSON object last:
`restart_sessions_s` (per restart: min, p25, p50, p75, max of when each session was
back, seconds after the restart) and `restart_last_s_max`.

Run: python bench/restart_sim.py [--nodes 100] [--restarts 3] [--latency S] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from idlesim import EventNet  # type: ignore[import-not-found]


def _quartiles(values: list[float]) -> list[float]:
    s = sorted(values)
    return [round(s[round(q * (len(s) - 1))], 4) for q in (0.0, 0.25, 0.5, 0.75, 1.0)]


def _restart(net: EventNet, name: str, limit: float) -> list[float]:
    """Restart `name`; when each of its sessions came back (s after the restart)."""
    seen = net.restart(name)
    peers = len(net.nodes) - 1
    while net.now - seen.at < limit and len(seen.sessions_up) < peers:
        net.run(0.05)
    ups: list[float] = seen.sessions_up
    return ups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--latency", type=float, default=None, help="one-way s (default ~1 ms)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    lat = args.latency
    net = EventNet(args.nodes, latency=None if lat is None else (lambda src, dst: lat))
    net.run(15.0 + (0.0 if lat is None else 20 * lat))
    names = list(net.nodes)
    if not all(net.up(a, b) for a in names for b in names if a != b):
        sys.exit("the mesh did not come up in the warm-up")
    results = []
    for i in range(args.restarts):
        name = names[(i * len(names)) // max(1, args.restarts)]
        ups = _restart(net, name, limit=30.0)
        q = _quartiles(ups) if ups else []
        print(f"{name} restarted: {len(ups)}/{len(names) - 1} sessions back at {q} s")
        results.append({"node": name, "sessions": len(ups), "quartiles_s": q})
        net.run(5.0)  # settle before the next one
    if args.json:
        last = [r["quartiles_s"][-1] for r in results if r["quartiles_s"]]
        print(
            json.dumps(
                {
                    "nodes": args.nodes,
                    "latency_s": lat,
                    "restart_sessions_s": results,
                    "restart_last_s_max": max(last) if last else None,
                    "load_avg": os.getloadavg(),
                }
            )
        )


if __name__ == "__main__":
    main()
