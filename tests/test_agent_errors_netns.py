"""Every way `lanspan agent` can fail to start says so in one line and exits 1.

The command runs for real (`.venv/bin/lanspan agent ...`) inside a namespace
this test creates; each case breaks one thing (a second agent, a busy UDP
port, a device that exists, a key that is missing, readable by others or
wrong, an unknown node, a missing interface, an invalid network file, a bad
metrics address) and expects exactly one line on stderr, `lanspan: ...`,
nothing on stdout, no traceback, exit status 1 — and nothing left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lanspan.config import encode_key, generate_private_key, public_key, write_private_key
from lanspan.lab.netns import Netns, require_root, run, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

LANSPAN = str(Path(sys.executable).parent / "lanspan")
PORT = 51820


@dataclass
class Host:
    ns: Netns
    name: str  # the namespace
    tmp: Path

    @property
    def key(self) -> Path:
        return self.tmp / "n1.key"

    def network(self, ports: str, name: str = "net.toml", network: str = "errs") -> Path:
        key = generate_private_key() if not self.key.exists() else None
        if key is not None:
            write_private_key(self.key, key)
        from lanspan.config import load_private_key

        mine = public_key(load_private_key(self.key))
        other = public_key(generate_private_key())
        text = (
            f'[network]\nname = "{network}"\nport = {PORT}\n\n'
            '[[segment]]\nname = "a"\nvlan = 100\nmtu = 1400\n\n'
            f'[[node]]\nname = "n1"\nsite = "s1"\npublic_key = "{encode_key(mine)}"\n'
            f'endpoints = ["198.18.0.1:{PORT}"]\nsegments = ["a"]\n{ports}\n'
            f'[[node]]\nname = "n2"\nsite = "s2"\npublic_key = "{encode_key(other)}"\n'
            f'endpoints = ["198.18.0.2:{PORT}"]\nsegments = ["a"]\n'
        )
        path = self.tmp / name
        path.write_text(text)
        return path

    def agent(
        self, network: Path, *extra: str, node: str = "n1", key: Path | None = None
    ) -> list[str]:
        return [
            LANSPAN,
            "agent",
            "--network",
            str(network),
            "--node",
            node,
            "--key",
            str(key or self.key),
            *extra,
        ]

    def fails(self, argv: list[str], expect: str) -> str:
        """Run `argv` in the namespace: one line on stderr containing `expect`, exit 1."""
        r = run(argv, ns=self.name, check=False, timeout=60)
        err = r.stderr
        assert "Traceback" not in err + r.stdout, err
        assert r.returncode == 1, (r.returncode, err)
        assert r.stdout == "", r.stdout
        assert err.endswith("\n") and err.count("\n") == 1, f"not one line:\n{err}"
        assert err.startswith("lanspan: "), err
        assert expect in err, f"{expect!r} not in {err!r}"
        return err.strip()


ACCESS = '  [[node.port]]\n  kind = "access"\n  name = "ga"\n  segment = "a"\n  interface = "ga"\n'


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with Netns() as ns:
        name = ns.add("h")
        for dev in ("ga", "up0"):  # veth pairs inside the namespace (no dummy module here)
            run(["ip", "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"], ns=name)
            run(["ip", "link", "set", dev, "up"], ns=name)
            run(["ip", "link", "set", f"{dev}p", "up"], ns=name)
        ns.address(name, "up0", "198.18.0.1/24")
        yield Host(ns, name, tmp_path)


def test_second_agent_busy_port_and_the_first_agent_survives(host: Host) -> None:
    net = host.network(ACCESS)
    sock = host.tmp / "n1.sock"
    first = host.ns.spawn(
        host.name, host.agent(net, "--control", str(sock)), log=host.tmp / "first.log"
    )
    first_log = host.tmp / "first.log"
    # up = its start line is logged (the socket is bound a little earlier)
    wait_for(
        lambda: " up (lanspan " in first_log.read_text() or first.poll() is not None,
        30,
        "first agent up",
    )
    assert first.poll() is None, first_log.read_text()
    log = first_log.read_text()
    assert "lanspan 0.1.0" in log or "(lanspan " in log, "the agent logs its version at start"

    # the same network and control path: the control socket is taken
    host.fails(
        host.agent(net, "--control", str(sock)), f"another agent is already listening on {sock}"
    )
    # another control path, the same UDP port
    other = host.tmp / "other.sock"
    host.fails(host.agent(net, "--control", str(other)), f"cannot open UDP port {PORT}")
    assert not other.exists(), "the failed agent left its control socket behind"
    assert first.poll() is None, "the first agent must be unharmed"
    assert host.ns.stop(first) == 0


def test_device_exists(host: Host) -> None:
    tap = '  [[node.port]]\n  kind = "access"\n  name = "ga"\n  segment = "a"\n  tap = "ga"\n'
    net = host.network(tap)
    sock = host.tmp / "n1.sock"
    err = host.fails(host.agent(net, "--control", str(sock)), "port ga: cannot create TAP")
    assert "'ga'" in err
    assert not sock.exists()
    # the device that was there is still there
    run(["ip", "link", "show", "ga"], ns=host.name)


def test_interface_missing(host: Host) -> None:
    net = host.network(ACCESS.replace('interface = "ga"', 'interface = "gmissing"'))
    host.fails(
        host.agent(net, "--control", str(host.tmp / "s.sock")),
        "port ga: cannot attach interface 'gmissing'",
    )


def test_key_missing_unreadable_bad_mode_or_wrong(host: Host) -> None:
    net = host.network(ACCESS)
    ctl = ("--control", str(host.tmp / "s.sock"))
    host.fails(host.agent(net, *ctl, key=host.tmp / "nope.key"), "nope.key")
    loose = host.tmp / "loose.key"
    loose.write_bytes(host.key.read_bytes())
    os.chmod(loose, 0o644)
    host.fails(host.agent(net, *ctl, key=loose), "loose.key")
    garbage = host.tmp / "garbage.key"
    garbage.write_text("not a key\n")
    os.chmod(garbage, 0o600)
    host.fails(host.agent(net, *ctl, key=garbage), "garbage.key")
    a_dir = host.tmp / "dir.key"
    a_dir.mkdir()
    host.fails(host.agent(net, *ctl, key=a_dir), "dir.key")
    wrong = host.tmp / "wrong.key"
    write_private_key(wrong, generate_private_key())
    host.fails(host.agent(net, *ctl, key=wrong), "is not node 'n1'")


def test_no_such_node(host: Host) -> None:
    net = host.network(ACCESS)
    host.fails(host.agent(net, node="n9"), "no node named 'n9'")


def test_network_file_invalid_or_missing(host: Host) -> None:
    host.network(ACCESS)  # writes the key
    bad = host.tmp / "bad.toml"
    bad.write_text('[network]\nname = "x"\nport = 99999\n[[segment]]\nname = 3\n')
    host.fails(host.agent(bad), "bad.toml")
    broken = host.tmp / "broken.toml"
    broken.write_text("[network\n")
    host.fails(host.agent(broken), "broken.toml")
    host.fails(host.agent(host.tmp / "absent.toml"), "absent.toml: no such file")


def test_metrics_address_bad_or_busy(host: Host) -> None:
    net = host.network(ACCESS)
    ctl = ("--control", str(host.tmp / "s.sock"))
    host.fails(host.agent(net, *ctl, "--metrics", "nonsense"), "--metrics")
    holder = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            host.name,
            sys.executable,
            "-c",
            "import socket,sys\n"
            "s=socket.socket(); s.bind(('127.0.0.1', 9474)); s.listen()\n"
            "print('bound', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "bound\n"
        # `:PORT` binds loopback: it meets the holder on 127.0.0.1
        host.fails(host.agent(net, *ctl, "--metrics", ":9474"), "127.0.0.1:9474")
        assert not (host.tmp / "s.sock").exists()
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


def test_version() -> None:
    r = subprocess.run([LANSPAN, "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 0
    from lanspan import __version__

    assert r.stdout.strip() == f"lanspan, version {__version__}"
