"""Reassembly of fragmented (super)frames, per peer, bounded in memory and time.

A peer sends the fragments of one superframe back to back, so only a few can
be in flight; anything older is evicted and counted rather than kept. Buffers
are per peer, each with its own bound (superframes in flight, bytes): one
peer's fragments never evict another's.
The core's shape: `add(peer, fragment, now)`, `next_timer()`,
`handle_timer(now)`, and whole payloads taken with `take_outputs()`.

Parity payloads (`lanspan.wire.payload`, FLAG_P) go through `add` too: a
group missing one fragment is rebuilt once its parity is there (`recovered`
counts them). A parity for a superframe no longer buffered and not newer than
the newest one completed from that peer (`completed`: the core's fast path
joins most superframes without the reassembler) is not needed and is
discarded; one for a newer superframe starts its buffer (its fragments may
all have been lost, or be late). A buffer that had parity and is given up
(timeout, eviction) counts as `reassembly.unrecoverable`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import field

from lanspan.records import record
from lanspan.wire import parity
from lanspan.wire.payload import FLAG_F, FLAG_P, MAX_BODY, Payload, parity_header


@record(frozen=True, slots=True)
class Reassembled:
    """A whole (super)frame rebuilt from `peer`'s fragments."""

    peer: str
    payload: Payload


