"""ND suppression: a guest's neighbour solicitation answered by its own node.

IPv6's ARP (RFC 4861), suppressed as ARP is (`lanspan.switch.arp`; RFC 9161):
a neighbour advertisement crossing the switch teaches the binding of its
target (the MAC it names, with its router flag); a local guest's multicast
solicitation for a target bound to a MAC known elsewhere (behind a peer that is
up, or another local port) is answered on the port with the advertisement the
owner would send, and goes no further.

Only advertisements teach: they carry the router flag, and an answer for a
router that said "not a router" would make its hosts drop it as a default
router (RFC 4861 7.2.5). The switch reads every ND frame, its fast path
included (`lanspan.switch.core`), and uses a binding for at most the MAC ageing
time since it was last advertised. Never answered: duplicate address detection (source ::,
the owner itself must answer), a unicast solicitation (the asker checking on
the owner). Only messages that pass RFC 4861 7.1's checks are read: hop limit
255, code 0, a valid checksum, a length that holds the message and its options,
a target that is not multicast. ICMPv6 directly after the IPv6 header only.
"""

from __future__ import annotations

from typing import Final

from lanspan.records import record

__all__ = ["IPV6_ETHERTYPE", "Nd", "advert_reply", "answerable", "parse_nd"]

IPV6_ETHERTYPE: Final = 0x86DD
ICMPV6: Final = 58
SOLICITATION: Final = 135
ADVERTISEMENT: Final = 136
_IP6: Final = 14  # offset of the IPv6 header in an untagged frame
_ICMP: Final = _IP6 + 40
_SOURCE_LLADDR: Final = 1  # option types (RFC 4861 4.6)
_TARGET_LLADDR: Final = 2
_ROUTER: Final = 0x80  # advertisement flags
_SOLICITED: Final = 0x40
_OVERRIDE: Final = 0x20
_UNSPECIFIED: Final = bytes(16)


@record(frozen=True, slots=True)
class Nd:
    """A neighbour solicitation or advertisement, as far as suppression needs it."""

    kind: int  # SOLICITATION or ADVERTISEMENT
    source: bytes  # the IPv6 source address
    target: bytes
    lladdr: bytes | None  # a solicitation's source, an advertisement's target link-layer address
    router: bool  # an advertisement's router flag


def parse_nd(frame: bytes) -> Nd | None:
    """The ND message of an untagged frame, or None: not one, or not a valid one."""
    if len(frame) < _ICMP + 24 or frame[12:14] != b"\x86\xdd" or frame[_IP6] >> 4 != 6:
        return None
    if frame[_IP6 + 6] != ICMPV6 or frame[_IP6 + 7] != 255:
        return None
    end = _ICMP + int.from_bytes(frame[_IP6 + 4 : _IP6 + 6], "big")
    kind = frame[_ICMP]
    if (kind != SOLICITATION and kind != ADVERTISEMENT) or frame[_ICMP + 1] != 0:
        return None
    if end < _ICMP + 24 or end > len(frame):
        return None
    target = frame[_ICMP + 8 : _ICMP + 24]
    if target[0] == 0xFF:
        return None
    source = frame[_IP6 + 8 : _IP6 + 24]
    if _checksum(source, frame[_IP6 + 24 : _IP6 + 40], frame[_ICMP:end]) != 0:
        return None
    want = _SOURCE_LLADDR if kind == SOLICITATION else _TARGET_LLADDR
    lladdr = None
    at = _ICMP + 24
    while at < end:
        if at + 2 > end:
            return None
        size = frame[at + 1] * 8
        if size == 0 or at + size > end:
            return None  # RFC 4861 7.1.1: an option of length 0 voids the message
        if frame[at] == want and size == 8:
            lladdr = frame[at + 2 : at + 8]
        at += size
    return Nd(
        kind, source, target, lladdr, kind == ADVERTISEMENT and bool(frame[_ICMP + 4] & _ROUTER)
    )


def answerable(nd: Nd, dst: bytes) -> bool:
    """Whether a solicitation sent to MAC `dst` may be answered from a binding."""
    return nd.kind == SOLICITATION and nd.source != _UNSPECIFIED and bool(dst[0] & 1)


def advert_reply(solicitation: Nd, asker: bytes, mac: bytes, router: bool) -> bytes:
    """The untagged frame the owner of `solicitation.target`, at `mac`, answers `asker`
    (the solicitation's source MAC) with: solicited, override, its router flag."""
    flags = _SOLICITED | _OVERRIDE | (_ROUTER if router else 0)
    body = b"".join((
        bytes((ADVERTISEMENT, 0, 0, 0, flags, 0, 0, 0)), solicitation.target,
        bytes((_TARGET_LLADDR, 1)), mac,
    ))  # fmt: skip
    src, dst = solicitation.target, solicitation.source
    csum = _checksum(src, dst, body)
    body = body[:2] + csum.to_bytes(2, "big") + body[4:]
    ip6 = b"".join((
        b"\x60\x00\x00\x00", len(body).to_bytes(2, "big"), bytes((ICMPV6, 255)), src, dst,
    ))  # fmt: skip
    return b"".join((asker, mac, b"\x86\xdd", ip6, body))


def _checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """ICMPv6's checksum over the pseudo-header and `icmp`: 0 when `icmp` holds a valid one."""
    data = b"".join((src, dst, len(icmp).to_bytes(4, "big"), b"\x00\x00\x00", bytes((ICMPV6,))))
    data += icmp
    if len(data) & 1:
        data += b"\x00"
    s = int.from_bytes(data, "big")
    # one's-complement sum of 16-bit words: fold the big integer 16 bits at a time
    total = 0
    while s:
        total += s & 0xFFFF
        s >>= 16
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
