"""What a lab made, kept in `<run dir>/state.json`, and the processes it started.

Shared by the runner, the fault injection and the impairments; imports no
other part of the lab but `netns`, so none of them import each other to reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from lanspan.records import record

STATE = "state.json"


@record
class State:
    """What a lab made, saved after every change."""

    path: Path
    lab: str = ""
    prefix: str = ""
    lab_file: str = ""
    namespaces: list[str] = field(default_factory=list)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    helpers: list[dict[str, Any]] = field(default_factory=list)
    impairments: dict[str, dict[str, float]] = field(default_factory=dict)  # "tag:site" -> values
    impair_generation: int = 0
    phase: str = "building"

    @classmethod
    def load(cls, run_dir: Path) -> State | None:
        p = run_dir / STATE
        if not p.exists():
            return None
        d = json.loads(p.read_text())
        return cls(path=p, **d)

    def save(self) -> None:
        d = {k: v for k, v in self.__dict__.items() if k != "path"}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(d, indent=1))
        os.replace(tmp, self.path)

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [x.decode(errors="replace") for x in raw.split(b"\0") if x]


def alive_as(pid: int, argv: list[str]) -> bool:
    """True if `pid` still runs `argv` (after `ip netns exec` exec'd into it)."""
    cmd = cmdline(pid)
    return bool(cmd) and cmd is not None and cmd[-len(argv) :] == argv


def reap(pid: int, timeout: float) -> bool:
    """Wait for `pid` to go (reaping it if it is our child); True if gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return True
        except ChildProcessError:
            pass
        if not Path(f"/proc/{pid}").exists():
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True  # a zombie of some other parent: gone for our purposes
        except OSError:
            return True
        time.sleep(0.02)
    return False


def spawn(ns: str, argv: list[str], log: Path) -> int:
    """Start `argv` in namespace `ns` in its own session, output appended to `log`; its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid


__all__ = ["STATE", "State", "alive_as", "cmdline", "reap", "spawn"]
