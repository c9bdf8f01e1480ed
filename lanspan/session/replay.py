"""Sliding-window replay protection for 64-bit counters (RFC 6479 style, as
WireGuard uses it).

The bitmap is a ring of 64-bit blocks. When the window slides only the
blocks that fall out are cleared (never a bit-by-bit shift), so the cost per
packet is constant. One block is kept as slack, so the usable window is
`BITS_TOTAL - 64` = 4032 counters behind the greatest one seen.
"""

from __future__ import annotations

__all__ = ["BITS_TOTAL", "WINDOW_SIZE", "ReplayWindow"]

_BLOCK_BITS = 64
_BLOCKS = 64  # power of two
BITS_TOTAL = _BLOCK_BITS * _BLOCKS
WINDOW_SIZE = BITS_TOTAL - _BLOCK_BITS
_INDEX_MASK = _BLOCKS - 1


class ReplayWindow:
    """`check` before decrypting (cheap rejection), `update` after the tag verified."""

    __slots__ = ("_blocks", "greatest")

    def __init__(self) -> None:
        self._blocks = [0] * _BLOCKS
        self.greatest = 0

    def check(self, counter: int) -> bool:
        """True if `counter` is new and inside the window (nothing is changed)."""
        if counter > self.greatest:
            return True
        if counter + WINDOW_SIZE <= self.greatest:
            return False
        return not (self._blocks[(counter >> 6) & _INDEX_MASK] >> (counter & 63)) & 1

    def update(self, counter: int) -> bool:
        """Mark `counter` seen; False (and nothing marked) if it was not acceptable."""
        greatest = self.greatest
        index = counter >> 6
        if counter > greatest:
            current = greatest >> 6
            if index != current:
                blocks = self._blocks
                if index - current >= _BLOCKS:
                    self._blocks = blocks = [0] * _BLOCKS
                else:  # clear only the blocks the window slides over
                    for i in range(current + 1, index + 1):
                        blocks[i & _INDEX_MASK] = 0
            self.greatest = counter
            self._blocks[index & _INDEX_MASK] |= 1 << (counter & 63)
            return True
        if counter + WINDOW_SIZE <= greatest:
            return False
        blocks = self._blocks
        slot = index & _INDEX_MASK
        bit = 1 << (counter & 63)
        if blocks[slot] & bit:
            return False
        blocks[slot] |= bit
        return True
