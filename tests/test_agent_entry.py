"""`lanspan agent` with plain, valid options starts without click (issue 10, cold start:
every agent of a host starts at once, and click's import is CPU each one spends).

`lanspan.agent.start.OPTIONS` and the click command must agree option by option;
anything the fast parser does not take plainly goes to click, which explains it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from lanspan.agent.command import agent
from lanspan.agent.start import OPTIONS, parse

ROOT = Path(__file__).resolve().parents[1]


def test_the_fast_table_is_the_click_commands_options() -> None:
    seen = {}
    ctx = click.Context(agent)
    for p in agent.params:
        assert isinstance(p, click.Option)
        (name,) = [o for o in p.opts if o.startswith("--")]
        choices = tuple(p.type.choices) if isinstance(p.type, click.Choice) else None
        default = None if p.required else p.get_default(ctx)
        seen[name] = (p.name, not p.is_flag, p.required, choices, default)
    assert seen == OPTIONS


def test_plain_valid_options_parse() -> None:
    got = parse(["--network", "n.toml", "--node=a", "--key", "k", "--metrics", ":9100",
                 "--no-kernel-filter", "--log-level", "debug"])  # fmt: skip
    assert got == {
        "network_file": Path("n.toml"),
        "node": "a",
        "key_file": Path("k"),
        "control": None,
        "metrics": ":9100",
        "run_dir": None,
        "state_dir": None,
        "no_kernel_filter": True,
        "tcp_segmentation": "parity",
        "parity_group": "5",
        "log_level": "debug",
        "log_format": "text",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["--network", "n", "--node", "a"],  # --key missing
        ["--network", "n", "--node", "a", "--key"],  # its value missing
        ["--network", "n", "--node", "a", "--key", "k", "--log-level", "loud"],
        ["--network", "n", "--node", "a", "--key", "k", "--nod", "b"],
        ["--network", "n", "--node", "a", "--key", "k", "--node", "b"],
        ["--network", "n", "--node", "a", "--key", "k", "--no-kernel-filter=yes"],
        ["--network", "n", "--node", "a", "--key", "k", "extra"],
        ["--network", "--node", "a", "--key", "k"],
    ],
)
def test_anything_else_is_left_to_click(argv: list[str]) -> None:
    assert parse(argv) is None


_PROBE = """
import json, sys
sys.argv = ["lanspan", *sys.argv[1:]]
from lanspan.__main__ import main
try:
    main()
except SystemExit as e:
    print(json.dumps([e.code, sorted(sys.modules)]))
"""


def _run(*args: str) -> tuple[int, set[str], str]:
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60
    )
    code, mods = json.loads(r.stdout.strip().splitlines()[-1])
    return code, set(mods), r.stderr + r.stdout


def test_the_agent_entry_imports_no_click(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    code, mods, out = _run("agent", "--network", str(missing), "--node", "a", "--key", "k")
    assert code == 1 and "lanspan: " in out  # not root, or the missing file: one line
    assert "lanspan.agent.start" in mods
    assert not [m for m in mods if m == "click" or m.startswith("click.")]


def test_help_and_mistakes_still_get_clicks_answer() -> None:
    code, mods, out = _run("agent", "--help")
    assert code == 0 and "--tcp-segmentation" in out and "click" in mods
    code, _, out = _run("agent", "--network", "n", "--node", "a")
    assert code == 2 and "Missing option '--key'" in out
