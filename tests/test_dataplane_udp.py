"""UdpEndpoint: batching rules (pure) and GSO/GRO round trips between namespaces."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.dataplane.udp import MAX_GSO_BYTES, MAX_GSO_SEGMENTS, Addr, UdpEndpoint, chunks
from lanspan.lab.netns import Netns, entered, require_root


@given(st.lists(st.integers(1, 3000).map(bytes), max_size=300))
def test_chunks_rules(sizes: list[bytes]) -> None:
    datagrams = [bytes([i % 256]) * len(b) for i, b in enumerate(sizes)]
    out = chunks(datagrams)
    assert [d for run in out for d in run] == datagrams
    for run in out:
        assert 1 <= len(run) <= MAX_GSO_SEGMENTS
        assert sum(map(len, run)) <= MAX_GSO_BYTES
        seg = len(run[0])
        assert all(len(d) == seg for d in run[:-1])
        assert len(run[-1]) <= seg


def test_chunks_examples() -> None:
    a, b = b"a" * 1400, b"b" * 300
    assert chunks([a] * 3 + [b]) == [[a, a, a, b]]
    assert chunks([b, a]) == [[b], [a]]
    assert chunks([a, b, a]) == [[a, b], [a]]
    big = [a] * 100
    assert [len(r) for r in chunks(big)] == [46, 46, 8]  # 46 * 1400 <= 65507 < 47 * 1400
    small = [b"x" * 100] * 130
    assert [len(r) for r in chunks(small)] == [64, 64, 2]


root = pytest.mark.skipif(require_root() is not None, reason=str(require_root()))


@pytest.fixture
def pair() -> Iterator[tuple[Netns, str, str]]:
    with Netns() as n:
        a, b = n.add("ua"), n.add("ub")
        n.veth(a, "u0", b, "u0")
        n.address(a, "u0", "198.18.8.1/24")
        n.address(b, "u0", "198.18.8.2/24")
        n.address(a, "u0", "fd00:8::1/64")
        n.address(b, "u0", "fd00:8::2/64")
        yield n, a, b


def _receive(ep: UdpEndpoint, want: int, timeout: float = 5.0) -> tuple[list[bytes], list[Addr]]:
    got: list[bytes] = []
    addrs: list[Addr] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"received {len(got)} of {want} datagrams"
        select.select([ep], [], [], left)
        while (r := ep.recv_batch()) is not None:
            got += r[0]
            addrs.append(r[1])
    return got, addrs


@pytest.mark.netns
@root
@pytest.mark.parametrize(("src", "dst"), [("198.18.8.1", "198.18.8.2"), ("fd00:8::1", "fd00:8::2")])
def test_gso_gro_round_trip(pair: tuple[Netns, str, str], src: str, dst: str) -> None:
    _, a, b = pair
    with entered(a):
        ea = UdpEndpoint.bind(0)
    with entered(b):
        eb = UdpEndpoint.bind(0)
    with ea, eb:
        assert ea.gso and eb.gro, "this kernel should offer UDP GSO and GRO"
        sent: list[bytes] = []
        for k in range(5):
            batch = [bytes([k, i]) * 700 for i in range(44)] + [bytes([k, 99]) * 100]
            sent += batch
            ea.send_batch((dst, eb.port), batch)
        odd = [b"q" * n for n in (1, 1500, 20, 20, 20, 9000)]
        sent += odd
        ea.send_batch((dst, eb.port), odd)
        got, addrs = _receive(eb, len(sent))
        assert got == sent  # boundaries and order kept
        assert set(addrs) == {(src, ea.port)}  # IPv4-mapped shown as plain IPv4
        assert ea.counters.tx_calls < len(sent)  # really batched on send
        assert eb.counters.rx_calls < len(sent)  # and coalesced on receive
        assert ea.counters.tx_errors == 0


@pytest.mark.netns
@root
def test_the_arrival_time_survives_the_crossing_between_namespaces(
    pair: tuple[Netns, str, str],
) -> None:
    """The kernel clears a packet's timestamp when it crosses into another namespace
    (veth); it is stamped again on arrival there, so `last_arrival` is the time the
    datagram reached the node, not the time it was read (the agent's stale check;
    a packet stamped only when read is never judged stale, the safe side)."""
    _, a, b = pair
    with entered(a):
        ea = UdpEndpoint.bind(0)
    with entered(b):
        eb = UdpEndpoint.bind(0)
    with ea, eb:
        # The kernel stamps arriving packets once any socket asked for timestamps (a
        # static key, switched on from a workqueue shortly after the first one did);
        # until then a packet that crossed namespaces is stamped when read.
        for _ in range(50):
            ea.send_batch(("198.18.8.2", eb.port), [b"warm"])
            time.sleep(0.05)
            _receive(eb, 1)
            assert eb.last_arrival is not None
            if time.time() - eb.last_arrival >= 0.04:
                break
        for batch in ([b"lone"], [b"g" * 700] * 8):  # one datagram, one GRO batch
            before = time.time()
            ea.send_batch(("198.18.8.2", eb.port), batch)
            after = time.time()
            time.sleep(0.5)
            got, _ = _receive(eb, len(batch))
            assert got == batch
            assert eb.last_arrival is not None
            # (a loaded machine may deliver it a little after the send returned)
            assert before - 0.01 <= eb.last_arrival <= after + 0.25, (before, after)
            assert time.time() - eb.last_arrival >= 0.25


@pytest.mark.netns
@root
def test_fallback_without_gso_and_unreachable(pair: tuple[Netns, str, str]) -> None:
    _, a, b = pair
    with entered(a):
        ea = UdpEndpoint.bind(0)
    with entered(b):
        eb = UdpEndpoint.bind(0, host="::")
    with ea, eb:
        ea.gso = False
        sent = [bytes([i]) * 1000 for i in range(10)]
        ea.send_batch(("::ffff:198.18.8.2", eb.port), sent)  # mapped form accepted too
        got, addrs = _receive(eb, len(sent))
        assert got == sent and addrs[0] == ("198.18.8.1", ea.port)
        assert ea.counters.tx_calls == len(sent)
        ea.send_batch(("198.51.100.1", 9), [b"x"] * 3)  # no route: counted, not raised
        assert ea.counters.tx_errors == 3 and "unreachable" in ea.counters.last_error.lower()


# A server with two addresses (primary, second) and a client, IPv4 and IPv6.
two_addresses = pytest.mark.parametrize(
    ("primary", "second", "client"),
    [("198.18.8.1", "198.18.8.11", "198.18.8.2"), ("fd00:8::1", "fd00:8::11", "fd00:8::2")],
)


def _two_address_server(
    pair: tuple[Netns, str, str], second: str
) -> tuple[UdpEndpoint, UdpEndpoint]:
    """The server in namespace a (with `second` added), the peer in b."""
    n, a, b = pair
    n.address(a, "u0", f"{second}/{64 if ':' in second else 24}")
    with entered(a):
        server = UdpEndpoint.bind(0)
    with entered(b):
        peer = UdpEndpoint.bind(0)
    return server, peer


@pytest.mark.netns
@root
@two_addresses
def test_replies_leave_from_the_address_the_peer_reached(
    pair: tuple[Netns, str, str], primary: str, second: str, client: str
) -> None:
    n, a, _ = pair
    server, peer = _two_address_server(pair, second)
    with server, peer:
        # Before the peer speaks, the kernel picks the source; the peer then uses the other.
        server.send_batch((client, peer.port), [b"hello"])
        ((default, _),) = _receive(peer, 1)[1]
        assert default in (primary, second)
        other = second if default == primary else primary
        peer.send_batch((other, server.port), [b"to the other address"])
        assert _receive(server, 1)[1] == [(client, peer.port)]
        # Single datagrams and GSO batches both answer from the address it reached.
        server.send_batch((client, peer.port), [b"answer"])
        server.send_batch((client, peer.port), [b"x" * 1000] * 10 + [b"y"])
        got, addrs = _receive(peer, 12)
        assert len(got) == 12 and set(addrs) == {(other, server.port)}
        plen = 64 if ":" in other else 24
        n.exec(a, ["ip", "addr", "del", f"{other}/{plen}", "dev", "u0"])
        server.send_batch((client, peer.port), [b"after the address went away"])
        assert _receive(peer, 1)[1] == [(default, server.port)]
        assert server.counters.tx_errors == 0


@pytest.mark.netns
@root
@two_addresses
def test_a_peer_reaching_both_addresses_gets_the_kernels_choice_without_flipping(
    pair: tuple[Netns, str, str], primary: str, second: str, client: str
) -> None:
    """Issue 10, two-provider site: a node probes each of our endpoints, so its
    datagrams reach both local addresses; our source must stay the kernel's (its
    route works) instead of following whichever datagram came in last."""
    server, peer = _two_address_server(pair, second)
    with server, peer:
        server.send_batch((client, peer.port), [b"hello"])
        ((default, _),) = _receive(peer, 1)[1]
        other = second if default == primary else primary

        def reached(local: str) -> None:
            peer.send_batch((local, server.port), [b"probe"])
            ((src,),) = [_receive(server, 1)[1]]
            server.authenticated(src)
            server.end_round()

        def answered_from() -> str:
            server.send_batch((client, peer.port), [b"answer"])
            ((src, _),) = _receive(peer, 1)[1]
            return src

        reached(other)  # only the other address: answers from there
        assert answered_from() == other
        reached(default)  # both now: the kernel's choice
        assert answered_from() == default
        reached(other)  # the latest on the other address changes nothing
        assert answered_from() == default
        assert server.reply_from((client, peer.port)) == other
        assert server.counters.tx_errors == 0
