"""Reassembly of fragmented (super)frames, per peer, bounded in memory and time.

A peer sends the fragments of one superframe back to back, so only a few can
be in flight; anything older is evicted and counted rather than kept. Buffers
are per peer, each with its own bound (superframes in flight, bytes): one
peer's fragments never evict another's.
The core's shape: `add(peer, fragment, now)`, `next_timer()`,
`handle_timer(now)`, and whole payloads taken with `take_outputs()`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lanspan.wire.payload import FLAG_F, MAX_BODY, Payload


@dataclass(frozen=True, slots=True)
class Reassembled:
    """A whole (super)frame rebuilt from `peer`'s fragments."""

    peer: str
    payload: Payload


@dataclass(slots=True)
class _Pending:
    flags: int
    vni: int
    parts: list[bytes | None]
    started: float
    missing: int
    size: int = 0
    order: int = field(default=0)


class Reassembler:
    """Per-peer buffers: each peer has at most `max_pending` superframes in flight and
    `budget` bytes buffered; a peer over either evicts its own oldest, never another's."""

    def __init__(
        self, max_pending: int = 8, timeout: float = 1.0, budget: int = 4 * MAX_BODY
    ) -> None:
        self.max_pending = max_pending
        self.timeout = timeout
        self.budget = budget
        self.drops: Counter[str] = Counter()
        self._pending: dict[str, dict[int, _Pending]] = {}  # peer -> frag id -> pending
        self._bytes: dict[str, int] = {}  # peer -> bytes buffered
        self._done: list[Reassembled] = []

    def take_outputs(self) -> list[Reassembled]:
        """Payloads completed since the last call, oldest first."""
        done, self._done = self._done, []
        return done

    def has_pending(self, peer: str, frag_id: int) -> bool:
        """Whether fragments of `frag_id` from `peer` are buffered."""
        mine = self._pending.get(peer)
        return mine is not None and frag_id in mine

    def add(self, peer: str, p: Payload, now: float) -> None:
        """Take one fragment; the whole payload is output when its last piece arrives."""
        mine = self._pending.setdefault(peer, {})
        entry = mine.get(p.frag_id)
        if entry is None:
            if len(mine) >= self.max_pending:
                self._evict_oldest(peer, mine)
            entry = _Pending(p.flags, p.vni, [None] * p.frag_count, now, p.frag_count)
            mine[p.frag_id] = entry
        elif entry.flags != p.flags or entry.vni != p.vni or len(entry.parts) != p.frag_count:
            # Same id, different superframe: the id wrapped or the peer is confused.
            self._remove(peer, p.frag_id)
            self.drops["reassembly.inconsistent"] += 1
            return
        if entry.parts[p.frag_index] is not None:
            self.drops["reassembly.duplicate"] += 1
            return
        entry.size += len(p.body)
        self._bytes[peer] = self._bytes.get(peer, 0) + len(p.body)
        if entry.size > MAX_BODY:
            self._remove(peer, p.frag_id)
            self.drops["reassembly.too_big"] += 1
            return
        entry.parts[p.frag_index] = p.body
        while self._bytes[peer] > self.budget and len(mine) > 1:
            self._evict_oldest(peer, mine, keep=p.frag_id)
        entry.missing -= 1
        if entry.missing:
            return
        self._remove(peer, p.frag_id)
        body = b"".join(part for part in entry.parts if part is not None)
        self._done.append(Reassembled(peer, Payload(entry.flags & ~FLAG_F, entry.vni, body)))

    def _evict_oldest(self, peer: str, mine: dict[int, _Pending], keep: int = -1) -> None:
        oldest = min((k for k in mine if k != keep), key=lambda k: mine[k].started)
        self._remove(peer, oldest)
        self.drops["reassembly.evicted"] += 1

    def _remove(self, peer: str, frag_id: int) -> None:
        mine = self._pending[peer]
        entry = mine.pop(frag_id)
        self._bytes[peer] -= entry.size
        if not mine:
            del self._pending[peer], self._bytes[peer]

    def next_timer(self) -> float | None:
        if not self._pending:
            return None  # every wake asks: nothing pending costs one test
        starts = [e.started for mine in self._pending.values() for e in mine.values()]
        return min(starts) + self.timeout if starts else None

    def handle_timer(self, now: float) -> None:
        for peer, mine in list(self._pending.items()):
            for fid in [k for k, e in mine.items() if now - e.started >= self.timeout]:
                self._remove(peer, fid)
                self.drops["reassembly.timeout"] += 1

    def forget(self, peer: str) -> None:
        self._pending.pop(peer, None)
        self._bytes.pop(peer, None)
