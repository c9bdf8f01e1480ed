"""`lanspan show`, `show macs`, `reload` against a real ControlServer on a temp socket."""

from __future__ import annotations

import json
import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lanspan.control import commands
from lanspan.control.render import render_macs, render_status
from lanspan.control.server import ControlServer

STATUS: dict[str, object] = {
    "node": "gra-hv1",
    "network": "acme",
    "public_key": "Zm9v",
    "listen_port": 51820,
    "uptime_s": 5,
    "segments": [{"name": "lan", "vlan": 10, "vni": 10, "mtu": 1400, "macs": 1}],
    "ports": [],
    "peers": [],
    "drops": {},
    "counters": {},
}
MACS: list[dict[str, object]] = [
    {"segment": "lan", "vlan": 10, "mac": "52:54:00:00:00:01", "where": "port vm1", "age": 2},
    {"segment": "api", "vlan": 20, "mac": "52:54:00:00:00:02", "where": "peer x", "age": 3},
]


class Source:
    def __init__(self) -> None:
        self.reload_result: dict[str, object] = {"ok": True, "changes": [], "error": None}

    def status(self) -> dict[str, object]:
        return STATUS

    def macs(self, segment: str | None) -> list[dict[str, object]]:
        return [m for m in MACS if segment in (None, m["segment"])]

    def reload(self) -> dict[str, object]:
        return self.reload_result


def cli() -> click.Group:
    @click.group()
    def lanspan() -> None:
        pass

    commands.register(lanspan)
    return lanspan


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(commands, "RUN_DIR", tmp_path)
    monkeypatch.delenv("LANSPAN_SOCKET", raising=False)
    return tmp_path


@pytest.fixture
def agent(run_dir: Path) -> Iterator[tuple[Path, Source]]:
    src = Source()
    path = run_dir / "acme.sock"
    srv = ControlServer(path, src)
    sel = selectors.DefaultSelector()
    srv.register(sel)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for key, mask in sel.select(0.02):
                key.data(mask)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield path, src
    stop.set()
    t.join(5)
    srv.close()
    sel.close()


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli(), list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_show_text_and_json(agent: tuple[Path, Source]) -> None:
    path, _ = agent
    code, out, _ = invoke("show", "--socket", str(path))
    assert (code, out) == (0, render_status(STATUS))
    code, out, _ = invoke("show", "--json", "--socket", str(path))
    assert code == 0
    assert json.loads(out) == STATUS
    assert len(out.splitlines()) == 1  # one document per line, as every --json


def test_show_finds_the_only_agent_and_by_network(agent: tuple[Path, Source]) -> None:
    assert invoke("show")[:2] == (0, render_status(STATUS))
    assert invoke("show", "--network", "acme")[:2] == (0, render_status(STATUS))


def test_socket_from_environment(agent: tuple[Path, Source]) -> None:
    path, _ = agent
    code, out, _ = invoke("show", "macs", env={"LANSPAN_SOCKET": str(path)})
    assert (code, out) == (0, render_macs(MACS))


def test_show_macs_options(agent: tuple[Path, Source]) -> None:
    path, _ = agent
    code, out, _ = invoke("show", "macs", "--segment", "api", "--socket", str(path))
    assert (code, out) == (0, render_macs([MACS[1]]))
    code, out, _ = invoke("show", "--socket", str(path), "macs", "--json")
    assert code == 0
    assert json.loads(out) == MACS
    code, out, _ = invoke("show", "--json", "macs", "-s", "lan")
    assert json.loads(out) == [MACS[0]]


def test_reload_reports_changes(agent: tuple[Path, Source]) -> None:
    _, src = agent
    assert invoke("reload")[:2] == (0, "reloaded: no changes\n")
    src.reload_result = {
        "ok": True,
        "changes": ["segment api added", "port vm2 removed"],
        "error": None,
    }
    assert invoke("reload")[:2] == (
        0,
        "reloaded: 2 changes\n  - segment api added\n  - port vm2 removed\n",
    )


def test_reload_rejected_exits_1(agent: tuple[Path, Source]) -> None:
    _, src = agent
    src.reload_result = {
        "ok": False,
        "changes": [],
        "error": "/etc/lanspan/acme.toml: 1 error(s)\n  - segments[1].vlan: 10 is used twice",
    }
    code, out, err = invoke("reload")
    assert code == 1
    assert out == ""
    assert "reload rejected" in err
    assert "segments[1].vlan: 10 is used twice" in err
    code, out, _ = invoke("reload", "--json")
    assert code == 1
    assert json.loads(out)["ok"] is False


def test_no_agent_is_explained(run_dir: Path) -> None:
    code, _, err = invoke("show")
    assert code == 1
    assert f"no agent at {run_dir / 'lanspan.sock'}: is `lanspan agent` running?" in err
    code, _, err = invoke("show", "macs", "--network", "other")
    assert code == 1
    assert f"no agent at {run_dir / 'other.sock'}" in err


def test_several_agents_need_a_choice(run_dir: Path) -> None:
    socks = []
    for name in ("acme", "beta"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(run_dir / f"{name}.sock"))
        socks.append(s)
    try:
        code, _, err = invoke("show")
        assert code == 2
        assert "several agents run here (acme, beta)" in err
    finally:
        for s in socks:
            s.close()


def test_bad_network_name(run_dir: Path) -> None:
    code, _, err = invoke("show", "--network", "../etc")
    assert code == 2
    assert "is not a network name" in err
