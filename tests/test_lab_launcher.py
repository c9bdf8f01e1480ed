"""The lab's launcher does once, before it forks the agents, what each would do alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from agent_inproc import network_toml

from lanspan.agent import early
from lanspan.config import generate_private_key, load
from lanspan.lab import launcher


def test_the_network_file_is_read_and_validated_once_before_the_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "_PRELOADED", {})
    monkeypatch.setattr(early, "_PRELOADED", {})
    f = tmp_path / "net.toml"
    keys = {"n1": generate_private_key(), "n2": generate_private_key()}
    f.write_text(network_toml(keys, {"n1": 51001, "n2": 51002}))
    argv = ["--network", str(f), "--node", "n1", "--key", str(tmp_path / "k")]
    requests: list[launcher.Request] = [
        {"ns": "a", "argv": argv, "log": "a.log"},
        {"ns": "b", "argv": [*argv[:3], "n2", *argv[4:]], "log": "b.log"},
        {"ns": "c", "argv": ["--help"], "log": "c.log"},  # not plain: left to click
    ]
    launcher._prepare(requests)
    assert list(load._PRELOADED) == [str(f)] and list(early._PRELOADED) == [str(f)]
    assert load.load_network(f) is load._PRELOADED[str(f)][1]


_ANSWERS = """
import importlib, json, os, sys, time
from lanspan.lab.launcher import PRELOADED_MODULES
for name in PRELOADED_MODULES:
    importlib.import_module(name)
from lanspan.config import generate_private_key, load_network
from lanspan.control.server import _encode, handle_request
from lanspan.node.core import NodeCore

net = load_network(sys.argv[1])
core = NodeCore(net, "n1", bytes.fromhex(sys.argv[2]), random_bytes=os.urandom,
                wall_time=time.time, now=time.monotonic())

class Source:
    def status(self): return core.status(time.monotonic())
    def sessions(self): return core.session_states()
    def macs(self, segment): return core.mac_rows(segment, time.monotonic())
    def reload(self): return {}

before = set(sys.modules)
for op in ("ping", "sessions", "status", "macs"):
    answer = handle_request(json.dumps({"op": op}).encode(), Source())
    assert answer["ok"], answer
    _encode(answer)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_an_agents_control_answers_import_nothing_the_launcher_did_not(tmp_path: Path) -> None:
    keys = {"n1": generate_private_key(), "n2": generate_private_key()}
    f = tmp_path / "net.toml"
    f.write_text(network_toml(keys, {"n1": 51001, "n2": 51002}))
    out = subprocess.run(
        [sys.executable, "-c", _ANSWERS, str(f), keys["n1"].hex()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # imported by each forked agent at the lab's first question, they cost its CPU
    assert json.loads(out.stdout.splitlines()[-1]) == []
