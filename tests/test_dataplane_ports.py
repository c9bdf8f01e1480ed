"""Frame ports in namespaces: TAP superframes, AF_PACKET with 802.1Q tags."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from lanspan.dataplane import FramePort, PacketPort, TapPort
from lanspan.lab.netns import Netns, entered, require_root
from lanspan.wire import vnet

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

ETH_P_EXP = 0x88B5  # IEEE local experimental ethertype: nothing else sends it


@pytest.fixture
def netns() -> Iterator[Netns]:
    with Netns() as n:
        yield n


def _tcp_through(
    srv_ns: str, cli_ns: str, dst: str, a: FramePort, b: FramePort, total: int = 8 << 20
) -> tuple[int, int]:
    """Send `total` bytes of TCP from `cli_ns` to `dst` in `srv_ns` while this test
    forwards every read between ports `a` and `b` unchanged; return (GSO reads, largest)."""
    with entered(srv_ns):
        srv = socket.socket()
        srv.bind((dst, 5001))
        srv.listen()
        srv.setblocking(False)
    with entered(cli_ns):
        cli = socket.socket()
        cli.setblocking(False)
    payload = bytes(range(256)) * 256
    sent = received = gso_reads = biggest = 0
    conn: socket.socket | None = None
    with srv, cli:
        cli.connect_ex((dst, 5001))
        deadline = time.monotonic() + 20
        while received < total:
            assert time.monotonic() < deadline, f"received {received} of {total}"
            rl: list[FramePort | socket.socket] = [a, b, srv]
            if conn is not None:
                rl.append(conn)
            wl = [cli] if sent < total else []
            r, w, _ = select.select(rl, wl, [], 1.0)
            for src, dst_port in ((a, b), (b, a)):
                while (data := src.read()) is not None:
                    h = vnet.parse_untrusted(data)
                    vnet.validate_untrusted(h, len(data) - vnet.VNET_HDR_LEN)
                    if h.gso_type == vnet.GSO_TCPV4:
                        gso_reads += 1
                        biggest = max(biggest, len(data))
                    dst_port.write(data)
            if srv in r and conn is None:
                conn, _ = srv.accept()
                conn.setblocking(False)
            if conn is not None:
                try:
                    while chunk := conn.recv(1 << 20):
                        received += len(chunk)
                except BlockingIOError:
                    pass
            if cli in w:
                with contextlib.suppress(BlockingIOError):
                    sent += cli.send(payload[: min(len(payload), total - sent)])
        assert conn is not None
        conn.close()
    return gso_reads, biggest


def test_tap_superframes_and_gso_write(netns: Netns) -> None:
    """TCP through two TAPs joined by this test: reads are GSO superframes with a
    vnet header, and writing them as they are delivers the stream."""
    a, b = netns.add("ta"), netns.add("tb")
    with entered(a):
        ta = TapPort.create("tp0", 1500, bytes.fromhex("020000000a01"))
        ta.addresses(["198.18.7.1/24"])
    with entered(b):
        tb = TapPort.create("tp0", 1500, bytes.fromhex("020000000a02"))
        tb.addresses(["198.18.7.2/24"])
    ports: list[FramePort] = [ta, tb]
    assert all(isinstance(p, FramePort) for p in ports)
    with ta, tb:
        gso_reads, biggest = _tcp_through(b, a, "198.18.7.2", ta, tb)
        assert gso_reads > 0 and biggest > 1500 * 4, (gso_reads, biggest)
        assert ta.counters.tx_errors == tb.counters.tx_errors == 0
    # closed TAPs disappear with their fd
    assert "tp0" not in netns.exec(a, ["ip", "-o", "link"]).stdout


def test_packet_ports_carry_veth_superframes(netns: Netns) -> None:
    """Two guests on veths to one node; PacketPorts on the node-side ends joined by
    this test: superframes keep their GSO header both ways."""
    ga, gb, node = netns.add("ga"), netns.add("gb"), netns.add("nd")
    netns.veth(ga, "eth0", node, "pa")
    netns.veth(gb, "eth0", node, "pb")
    netns.address(ga, "eth0", "198.18.9.1/24")
    netns.address(gb, "eth0", "198.18.9.2/24")
    with entered(node):
        pa, pb = PacketPort.attach("pa"), PacketPort.attach("pb")
    with pa, pb:
        gso_reads, biggest = _tcp_through(gb, ga, "198.18.9.2", pa, pb)
        assert gso_reads > 0 and biggest > 1500 * 4, (gso_reads, biggest)
        assert pa.counters.tx_errors == pb.counters.tx_errors == 0


def _raw(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_EXP))
    s.bind((ifname, ETH_P_EXP))
    s.setblocking(False)
    return s


def _frame(tag: int | None, marker: bytes) -> bytes:
    dst, src = b"\xff" * 6, bytes.fromhex("020000000b01")
    vlan = struct.pack("!HH", 0x8100, tag) if tag is not None else b""
    return dst + src + vlan + struct.pack("!H", ETH_P_EXP) + marker.ljust(46, b"\0")


def _read_marked(port: FramePort, marker: bytes, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no frame with {marker!r} on {port.device}"
        select.select([port], [], [], left)
        while (data := port.read()) is not None:
            if marker in data:
                return data


def _promisc(netns: Netns, ns: str, ifname: str) -> int:
    out = netns.exec(ns, ["ip", "-d", "link", "show", ifname]).stdout
    return int(out.split("promiscuity ")[1].split()[0])


def test_packet_port_tags_write_and_promisc(netns: Netns) -> None:
    a, b = netns.add("pa"), netns.add("pb")
    netns.veth(a, "pv", b, "pv")
    with entered(b):
        port = PacketPort.attach("pv")
    with entered(a):
        raw = _raw("pv")
    with port, raw:
        assert port.device == "pv" and _promisc(netns, b, "pv") == 1
        # tagged frame: the kernel moves the tag to metadata; the port puts it back
        raw.send(_frame(10, b"tagged-10"))
        data = _read_marked(port, b"tagged-10")
        assert data[: vnet.VNET_HDR_LEN] == vnet.ZERO_HEADER
        assert data[vnet.VNET_HDR_LEN :] == _frame(10, b"tagged-10")
        raw.send(_frame(0x2005, b"prio-tag"))  # PCP 1, VID 5
        assert _read_marked(port, b"prio-tag")[vnet.VNET_HDR_LEN :] == _frame(0x2005, b"prio-tag")
        raw.send(_frame(None, b"untagged"))
        assert _read_marked(port, b"untagged")[vnet.VNET_HDR_LEN :] == _frame(None, b"untagged")
        # write: delivered to the other side, not read back by ourselves
        port.write(vnet.with_zero_header(_frame(11, b"from-port")))
        deadline = time.monotonic() + 5
        while True:
            assert time.monotonic() < deadline, "written frame not delivered"
            select.select([raw], [], [], 1.0)
            try:
                got = raw.recv(2048)
            except BlockingIOError:
                continue
            if b"from-port" in got:
                break
        assert port.counters.tx_frames == 1 and port.counters.tx_errors == 0
        raw.send(_frame(None, b"after"))
        seen: list[bytes] = []
        deadline = time.monotonic() + 5
        while not any(b"after" in s for s in seen):
            assert time.monotonic() < deadline
            select.select([port], [], [], 1.0)
            while (d := port.read()) is not None:
                seen.append(d)
        assert not any(b"from-port" in s for s in seen), "own write read back"
    assert _promisc(netns, b, "pv") == 0  # promiscuity restored on close


@pytest.mark.parametrize("fallback", [False, True], ids=["ignore_outgoing", "pkttype_filter"])
def test_packet_port_skips_outgoing(netns: Netns, fallback: bool) -> None:
    """Frames leaving the interface (sent by anything on the node) are not read;
    where PACKET_IGNORE_OUTGOING is missing they are dropped by packet type."""
    a, b = netns.add("fa"), netns.add("fb")
    netns.veth(a, "fv", b, "fv")
    with entered(b):
        port = PacketPort.attach("fv")
        local = _raw("fv")  # another sender on the node, e.g. its own stack
    with entered(a):
        raw = _raw("fv")
    with port, raw, local:
        if fallback:
            from lanspan.dataplane.packet import PACKET_IGNORE_OUTGOING, SOL_PACKET

            port._sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 0)  # as on old kernels
            port.ignore_outgoing = False
        local.send(_frame(None, b"local-out"))
        raw.send(_frame(None, b"theirs"))
        seen: list[bytes] = []
        deadline = time.monotonic() + 5
        while not any(b"theirs" in s for s in seen):
            assert time.monotonic() < deadline
            select.select([port], [], [], 1.0)
            while (d := port.read()) is not None:
                seen.append(d)
        assert not any(b"local-out" in s for s in seen)
