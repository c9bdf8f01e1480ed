"""ARP suppression (lanspan.switch.arp): requests answered from learned bindings."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from test_switch import A, B, C, switch

from lanspan.switch import Forward, Switch
from lanspan.switch.arp import Arp, arp_reply, parse_arp
from lanspan.switch.bindings import Bindings
from lanspan.wire.ethernet import BROADCAST, build, parse_untrusted, pop_tag

LAN, API = 10010, 10011
NO_MAC = b"\x00" * 6


def ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def arp(
    op: int, sender_mac: bytes, sender_ip: str, target_ip: str, *,
    dst: bytes = BROADCAST, src: bytes | None = None, target_mac: bytes = NO_MAC,
    vlan: int | None = None,
) -> bytes:  # fmt: skip
    body = b"".join((
        b"\x00\x01\x08\x00\x06\x04", op.to_bytes(2, "big"), sender_mac, ip(sender_ip),
        target_mac, ip(target_ip),
    ))  # fmt: skip
    return build(dst, sender_mac if src is None else src, 0x0806, body, vlan=vlan)


def request(asker: bytes, asker_ip: str, target_ip: str, **kw: object) -> bytes:
    return arp(1, asker, asker_ip, target_ip, **kw)  # type: ignore[arg-type]


def reply(owner: bytes, owner_ip: str, to: bytes, to_ip: str) -> bytes:
    return arp(2, owner, owner_ip, to_ip, dst=to, target_mac=to)


def taught(sw: Switch, peer: str = "p1", owner: bytes = B, owner_ip: str = "198.18.0.2") -> None:
    """`owner` behind `peer` asks the segment who has .9: everyone learns where it is."""
    fwd = sw.from_peer(peer, LAN, request(owner, owner_ip, "198.18.0.9"), 1.0)
    assert fwd is not None and fwd.flooded


def introduced(sw: Switch, port: str = "vm1", mac: bytes = A, addr: str = "198.18.0.1") -> None:
    """The asker has spoken once (a request that floods): its own binding is known, so
    its next request tells no one anything new and may be answered."""
    vlan = 11 if port == "trunk1" else None
    sw.from_port(port, request(mac, addr, "198.18.0.254", vlan=vlan), 0.5, True)


def answered(fwd: Forward | None, port: str) -> Arp:
    assert fwd is not None and fwd.peers == () and [p for p, _ in fwd.ports] == [port]
    got = parse_arp(fwd.ports[0][1])
    assert got is not None
    return got


def test_a_request_for_an_address_learned_behind_a_peer_is_answered_on_the_port() -> None:
    sw = switch()
    taught(sw)
    introduced(sw)
    fwd = sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.2"), 2.0, True)
    got = answered(fwd, "vm1")
    assert got == Arp(2, B, ip("198.18.0.2"), A, ip("198.18.0.1"))
    assert fwd is not None and parse_untrusted(fwd.ports[0][1]).src == B  # as B would send it
    assert parse_untrusted(fwd.ports[0][1]).dst == A and len(fwd.ports[0][1]) == 60
    assert sw.counters["arp_suppressed"] == 1


def test_an_unknown_address_floods_and_its_owners_reply_teaches_it() -> None:
    sw = switch()
    first = sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.2"), 1.0, True)
    assert first is not None and first.flooded and "p1" in first.peers
    back = sw.from_peer("p1", LAN, reply(B, "198.18.0.2", A, "198.18.0.1"), 1.1)
    assert back is not None and [p for p, _ in back.ports] == ["vm1"]
    # another guest of the segment (vm3), known already, asks: answered here
    introduced(sw, "vm3", C, "198.18.0.3")
    got = answered(sw.from_port("vm3", request(C, "198.18.0.3", "198.18.0.2"), 1.2, True), "vm3")
    assert got.sender_mac == B and got.target_mac == C


def test_a_request_on_a_trunk_is_answered_in_its_vlan() -> None:
    sw = switch()
    sw.from_peer("p3", API, request(B, "198.18.1.2", "198.18.1.9"), 1.0)
    introduced(sw, "trunk1", A, "198.18.1.1")
    fwd = sw.from_port("trunk1", request(A, "198.18.1.1", "198.18.1.2", vlan=11), 2.0, True)
    assert fwd is not None and fwd.ports[0][0] == "trunk1"
    tagged = fwd.ports[0][1]
    assert parse_untrusted(tagged).vlan == 11 and parse_arp(pop_tag(tagged)) is not None
    assert parse_arp(fwd.frame) is not None  # the mesh form is untagged


def test_bindings_belong_to_their_segment() -> None:
    sw = switch()
    taught(sw)  # 198.18.0.2 in lan
    fwd = sw.from_port("vm2", request(A, "198.18.0.1", "198.18.0.2"), 2.0, True)  # api
    assert fwd is not None and fwd.flooded and sw.counters["arp_suppressed"] == 0


def test_a_binding_behind_a_peer_that_went_down_is_not_used() -> None:
    sw = switch()
    taught(sw)
    sw.set_peer_up("p1", False)
    sw.set_peer_up("p1", True)  # its MACs were flushed: the owner must answer again
    fwd = sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.2"), 2.0, True)
    assert fwd is not None and fwd.flooded and "p1" in fwd.peers


def test_a_binding_older_than_the_mac_ageing_is_not_used() -> None:
    sw = switch(ageing=30.0)
    taught(sw)
    sw.from_peer("p1", LAN, build(BROADCAST, B, 0x0800, b"x" * 46), 30.0)  # MAC stays fresh
    fwd = sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.2"), 31.5, True)
    assert fwd is not None and fwd.flooded


def test_what_is_never_answered() -> None:
    cases = {
        "probe": (request(A, "0.0.0.0", "198.18.0.2"), True),
        "announcement": (request(A, "198.18.0.2", "198.18.0.2"), True),
        "unicast": (request(A, "198.18.0.1", "198.18.0.2", dst=B), True),
        "a reply": (arp(2, A, "198.18.0.1", "198.18.0.2"), True),
        "the asker's own binding": (request(B, "198.18.0.7", "198.18.0.2"), True),
        "a frame the node cannot resend": (request(A, "198.18.0.1", "198.18.0.2"), False),
    }
    for what, (frame, plain) in cases.items():
        sw = switch()
        taught(sw)
        fwd = sw.from_port("vm1", frame, 2.0, plain)
        assert fwd is not None and fwd.peers, what
        assert sw.counters["arp_suppressed"] == 0, what


def test_only_a_sender_whose_mac_is_the_frames_source_teaches() -> None:
    sw = switch()
    spoofed = request(C, "198.18.0.2", "198.18.0.9", src=B)  # ARP says C, Ethernet says B
    assert sw.from_peer("p1", LAN, spoofed, 1.0) is not None
    fwd = sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.2"), 2.0, True)
    assert fwd is not None and fwd.flooded


def test_an_announcement_moves_the_binding() -> None:
    sw = switch()
    taught(sw)
    new = bytes.fromhex("020000000e05")
    sw.from_peer("p2", LAN, request(new, "198.18.0.2", "198.18.0.2"), 1.5)  # gratuitous
    introduced(sw)
    got = answered(sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.2"), 2.0, True), "vm1")
    assert got.sender_mac == new


def test_an_answer_to_a_mac_on_another_local_port_and_never_to_its_own() -> None:
    sw = switch()
    sw.from_port("vm3", request(C, "198.18.0.3", "198.18.0.9"), 1.0, True)
    introduced(sw)
    got = answered(sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.3"), 2.0, True), "vm1")
    assert got.sender_mac == C
    # C moved to vm1's port? then the owner is on the asker's own port: no answer
    sw.from_port("vm1", request(C, "198.18.0.3", "198.18.0.9"), 3.0, True)
    fwd = sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.3"), 3.5, True)
    assert fwd is not None and fwd.flooded


def test_bindings_are_bounded_and_the_least_recently_seen_go_first() -> None:
    b = Bindings(max_age=300.0, max_size=3)
    for i in range(5):
        b.learn(LAN, bytes([198, 18, 0, i]), bytes([2, 0, 0, 0, 0, i]), float(i))
    assert len(b) == 3
    assert b.get(LAN, bytes([198, 18, 0, 1]), 5.0) is None
    b.learn(LAN, bytes([198, 18, 0, 2]), bytes([2, 0, 0, 0, 0, 9]), 6.0)  # refreshed
    b.learn(LAN, bytes([198, 18, 0, 7]), bytes([2, 0, 0, 0, 0, 7]), 7.0)
    assert b.get(LAN, bytes([198, 18, 0, 2]), 7.0) == (bytes([2, 0, 0, 0, 0, 9]), False, None)
    assert b.get(LAN, bytes([198, 18, 0, 3]), 7.0) is None
    b.learn(LAN, bytes([198, 18, 0, 7]), bytes([2, 0, 0, 0, 0, 7]), 1.0)  # clock stepped back
    assert b.get(LAN, bytes([198, 18, 0, 7]), 306.0) is not None


@given(st.binary(max_size=80))
def test_any_bytes_parse_or_are_refused_and_a_reply_reads_back(data: bytes) -> None:
    got = parse_arp(data)
    if got is None:
        return
    assert len(data) >= 42 and data[12:14] == b"\x08\x06"
    back = parse_arp(arp_reply(got, B))
    assert back == Arp(2, B, got.target_ip, got.sender_mac, got.sender_ip)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.booleans()), max_size=60))
def test_an_answer_always_names_the_last_mac_that_spoke_for_the_address(
    events: list[tuple[int, int, bool]],
) -> None:
    """Random teachers (peers and ports) and askers: every answer is the owner's last word."""
    sw = switch()
    macs = [bytes([2, 0, 0, 0, 1, i]) for i in range(4)]
    where = ["p1", "p2", "vm1", "vm3"]
    owner: dict[str, bytes] = {}
    now = 1.0
    for who, addr, ask in events:
        now += 0.01
        target = f"198.18.0.{addr + 10}"
        if ask:
            fwd = sw.from_port("vm1", request(A, "198.18.0.1", target), now, True)
            assert fwd is not None
            if not fwd.peers and fwd.ports and fwd.ports[0][0] == "vm1":
                got = parse_arp(fwd.ports[0][1])
                assert got is not None and got.sender_mac == owner[target]
            continue
        m, at = macs[who % 4], where[who % 4]
        frame = request(m, target, "198.18.0.99")
        if at.startswith("p"):
            sw.from_peer(at, LAN, frame, now)
        else:
            sw.from_port(at, frame, now, True)
        owner[target] = m