@record(slots=True)
class _Pending:
    flags: int
    vni: int
    parts: list[bytes | None]
    started: float
    missing: int
    size: int = 0  # bytes of fragments (the body so far)
    held: int = 0  # bytes buffered: fragments and parity
    order: int = field(default=0)
    # parity, once one arrived: groups G, length of the last fragment, the XOR
    # of each group that has arrived, and how many fragments each group misses
    groups: int = 0
    last_len: int = 0
    chunk: int = 0
    xors: dict[int, bytes] = field(default_factory=dict)
    group_missing: list[int] = field(default_factory=list)


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
        self._newest: dict[str, int] = {}  # peer -> id of the newest superframe completed
        self._done: list[Reassembled] = []
        self.recovered = 0  # fragments rebuilt from parity
        self.parity_unneeded = 0  # parity payloads for superframes already whole

    def take_outputs(self) -> list[Reassembled]:
        """Payloads completed since the last call, oldest first."""
        done, self._done = self._done, []
        return done

    def has_pending(self, peer: str, frag_id: int) -> bool:
        """Whether fragments of `frag_id` from `peer` are buffered."""
        mine = self._pending.get(peer)
        return mine is not None and frag_id in mine

    def counters(self) -> Counter[str]:
        """`parity_recovered` (fragments rebuilt), `parity_unneeded` (parity payloads
        for superframes already whole), when not zero."""
        c: Counter[str] = Counter()
        if self.recovered:
            c["parity_recovered"] = self.recovered
        if self.parity_unneeded:
            c["parity_unneeded"] = self.parity_unneeded
        return c

    def completed(self, peer: str, frag_id: int) -> None:
        """Superframe `frag_id` from `peer` was joined without the reassembler."""
        self._newest[peer] = frag_id

    def add(self, peer: str, p: Payload, now: float) -> None:
        """Take one fragment; the whole payload is output when its last piece arrives."""
        if p.flags & FLAG_P:
            self._add_parity(peer, p, now)
            return
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
        if not self._store(peer, mine, p.frag_id, entry, p.frag_index, p.body):
            return
        if entry.groups:
            g = p.frag_index % entry.groups
            entry.group_missing[g] -= 1
            if entry.group_missing[g] == 1 and g in entry.xors:
                self._recover(peer, p.frag_id, entry, g)
                return
        if not entry.missing:
            self._complete(peer, p.frag_id, entry)

    def _store(
        self, peer: str, mine: dict[int, _Pending], fid: int, entry: _Pending, i: int, body: bytes
    ) -> bool:
        """Keep fragment `i` of `entry`; False when that gave up the superframe."""
        entry.size += len(body)
        entry.held += len(body)
        self._bytes[peer] = self._bytes.get(peer, 0) + len(body)
        if entry.size > MAX_BODY:
            self._remove(peer, fid)
            self.drops["reassembly.too_big"] += 1
            return False
        entry.parts[i] = body
        while self._bytes[peer] > self.budget and len(mine) > 1:
            self._evict_oldest(peer, mine, keep=fid)
        entry.missing -= 1
        return True

    def _complete(self, peer: str, fid: int, entry: _Pending) -> None:
        self._remove(peer, fid)
        body = b"".join(part for part in entry.parts if part is not None)
        flags = entry.flags & ~FLAG_F
        self._done.append(Reassembled(peer, Payload(flags, entry.vni, body)))

    def _add_parity(self, peer: str, p: Payload, now: float) -> None:
        mine = self._pending.get(peer)
        entry = None if mine is None else mine.get(p.frag_id)
        if entry is None:
            newest = self._newest.get(peer)
            if newest is not None and (newest - p.frag_id) & 0xFFFF < 0x8000:
                self.parity_unneeded += 1  # whole already (or given up): nothing to repair
                return
        groups, last_len, xor = parity_header(p)
        flags = p.flags & ~FLAG_P
        if mine is None:
            mine = self._pending[peer] = {}
        if entry is None:
            if len(mine) >= self.max_pending:
                self._evict_oldest(peer, mine)
            entry = _Pending(flags, p.vni, [None] * p.frag_count, now, p.frag_count)
            mine[p.frag_id] = entry
        elif entry.flags != flags or entry.vni != p.vni or len(entry.parts) != p.frag_count:
            self._remove(peer, p.frag_id)
            self.drops["reassembly.inconsistent"] += 1
            return
        if not entry.groups:
            entry.groups, entry.last_len, entry.chunk = groups, last_len, len(xor)
            missing = [0] * groups
            for i, part in enumerate(entry.parts):
                if part is None:
                    missing[i % groups] += 1
            entry.group_missing = missing
        elif entry.groups != groups or entry.last_len != last_len or entry.chunk != len(xor):
            self._remove(peer, p.frag_id)
            self.drops["reassembly.inconsistent"] += 1
            return
        g = p.frag_index
        if g in entry.xors:
            self.drops["reassembly.duplicate"] += 1
            return
        left = entry.group_missing[g]
        if left == 0:
            self.parity_unneeded += 1
            return
        entry.xors[g] = xor
        entry.held += len(xor)
        self._bytes[peer] = self._bytes.get(peer, 0) + len(xor)
        while self._bytes[peer] > self.budget and len(mine) > 1:
            self._evict_oldest(peer, mine, keep=p.frag_id)
        if left == 1:
            self._recover(peer, p.frag_id, entry, g)

    def _recover(self, peer: str, fid: int, entry: _Pending, g: int) -> None:
        """Group `g` of `entry` misses one fragment and has its parity: rebuild it."""
        parts, groups = entry.parts, entry.groups
        count = len(parts)
        lost = next(i for i in range(g, count, groups) if parts[i] is None)
        others = [part for part in parts[g::groups] if part is not None]
        xor = entry.xors.pop(g)
        entry.held -= len(xor)
        self._bytes[peer] -= len(xor)
        chunk = len(xor)
        # every fragment but the last is `chunk` bytes long: anything else is not
        # the superframe this parity was made for
        short = [
            i for i in range(g, count - 1, groups) if i != lost and len(parts[i] or b"") != chunk
        ]
        body = (
            None
            if short
            else parity.rebuild(xor, others, entry.last_len if lost == count - 1 else chunk)
        )
        if body is None:
            self._remove(peer, fid)
            self.drops["reassembly.bad_parity"] += 1
            return
        entry.group_missing[g] = 0
        mine = self._pending[peer]
        if not self._store(peer, mine, fid, entry, lost, body):
            return
        self.recovered += 1
        if not entry.missing:
            self._complete(peer, fid, entry)

    def _evict_oldest(self, peer: str, mine: dict[int, _Pending], keep: int = -1) -> None:
        oldest = min((k for k in mine if k != keep), key=lambda k: mine[k].started)
        entry = self._remove(peer, oldest)
        self.drops["reassembly.unrecoverable" if entry.groups else "reassembly.evicted"] += 1

    def _remove(self, peer: str, frag_id: int) -> _Pending:
        """Forget a superframe, whole or given up: a parity for it comes too late."""
        mine = self._pending[peer]
        entry = mine.pop(frag_id)
        newest = self._newest.get(peer)
        if newest is None or (frag_id - newest) & 0xFFFF < 0x8000:
            self._newest[peer] = frag_id
        self._bytes[peer] -= entry.held
        if not mine:
            del self._pending[peer], self._bytes[peer]
        return entry

    def next_timer(self) -> float | None:
        if not self._pending:
            return None  # every wake asks: nothing pending costs one test
        starts = [e.started for mine in self._pending.values() for e in mine.values()]
        return min(starts) + self.timeout if starts else None

    def handle_timer(self, now: float) -> None:
        for peer, mine in list(self._pending.items()):
            for fid in [k for k, e in mine.items() if now - e.started >= self.timeout]:
                entry = self._remove(peer, fid)
                self.drops[
                    "reassembly.unrecoverable" if entry.groups else "reassembly.timeout"
                ] += 1

    def forget(self, peer: str) -> None:
        self._pending.pop(peer, None)
        self._bytes.pop(peer, None)
        self._newest.pop(peer, None)
