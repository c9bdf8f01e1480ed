"""Per-source handshake rate limiting and the cache of initiations seen.

`SourceRateLimiter` is WireGuard's ratelimiter (wireguard-go
`ratelimiter/ratelimiter.go`, the kernel's `ratelimiter.c`): a token bucket
per source, INITIATIONS_PER_SECOND = 20 refilled continuously, burst 5; an
IPv4 source is its address, an IPv6 source its /64, anything else (a relay
path) its own string. Entries idle for a second are full again, so they are
forgotten; the table has a hard cap and a source that finds it full is
refused (as the kernel does) — a spoofed-source flood cannot grow it.

`InitiationCache` remembers, by the bytes of the initiation up to mac2,
what became of each initiation that cost us a Diffie-Hellman, so that a
byte-identical copy (a network duplicate, a copy sent over another path, a
replay) never costs one again. Bounded by size and age.

`InitiationBudget` is the other direction: how many initiations this node
sends per second to all its peers together (issue 10: 100 nodes retrying
99 peers each saturated the CPUs they shared, so no response came back in
time). A plain token bucket; which waiting peer gets the next token is the
session table's choice.
"""

from __future__ import annotations

import collections
import ipaddress
import math
from typing import Generic, TypeVar

from lanspan.addr import Relay, Target

__all__ = [
    "BURST",
    "MAX_SOURCES",
    "PER_SECOND",
    "InitiationBudget",
    "InitiationCache",
    "SourceRateLimiter",
    "source_key",
]

PER_SECOND = 20.0
BURST = 5.0
MAX_SOURCES = 4096
_IDLE = 1.0  # an entry unused this long is full again: forget it

V = TypeVar("V")


def source_key(src: Target) -> str | Relay:
    if isinstance(src, Relay):
        return src  # one bucket per relay path
    host = src[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 6:
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class SourceRateLimiter:
    __slots__ = ("_buckets", "_burst", "_max", "_rate")

    def __init__(
        self, per_second: float = PER_SECOND, burst: float = BURST, max_sources: int = MAX_SOURCES
    ) -> None:
        self._rate = per_second
        self._burst = burst
        self._max = max_sources
        # key -> [tokens, last refill]; oldest use first
        self._buckets: collections.OrderedDict[str | Relay, list[float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __repr__(self) -> str:
        return f"SourceRateLimiter(sources={len(self._buckets)})"

    def allow(self, src: Target, now: float) -> bool:
        buckets = self._buckets
        while buckets:  # forget idle sources, oldest first: O(1) amortised
            first = next(iter(buckets.values()))
            if now - first[1] < _IDLE:
                break
            buckets.popitem(last=False)
        key = source_key(src)
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max:
                return False
            buckets[key] = [self._burst - 1.0, now]
            return True
        buckets.move_to_end(key)
        tokens = min(self._burst, bucket[0] + max(0.0, now - bucket[1]) * self._rate)
        bucket[1] = max(bucket[1], now)
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True


class InitiationCache(Generic[V]):
    """key -> (value, time stored); at most `size` entries, each kept `max_age` s."""

    __slots__ = ("_entries", "_max_age", "_size")

    def __init__(self, size: int, max_age: float) -> None:
        self._size = size
        self._max_age = max_age
        self._entries: collections.OrderedDict[bytes, tuple[V, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"InitiationCache(entries={len(self._entries)})"

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            _, born = next(iter(entries.values()))
            if now - born < self._max_age:
                break
            entries.popitem(last=False)

    def get(self, key: bytes, now: float) -> V | None:
        self._expire(now)
        hit = self._entries.get(key)
        return hit[0] if hit is not None else None

    def put(self, key: bytes, value: V, now: float) -> None:
        self._expire(now)
        entries = self._entries
        entries.pop(key, None)
        while len(entries) >= self._size:
            entries.popitem(last=False)
        entries[key] = (value, now)

    def discard(self, key: bytes) -> None:
        self._entries.pop(key, None)


class InitiationBudget:
    """One node's own initiations, all peers together: a token bucket of `burst`
    refilled at `per_second` (which its owner may change). `take` spends a token
    if there is one; `next_token` says when the next one is there (no `now`
    needed: it is kept as of the last take). A few floats, whatever happens."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, per_second: float, burst: float) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("per_second must be positive and burst at least 1")
        self._rate = per_second
        self._burst = burst
        self._tokens = burst
        self._last = -float("inf")  # full at the first take

    def __repr__(self) -> str:
        return f"InitiationBudget(tokens={self._tokens:.1f}/{self._burst:g})"

    def _refill(self, now: float) -> None:
        if now > self._last:
            gained = (now - self._last) * self._rate  # inf at first: full
            self._tokens = min(self._burst, self._tokens + gained)
            self._last = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens >= 1.0 - 1e-9:  # 1e-9: a token due at `now` is there at `now`
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def set_rate(self, per_second: float, now: float) -> None:
        """From `now` on, refill at `per_second` (what came before at the old rate)."""
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self._refill(now)
        self._rate = per_second

    def resize(self, burst: float) -> None:
        """A new capacity (the node's peers changed); the tokens held are kept."""
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._burst = burst
        self._tokens = min(self._tokens, burst)

    def grant(self, now: float, tokens: float = 1.0) -> None:
        """`tokens` more (never past the capacity): a peer's own, for an initiation no
        other node can make (SessionTable.initiate with own_token), or what a prompt
        answer gives back (PROMPT_ANSWER_TOKENS)."""
        self._refill(now)
        self._tokens = min(self._burst, self._tokens + tokens)

    def next_token(self) -> float:
        due = self._last + max(0.0, 1.0 - self._tokens) / self._rate
        # Never "now" again when the wait is below the clock's resolution (a clock
        # of 1e10 s has steps of 2e-6 s): the caller's timer would spin.
        return due if due > self._last else math.nextafter(self._last, math.inf)
