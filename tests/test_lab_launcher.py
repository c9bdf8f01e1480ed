"""The lab's launcher does once, before it forks the agents, what each would do alike."""

from __future__ import annotations

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
