"""Every `lanspan lab ... --json` prints one JSON document on one line (`--pretty` indents)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lanspan.lab import checks, tools
from lanspan.lab.commands import lab
from lanspan.lab.state import State

ROOT = Path(__file__).resolve().parent.parent
SMALL = str(ROOT / "examples" / "small.toml")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab commands check for root first")


def _one_line(out: str) -> Any:
    lines = out.splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


def test_status_json_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(lab, ["status", SMALL, "--run-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    doc = _one_line(res.output)
    assert doc["lab"] == "small" and doc["up"] is False


def test_status_json_pretty_is_indented(tmp_path: Path) -> None:
    args = ["status", SMALL, "--run-dir", str(tmp_path), "--json", "--pretty"]
    res = CliRunner().invoke(lab, args)
    assert res.exit_code == 0, res.output
    assert len(res.output.splitlines()) > 1
    assert json.loads(res.output)["lab"] == "small"


def test_test_json_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    State(path=tmp_path / "state.json", lab="small").save()  # "up", as far as `test` asks
    result = {"lab": "small", "passed": True, "checks": [{"name": "a\nb", "passed": True}],
              "faults": []}  # fmt: skip
    monkeypatch.setattr(checks, "run_all", lambda run, faults=True, log=print: result)
    monkeypatch.setattr(tools, "problem", lambda names, what: None)
    res = CliRunner().invoke(lab, ["test", SMALL, "--run-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert _one_line(res.stdout) == result
