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
