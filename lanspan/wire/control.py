"""lanspan's own messages, carried as control payloads inside sessions.

Every message starts with a type byte::

    PROBE (1) / PROBE_ACK (2), 14 bytes:
    +------+------+----------------+--------------------------------+
    | type | path | seq (u32 BE)   | stamp (u64 BE, sender's clock) |
    +------+------+----------------+--------------------------------+

A probe is sent to one underlay path of a peer; the ack echoes it back to
where the probe came from, so the sender learns that path's liveness and
round-trip time. `stamp` is opaque to the receiver.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lanspan.errors import BadPacket

PROBE = 1
PROBE_ACK = 2

_PROBE = struct.Struct("!BBIQ")


@dataclass(frozen=True, slots=True)
class Probe:
    ack: bool
    path: int
    seq: int
    stamp: int


def build_probe(p: Probe) -> bytes:
    return _PROBE.pack(PROBE_ACK if p.ack else PROBE, p.path, p.seq, p.stamp)


def parse_untrusted(data: bytes) -> Probe:
    if not data:
        raise BadPacket("control_short", "empty")
    kind = data[0]
    if kind in (PROBE, PROBE_ACK):
        if len(data) != _PROBE.size:
            raise BadPacket("control_bad_length", f"probe of {len(data)} B")
        _, path, seq, stamp = _PROBE.unpack(data)
        return Probe(kind == PROBE_ACK, path, seq, stamp)
    raise BadPacket("control_unknown_type", str(kind))
