"""An event-driven run of many NodeCores, woken the way the agent loop wakes them.

The agent (lanspan/agent/loop.py) sleeps until `next_timer()` or until a
datagram arrives, then handles what is ready and carries out the outputs.
`EventNet` does the same on a fake clock: each node is woken exactly at its
`next_timer()` or when a datagram reaches it (after a small seeded latency),
so counting wake-ups, datagrams and the CPU one node's calls take measures
what an idle agent pays, without sockets. `Watch` counts those for one node.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from test_node_twocore import Link, Net

from lanspan.addr import Addr
from lanspan.node.core import NodeCore
from lanspan.node.outputs import Log, NodeOutput, Send

# One-way latency on the fake underlay, seconds: LATENCY + [0, JITTER).
LATENCY = 0.0005
JITTER = 0.0005


@dataclass
class Restarted:
    """What a node restarted at `at` did since: when (s after `at`) each session came
    up and each initiation went out."""

    at: float
    sessions_up: list[float] = field(default_factory=list)
    initiations: list[float] = field(default_factory=list)


@dataclass
class Watch:
    """What one node did: wake-ups (timer rounds, datagrams), datagrams sent, CPU."""

    timer_wakeups: int = 0
    datagram_wakeups: int = 0
    sent: int = 0
    cpu: float = 0.0  # process_time seconds spent inside the node's methods
    wake_times: list[float] = field(default_factory=list)

    @property
    def wakeups(self) -> int:
        return self.timer_wakeups + self.datagram_wakeups


class EventNet:
    """`n` nodes on one segment, every node with an endpoint (as the 100-node lab)."""

    def __init__(
        self,
        n: int,
        seed: int = 22,
        no_relay: frozenset[str] = frozenset(),
        latency: Callable[[str, str], float] | None = None,
    ) -> None:
        segments = {f"n{i}": ["a"] for i in range(1, n + 1)}
        self.net = Net(n, Link(random.Random(seed)), segments, no_relay=no_relay)
        self.rng = random.Random(seed)
        self.now = self.net.now
        self.nodes: dict[str, NodeCore] = self.net.nodes
        self._by_addr = self.net.by_addr
        self._events: list[tuple[float, int, str, bytes, Addr]] = []  # (at, seq, dst, data, src)
        self._timers: list[tuple[float, int, str]] = []  # (due, seq, node); stale if seq differs
        self._due: dict[str, float] = {}
        self._armed: dict[str, int] = {}  # node -> seq of its live heap entry
        self._spins = 0
        self._last_timer_at: dict[str, float] = {}
        self._seq = 0
        self._latency = latency  # (sender, receiver) -> one-way seconds, jitter included
        self.watched: dict[str, Watch] = {}
        for name in self.nodes:
            self._flush(name)

    def watch(self, name: str) -> Watch:
        w = self.watched[name] = Watch()
        return w

    def up(self, a: str, b: str) -> bool:
        return self.net.up(a, b)

    def restart(self, name: str) -> Restarted:
        """`name`'s agent restarted now: a new core with the same key and file (every
        session and path forgotten); its peers keep theirs. What it does from then on
        is recorded in the returned `Restarted`."""
        node = self.net.core(name)
        seen = Restarted(self.now)
        take = node.take_outputs

        def watched() -> list[NodeOutput]:
            outs = take()
            at = self.now - seen.at
            for out in outs:
                if isinstance(out, Log) and out.kind == "session_up":
                    seen.sessions_up.append(at)
                elif isinstance(out, Send):
                    seen.initiations.extend(at for d in out.batch if d[:1] == b"\x01")
            return outs

        node.take_outputs = watched  # type: ignore[method-assign]
        self.nodes[name] = node
        self._due.pop(name, None)
        self._armed.pop(name, None)
        self._flush(name)
        return seen

    def _flush(self, name: str) -> None:
        """Carry out a node's outputs, then re-arm its one timer (as the agent does)."""
        node = self.nodes[name]
        w = self.watched.get(name)
        t0 = time.process_time() if w is not None else 0.0
        outs = node.take_outputs()
        due = node.next_timer()
        if w is not None:
            w.cpu += time.process_time() - t0
        src = self.net.addr[name]
        # What one round sends to one node arrives together (the agent sends it back
        # to back) and is read in one wake-up of that node (`run`).
        arrive: dict[str, float] = {}
        for out in outs:
            if isinstance(out, Send):
                dst = self._by_addr.get(out.target)  # type: ignore[arg-type]
                for d in out.batch:
                    if w is not None:
                        w.sent += 1
                    if dst is not None:
                        self._seq += 1
                        at = arrive.get(dst)
                        if at is None:
                            if self._latency is not None:
                                delay = self._latency(name, dst)
                            else:
                                delay = LATENCY + self.rng.random() * JITTER
                            at = arrive[dst] = self.now + delay
                        heapq.heappush(self._events, (at, self._seq, dst, d, src))
        if self._due.get(name) != due:
            self._due[name] = due
            self._seq += 1
            self._armed[name] = self._seq
            heapq.heappush(self._timers, (max(due, self.now), self._seq, name))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        events, timers = self._events, self._timers
        while True:
            while timers and self._armed.get(timers[0][2]) != timers[0][1]:
                heapq.heappop(timers)  # stale (re-armed since)
            t_ev = events[0][0] if events else float("inf")
            t_tm = timers[0][0] if timers else float("inf")
            at = min(t_ev, t_tm)
            if at > end:
                self.now = self.net.now = end
                return
            self.now = self.net.now = max(self.now, at)  # net.now: the nodes' wall_time
            if t_ev <= t_tm:
                _, _, dst, data, src = heapq.heappop(events)
                node, w = self.nodes[dst], self.watched.get(dst)
                t0 = time.process_time() if w is not None else 0.0
                node.datagram(data, src, self.now)
                while events and events[0][0] == at and events[0][2] == dst:
                    _, _, _, data, src = heapq.heappop(events)  # sent with it: same wake-up
                    node.datagram(data, src, self.now)
                due = self._due.get(dst, float("inf"))
                if due <= self.now:  # the agent's round: the timer too, if it is due
                    node.handle_timer(self.now)
                if w is not None:
                    w.cpu += time.process_time() - t0
                    w.datagram_wakeups += 1
                self._flush(dst)
            else:
                _, _, name = heapq.heappop(timers)
                if at == self._last_timer_at.get(name):
                    self._spins += 1  # a timer that stays due after its round: the agent spins
                    if self._spins > 10_000:
                        raise RuntimeError(f"{name}: next_timer() stays due at {at}")
                self._last_timer_at[name] = at
                node, w = self.nodes[name], self.watched.get(name)
                t0 = time.process_time() if w is not None else 0.0
                node.handle_timer(self.now)
                if w is not None:
                    w.cpu += time.process_time() - t0
                    w.timer_wakeups += 1
                    w.wake_times.append(self.now)
                self._due.pop(name, None)
                self._armed.pop(name, None)
                self._flush(name)
