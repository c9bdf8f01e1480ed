"""What an idle node costs, sans-IO: N nodes on a fake clock, woken as the agent wakes them.

Every node gets its sessions up during a warm-up (a cold start of all of them at
once: its CPU is printed); then, for `--seconds`
simulated seconds, node n1 is watched: timer wake-ups, datagram wake-ups,
datagrams sent, and the CPU (time.process_time) its NodeCore calls took, on
this machine (other load on it counts: the load average is printed). With
`--profile`, cProfile over the watched window (all nodes: each is an idle node
with N-1 idle peers) prints the top functions. Also the time to build the
status document of n1 (NodeCore.status + status_json), best of 20.

Run: python bench/idle_sim.py [--nodes 100] [--seconds 300] [--relays K] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from idlesim import EventNet

from lanspan.control.document import status_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--relays", type=int, default=None, help="only n1..nK relay (default: every node)"
    )
    args = ap.parse_args()
    t0 = time.monotonic()
    no_relay: frozenset[str] = frozenset()
    if args.relays is not None:
        no_relay = frozenset(f"n{i}" for i in range(args.relays + 1, args.nodes + 1))
    net = EventNet(args.nodes, no_relay=no_relay)
    up0 = time.process_time()
    net.run(args.warmup)  # a cold start of every node at once
    up_cpu = time.process_time() - up0
    peers = [f"n{i}" for i in range(2, args.nodes + 1)]
    missing = [p for p in peers if not net.up("n1", p)]
    print(
        f"warm-up {args.warmup:g} s: {len(peers) - len(missing)}/{len(peers)} sessions up;"
        f" the cold start of all {args.nodes} nodes took {up_cpu:.1f} s of CPU (harness included)"
    )
    w = net.watch("n1")
    prof = cProfile.Profile() if args.profile else None
    cpu0 = time.process_time()
    if prof is not None:
        prof.enable()
    net.run(args.seconds)
    if prof is not None:
        prof.disable()
    sim_cpu = time.process_time() - cpu0
    s = args.seconds
    print(f"n1, {len(peers)} idle peers, {s:g} simulated s:")
    print(f"  cpu in n1's calls      {w.cpu:.3f} s = {100 * w.cpu / s:.3f} % of a core")
    print(f"  timer wake-ups         {w.timer_wakeups / s:.1f} /s")
    print(f"  datagram wake-ups      {w.datagram_wakeups / s:.1f} /s")
    print(f"  datagrams sent         {w.sent / s:.1f} /s")
    print(f"  whole simulation cpu   {sim_cpu:.1f} s ({args.nodes} nodes + harness)")
    node = net.nodes["n1"]
    best = float("inf")
    for _ in range(20):
        a = time.perf_counter()
        status_json(node.status(net.now))
        best = min(best, time.perf_counter() - a)
    print(f"  status document build  {best * 1000:.2f} ms (best of 20)")
    print(f"load average {os.getloadavg()}; wall {time.monotonic() - t0:.0f} s")
    if prof is not None:
        st = pstats.Stats(prof)
        st.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
