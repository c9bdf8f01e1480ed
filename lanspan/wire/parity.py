"""XOR parity over interleaved groups of a superframe's fragments.

A body cut into fragments of `chunk` bytes (the last may be shorter) has, for
`groups` = G, group g = the fragments i with i % G == g, and group g's parity =
the XOR of their bodies, each zero-padded to `chunk` bytes. One missing
fragment of a group is the XOR of the parity and the group's other fragments.

Python ints do the XOR at C speed: bytes read little-endian, so a shorter
fragment is its zero-padded self. Fragments i, i+1, ... i+G-1 of one "row" of
G * chunk bytes belong to groups 0..G-1 in order, so XOR-ing the rows of the
body gives every group's parity at once (one int per row, not per fragment).
The wire format of a parity payload is in `lanspan.wire.payload`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["groups_for", "rebuild", "xors"]


def groups_for(count: int, group_size: int) -> int:
    """How many parity groups a superframe of `count` fragments gets, for groups of
    about `group_size` fragments (at least one, at most `count`)."""
    if count < 1 or group_size < 1:
        raise ValueError(f"{count} fragments in groups of {group_size}")
    return min(count, max(1, round(count / group_size)))


def xors(body: bytes, chunk: int, groups: int) -> list[bytes]:
    """The parity of each group of `body` cut into fragments of `chunk` bytes."""
    if chunk < 1 or groups < 1:
        raise ValueError(f"chunk {chunk}, {groups} groups")
    row = chunk * groups
    x = 0
    for off in range(0, len(body), row):
        x ^= int.from_bytes(body[off : off + row], "little")
    out = x.to_bytes(row, "little")
    return [out[g * chunk : (g + 1) * chunk] for g in range(groups)]


def rebuild(parity: bytes, others: Sequence[bytes], length: int) -> bytes | None:
    """The one missing fragment of a group, `length` bytes, from the group's parity
    and its other fragments; None when a fragment is longer than the parity or
    `length` is (the peer's fragments and parity do not belong together)."""
    chunk = len(parity)
    if length > chunk:
        return None
    x = int.from_bytes(parity, "little")
    for f in others:
        if len(f) > chunk:
            return None
        x ^= int.from_bytes(f, "little")
    return x.to_bytes(chunk, "little")[:length]
