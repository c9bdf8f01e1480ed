"""Start-up order (issue 10, cold start): the agent's initiations leave before the
slow part of its set-up, and the kernel filter then passes the indexes they use
(every index of the run carries the prefix its constant rule checks).

One real `Agent` in this process on loopback UDP; its peer is a plain socket of
the test. `open_port` is replaced to look, at the moment the ports open, at
what the peer has received already.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest
from agent_inproc import PairPort, free_udp_port, network_toml
from test_kernel_filter import FakeNft

from lanspan.agent import loop, nftables
from lanspan.agent.loop import Agent, AgentOptions
from lanspan.agent.nftables import FilterSpec, KernelFilter
from lanspan.config import generate_private_key, load_network
from lanspan.config.model import Network, Port
from lanspan.wire import messages


def _two_nodes(tmp_path: Path) -> tuple[dict[str, bytes], dict[str, int], Network]:
    """Keys, UDP ports and the loaded network file of two in-process nodes."""
    keys = {"n1": generate_private_key(), "n2": generate_private_key()}
    udp = {"n1": free_udp_port(), "n2": free_udp_port()}
    net_file = tmp_path / "net.toml"
    net_file.write_text(network_toml(keys, udp))
    return keys, udp, load_network(net_file)


def test_initiations_leave_before_the_ports_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, udp, network = _two_nodes(tmp_path)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", udp["n2"]))
    peer.setblocking(False)
    seen_at_port_open: list[bytes] = []

    def fake_open_port(net: Network, node: str, port: Port) -> PairPort:
        with contextlib.suppress(BlockingIOError):
            seen_at_port_open.append(peer.recv(2048))
        return PairPort(port.name)

    monkeypatch.setattr(loop, "open_port", fake_open_port)
    agent = Agent(
        AgentOptions(network_file=tmp_path / "net.toml", node="n1", private_key=keys["n1"]), network
    )
    try:
        agent.start()
        assert len(seen_at_port_open) == 1
        first = seen_at_port_open[0]
        assert first[0] == messages.TYPE_INITIATION and len(first) == messages.INITIATION_LEN
        assert agent.node.receiver_indexes()  # the handshake it began
    finally:
        agent.close()
        peer.close()


def test_the_filter_comes_after_the_first_handshakes_with_their_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, udp, network = _two_nodes(tmp_path)
    fake = FakeNft(tables={nftables.table_name("inproc", udp["n1"])})
    installs: list[FilterSpec] = []

    def leftover(spec: FilterSpec) -> bool:
        return nftables.remove_leftover(spec, fake, which=lambda _: "/usr/sbin/nft")

    class Filter(KernelFilter):
        @classmethod
        def start(cls, spec: FilterSpec, *a: object, **kw: object) -> KernelFilter | None:
            installs.append(spec)
            return KernelFilter.start(spec, fake, which=lambda _: "/usr/sbin/nft")

    monkeypatch.setattr(loop, "open_port", lambda net, node, port: PairPort(port.name))
    monkeypatch.setattr(loop, "remove_leftover", leftover)
    monkeypatch.setattr(loop, "KernelFilter", Filter)
    monkeypatch.setattr(loop, "KERNEL_FILTER_AFTER", 0.2)
    opts = AgentOptions(
        network_file=tmp_path / "net.toml", node="n1", private_key=keys["n1"], kernel_filter=True
    )
    agent = Agent(opts, network)
    try:
        agent.start()
        # at the start: only the leftover removed, one nft call; no table yet
        assert [argv[1:] for argv, _ in fake.calls] == [
            ["delete", "table", "inet", nftables.table_name("inproc", udp["n1"])]
        ]
        assert agent.kernel_filter is None and installs == []
        began = agent.node.receiver_indexes()
        assert began
        while agent.kernel_filter is None:
            agent.step(0.05)
        prefix = agent.index_prefix
        assert installs and installs[0].receiver_prefix == prefix
        assert all(i >> 16 == prefix for i in began | agent.node.receiver_indexes())
        rule = f"@th,112,16 != 0x{nftables.prefix_element(prefix):04x} counter"
        assert rule in fake.scripts()[-1]
        scripts = len(fake.scripts())
        for _ in range(5):
            agent.step(0.02)
        assert len(fake.scripts()) == scripts  # nothing moves the rule afterwards
    finally:
        agent.close()


def test_the_up_line_says_the_start_up_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What a cold start of many agents waits for, in every agent's log (bench/cold_start)."""
    keys, _udp, network = _two_nodes(tmp_path)
    monkeypatch.setattr(loop, "open_port", lambda net, node, port: PairPort(port.name))
    monkeypatch.setattr(loop.time, "process_time", lambda: 0.1234)
    agent = Agent(
        AgentOptions(network_file=tmp_path / "net.toml", node="n1", private_key=keys["n1"]), network
    )
    try:
        with caplog.at_level("INFO", logger="lanspan.agent"):
            agent.start()
        up = [r.getMessage() for r in caplog.records if " up (lanspan " in r.getMessage()]
        assert len(up) == 1 and up[0].endswith(", start-up cpu 123 ms")
    finally:
        agent.close()
