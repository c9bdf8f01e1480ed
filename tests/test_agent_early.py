"""The ports' interfaces are attached before the agent's heavy start (issue 10, cold start).

A guest's ARP request sent while the agent imports and validates (~100 ms of CPU,
over a second when 13 agents start at once on 2 cores) was lost, and the guest's
kernel asked again only a second later. `lanspan.agent.early` attaches the
interfaces first; the agent adopts those sockets, so what the guests sent
meanwhile is queued in the kernel and forwarded once the session is up.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
from agent_inproc import SEGMENT, PairPort, frame, free_udp_port, network_toml

from lanspan.agent import early, loop
from lanspan.agent.early import EarlyPorts, open_early
from lanspan.agent.loop import Agent, AgentOptions
from lanspan.config import encode_key, generate_private_key, load_network, public_key
from lanspan.config.model import Network, Port

ROOT = Path(__file__).resolve().parents[1]


class Attach:
    """Stands in for PacketPort.attach: records the interfaces, fails for `missing`."""

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.devices: list[str] = []
        self.missing = missing

    def __call__(self, ifname: str, name: str | None = None) -> PairPort:
        self.devices.append(ifname)
        if ifname in self.missing:
            raise OSError(errno.ENODEV, "No such device")
        return PairPort(ifname)


def _file(tmp_path: Path, ports: str) -> Path:
    key = encode_key(public_key(generate_private_key()))
    other = encode_key(public_key(generate_private_key()))
    f = tmp_path / "net.toml"
    f.write_text(
        '[network]\nname = "e"\n'
        f'[[segment]]\nname = "{SEGMENT}"\nvlan = 10\nipv4 = "198.18.10.0/24"\n'
        f'[[node]]\nname = "n1"\nsite = "a"\npublic_key = "{key}"\nsegments = ["{SEGMENT}"]\n'
        f"{ports}\n"
        f'[[node]]\nname = "n2"\nsite = "b"\npublic_key = "{other}"\nsegments = ["{SEGMENT}"]\n'
        '  [[node.port]]\n  kind = "access"\n  name = "x"\n  segment = "lan"\n'
        '  interface = "not-mine"\n'
    )
    return f


PORTS = """
  [[node.port]]
  kind = "access"
  name = "g1"
  segment = "lan"
  interface = "ga"
  [[node.port]]
  kind = "trunk"
  name = "g2"
  vlans = [10]
  interface = "gt"
  [[node.port]]
  kind = "access"
  name = "g3"
  segment = "lan"
  tap = "tp"
  [[node.port]]
  kind = "host"
  name = "h"
  segment = "lan"
  address = ["198.18.10.1/24"]
"""


def test_the_interfaces_of_the_nodes_access_and_trunk_ports_are_attached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attach = Attach(missing=("gt",))
    monkeypatch.setattr(early.PacketPort, "attach", attach)
    got = open_early(_file(tmp_path, PORTS), "n1")
    # TAPs (created by the agent, no frame before) and other nodes' ports: none
    assert attach.devices == ["ga", "gt"]
    assert got.devices() == ["ga"]  # gt failed: the agent's own attach reports it
    port = got.take("ga", "g1")
    assert port is not None and port.name == "g1"
    assert got.take("ga", "g1") is None  # taken once
    port.close()
    assert got.close() == []


def test_a_preloaded_file_is_not_parsed_again_for_the_same_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attach = Attach()
    monkeypatch.setattr(early.PacketPort, "attach", attach)
    monkeypatch.setattr(early, "_PRELOADED", {})
    f = _file(tmp_path, PORTS)
    early.preload(f)
    real = early.tomllib.loads
    parsed: list[str] = []

    def counting(text: str) -> dict[str, object]:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(early.tomllib, "loads", counting)
    got = open_early(f, "n1")
    assert got.devices() == ["ga", "gt"] and parsed == []
    got.close()
    f.write_text(f.read_text().replace('interface = "ga"', 'interface = "gb"'))
    got = open_early(f, "n1")
    assert got.devices() == ["gb", "gt"] and len(parsed) == 1  # changed: read afresh
    got.close()


@pytest.mark.parametrize(
    "text",
    [
        "[network\n",  # not TOML
        'node = "n1"\n',  # not a table of nodes
        '[[node]]\nname = "n2"\n',  # no such node
        '[[node]]\nname = "n1"\nport = 3\n',
        '[[node]]\nname = "n1"\n[[node.port]]\nkind = "access"\ninterface = 7\n',
        '[[node]]\nname = "n1"\n[[node.port]]\nkind = "access"\ninterface = "a"\ntap = "a"\n',
    ],
)
def test_a_file_not_as_expected_opens_nothing_and_raises_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    attach = Attach()
    monkeypatch.setattr(early.PacketPort, "attach", attach)
    f = tmp_path / "net.toml"
    f.write_text(text)
    assert open_early(f, "n1").devices() == []
    assert open_early(tmp_path / "missing.toml", "n1").devices() == []
    assert attach.devices == []


_PROBE = """
import json, os, runpy, sys
from lanspan.dataplane import packet