def test_a_guest_that_took_another_mac_is_heard_by_everyone_again() -> None:
    """A migrated VM (or a guest whose MAC changed) without a gratuitous ARP: its next
    request floods even though the answer is known here, so the guests that cache its
    address see its new MAC (issue 10: the conformance test's moved guest)."""
    sw = switch()
    taught(sw)
    introduced(sw)
    moved = bytes.fromhex("020000000f06")
    fwd = sw.from_port("vm1", request(moved, "198.18.0.1", "198.18.0.2"), 2.0, True)
    assert fwd is not None and fwd.flooded and "p1" in fwd.peers
    # once heard, it is known: the next request is answered
    got = answered(
        sw.from_port("vm1", request(moved, "198.18.0.1", "198.18.0.2"), 2.5, True), "vm1"
    )
    assert got.target_mac == moved


def test_a_binding_whose_mac_moved_since_is_not_used() -> None:
    """B spoke for .2 behind p1; then B's MAC turns up behind p2 (another guest took it,
    or it moved) without a word about .2: the binding may name the wrong guest now."""
    sw = switch()
    taught(sw)  # .2 is at B, behind p1
    introduced(sw)
    sw.from_peer("p2", LAN, build(BROADCAST, B, 0x0800, b"x" * 46), 1.5)  # B behind p2 now
    fwd = sw.from_port("vm1", request(A, "198.18.0.1", "198.18.0.2"), 2.0, True)
    assert fwd is not None and fwd.flooded and sw.counters["arp_suppressed"] == 0
