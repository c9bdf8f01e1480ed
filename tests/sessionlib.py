"""A sans-IO harness for SessionTables: several nodes, each with addresses, pumped
into each other through a seeded fake link that can be cut per direction, on a
fake clock. It plays the node's part only as far as the session layer needs:
a Transmit without `to` goes to every address the sender knows for the peer
(as the node does with its candidate endpoints); established peers are probed
every `probe_interval` (the node probes peers it has up)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable

from lanspan.session import Delivered, SessionEvent, SessionTable, Transmit

PORT = 51820
EPOCH = 1_700_000_000.0
Addr = tuple[str, int]


class Mesh:
    def __init__(
        self,
        names: Iterable[str] = ("a", "b"),
        *,
        seed: int = 1,
        delay: float = 0.01,
        jitter: float = 0.0,
        loss: float = 0.0,
        dup: float = 0.0,
        probe_interval: float | None = 1.0,
        addrs: dict[str, list[Addr]] | None = None,
        persistent_keepalive: float | None = None,
        initiate: bool = True,
        table_options: dict[str, float] | None = None,
    ) -> None:
        self.names = list(names)
        self.now = 0.0
        self.rng = random.Random(seed)
        self.delay, self.jitter, self.loss, self.dup = delay, jitter, loss, dup
        self.probe_interval = probe_interval
        self.addrs: dict[str, list[Addr]] = addrs or {
            n: [(f"198.18.0.{i + 1}", PORT)] for i, n in enumerate(self.names)
        }
        self.owner = {a: n for n, lst in self.addrs.items() for a in lst}
        # (sender, destination address) -> source address the datagram leaves from
        self.route: dict[tuple[str, Addr], Addr] = {}
        # node -> peer -> addresses it sends a Transmit(peer) to (the node's candidates)
        self.known: dict[str, dict[str, list[Addr]]] = {
            n: {m: list(self.addrs[m]) for m in self.names if m != n} for n in self.names
        }
        self.cuts: set[tuple[Addr, Addr]] = set()  # (src, dst) pairs that lose everything
        self.queue: list[tuple[float, int, Addr, Addr, bytes]] = []
        self.seq = 0
        self.sent = 0
        self.tap: list[tuple[float, Addr, Addr, bytes]] = []
        self.tables: dict[str, SessionTable] = {}
        for name in self.names:
            self.tables[name] = SessionTable(
                self.rng.randbytes(32),
                random_bytes=random.Random(self.rng.random()).randbytes,
                wall_time=lambda: EPOCH + self.now,
                **(table_options or {}),  # type: ignore[arg-type]
            )
        for name in self.names:
            for other in self.names:
                if other != name:
                    self.tables[name].add_peer(
                        other,
                        self.tables[other].public_key,
                        persistent_keepalive=persistent_keepalive,
                    )
                    if initiate:
                        self.tables[name].initiate(other, 0.0)
        self.delivered: list[tuple[float, str, Delivered]] = []
        self.events: list[tuple[float, str, SessionEvent]] = []
        self.next_probe = 0.0

    # -- faults ------------------------------------------------------------

    def cut_node(self, name: str) -> None:
        mine = set(self.addrs[name])
        for src in self.owner:
            for dst in self.owner:
                if (src in mine) != (dst in mine):
                    self.cuts.add((src, dst))

    def heal(self) -> None:
        self.cuts.clear()

    # -- the link ------------------------------------------------------------

    def source(self, sender: str, dst: Addr) -> Addr:
        return self.route.get((sender, dst), self.addrs[sender][0])

    def send(self, sender: str, dst: Addr, data: bytes) -> None:
        self.sent += 1
        src = self.source(sender, dst)
        self.tap.append((self.now, src, dst, data))
        if (src, dst) in self.cuts or dst not in self.owner:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            if self.rng.random() < self.loss:
                continue
            self.seq += 1
            at = self.now + self.delay + self.rng.random() * self.jitter
            heapq.heappush(self.queue, (at, self.seq, src, dst, data))

    def collect(self) -> None:
        for name, table in self.tables.items():
            for out in table.take_outputs():
                if isinstance(out, Transmit):
                    if out.to is not None:
                        self.send(name, out.to, out.data)
                    else:
                        assert out.peer is not None
                        for addr in self.known[name][out.peer]:
                            self.send(name, addr, out.data)
                else:
                    self.events.append((self.now, name, out))

    def established(self, a: str, b: str) -> bool:
        return self.tables[a].status(b).established

    def _probe(self) -> None:
        for name, table in self.tables.items():
            for peer in self.names:
                if peer != name and table.status(peer).established:
                    data = table.seal(peer, b"probe", self.now)
                    if data is not None:
                        for addr in self.known[name][peer]:
                            self.send(name, addr, data)

    def run(self, until: float) -> None:
        for _ in range(10_000_000):
            self.collect()
            timers = (tb.next_timer() for tb in self.tables.values())
            candidates = [t for t in timers if t is not None]
            if self.queue:
                candidates.append(self.queue[0][0])
            if self.probe_interval is not None:
                candidates.append(self.next_probe)
            t = min(candidates, default=None)
            if t is None or t > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, t)
            while self.queue and self.queue[0][0] <= self.now:
                _, _, src, dst, data = heapq.heappop(self.queue)
                name = self.owner[dst]
                got = self.tables[name].receive(data, src, self.now)
                if got is not None:
                    self.delivered.append((self.now, name, got))
            for table in self.tables.values():
                deadline = table.next_timer()
                if deadline is not None and deadline <= self.now:
                    table.handle_timer(self.now)
            if self.probe_interval is not None and self.now >= self.next_probe:
                self.next_probe = self.now + self.probe_interval
                self._probe()
        raise AssertionError("event loop did not settle")

    def run_until(self, cond: object, limit: float, step: float = 0.01) -> float | None:
        """Run until `cond()` holds (checked every `step`); the time, or None at `limit`."""
        assert callable(cond)
        while self.now < limit:
            if cond():
                return self.now
            self.run(self.now + step)
        return self.now if cond() else None

    def kinds(self, name: str, kind: str) -> list[float]:
        return [t for t, n, e in self.events if n == name and e.kind == kind]

    def probes_delivered(self, dst: str, src: str, since: float) -> list[float]:
        return [
            t
            for t, n, d in self.delivered
            if n == dst and d.peer == src and d.payload == b"probe" and t >= since
        ]


# What each handshake step costs, in X25519-equivalents (the DH dominates; the
# BLAKE2s, AEAD and parsing around it are folded in).
COST_CREATE_INITIATION = 3.0  # ephemeral key, es, ss
COST_CONSUME_INITIATION = 2.0  # es, ss (spent even when it is then refused)
COST_CREATE_RESPONSE = 3.0  # ephemeral key, ee, se
COST_CONSUME_RESPONSE = 2.0  # ee, se
COST_OTHER = 0.02  # a transport datagram, a cookie reply, a refused duplicate


class CpuMesh(Mesh):
    """Mesh whose nodes share one simulated CPU (a machine running every agent).

    Datagrams arriving at any node wait in one FIFO queue; each is handled when the
    CPU is free, at the simulated time it is taken (so under load a response comes
    back later than the retry interval), and takes `unit` seconds per X25519 its
    handling costs (what it did, judged by its type and what the table sent). A
    timer fires on time (an agent's timer thread is not queued behind other
    agents' datagrams) but the initiations it creates cost CPU time too, which
    delays the queue. A node's socket holds `rcvbuf` unread datagrams, as a real
    socket buffer does; the rest are lost. Each node's next_timer() is cached and re-read only after
    that node was touched, so the loop costs O(nodes) per event, not O(nodes²)."""

    def __init__(self, names: Iterable[str], *, unit: float, seed: int = 1,
                 delay: float = 0.001, rcvbuf: int = 256,
                 starts: dict[str, float] | None = None,
                 table_options: dict[str, float] | None = None) -> None:  # fmt: skip
        super().__init__(names, seed=seed, delay=delay, probe_interval=None, initiate=False,
                         table_options=table_options)  # fmt: skip
        self.unit = unit
        self.rcvbuf = rcvbuf  # datagrams a node's socket holds unread; more are lost
        self.unread: dict[str, int] = dict.fromkeys(self.names, 0)
        self.overflow = 0
        self.cpu_free = 0.0
        self.busy = 0.0  # CPU seconds spent
        self.arrived: list[tuple[float, int, Addr, Addr, bytes]] = []  # FIFO by arrival
        self.deadlines: dict[str, float] = {}
        self.counts: dict[str, int] = {"initiations": 0, "responses": 0, "cookies": 0}
        # When each node starts (default: all at 0): before, it receives nothing.
        self.starts = dict.fromkeys(self.names, 0.0) | (starts or {})
        self.pending_starts = sorted((t, n) for n, t in self.starts.items())
        self._start_due()

    def _start_due(self) -> None:
        while self.pending_starts and self.pending_starts[0][0] <= self.now:
            _, name = self.pending_starts.pop(0)
            for other in self.names:
                if other != name:
                    self.tables[name].initiate(other, self.now)
            self._charge(self._drain(name))

    def _drain(self, name: str, cost: float = 0.0) -> float:
        """Send what `name` handed out, charge its cost; re-read its timer."""
        table = self.tables[name]
        for out in table.take_outputs():
            if isinstance(out, Transmit):
                kind = out.data[0]
                if kind == 1:
                    cost += COST_CREATE_INITIATION
                    self.counts["initiations"] += 1
                elif kind == 2:
                    cost += COST_CREATE_RESPONSE
                    self.counts["responses"] += 1
                else:
                    cost += COST_OTHER
                    self.counts["cookies"] += kind == 3
                addrs = [out.to] if out.to is not None else self.known[name][out.peer or ""]
                for addr in addrs:
                    self.send(name, addr, out.data)
            else:
                self.events.append((self.now, name, out))
        deadline = table.next_timer()
        self.deadlines[name] = float("inf") if deadline is None else deadline
        return cost * self.unit

    def _charge(self, seconds: float) -> None:
        self.cpu_free = max(self.cpu_free, self.now) + seconds
        self.busy += seconds

    def step_once(self, until: float) -> bool:
        """One event (a timer or one datagram handled); False when none is due by `until`."""
        while self.queue and self.queue[0][0] <= max(self.now, self.cpu_free):
            self._arrive()
        t_timer, who = min(((d, n) for n, d in self.deadlines.items()), default=(float("inf"), ""))
        if self.pending_starts and self.pending_starts[0][0] < t_timer:
            t_timer, who = self.pending_starts[0][0], ""
        if self.arrived:
            t_cpu = max(self.cpu_free, self.arrived[0][0])
        elif self.queue:
            t_cpu = max(self.cpu_free, self.queue[0][0])
        else:
            t_cpu = float("inf")
        t = min(t_timer, t_cpu)
        if t > until:
            self.now = max(self.now, until)
            return False
        self.now = max(self.now, t)
        if t_timer <= t_cpu:
            if not who:
                self._start_due()
                return True
            self.tables[who].handle_timer(self.now)
            self._charge(self._drain(who))
            return True
        if not self.arrived:
            self._arrive()
            if not self.arrived:
                return True
        _, _, src, dst, data = heapq.heappop(self.arrived)
        name = self.owner[dst]
        self.unread[name] -= 1
        got = self.tables[name].receive(data, src, self.now)
        if got is not None:
            self.delivered.append((self.now, name, got))
        kind = data[0]
        cost = COST_CONSUME_INITIATION if kind == 1 else COST_CONSUME_RESPONSE if kind == 2 else 0.0
        self._charge(self._drain(name, cost if cost else COST_OTHER))
        return True

    def _arrive(self) -> None:
        item = heapq.heappop(self.queue)
        name = self.owner[item[3]]
        if item[0] < self.starts[name]:
            return  # not listening yet
        if self.unread[name] >= self.rcvbuf:
            self.overflow += 1
            return
        self.unread[name] += 1
        heapq.heappush(self.arrived, item)

    def run(self, until: float) -> None:
        while self.step_once(until):
            pass

    def converged(self) -> bool:
        return all(
            self.tables[a].status(b).established for a in self.names for b in self.names if a != b
        )

    def pairs_up(self) -> int:
        return sum(
            self.tables[a].status(b).established for a in self.names for b in self.names if a != b
        )
