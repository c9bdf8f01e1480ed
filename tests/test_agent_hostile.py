"""Issue 11, the agent's side: each finding as a regression test.

- no key material in `AgentOptions`' repr;
- metrics and control clients: an idle timeout, and a client limit that idle
  connections cannot use to push out a scrape;
- `--metrics :PORT` binds loopback;
- the UDP reply-from table records a sender only once it authenticated, in
  a bounded LRU, so spoofed senders cannot push real peers out;
- a vnet header that passes validation survives every later use (a tag
  pushed or popped on the way out), and a fan-out is never cut half-way.
"""

from __future__ import annotations

import base64
import contextlib
import random
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lanspan.agent.command import metrics_address
from lanspan.agent.loop import AgentOptions
from lanspan.config import encode_key, generate_private_key, parse_network, public_key
from lanspan.control import _conn
from lanspan.control.metrics import MetricsServer
from lanspan.control.server import ControlServer
from lanspan.dataplane import udp as udp_mod
from lanspan.dataplane.udp import UdpEndpoint
from lanspan.errors import BadPacket
from lanspan.node.core import NodeCore
from lanspan.node.outputs import Send, Write
from lanspan.wire import vnet
from lanspan.wire.vnet import VnetHeader

# -- no key material in a repr -------------------------------------------------


def test_agent_options_repr_has_no_key_material() -> None:
    key = generate_private_key()
    opts = AgentOptions(network_file=Path("/etc/lanspan/net.toml"), node="n1", private_key=key)
    text = repr(opts) + str(opts)
    for form in (repr(key), key.hex(), base64.b64encode(key).decode(), encode_key(key)):
        assert form not in text
    assert "n1" in text  # still a useful repr


# -- metrics and control clients -----------------------------------------------


class Source:
    def status(self) -> dict[str, object]:
        return {"node": "n1", "network": "t", "peers": [], "drops": {}}

    def macs(self, segment: str | None) -> list[dict[str, object]]:
        return []

    def reload(self) -> dict[str, object]:
        return {"ok": True, "changes": [], "error": None}


def pump(sel: selectors.BaseSelector, until: Callable[[], bool], what: str) -> None:
    """Run the server's selector in this thread until `until()` (no guessed sleep)."""
    deadline = time.monotonic() + 10
    while not until():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for key, mask in sel.select(0.01):
            key.data(mask)


@pytest.fixture
def metrics() -> Iterator[tuple[MetricsServer, selectors.BaseSelector]]:
    srv = MetricsServer("127.0.0.1:0", Source())
    sel = selectors.DefaultSelector()
    srv.register(sel)
    yield srv, sel
    srv.close()
    sel.close()


