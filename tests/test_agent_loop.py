"""The agent loop's data path: what one `step` carries, and the UDP adapter's lone-datagram path."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest
from agent_inproc import agent_pair, frame

from lanspan.agent import loop as loop_mod
from lanspan.dataplane import udp as udp_mod
from lanspan.dataplane.udp import UdpEndpoint

MAC1 = bytes([2, 0, 0, 0, 0, 1])
MAC2 = bytes([2, 0, 0, 0, 0, 2])


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_guest_answer_to_our_write_leaves_in_the_same_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n2's guest answers the moment a frame is written to it (as the kernel answers a
    ping inside the write): one step of n2 takes the datagram in, writes it, reads the
    answer and sends it; the answer waits for no later poll or timer round."""
    with agent_pair(tmp_path, monkeypatch) as pair:
        pair.forwards("n1", "n2", b"warm1")
        pair.forwards("n2", "n1", b"warm2")  # both sessions up, both guest MACs learned
        a, b = pair.agents["n1"], pair.agents["n2"]
        guest2 = pair.ports["n2"]
        answer = frame(2, b"answer", dst=MAC1)
        write = guest2.write

        def echoing_write(data: bytes) -> None:
            write(data)
            if b"request" in data:
                guest2.inject(answer)

        monkeypatch.setattr(guest2, "write", echoing_write)
        for _ in range(3):  # anything in flight (probes) is taken in first
            a.step(0)
            b.step(0)
        pair.ports["n1"].inject(frame(1, b"request", dst=MAC2))
        a.step(0.5)  # the request leaves n1
        assert _readable(b.udp.fileno())
        b.step(0.5)  # one step: in, written, answered, out
        assert any(b"request" in f for f in guest2.received())
        assert _readable(a.udp.fileno()), "the answer did not leave in the same step"
        a.step(0.5)
        assert any(b"answer" in f for f in pair.ports["n1"].received())


def test_a_removed_port_is_not_polled_and_the_rest_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with agent_pair(tmp_path, monkeypatch) as pair:
        pair.forwards("n1", "n2", b"warm1")
        b = pair.agents["n2"]
        fd = b.ports["g"].fileno()
        b.remove_port("g", announce=False)
        assert fd not in b._readers
        b.step(0)  # no stale fd in either poll
        pair.ports["n1"].inject(frame(1, b"after"))
        pair.pump(lambda: b.udp.counters.rx_datagrams > 0, "n2 reading its UDP socket")


def _endpoints() -> tuple[UdpEndpoint, UdpEndpoint]:
    return UdpEndpoint.bind(0, "127.0.0.1"), UdpEndpoint.bind(0, "127.0.0.1")


def _recv(ep: UdpEndpoint) -> tuple[list[bytes], tuple[str, int]] | None:
    assert select.select([ep.fileno()], [], [], 2.0)[0]
    return ep.recv_batch()


def test_a_lone_datagram_is_one_send() -> None:
    a, b = _endpoints()
    with a, b:
        a.send_batch(("127.0.0.1", b.port), [b"lone"])
        assert (a.counters.tx_calls, a.counters.tx_datagrams, a.counters.tx_bytes) == (1, 1, 4)
        got = _recv(b)
        assert got is not None and got[0] == [b"lone"] and got[1] == ("127.0.0.1", a.port)
        a.send_batch(("127.0.0.1", b.port), [])
        assert a.counters.tx_calls == 1


def test_a_truncated_datagram_is_counted_and_the_next_one_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = _endpoints()
    with a, b:
        monkeypatch.setattr(udp_mod, "RECV_SIZE", 64)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with tx:
            tx.sendto(b"x" * 200, ("127.0.0.1", b.port))
            tx.sendto(b"small", ("127.0.0.1", b.port))
        got = _recv(b)
        assert got is not None and got[0] == [b"small"]
        assert b.counters.rx_errors == 1
        assert "truncated" in b.counters.last_error


def test_a_datagram_gets_the_kernels_arrival_time() -> None:
    """SO_TIMESTAMPNS: `last_arrival` is when the datagram reached the socket, not
    when it was read (what the agent's stale check measures)."""
    a, b = _endpoints()
    with a, b:
        a.send_batch(("127.0.0.1", b.port), [b"aged"])
        sent = time.time()
        time.sleep(0.3)
        got = _recv(b)
        assert got is not None and got[0] == [b"aged"]
        assert b.last_arrival is not None
        assert sent - 0.1 <= b.last_arrival <= sent + 0.1
        assert time.time() - b.last_arrival >= 0.25


