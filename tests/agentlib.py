"""Real agents in namespaces for the operating tests (reload, show, metrics).

A `Cluster` builds, inside one `Netns` set, an underlay bridge ("core"), one
namespace per node with `up0` on that bridge, and one guest namespace per
node on segment "a" (a veth whose node end, `ga`, is the node's access port).
Nodes are added and started one by one, so a test can grow or shrink the
network file while agents run. Every process is started through the `Netns`
set and ended by PID; addresses are in 198.18.0.0/15 only.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lanspan.config import encode_key, generate_private_key, public_key, write_private_key
from lanspan.lab.netns import Netns, run, wait_for

SEGMENT = "a"
GUEST_SUBNET = "198.18.100"
UNDERLAY = "198.18.0"
PORT = 51820


def lanspan_cli(
    *args: str, ns: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """`python -m lanspan ARGS`, never raising on a non-zero exit."""
    return run([sys.executable, "-m", "lanspan", *args], ns=ns, check=False, timeout=timeout)


@dataclass
class Member:
    name: str
    index: int
    key: bytes
    ns: str
    guest: str
    endpoints: list[str]  # underlay addresses written into the network file
    more_segments: list[str] = field(default_factory=list)  # carried besides SEGMENT
    more_ports: list[str] = field(default_factory=list)  # [[node.port]] tables, as TOML

    @property
    def guest_ip(self) -> str:
        return f"{GUEST_SUBNET}.{10 + self.index}"


@dataclass
class Cluster:
    ns: Netns
    tmp: Path
    members: dict[str, Member] = field(default_factory=dict)
    in_file: list[str] = field(default_factory=list)
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    core: str = ""
    more_segments: list[str] = field(default_factory=list)  # [[segment]] tables, as TOML

    @property
    def network_file(self) -> Path:
        return self.tmp / "net.toml"

    def setup_core(self) -> None:
        self.core = self.ns.add("core")
        run(["ip", "link", "add", "br0", "type", "bridge"], ns=self.core)
        run(["ip", "link", "set", "br0", "up"], ns=self.core)

    def add_member(self, name: str) -> Member:
        """Namespaces, underlay link, guest and key for node `name` (not yet in the file)."""
        index = len(self.members) + 1
        nns = self.ns.add(name)
        self.ns.veth(nns, "up0", self.core, f"p{name}")
        run(["ip", "link", "set", f"p{name}", "master", "br0"], ns=self.core)
        underlay = f"{UNDERLAY}.{index}"
        self.ns.address(nns, "up0", f"{underlay}/24")
        guest = self.ns.add(f"{name}g")
        self.ns.veth(guest, "eth0", nns, "ga")
        key = generate_private_key()
        write_private_key(self.tmp / f"{name}.key", key)
        m = Member(name, index, key, nns, guest, [underlay])
        self.ns.address(guest, "eth0", f"{m.guest_ip}/24")
        self.members[name] = m
        return m

    def render(self, names: list[str] | None = None, extra: str = "") -> str:
        lines = [
            f'[network]\nname = "optest"\nport = {PORT}\n',
            "[network.timers]\nprobe_interval = 0.2\nhold_down = 1.0\n",
            f'[[segment]]\nname = "{SEGMENT}"\nvlan = 100\nipv4 = "{GUEST_SUBNET}.0/24"\n'
            "mtu = 1400\n",
            *self.more_segments,
        ]
        for name in names if names is not None else self.in_file:
            m = self.members[name]
            eps = ", ".join(f'"{e}:{PORT}"' for e in m.endpoints)
            segs = ", ".join(f'"{x}"' for x in [SEGMENT, *m.more_segments])
            lines.append(
                f'[[node]]\nname = "{name}"\nsite = "site-{name}"\n'
                f'public_key = "{encode_key(public_key(m.key))}"\n'
                f"endpoints = [{eps}]\nsegments = [{segs}]\n"
                f'  [[node.port]]\n  kind = "access"\n  name = "ga"\n  segment = "{SEGMENT}"\n'
                '  interface = "ga"\n' + "".join(m.more_ports)
            )
        return "\n".join(lines) + extra

    def write(self, names: list[str] | None = None) -> None:
        """Write the network file with `names` (default: the current members in the file)."""
        if names is not None:
            self.in_file = list(names)
        self.network_file.write_text(self.render())

    def sock(self, name: str) -> Path:
        return self.tmp / f"{name}.sock"

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        m = self.members[name]
        proc = self.ns.spawn(
            m.ns,
            [
                sys.executable,
                "-m",
                "lanspan",
                "agent",
                "--network",
                str(self.network_file),
                "--node",
                name,
                "--key",
                str(self.tmp / f"{name}.key"),
                "--control",
                str(self.sock(name)),
                *extra,
            ],
            log=self.log(name),
        )
        self.agents[name] = proc
        wait_for(lambda: self.sock(name).exists() or proc.poll() is not None, 30, f"{name} up")
        assert proc.poll() is None, self.log(name).read_text()
        return proc

    def stop(self, name: str) -> None:
        proc = self.agents.pop(name)
        code = self.ns.stop(proc)
        assert code == 0, f"agent {name} exited {code}: {self.log(name).read_text()}"

    def stop_all(self) -> None:
        for name in list(self.agents):
            self.stop(name)

    def alive(self, name: str) -> bool:
        return self.agents[name].poll() is None

    # -- the control socket, through the CLI -----------------------------------

    def show(self, name: str) -> dict[str, Any]:
        r = lanspan_cli("show", "--json", "--socket", str(self.sock(name)))
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def peers(self, name: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.show(name)["peers"]}

    def reload(self, name: str) -> subprocess.CompletedProcess[str]:
        return lanspan_cli("reload", "--socket", str(self.sock(name)))

    def sighup(self, name: str) -> None:
        self.agents[name].send_signal(signal.SIGHUP)

    def sessions_up(self, name: str, peers: set[str]) -> bool:
        got = self.peers(name)
        return set(got) == peers and all(p["session"] == "up" for p in got.values())

    def mesh_up(self, names: list[str] | None = None) -> bool:
        names = names if names is not None else self.in_file
        return all(self.sessions_up(n, set(names) - {n}) for n in names)

    def ping(self, src: str, dst: str, count: int = 1) -> bool:
        r = run(
            ["ping", "-c", str(count), "-W", "1", "-i", "0.2", self.members[dst].guest_ip],
            ns=self.members[src].guest,
            check=False,
        )
        return r.returncode == 0


def make_cluster(ns: Netns, tmp: Path, names: list[str]) -> Cluster:
    c = Cluster(ns, tmp)
    c.setup_core()
    for name in names:
        c.add_member(name)
    c.write(names)
    return c


# -- a continuous ping, judged by its sequence numbers -------------------------

_REPLY = re.compile(r"bytes from .*icmp_seq=(\d+)")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?")


@dataclass
class PingResult:
    transmitted: int
    received: int
    duplicates: int
    replies: list[int]  # icmp_seq of every reply, in arrival order
    output: str

    @property
    def missing(self) -> list[int]:
        """Sequence numbers with no reply before the last one answered (in-flight excluded)."""
        if not self.replies:
            return []
        got = set(self.replies)
        return [s for s in range(1, max(got) + 1) if s not in got]


class ContinuousPing:
    """`ping -i INTERVAL` from one guest to another, stopped with SIGINT."""

    def __init__(self, ns: Netns, src_ns: str, target: str, log: Path, interval: float = 0.05):
        self.log = log
        self.markers: list[tuple[float, str]] = []
        self.proc = ns.spawn(
            src_ns, ["ping", "-n", "-D", "-i", str(interval), "-W", "2", target], log=log
        )

    def mark(self, label: str) -> None:
        """Note when a step starts, to place a loss in the test's story."""
        self.markers.append((time.time(), label))

    def story(self, result: PingResult) -> str:
        lost = set(result.missing)
        lines = [f"[{t:.3f}] --- {label}" for t, label in self.markers]
        for line in result.output.splitlines():
            m = re.match(r"\[(\d+\.\d+)\].*icmp_seq=(\d+)", line)
            if m and any(abs(int(m.group(2)) - s) <= 3 for s in lost):
                lines.append(line)
        lines += [f"lost icmp_seq={s}" for s in sorted(lost)]
        return "\n".join(sorted(lines))

    def replies(self) -> int:
        return len(_REPLY.findall(self.log.read_text(errors="replace")))

    def wait_replies(self, n: int, timeout: float = 30.0) -> None:
        start = self.replies()
        wait_for(lambda: self.replies() >= start + n, timeout, f"{n} more ping replies")

    def finish(self) -> PingResult:
        """Stop ping (SIGINT: it prints its summary) and parse what it wrote."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        text = self.log.read_text(errors="replace")
        m = _SUMMARY.search(text)
        assert m is not None, f"no ping summary in:\n{text[-2000:]}"
        return PingResult(
            transmitted=int(m.group(1)),
            received=int(m.group(2)),
            duplicates=int(m.group(3) or 0),
            replies=[int(s) for s in _REPLY.findall(text)],
            output=text,
        )