def connect(addr: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(addr, timeout=5)
    s.setblocking(False)
    return s


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def scrape(srv: MetricsServer, sel: selectors.BaseSelector, s: socket.socket) -> bytes:
    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    buf = bytearray()

    def done() -> bool:
        try:
            chunk = s.recv(65536)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True
        buf.extend(chunk)
        return chunk == b""

    pump(sel, done, "the scrape's answer")
    return bytes(buf)


def accepted_or_refused(srv: MetricsServer, idle: list[socket.socket]) -> bool:
    """Every connection of `idle` (and the scraper) is either a client or turned away."""
    return srv.client_count + sum(map(closed_by_server, idle)) >= len(idle) + 1


def test_idle_metrics_connections_cannot_push_out_a_scrape(
    metrics: tuple[MetricsServer, selectors.BaseSelector],
) -> None:
    srv, sel = metrics
    scraper = connect(srv.address)  # connected first, request not sent yet
    pump(sel, lambda: srv.client_count == 1, "the scraper accepted")
    idle: list[socket.socket] = []
    try:
        for _ in range(4):  # 32 more, in groups the listen backlog holds
            idle += [connect(srv.address) for _ in range(8)]
            pump(sel, lambda group=list(idle): accepted_or_refused(srv, group), "accept")
        assert srv.client_count == 16
        answer = scrape(srv, sel, scraper)
        assert answer.startswith(b"HTTP/1.0 200 OK"), answer[:100]
    finally:
        for s in [scraper, *idle]:
            s.close()


def test_a_scrape_gets_in_past_sixteen_long_idle_connections(
    metrics: tuple[MetricsServer, selectors.BaseSelector],
) -> None:
    srv, sel = metrics
    idle = [connect(srv.address) for _ in range(16)]
    try:
        pump(sel, lambda: srv.client_count == 16, "16 idle clients")
        since = time.monotonic()
        pump(sel, lambda: time.monotonic() - since > _conn.EVICT_AFTER, "idle long enough")
        scraper = connect(srv.address)
        answer = scrape(srv, sel, scraper)
        scraper.close()
        assert answer.startswith(b"HTTP/1.0 200 OK"), answer[:100]
        assert sum(map(closed_by_server, idle)) == 1  # one idle client made room
    finally:
        for s in idle:
            s.close()


def test_idle_metrics_clients_time_out(
    metrics: tuple[MetricsServer, selectors.BaseSelector],
) -> None:
    srv, sel = metrics
    idle = [connect(srv.address) for _ in range(3)]
    try:
        pump(sel, lambda: srv.client_count == 3, "3 clients")
        due = srv.next_timer()
        assert due is not None and due <= time.monotonic() + 10.0
        srv.handle_timer(due - 0.01)
        assert srv.client_count == 3  # not yet
        srv.handle_timer(due)
        assert srv.client_count < 3  # the first one to go idle is gone
        srv.handle_timer(time.monotonic() + 10.0)
        assert srv.client_count == 0 and srv.next_timer() is None
        assert all(map(closed_by_server, idle))
    finally:
        for s in idle:
            s.close()


def test_idle_control_clients_time_out(tmp_path: Path) -> None:
    sel = selectors.DefaultSelector()
    srv = ControlServer(tmp_path / "c.sock", Source(), idle_timeout=30.0)
    srv.register(sel)
    try:
        quiet = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        quiet.connect(str(tmp_path / "c.sock"))
        quiet.setblocking(False)
        talker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        talker.connect(str(tmp_path / "c.sock"))
        talker.setblocking(False)
        pump(sel, lambda: srv.client_count == 2, "2 clients")
        t0 = time.monotonic()
        talker.sendall(b'{"op": "ping"}\n')
        answer = bytearray()

        def answered() -> bool:
            with contextlib.suppress(BlockingIOError):
                answer.extend(talker.recv(4096))
            return answer.endswith(b"\n")

        pump(sel, answered, "pong")
        srv.handle_timer(t0 + 30.0)  # the quiet one is 30 s idle, the talker less
        assert srv.client_count == 1 and closed_by_server(quiet)
        assert not closed_by_server(talker)
        srv.handle_timer(time.monotonic() + 30.0)
        assert srv.client_count == 0
        quiet.close()
        talker.close()
    finally:
        srv.close()
        sel.close()


def test_metrics_port_alone_binds_loopback() -> None:
    assert metrics_address(":9474") == "127.0.0.1:9474"
    assert metrics_address("0.0.0.0:9474") == "0.0.0.0:9474"
    assert metrics_address("[::]:9474") == "[::]:9474"
    assert metrics_address(None) is None
    srv = MetricsServer(str(metrics_address(":0")), Source())
    try:
        assert srv.address[0] == "127.0.0.1"
    finally:
        srv.close()


# -- reply-from: recorded after authentication only, bounded LRU -----------------


@pytest.fixture
def endpoint() -> Iterator[UdpEndpoint]:
    ep = UdpEndpoint.bind(0, "127.0.0.1")
    yield ep
    ep.close()


def receive_one(ep: UdpEndpoint, sender: socket.socket) -> tuple[str, int]:
    sender.sendto(b"x" * 40, ("127.0.0.1", ep.port))
    deadline = time.monotonic() + 5
    while True:
        got = ep.recv_batch()
        if got is not None:
            return got[1]
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_reply_from_only_after_authentication_and_bounded(
    endpoint: UdpEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(udp_mod, "MAX_REPLY_FROM", 8)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
    try:
        for s in senders:
            s.bind(("127.0.0.1", 0))
        peers = [receive_one(endpoint, s) for s in senders[:10]]
        for p in peers:  # within the round, replies leave from where the sender came in
            assert endpoint.reply_from(p) == "127.0.0.1"
            endpoint.authenticated(p)
        endpoint.end_round()
        # LRU of 8: the first two authenticated are gone, the last eight kept
        assert [endpoint.reply_from(p) for p in peers] == [None, None] + ["127.0.0.1"] * 8
        # a flood of senders that never authenticate: remembered for their round only...
        for s in senders[10:]:
            junk = receive_one(endpoint, s)
            assert endpoint.reply_from(junk) == "127.0.0.1"
            endpoint.end_round()
            assert endpoint.reply_from(junk) is None
        # ...and the real peers are all still there
        assert [endpoint.reply_from(p) for p in peers[2:]] == ["127.0.0.1"] * 8
        # a peer seen again moves to the young end
        again = receive_one(endpoint, senders[2])
        endpoint.authenticated(again)
        endpoint.end_round()
        endpoint.authenticated(receive_one(endpoint, senders[0]))
        assert endpoint.reply_from(peers[2]) == "127.0.0.1"
        assert endpoint.reply_from(peers[3]) is None  # the oldest made room
    finally:
        for s in senders:
            s.close()


def test_datagram_says_whether_it_authenticated() -> None:
    keys = {n: generate_private_key() for n in ("n1", "n2")}
    net = parse_network(_two_nodes(keys, trunk=False), "t.toml")
    node = NodeCore(
        net,
        "n1",
        keys["n1"],
        random_bytes=random.Random(1).randbytes,
        wall_time=lambda: 1.7e9,
        now=1.0,
    )
    assert node.datagram(b"\x04" + bytes(40), ("198.18.0.2", 51820), 1.0) is False


# -- vnet headers: validation covers every later use -------------------------------

u16 = st.integers(0, 0xFFFF)
flags = st.sampled_from([0, vnet.NEEDS_CSUM, vnet.DATA_VALID, vnet.NEEDS_CSUM | vnet.DATA_VALID])
gso = st.sampled_from(sorted(vnet.KNOWN_GSO_TYPES))


@given(st.builds(VnetHeader, flags, gso, u16, u16, u16, u16), st.integers(0, 65535 + 4 + 14))
@example(VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 65535, 1448, 34, 16), 65535 + 18)
@example(VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 66, 1448, 65535 - 16, 14), 65535 + 18)
@example(VnetHeader(0, vnet.GSO_NONE, 2, 0, 0, 0), 100)
def test_a_validated_header_survives_a_tag_pushed_or_popped(hdr: VnetHeader, n: int) -> None:
    try:
        vnet.validate_untrusted(hdr, n)
    except BadPacket:
        return
    for delta in (vnet.TAG_SHIFT, -vnet.TAG_SHIFT):
        vnet.build(hdr.shifted(delta))  # raises nothing