def test_datagrams_that_waited_too_long_are_dropped_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: a backlog in the receive buffer is dropped, not worked through late.
    Data that waited longer than STALE_DATA_AFTER is counted as stale; a handshake
    message is given until STALE_HANDSHAKE_AFTER (then it never reaches the session:
    no bad_mac1 for it, no DH); a fresh frame still forwards."""
    initiation = b"\x01\0\0\0" + bytes(144)  # initiation-shaped (bad mac1)
    with agent_pair(tmp_path, monkeypatch) as pair:
        pair.forwards("n1", "n2", b"warm1")
        a, b = pair.agents["n1"], pair.agents["n2"]
        monkeypatch.setattr(loop_mod, "STALE_DATA_AFTER", 0.2)
        monkeypatch.setattr(loop_mod, "STALE_HANDSHAKE_AFTER", 0.5)
        before = b.drop_counts()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(initiation, ("127.0.0.1", b.udp.port))
            time.sleep(0.3)
            pair.ports["n1"].inject(frame(1, b"late"))
            a.step(0.5)  # the frame's datagram leaves n1
            tx.sendto(initiation, ("127.0.0.1", b.udp.port))
        assert _readable(b.udp.fileno())
        time.sleep(0.3)  # the first initiation waited 0.6 s, the frame and the second 0.3
        for _ in range(3):
            b.step(0)
        after = b.drop_counts()
        assert after["agent.stale_datagram"] >= 1
        assert after["agent.stale_handshake"] == 1
        # The second initiation was young enough: it reached the session.
        assert after["session.bad_mac1"] == before["session.bad_mac1"] + 1
        assert not any(b"late" in f for f in pair.ports["n2"].received())
        assert b.status().drops["agent.stale_handshake"] == 1
        pair.forwards("n1", "n2", b"fresh")


def test_a_socket_that_fell_behind_gets_more_reads_per_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: one read of the socket per frame of a flooding port left a guest's
    node behind its peers. While the last batch read had waited UDP_BEHIND, the
    socket's turn takes up to 1 + UDP_CATCH_UP_READS batches; without a backlog, one."""
    with agent_pair(tmp_path, monkeypatch) as pair:
        b = pair.agents["n2"]
        for _ in range(3):
            b.step(0)

        def burst() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for i in range(40):  # junk of distinct sizes (no GRO): cheap drops
                    tx.sendto(b"\x07" * (40 + i), ("127.0.0.1", b.udp.port))

        burst()
        calls = b.udp.counters.rx_calls
        b._read_rounds([b._readers[b.udp.fileno()]])
        assert b.udp.counters.rx_calls - calls == loop_mod.READ_ROUNDS  # fresh: one a round
        while b.udp.recv_batch() is not None:
            pass
        burst()
        time.sleep(2 * loop_mod.UDP_BEHIND)
        calls = b.udp.counters.rx_calls
        b._read_rounds([b._readers[b.udp.fileno()]])
        assert b.udp.counters.rx_calls - calls == 40  # behind: caught up in 3 rounds


def test_housekeeping_runs_when_due_not_per_wake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames crossing in many wakes within HOUSEKEEPING seconds run the gateway
    services' poll (and the rest of the housekeeping) once, not once per wake; once
    HOUSEKEEPING has passed, the next wake runs it again."""
    with agent_pair(tmp_path, monkeypatch) as pair:
        pair.forwards("n1", "n2", b"warm1")
        pair.forwards("n2", "n1", b"warm2")
        a = pair.agents["n1"]
        polls: list[float] = []
        real_poll = a.services.poll

        def counted(now: float) -> None:
            polls.append(now)
            real_poll(now)

        monkeypatch.setattr(a.services, "poll", counted)
        a.step(0)
        polls.clear()
        start = time.monotonic()
        wakes = 0
        while time.monotonic() - start < loop_mod.HOUSEKEEPING / 2:
            pair.ports["n1"].inject(frame(1, b"x", dst=MAC2))
            a.step(0.5)
            wakes += 1
        assert wakes >= 5
        assert len(polls) <= 1, (len(polls), wakes)
        time.sleep(loop_mod.HOUSEKEEPING)
        pair.ports["n1"].inject(frame(1, b"y", dst=MAC2))
        a.step(0.5)
        assert polls and polls[-1] >= start + loop_mod.HOUSEKEEPING


def test_an_idle_control_client_is_still_closed_when_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop wakes for a control client's idle timeout (housekeeping when due), with
    no traffic to wake it otherwise."""
    with agent_pair(tmp_path, monkeypatch, control=True) as pair:
        a = pair.agents["n1"]
        assert a.control is not None
        monkeypatch.setattr(a.control, "_idle_timeout", 0.3)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(tmp_path / "n1.sock"))
        try:
            start = time.monotonic()
            closed = False
            while time.monotonic() - start < 3.0 and not closed:
                a.step(1.0)
                closed = _readable(client.fileno()) and client.recv(1) == b""
            assert closed, "the idle client was not closed"
            assert time.monotonic() - start < 0.3 + loop_mod.HOUSEKEEPING + 0.5
        finally:
            client.close()


