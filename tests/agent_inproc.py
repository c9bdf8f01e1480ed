"""Two real `Agent`s in this process, on loopback UDP, with socketpair ports.

No namespace and no device: `open_port` is replaced by a `PairPort` whose
other end the test holds, and the agents' loops are pumped one `step` at a
time until a condition holds (polling state, never a guessed sleep). The UDP
sockets bind free ports and talk only to 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lanspan.agent import loop
from lanspan.agent.loop import Agent, AgentOptions
from lanspan.config import encode_key, generate_private_key, load_network, public_key
from lanspan.config.model import Network, Port
from lanspan.dataplane.ports import PortCounters
from lanspan.wire.vnet import ZERO_HEADER

SEGMENT = "lan"


class PairPort:
    """A frame port on one end of a SOCK_SEQPACKET pair; `peer` is the test's end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.device = f"pair-{name}"
        self.counters = PortCounters()
        self._sock, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock.setblocking(False)
        self.peer.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> bytes | None:
        try:
            return self._sock.recv(70000)
        except BlockingIOError:
            return None

    def write(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError:
            self.counters.tx_dropped += 1

    def close(self) -> None:
        self._sock.close()
        self.peer.close()

    # the test's side
    def inject(self, frame: bytes) -> None:
        self.peer.send(ZERO_HEADER + frame)

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.peer.recv(70000)[len(ZERO_HEADER) :])
            except BlockingIOError:
                return out


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::", 0))
        return int(s.getsockname()[1])


def frame(src: int, payload: bytes, dst: bytes = b"\xff" * 6) -> bytes:
    """An Ethernet frame from 02:00:00:00:00:<src> (ethertype 0x88b5, local experimental)."""
    return dst + bytes([2, 0, 0, 0, 0, src]) + b"\x88\xb5" + payload.ljust(46, b"\0")


def network_toml(keys: dict[str, bytes], ports: dict[str, int]) -> str:
    lines = [
        '[network]\nname = "inproc"\nport = 51999\n',
        "[network.timers]\nprobe_interval = 0.2\nhold_down = 1.0\n",
        f'[[segment]]\nname = "{SEGMENT}"\nvlan = 10\nipv4 = "198.18.10.0/24"\nmtu = 1400\n',
    ]
    for name, key in keys.items():
        lines.append(
            f'[[node]]\nname = "{name}"\nsite = "site-{name}"\n'
            f'public_key = "{encode_key(public_key(key))}"\n'
            f'endpoints = ["127.0.0.1:{ports[name]}"]\nlisten_port = {ports[name]}\n'
            f'segments = ["{SEGMENT}"]\n'
            f'  [[node.port]]\n  kind = "access"\n  name = "g"\n  segment = "{SEGMENT}"\n'
            '  interface = "g-unused"\n'
        )
    return "\n".join(lines)


@dataclass
class Pair:
    """Agents n1 and n2, started; `ports[name]` is the test's end of that node's port."""

    agents: dict[str, Agent]
    ports: dict[str, PairPort]
    network_file: Path
    tmp: Path
    extra_steps: list[Callable[[], None]] = field(default_factory=list)

    def pump(self, until: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            for a in self.agents.values():
                a.step(0.005)
            for f in self.extra_steps:
                f()

    def forwards(self, src: str, dst: str, tag: bytes) -> None:
        """A broadcast frame into `src`'s port comes out of `dst`'s port.

        The frame is offered again every 0.2 s until it arrives (one offered
        before the session is up is not queued).
        """
        got: list[bytes] = []
        n = 1 if src == "n1" else 2
        offered = [0.0]

        def arrived() -> bool:
            got.extend(self.ports[dst].received())
            if any(tag in f for f in got):
                return True
            if time.monotonic() - offered[0] >= 0.2:
                offered[0] = time.monotonic()
                self.ports[src].inject(frame(n, tag))
            return False

        self.pump(arrived, f"frame {tag!r} from {src} at {dst}")

    def drops(self, name: str) -> dict[str, int]:
        return dict(self.agents[name].node.drop_counts())


@contextmanager
def agent_pair(tmp: Path, monkeypatch: pytest.MonkeyPatch, control: bool = False) -> Iterator[Pair]:
    keys = {"n1": generate_private_key(), "n2": generate_private_key()}
    udp = {"n1": free_udp_port(), "n2": free_udp_port()}
    net_file = tmp / "net.toml"
    net_file.write_text(network_toml(keys, udp))
    network = load_network(net_file)
    ports: dict[str, PairPort] = {}

    def fake_open_port(net: Network, node: str, port: Port) -> PairPort:
        p = PairPort(port.name)
        ports[node] = p
        return p

    monkeypatch.setattr(loop, "open_port", fake_open_port)
    agents: dict[str, Agent] = {}
    try:
        for name in keys:
            opts = AgentOptions(
                network_file=net_file,
                node=name,
                private_key=keys[name],
                control=tmp / f"{name}.sock" if control else None,
            )
            agents[name] = Agent(opts, network)
            agents[name].start()
        yield Pair(agents, ports, net_file, tmp)
    finally:
        for a in agents.values():
            a.close()
