"""The address bindings ARP and ND suppression answer from (`lanspan.switch.arp`, `.nd`).

(VNI, IPv4 or IPv6 address) -> MAC, as last seen in an ARP frame or a neighbour
advertisement, with the advertiser's router flag (an answer for a router must
say so, or its hosts drop it from their default routers: RFC 4861 7.2.5).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from lanspan.records import record

__all__ = ["MAX_BINDINGS", "Bindings"]

MAX_BINDINGS: Final = 8192  # per node, across segments; the least recently seen go first


@record(slots=True)
class _Binding:
    mac: bytes
    seen: float
    router: bool
    where: object  # where the MAC was when it spoke for the address (a switch Location)


class Bindings:
    """(VNI, address) -> (MAC, router flag); bounded, least recently seen first out.
    `get` answers only bindings seen within `max_age`."""

    def __init__(self, max_age: float, max_size: int = MAX_BINDINGS) -> None:
        if max_size < 1:
            raise ValueError(f"bindings need room for at least one, not {max_size}")
        self.max_age = max_age
        self.max_size = max_size
        self._table: OrderedDict[tuple[int, bytes], _Binding] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def learn(
        self,
        vni: int,
        ip: bytes,
        mac: bytes,
        now: float,
        router: bool = False,
        where: object = None,
    ) -> None:
        key = (vni, ip)
        b = self._table.get(key)
        if b is None:
            if len(self._table) >= self.max_size:
                self._table.popitem(last=False)
            self._table[key] = _Binding(mac, now, router, where)
            return
        b.mac, b.router, b.where = mac, router, where
        b.seen = max(b.seen, now)  # a clock stepping back never makes a binding older
        self._table.move_to_end(key)

    def get(self, vni: int, ip: bytes, now: float) -> tuple[bytes, bool, object] | None:
        """(MAC, router flag, where it spoke from) of a fresh binding of `ip` in segment
        `vni`, else None."""
        b = self._table.get((vni, ip))
        if b is None or now - b.seen > self.max_age:
            return None
        return b.mac, b.router, b.where
