"""lanspan's own messages, carried as control payloads inside sessions.

Every message starts with a type byte::

    PROBE (1) / PROBE_ACK (2), 14 bytes:
    +------+------+----------------+--------------------------------+
    | type | path | seq (u32 BE)   | stamp (u64 BE, sender's clock) |
    +------+------+----------------+--------------------------------+

A probe is sent to one underlay path of a peer; the ack echoes it back to
where the probe came from, so the sender learns that path's liveness and
round-trip time. `stamp` is opaque to the receiver.

    RELAY (3) / RELAYED (4):
    +------+----------+-----------------+--------------------------------+
    | type | name len | node name (utf8)| inner datagram (sealed end to  |
    |      |   (u8)   |                 | end, opaque to the relay)      |
    +------+----------+-----------------+--------------------------------+

RELAY asks the receiving node to forward the inner datagram to the named
node; RELAYED hands it over, naming the node it came from. Both travel inside
the sessions with the relay, so only members can use a relay.

    REACH (5): type, count (u8), then count x (name len u8, name, rtt µs u32 BE)

The peers the sender reaches over a direct path, with their RTT.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lanspan.errors import BadPacket

PROBE = 1
PROBE_ACK = 2
RELAY = 3
RELAYED = 4
REACH = 5

_PROBE = struct.Struct("!BBIQ")


@dataclass(frozen=True, slots=True)
class Probe:
    ack: bool
    path: int
    seq: int
    stamp: int


@dataclass(frozen=True, slots=True)
class Relay:
    delivered: bool  # False: RELAY (please forward); True: RELAYED (forwarded to you)
    node: str  # RELAY: the destination; RELAYED: the origin
    inner: bytes


@dataclass(frozen=True, slots=True)
class Reach:
    peers: tuple[tuple[str, int], ...]  # (node, rtt in µs)


Message = Probe | Relay | Reach
_RTT = struct.Struct("!I")


def _name(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) < 256:
        raise ValueError(f"node name {name!r} must be 1..255 bytes")
    return bytes([len(raw)]) + raw


def build_relay(r: Relay) -> bytes:
    return bytes([RELAYED if r.delivered else RELAY]) + _name(r.node) + r.inner


def build_reach(r: Reach) -> bytes:
    out = bytearray([REACH, len(r.peers)])
    for name, rtt in r.peers:
        out += _name(name) + _RTT.pack(min(rtt, 0xFFFFFFFF))
    return bytes(out)


def _take_name(data: bytes, at: int) -> tuple[str, int]:
    if at >= len(data):
        raise BadPacket("control.short", "name length")
    end = at + 1 + data[at]
    if data[at] == 0 or end > len(data):
        raise BadPacket("control.bad_name", f"length {data[at]}")
    try:
        return data[at + 1 : end].decode(), end
    except UnicodeDecodeError:
        raise BadPacket("control.bad_name", "not utf-8") from None


def build_probe(p: Probe) -> bytes:
    return _PROBE.pack(PROBE_ACK if p.ack else PROBE, p.path, p.seq, p.stamp)


def parse_untrusted(data: bytes) -> Message:
    if not data:
        raise BadPacket("control.short", "empty")
    kind = data[0]
    if kind in (PROBE, PROBE_ACK):
        if len(data) != _PROBE.size:
            raise BadPacket("control.bad_length", f"probe of {len(data)} B")
        _, path, seq, stamp = _PROBE.unpack(data)
        return Probe(kind == PROBE_ACK, path, seq, stamp)
    if kind in (RELAY, RELAYED):
        name, at = _take_name(data, 1)
        if at == len(data):
            raise BadPacket("control.short", "empty relayed datagram")
        return Relay(kind == RELAYED, name, data[at:])
    if kind == REACH:
        if len(data) < 2:
            raise BadPacket("control.short", "reach count")
        peers = []
        at = 2
        for _ in range(data[1]):
            name, at = _take_name(data, at)
            if at + 4 > len(data):
                raise BadPacket("control.short", "reach rtt")
            peers.append((name, _RTT.unpack_from(data, at)[0]))
            at += 4
        if at != len(data):
            raise BadPacket("control.bad_length", "bytes after reach list")
        return Reach(tuple(peers))
    raise BadPacket("control.unknown_type", str(kind))