def _two_nodes(keys: dict[str, bytes], trunk: bool) -> str:
    text = ['[network]\nname = "t"\n[[segment]]\nname = "a"\nvlan = 10\nmtu = 9000\n']
    for i, (name, key) in enumerate(keys.items(), 1):
        text.append(
            f'[[node]]\nname = "{name}"\nsite = "s{name}"\n'
            f'public_key = "{encode_key(public_key(key))}"\n'
            f'endpoints = ["198.18.0.{i}:51820"]\nsegments = ["a"]\n'
            '  [[node.port]]\n  kind = "access"\n  name = "pa"\n  segment = "a"\n'
        )
        if trunk and name == "n2":
            text.append('  [[node.port]]\n  kind = "trunk"\n  name = "pt"\n  vlans = [10]\n')
    return "\n".join(text)


def test_egress_to_a_trunk_never_raises_mid_fan_out() -> None:
    """A peer's superframe with hdr_len 65 535 reaches an access and a trunk port.

    Before: it passed validation, the access port was written, then pushing
    the trunk tag raised ValueError out of `datagram`. Now it is dropped as a
    bad vnet header before any port is written; a sound one reaches both.
    """
    keys = {n: generate_private_key() for n in ("n1", "n2")}
    net = parse_network(_two_nodes(keys, trunk=True), "t.toml")
    rng = random.Random(5)
    now = 100.0
    nodes = {
        n: NodeCore(net, n, k, random_bytes=rng.randbytes, wall_time=lambda: 1.7e9, now=now)
        for n, k in keys.items()
    }
    addr = {"n1": ("198.18.0.1", 51820), "n2": ("198.18.0.2", 51820)}
    by_addr = {v: k for k, v in addr.items()}
    written: dict[str, list[tuple[str, bytes]]] = {"n1": [], "n2": []}
    authenticated: list[bool] = []

    def run(seconds: float) -> None:
        nonlocal now
        for _ in range(round(seconds / 0.01)):
            now = round(now + 0.01, 6)
            queue = []
            for name, node in nodes.items():
                if node.next_timer() <= now:
                    node.handle_timer(now)
                for out in node.take_outputs():
                    if isinstance(out, Send):
                        queue += [(name, out.target, b) for b in out.batch]
                    elif isinstance(out, Write):
                        written[name].append((out.port, out.data))
            for src, dst, data in queue:
                authenticated.append(nodes[by_addr[dst]].datagram(data, addr[src], now))

    run(1.0)
    assert nodes["n1"]._sessions.status("n2").established
    assert True in authenticated  # transport data says it authenticated
    frame = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x08\x00" + bytes(65535 - 14 + 4)
    bad = VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 65535, 1448, 34, 16)
    good = VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 66, 1448, 34, 16)
    written["n2"].clear()
    nodes["n1"].frame_from_port("pa", vnet.build(bad) + frame, now)
    run(0.2)  # raises nothing on the way
    assert written["n2"] == []
    # a local port's header is checked like a peer's: dropped before it leaves n1
    assert nodes["n1"].drop_counts()["vnet.hdr_len"] >= 1
    nodes["n1"].frame_from_port("pa", vnet.build(good) + frame, now)
    run(0.2)
    ports = {p: d[:10] for p, d in written["n2"]}
    assert set(ports) == {"pa", "pt"}
    assert vnet.parse_untrusted(ports["pa"]) == good
    assert vnet.parse_untrusted(ports["pt"]) == good.shifted(4)
