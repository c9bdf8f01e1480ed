"""Addresses, for the whole package: one definition, imported everywhere.

`Addr` is an underlay UDP address ``(host, port)`` (IPv4 as a dotted string,
IPv6 without brackets). A path to a peer goes either to such an address
(direct) or through a named relay node (`Relay`); `Target` is either.
"""

from __future__ import annotations

from lanspan.records import record

__all__ = ["Addr", "Relay", "Target", "format_target"]

Addr = tuple[str, int]


@record(frozen=True, slots=True)
class Relay:
    """The path through relay node `node` (at most one hop: the relay sends direct)."""

    node: str

    def __str__(self) -> str:
        return f"via {self.node}"


Target = Addr | Relay


def format_target(target: Target) -> str:
    """ "198.19.2.2:51820", "[fd00::2]:51820" or "via NODE"."""
    if isinstance(target, Relay):
        return str(target)
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