def test_a_send_to_an_authenticated_peer_follows_where_it_reached_us(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source of a send to an authenticated peer is kept (`_send_to`: no route
    look-up per send) and follows the peer as soon as it reaches another address."""
    server = UdpEndpoint.bind(0, "0.0.0.0")
    client = UdpEndpoint.bind(0, "127.0.0.1")
    with server, client:
        peer = ("127.0.0.1", client.port)

        def reached(local: str) -> None:
            client.send_batch((local, server.port), [b"probe"])
            got = _recv(server)
            assert got is not None and got[1] == peer
            server.authenticated(peer)
            server.end_round()

        def answered_from() -> str:
            server.send_batch(peer, [b"answer"])
            got = _recv(client)
            assert got is not None
            return got[1][0]

        reached("127.0.0.2")
        assert answered_from() == "127.0.0.2"
        looked_up: list[object] = []
        real = server._kernel_source
        monkeypatch.setattr(server, "_kernel_source", lambda a: looked_up.append(a) or real(a))
        assert answered_from() == "127.0.0.2"
        assert looked_up == [], "the second send looked the route up again"
        reached("127.0.0.3")  # the peer's datagrams now reach another address
        assert answered_from() == "127.0.0.3"
        assert server.counters.tx_errors == 0


def test_the_names_of_senders_are_kept_bounded_and_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`recv_batch` keeps each sender's printed address (`_names`); past MAX_NAMES
    it starts over, and every datagram still names its own sender."""
    monkeypatch.setattr(udp_mod, "MAX_NAMES", 2)
    server = UdpEndpoint.bind(0)  # "::": IPv4 senders as mapped addresses, where there is IPv6
    with server:
        for round_ in range(2):
            for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                    tx.bind((host, 0))
                    tx.sendto(b"hi", ("127.0.0.5", server.port))
                    got = _recv(server)
                    assert got is not None and got[1] == (host, tx.getsockname()[1]), round_
                    assert server.reply_from(got[1]) == "127.0.0.5"
                assert len(server._names) <= 2


def test_a_known_sender_and_local_address_are_not_printed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second datagram from a sender to the same local address calls no
    inet_ntop (IPv4 and IPv6 packet info alike): both names are kept (`_names`)."""
    server = UdpEndpoint.bind(0)
    printed: list[bytes] = []
    ntop = socket.inet_ntop

    def counted(family: int, packed: bytes) -> str:
        printed.append(packed)
        return ntop(family, packed)

    with server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.bind(("127.0.0.1", 0))
        tx.sendto(b"one", ("127.0.0.5", server.port))
        assert _recv(server) is not None
        monkeypatch.setattr(socket, "inet_ntop", counted)
        tx.sendto(b"two", ("127.0.0.5", server.port))
        got = _recv(server)
        assert got is not None and got[1] == ("127.0.0.1", tx.getsockname()[1])
        assert server.reply_from(got[1]) == "127.0.0.5"
        assert printed == []


def test_a_lone_unicast_takes_the_fast_paths_and_no_selector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hot unicast frame out and its datagram in: the node's fast paths (no output
    list), the reader run from the wake's own epoll events (the selector, with the
    control socket on it, is not asked); a control client still gets its answer."""
    with agent_pair(tmp_path, monkeypatch, control=True) as pair:
        pair.forwards("n1", "n2", b"warm1")
        pair.forwards("n2", "n1", b"warm2")
        a, b = pair.agents["n1"], pair.agents["n2"]
        for _ in range(3):  # both guest MACs learned, the switches' hot caches filled
            pair.ports["n1"].inject(frame(1, b"u", MAC2))
            pair.ports["n2"].inject(frame(2, b"u", MAC1))
            for _ in range(10):
                a.step(0.002)
                b.step(0.002)
        pair.ports["n1"].received(), pair.ports["n2"].received()
        asked: list[float] = []
        fast: list[str] = []
        for agent in (a, b):
            select_ = agent.sel.select

            def counted(timeout: float | None = None, select_: object = select_) -> object:
                asked.append(0.0 if timeout is None else timeout)
                return select_(timeout)  # type: ignore[operator]

            monkeypatch.setattr(agent.sel, "select", counted)
        monkeypatch.setattr(a.node, "take_outputs", _never(a.node.take_outputs, fast, "out"))
        monkeypatch.setattr(b.node, "take_outputs", _never(b.node.take_outputs, fast, "in"))
        for _ in range(3):  # nothing in flight (probes) before the frame
            a.step(0)
            b.step(0)
        asked.clear(), fast.clear()
        pair.ports["n1"].inject(frame(1, b"lone", dst=MAC2))
        a.step(0.5)
        assert _readable(b.udp.fileno())
        b.step(0.5)
        assert any(b"lone" in f for f in pair.ports["n2"].received())
        assert fast == [] and asked == []
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(tmp_path / "n1.sock"))
        try:
            client.sendall(b'{"op": "status"}\n')
            start = time.monotonic()
            while not _readable(client.fileno()) and time.monotonic() - start < 3.0:
                a.step(0.1)
            assert _readable(client.fileno()) and asked, "the control socket is served"
        finally:
            client.close()


def _never(take: object, calls: list[str], name: str) -> object:
    def taken() -> object:
        calls.append(name)
        return take()  # type: ignore[operator]

    return taken
