"""Reassembly of fragmented (super)frames, per peer, bounded in memory and time.

A peer sends the fragments of one superframe back to back, so only a few can
be in flight; anything older is evicted and counted rather than kept.
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
    def __init__(self, max_pending: int = 8, timeout: float = 1.0) -> None:
        self.max_pending = max_pending
        self.timeout = timeout
        self.drops: Counter[str] = Counter()
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._done: list[Reassembled] = []

    def take_outputs(self) -> list[Reassembled]:
        """Payloads completed since the last call, oldest first."""
        done, self._done = self._done, []
        return done

    def add(self, peer: str, p: Payload, now: float) -> None:
        """Take one fragment; the whole payload is output when its last piece arrives."""
        key = (peer, p.frag_id)
        entry = self._pending.get(key)
        if entry is None:
            if len(self._pending) >= self.max_pending:
                oldest = min(self._pending, key=lambda k: self._pending[k].started)
                del self._pending[oldest]
                self.drops["reassembly.evicted"] += 1
            entry = _Pending(p.flags, p.vni, [None] * p.frag_count, now, p.frag_count)
            self._pending[key] = entry
        elif entry.flags != p.flags or entry.vni != p.vni or len(entry.parts) != p.frag_count:
            # Same id, different superframe: the id wrapped or the peer is confused.
            del self._pending[key]
            self.drops["reassembly.inconsistent"] += 1
            return
        if entry.parts[p.frag_index] is not None:
            self.drops["reassembly.duplicate"] += 1
            return
        entry.size += len(p.body)
        if entry.size > MAX_BODY:
            del self._pending[key]
            self.drops["reassembly.too_big"] += 1
            return
        entry.parts[p.frag_index] = p.body
        entry.missing -= 1
        if entry.missing:
            return
        del self._pending[key]
        body = b"".join(part for part in entry.parts if part is not None)
        self._done.append(Reassembled(peer, Payload(entry.flags & ~FLAG_F, entry.vni, body)))

    def next_timer(self) -> float | None:
        if not self._pending:
            return None
        return min(e.started for e in self._pending.values()) + self.timeout

    def handle_timer(self, now: float) -> None:
        for key in [k for k, e in self._pending.items() if now - e.started >= self.timeout]:
            del self._pending[key]
            self.drops["reassembly.timeout"] += 1

    def forget(self, peer: str) -> None:
        for key in [k for k in self._pending if k[0] == peer]:
            del self._pending[key]
