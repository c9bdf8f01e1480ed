"""ND suppression (lanspan.switch.nd): solicitations answered from advertised bindings."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st
from test_switch import A, B, C, switch

from lanspan.switch import Forward, Switch
from lanspan.switch.nd import ADVERTISEMENT, SOLICITATION, Nd, advert_reply, parse_nd
from lanspan.wire.ethernet import parse_untrusted

LAN = 10010
ALL_NODES = bytes.fromhex("333300000001")


def ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def solicited_node(addr: bytes) -> tuple[bytes, bytes]:
    """The solicited-node multicast address of `addr`, and its MAC (RFC 4291, 2464)."""
    group = ip6("ff02::1:ff00:0")[:13] + addr[13:]
    return group, b"\x33\x33" + group[12:]


def csum(src: bytes, dst: bytes, icmp: bytes) -> int:
    data = src + dst + struct.pack("!I3xB", len(icmp), 58) + icmp
    data += b"\x00" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmp6(
    src_mac: bytes, dst_mac: bytes, src: bytes, dst: bytes, body: bytes, hop: int = 255
) -> bytes:
    body = body[:2] + struct.pack("!H", csum(src, dst, body)) + body[4:]
    head = struct.pack("!IHBB", 0x60000000, len(body), 58, hop) + src + dst
    return dst_mac + src_mac + b"\x86\xdd" + head + body


def ns(asker: bytes, source: str, target: str, *, unicast_to: bytes | None = None) -> bytes:
    t = ip6(target)
    group, gmac = solicited_node(t)
    body = struct.pack("!BBHI", SOLICITATION, 0, 0, 0) + t
    if source != "::":
        body += bytes((1, 1)) + asker
    return icmp6(asker, unicast_to or gmac, ip6(source), group, body)


def na(owner: bytes, target: str, to: bytes = ALL_NODES, *, router: bool = False,
       lladdr: bytes | None = None, hop: int = 255) -> bytes:  # fmt: skip
    flags = 0x20 | (0x80 if router else 0)
    body = struct.pack("!BBHB3x", ADVERTISEMENT, 0, 0, flags) + ip6(target)
    body += bytes((2, 1)) + (owner if lladdr is None else lladdr)
    return icmp6(owner, to, ip6(target), ip6("ff02::1"), body, hop)


def introduced(sw: Switch, mac: bytes = A, addr: str = "fd00::1") -> None:
    """The asker has advertised its own address once: a solicitation from it then
    tells no one anything new, and may be answered."""
    sw.from_port("vm1", na(mac, addr), 0.5, True)


def answered(fwd: Forward | None, port: str) -> Nd:
    assert fwd is not None and fwd.peers == () and [p for p, _ in fwd.ports] == [port]
    got = parse_nd(fwd.ports[0][1])
    assert got is not None, "the answer is a valid advertisement (checksum included)"
    return got


def taught(sw: Switch, owner: bytes = B, target: str = "fd00::2", router: bool = False) -> None:
    fwd = sw.from_peer("p1", LAN, na(owner, target, router=router), 1.0)
    assert fwd is not None and fwd.flooded


def test_a_solicitation_for_an_advertised_address_is_answered_on_the_port() -> None:
    sw = switch()
    taught(sw)
    introduced(sw)
    fwd = sw.from_port("vm1", ns(A, "fd00::1", "fd00::2"), 2.0, True)
    got = answered(fwd, "vm1")
    assert got == Nd(ADVERTISEMENT, ip6("fd00::2"), ip6("fd00::2"), B, False)
    assert fwd is not None
    frame = fwd.ports[0][1]
    h = parse_untrusted(frame)
    assert (h.src, h.dst) == (B, A) and frame[38:54] == ip6("fd00::1")  # to the asker
    assert frame[58] & 0x60 == 0x60  # solicited, override
    assert sw.counters["nd_suppressed"] == 1


def test_a_routers_answer_says_it_is_a_router() -> None:
    sw = switch()
    taught(sw, router=True)
    introduced(sw)
    got = answered(sw.from_port("vm1", ns(A, "fd00::1", "fd00::2"), 2.0, True), "vm1")
    assert got.router


def test_what_is_never_answered_or_learned() -> None:
    cases = {
        "duplicate address detection": ns(A, "::", "fd00::2"),
        "a unicast solicitation": ns(A, "fd00::1", "fd00::2", unicast_to=B),
        "the asker's own address": ns(B, "fd00::7", "fd00::2"),
    }
    for what, frame in cases.items():
        sw = switch()
        taught(sw)
        fwd = sw.from_port("vm1", frame, 2.0, True)
        assert fwd is not None and fwd.peers, what
        assert sw.counters["nd_suppressed"] == 0, what
    bad = {
        "hop limit below 255": na(B, "fd00::2", hop=64),
        "another MAC in the option": na(B, "fd00::2", lladdr=C),
        "a broken checksum": na(B, "fd00::2")[:-1] + b"\x00",
        "a solicitation teaches nothing": ns(B, "fd00::2", "fd00::9"),
    }
    for what, frame in bad.items():
        sw = switch()
        sw.from_peer("p1", LAN, frame, 1.0)
        fwd = sw.from_port("vm1", ns(A, "fd00::1", "fd00::2"), 2.0, True)
        assert fwd is not None and fwd.flooded, what


def test_a_solicitation_between_known_guests_is_read_not_taken_by_the_fast_path() -> None:
    sw = switch()
    taught(sw)
    data = b"\x86\xdd" + b"\x60" + b"\x00" * 60
    # B's unicast traffic to A makes a fast-path answer for (B -> A, IPv6) ...
    sw.from_port("vm1", A + A + b"\x86\xdd" + b"\x00" * 60, 1.5, True)  # A learned on vm1
    for _ in range(2):
        sw.from_peer("p1", LAN, A + B + data, 1.6)
    # ... yet the advertisement B then sends A (unicast) still teaches a new binding
    sw.from_peer("p1", LAN, na(B, "fd00::5", to=A), 1.7)
    introduced(sw)
    assert answered(sw.from_port("vm1", ns(A, "fd00::1", "fd00::5"), 2.0, True), "vm1")


@given(st.binary(max_size=120))
def test_any_bytes_parse_or_are_refused(data: bytes) -> None:
    parse_nd(data)  # never raises
    framed = bytes.fromhex("333300000001") + B + b"\x86\xdd" + data
    got = parse_nd(framed)
    if got is not None:
        assert framed[20] == 58 and framed[21] == 255 and got.target[0] != 0xFF


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16), st.booleans())
def test_every_answer_reads_back(source: bytes, target: bytes, router: bool) -> None:
    if target[0] == 0xFF:
        return  # a multicast target is never answered (nor parsed)
    asked = Nd(SOLICITATION, source, target, A, False)
    back = parse_nd(advert_reply(asked, A, B, router))
    assert back == Nd(ADVERTISEMENT, target, target, B, router)
