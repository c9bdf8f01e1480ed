"""The lab asks the agents' control sockets in-process, all at once (no subprocess per node)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from lanspan.lab.runner import LabRun

N = 8


def _lab_file(tmp_path: Path) -> Path:
    text = '[lab]\nname = "ctl"\n\n[[segment]]\nname = "lan"\nvlan = 10\nipv4 = "198.18.10.0/24"\n'
    text += '\n[[site]]\nname = "gra"\n\n[[site]]\nname = "rbx"\n'
    for i in range(N):
        text += f'\n[[node]]\nname = "n{i}"\nsite = "{"gra" if i % 2 else "rbx"}"\n'
    path = tmp_path / "ctl.toml"
    path.write_text(text)
    return path


class FakeAgents:
    """One control socket per node; each answers only once all N requests are in flight."""

    def __init__(self, run: LabRun, names: list[str]) -> None:
        self.barrier = threading.Barrier(len(names), timeout=3.0)
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        for name in names:
            path = run.control(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(path))
            s.listen(4)
            self.socks.append(s)
            t = threading.Thread(target=self._serve, args=(s, name, names), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, s: socket.socket, name: str, names: list[str]) -> None:
        conn, _ = s.accept()
        with conn:
            buf = b""
            while b"\n" not in buf:
                buf += conn.recv(4096)
            assert json.loads(buf)["op"] == "sessions"  # not the whole status document
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                conn.sendall(b'{"ok": false, "error": "asked one at a time"}\n')
                return
            doc = {"ok": True, "result": {p: "up" for p in names if p != name}}
            conn.sendall(json.dumps(doc).encode() + b"\n")

    def close(self) -> None:
        for s in self.socks:
            s.close()
        for t in self.threads:
            t.join(5)


def test_sessions_ask_every_agent_in_process_and_concurrently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = LabRun(_lab_file(tmp_path), run_dir=tmp_path / "run")
    plan = run.plan()
    names = [n.name for n in plan.nodes]
    assert len(names) == N

    def no_subprocess(*a: object, **k: object) -> None:
        raise AssertionError(f"a subprocess was started: {a}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    agents = FakeAgents(run, names)
    try:
        sessions = run.sessions(plan)
    finally:
        agents.close()
    assert set(sessions) == set(names)
    for name, peers in sessions.items():
        assert peers == {p: "up" for p in names if p != name}, (name, peers)


def test_a_silent_agent_reads_as_not_answering(tmp_path: Path) -> None:
    run = LabRun(_lab_file(tmp_path), run_dir=tmp_path / "run")
    path = run.control("n0")
    path.parent.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)  # accepts, never answers
    try:
        assert run.show("n0", timeout=0.3) is None
        assert run.show("n1") is None  # no socket at all
    finally:
        s.close()
