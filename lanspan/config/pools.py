"""Stable addresses from a pool, derived from each node's identity.

`assign(pool, names, taken)` gives every name an address of the pool:

1. each name has a *home*: BLAKE2s(network, segment, node) reduced into the
   pool, so it depends on nothing but the name and where it lives;
2. every home no fixed address holds goes to the smallest name hashing to it;
3. the rest — names that lost their home to a smaller name or to a fixed
   address — are served in sorted order of (home offset, name), each taking
   the next free address after its home (linear probing, wrapping around).

So the file's order of nodes never matters; a name that has its home keeps
it whatever other nodes are added, removed or reordered, unless a newcomer
hashes to the same home and sorts before it; only names that already lost
their home can move when others come and go. Collisions are reported in
`Placed.collided_with`. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from lanspan.config.model import IPAddress, Pool
from lanspan.records import record

__all__ = ["Placed", "PoolExhausted", "assign", "home_offset", "parse_range"]


class PoolExhausted(Exception):
    """More names than free addresses in the pool."""

    def __init__(self, wanted: int, free: int) -> None:
        super().__init__(f"{wanted} wanted, {free} free")
        self.wanted = wanted
        self.free = free


@record(frozen=True, slots=True)
class Placed:
    name: str
    address: IPAddress
    home: IPAddress
    collided_with: tuple[str, ...]


def home_offset(network: str, segment: str, name: str, size: int) -> int:
    """Where `name` hashes to in a pool of `size` addresses (0-based offset)."""
    digest = hashlib.blake2s(f"lanspan-pool/{network}/{segment}/{name}".encode()).digest()
    return int.from_bytes(digest[:16], "big") % size


def _at(pool: Pool, offset: int) -> IPAddress:
    value = int(pool.first) + offset
    return IPv4Address(value) if pool.version == 4 else IPv6Address(value)


def assign(
    network: str, pool: Pool, names: Sequence[str], taken: Iterable[IPAddress] = ()
) -> list[Placed]:
    """Place every name (unique) in the pool, skipping `taken` addresses.

    Returned in sorted name order. Raises `PoolExhausted` when they do not fit.
    """
    size = pool.size
    lo = int(pool.first)
    fixed = {
        int(a) - lo for a in taken if a.version == pool.version and lo <= int(a) <= int(pool.last)
    }
    if len(names) > size - len(fixed):
        raise PoolExhausted(len(names), size - len(fixed))
    homes = {n: home_offset(network, pool.segment, n, size) for n in names}
    by_home: dict[int, list[str]] = {}
    for n in names:
        by_home.setdefault(homes[n], []).append(n)
    used: dict[int, str] = {}
    rest: list[str] = []
    for off, group in by_home.items():
        group.sort()
        if off in fixed:
            rest += group
        else:
            used[off] = group[0]
            rest += group[1:]
    for n in sorted(rest, key=lambda n: (homes[n], n)):
        off = homes[n]
        while off in used or off in fixed:
            off = (off + 1) % size
        used[off] = n
    where = {n: off for off, n in used.items()}
    out: list[Placed] = []
    for n in sorted(names):
        others = tuple(sorted(m for m in by_home[homes[n]] if m != n))
        out.append(Placed(n, _at(pool, where[n]), _at(pool, homes[n]), others))
    return out


def parse_range(text: str) -> tuple[IPAddress, IPAddress] | str:
    """("198.18.10.100-198.18.10.199" or a subnet) -> (first, last), else why not.

    A subnet's network address (and IPv4 broadcast) are left out, since no
    host may use them.
    """
    if "-" in text:
        a, _, b = text.partition("-")
        try:
            first, last = ip_address(a.strip()), ip_address(b.strip())
        except ValueError:
            return 'is not a range — write "198.18.10.100-198.18.10.199" or a subnet'
        if first.version != last.version:
            return "mixes IPv4 and IPv6"
        if first > last:  # type: ignore[operator]
            return f"starts after it ends ({first} > {last})"
        return first, last
    try:
        net = ip_network(text)
    except ValueError:
        return 'is not a range — write "198.18.10.100-198.18.10.199" or a subnet'
    first_i, last_i = int(net.network_address), int(net.broadcast_address)
    if net.num_addresses > 2:
        first_i += 1
        if net.version == 4:
            last_i -= 1
    make = IPv4Address if net.version == 4 else IPv6Address
    return make(first_i), make(last_i)