os.geteuid = lambda: 0  # the agent's root check: this probe attaches nothing real

def attach(ifname, name=None):
    print(json.dumps({"device": ifname, "modules": sorted(sys.modules)}), flush=True)
    raise OSError(19, "No such device")

packet.PacketPort.attach = staticmethod(attach)
sys.argv = ["lanspan", "agent", "--network", sys.argv[1], "--node", "n1", "--key", sys.argv[2]]
runpy.run_module("lanspan", run_name="__main__")
"""

HEAVY = (
    "lanspan.config",  # the loader and the model: most of the start's CPU
    "lanspan.node",
    "lanspan.session",
    "lanspan.switch",
    "lanspan.agent.loop",
    "lanspan.control",
    "cryptography",
)


def test_lanspan_agent_attaches_before_importing_the_loader_core_and_loop(
    tmp_path: Path,
) -> None:
    f = _file(tmp_path, PORTS)
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, str(f), str(tmp_path / "no-such.key")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    # the agent went on after the early attach and said what stops it (the key file)
    assert r.returncode == 1 and "no-such.key" in r.stderr, r.stderr
    seen = [json.loads(line) for line in r.stdout.splitlines()]
    assert [s["device"] for s in seen] == ["ga", "gt"]
    mods = seen[0]["modules"]
    assert "lanspan.agent.early" in mods
    loaded = [m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []


def test_a_frame_sent_before_the_agent_was_set_up_crosses_once_the_session_is_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {"n1": generate_private_key(), "n2": generate_private_key()}
    udp = {"n1": free_udp_port(), "n2": free_udp_port()}
    net_file = tmp_path / "net.toml"
    net_file.write_text(network_toml(keys, udp))
    network = load_network(net_file)
    opened: dict[str, PairPort] = {}

    def fake_open_port(net: Network, node: str, port: Port) -> PairPort:
        opened[node] = PairPort(port.name)
        return opened[node]

    monkeypatch.setattr(loop, "open_port", fake_open_port)
    guest = PairPort("attached-early")  # n1's interface, attached by lanspan.agent.early
    guest.inject(frame(1, b"sent while n1 was starting"))  # an ARP request, say
    spare = PairPort("a kernel-plane port's")
    pre = EarlyPorts({"g-unused": guest, "not-a-port": spare})
    agents: dict[str, Agent] = {}
    try:
        for name in ("n1", "n2"):
            opts = AgentOptions(network_file=net_file, node=name, private_key=keys[name])
            agents[name] = Agent(opts, network, early=pre if name == "n1" else None)
            agents[name].start()
        assert "n1" not in opened and agents["n1"].ports["g"] is guest
        assert guest.name == "g"
        assert spare._sock.fileno() == -1  # what no port took is closed once ports are open
        got: list[bytes] = []
        deadline = loop.time.monotonic() + 10
        while not any(b"sent while n1 was starting" in f for f in got):
            assert loop.time.monotonic() < deadline, "the early frame never crossed"
            for a in agents.values():
                a.step(0.005)
            got += opened["n2"].received()
        assert agents["n1"].node.status(loop.time.monotonic()).peers[0].session == "up"
    finally:
        for a in agents.values():
            a.close()
