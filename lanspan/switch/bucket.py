"""A token bucket with an injected clock (flood-rate limiting per port)."""

from __future__ import annotations

from dataclasses import field

from lanspan.records import record

__all__ = ["TokenBucket", "flood_burst"]


def flood_burst(rate: float) -> float:
    """The burst allowed on top of a flood `rate`: a tenth of a second, at least 32 frames."""
    return max(rate / 10.0, 32.0)


@record(slots=True)
class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; starts full.

    `take(now)` spends one token if there is one. A clock that steps back is
    treated as no time passing.
    """

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    stamp: float | None = None

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1:
            raise ValueError(f"token bucket needs rate >= 0 and burst >= 1, not {self}")
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float) -> bool:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
