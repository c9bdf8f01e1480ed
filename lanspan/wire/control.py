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

    REACH_PART (7): type, gen (u8), index (u8), total (u8), count (u8), then
                    count x (name len u8, name, rtt µs u32 BE)

One part of a REACH too long for one datagram (a relay of ~90 peers or more,
or more than 255): the receiver applies the offer only once it holds parts
0..total-1 of one `gen`, so a lost part never shrinks what it knows; a new
`gen` from the same sender starts over.

    PLANES (6): type, flags (u8), count (u8), then count x
                (name len u8, segment name utf8, plane u8)

The data plane the sender carries each of its segments on: 0 userspace (the
node core, encrypted to every peer), 1 kernel (plain VXLAN to the other
members of its trusted site). Sent to the other members of the sender's site
until one answers; flags bit 0 (``ack``) says "and I have yours" — a PLANES
without it is answered at once with the receiver's own. A site member that
says userspace for a segment is reached over the mesh for it, never by
plain VXLAN (lanspan/agent/kernel_plane.py).
"""

from __future__ import annotations

import functools
import struct

from lanspan.errors import BadPacket
from lanspan.records import record

PROBE = 1
PROBE_ACK = 2
RELAY = 3
RELAYED = 4
REACH = 5
PLANES = 6
REACH_PART = 7

PLANE_USERSPACE = 0
PLANE_KERNEL = 1
_PLANE_NAMES = {PLANE_USERSPACE: "userspace", PLANE_KERNEL: "kernel"}
_PLANE_CODES = {v: k for k, v in _PLANE_NAMES.items()}
_ACK = 0x01

_PROBE = struct.Struct("!BBIQ")


@record(frozen=True, slots=True)
class Probe:
    ack: bool
    path: int
    seq: int
    stamp: int


@record(frozen=True, slots=True)
class Relay:
    delivered: bool  # False: RELAY (please forward); True: RELAYED (forwarded to you)
    node: str  # RELAY: the destination; RELAYED: the origin
    inner: bytes


@record(frozen=True, slots=True)
class Reach:
    peers: tuple[tuple[str, int], ...]  # (node, rtt in µs)


@record(frozen=True, slots=True)
class ReachPart:
    gen: int
    index: int
    total: int
    peers: tuple[tuple[str, int], ...]


@record(frozen=True, slots=True)
class Planes:
    ack: bool  # the sender has the receiver's planes (no answer wanted)
    segments: tuple[tuple[str, str], ...]  # (segment, "userspace" | "kernel")


Message = Probe | Relay | Reach | ReachPart | Planes
_RTT = struct.Struct("!I")
_PART = struct.Struct("!BBBBB")


# Names are the network's nodes (a bounded set): each encoded once, not once per entry
# of every REACH built (~580 000 a sans-IO 100-node cold start, issue 10).
@functools.lru_cache(maxsize=4096)
def _name(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) < 256:
        raise ValueError(f"node name {name!r} must be 1..255 bytes")
    return bytes([len(raw)]) + raw


def build_relay(r: Relay) -> bytes:
    return bytes([RELAYED if r.delivered else RELAY]) + _name(r.node) + r.inner


def reach_entry(name: str, rtt: int) -> bytes:
    """One (peer, RTT µs) entry of a REACH, encoded."""
    return _name(name) + _RTT.pack(min(rtt, 0xFFFFFFFF))


def build_reach_entries(entries: list[bytes]) -> bytes:
    """A REACH of entries encoded by `reach_entry` (a relay builds them once for all
    the peers it tells)."""
    if len(entries) > 255:
        raise ValueError(f"{len(entries)} peers: at most 255 in one REACH")
    return bytes([REACH, len(entries)]) + b"".join(entries)


def build_reach(r: Reach) -> bytes:
    return build_reach_entries([reach_entry(name, rtt) for name, rtt in r.peers])


def build_reach_messages(entries: list[bytes], gen: int, budget: int) -> list[bytes]:
    """The REACH of `entries` as messages of at most `budget` bytes each: one REACH
    when it fits, else REACH_PARTs of generation `gen` (which the sender changes from
    one offer to the next). An offer in one datagram over the underlay MTU would
    travel as IP fragments, which some providers and NATs drop."""
    if len(entries) <= 255 and 2 + sum(map(len, entries)) <= budget:
        return [build_reach_entries(entries)]
    parts: list[list[bytes]] = [[]]
    size = _PART.size
    for e in entries:
        if len(parts[-1]) == 255 or (parts[-1] and size + len(e) > budget):
            parts.append([])
            size = _PART.size
        parts[-1].append(e)
        size += len(e)
    if len(parts) > 255:
        raise ValueError(f"{len(entries)} peers need {len(parts)} REACH parts: at most 255")
    return [_reach_part(gen, i, len(parts), part) for i, part in enumerate(parts)]


def build_reach_part(p: ReachPart) -> bytes:
    """One REACH_PART as `parse_untrusted` reads it (`build_reach_messages` makes a
    whole offer's)."""
    if not 0 <= p.index < p.total <= 255 or len(p.peers) > 255:
        raise ValueError(f"part {p.index} of {p.total} with {len(p.peers)} peers")
    return _reach_part(p.gen, p.index, p.total, [reach_entry(n, rtt) for n, rtt in p.peers])


def _reach_part(gen: int, index: int, total: int, entries: list[bytes]) -> bytes:
    return _PART.pack(REACH_PART, gen & 0xFF, index, total, len(entries)) + b"".join(entries)


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


def build_planes(p: Planes) -> bytes:
    if len(p.segments) > 255:
        raise ValueError(f"{len(p.segments)} segments: at most 255 in one PLANES")
    out = bytearray([PLANES, _ACK if p.ack else 0, len(p.segments)])
    for segment, plane in p.segments:
        if plane not in _PLANE_CODES:
            raise ValueError(f"plane {plane!r} is neither userspace nor kernel")
        out += _name(segment) + bytes([_PLANE_CODES[plane]])
    return bytes(out)


def _parse_planes(data: bytes) -> Planes:
    if len(data) < 3:
        raise BadPacket("control.short", "planes header")
    if data[1] & ~_ACK:
        raise BadPacket("control.bad_planes", f"flags 0x{data[1]:02x}")
    segments = []
    at = 3
    for _ in range(data[2]):
        name, at = _take_name(data, at)
        if at >= len(data):
            raise BadPacket("control.short", "planes entry")
        plane = _PLANE_NAMES.get(data[at])
        if plane is None:
            raise BadPacket("control.bad_planes", f"plane {data[at]}")
        segments.append((name, plane))
        at += 1
    if at != len(data):
        raise BadPacket("control.bad_length", "bytes after planes list")
    if len({s for s, _ in segments}) != len(segments):
        raise BadPacket("control.bad_planes", "a segment named twice")
    return Planes(bool(data[1] & _ACK), tuple(segments))


def _reach_list(data: bytes, at: int, count: int) -> tuple[tuple[str, int], ...]:
    # `_take_name` inlined: a relay's offer names up to every peer, and at a cold start
    # of 100 nodes each node parses thousands of them (issue 10).
    peers = []
    size = len(data)
    rtt_at = _RTT.unpack_from
    for _ in range(count):
        if at >= size:
            raise BadPacket("control.short", "name length")
        n = data[at]
        end = at + 1 + n
        if n == 0 or end > size:
            raise BadPacket("control.bad_name", f"length {n}")
        try:
            name = data[at + 1 : end].decode()
        except UnicodeDecodeError:
            raise BadPacket("control.bad_name", "not utf-8") from None
        if end + 4 > size:
            raise BadPacket("control.short", "reach rtt")
        peers.append((name, rtt_at(data, end)[0]))
        at = end + 4
    if at != size:
        raise BadPacket("control.bad_length", "bytes after reach list")
    return tuple(peers)


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
        return Reach(_reach_list(data, 2, data[1]))
    if kind == REACH_PART:
        if len(data) < _PART.size:
            raise BadPacket("control.short", "reach part header")
        _, gen, index, total, count = _PART.unpack_from(data)
        if index >= total:
            raise BadPacket("control.bad_reach_part", f"part {index} of {total}")
        return ReachPart(gen, index, total, _reach_list(data, _PART.size, count))
    if kind == PLANES:
        return _parse_planes(data)
    raise BadPacket("control.unknown_type", str(kind))
