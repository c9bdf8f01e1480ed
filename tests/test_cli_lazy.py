"""The command line loads a command's modules only when that command runs.

Checked by what a fresh interpreter has in `sys.modules` after a command,
not by wall-clock time (which depends on the machine's load).
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from lanspan.cli import COMMANDS, LazyGroup, cli

HEAVY = (
    "pydantic",
    "lanspan.lab",
    "lanspan.config.parse",
    "lanspan.config.load",
    "lanspan.node.core",
    "lanspan.agent",
    "lanspan.control.server",
    "lanspan.control.metrics",
    "cryptography",
)

_PROBE = """
import json, sys
from lanspan.cli import cli
try:
    cli(sys.argv[1:], prog_name="lanspan")
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(*args: str) -> set[str]:
    """The modules a fresh interpreter holds after running `lanspan ARGS`."""
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60
    )
    last = r.stderr.strip().splitlines()[-1]
    return set(json.loads(last))


def heavy_in(mods: set[str]) -> list[str]:
    return sorted(h for h in HEAVY if h in mods or any(m.startswith(h + ".") for m in mods))


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("show", "--help"),
        ("reload", "--help"),
        ("show", "--socket", "/nonexistent/lanspan-test.sock"),
        ("show", "macs", "--socket", "/nonexistent/lanspan-test.sock"),
        ("reload", "--socket", "/nonexistent/lanspan-test.sock"),
    ],
)
def test_light_commands_import_nothing_heavy(args: tuple[str, ...]) -> None:
    mods = modules_after(*args)
    assert heavy_in(mods) == []
    if args[0] in ("show", "reload") and "--help" not in args:
        # it did run: the client and the renderer are loaded
        assert {"lanspan.control.client", "lanspan.control.commands"} <= mods


def test_help_lists_commands_without_loading_them() -> None:
    mods = modules_after("--help")
    assert not any(m.endswith(".commands") or m == "lanspan.agent.command" for m in mods)


def test_heavy_command_still_loads_what_it_needs() -> None:
    """The probe can fail: `check --help` does import the config parser."""
    assert "lanspan.config.load" in modules_after("check", "--help")


def test_help_table_matches_each_command() -> None:
    """The short help in COMMANDS is the one the loaded command would show."""
    group = cli
    assert isinstance(group, LazyGroup)
    ctx = click.Context(group)
    for name, (_, short) in COMMANDS.items():
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        assert cmd.name == name
        assert cmd.get_short_help_str(10_000) == short, name


def test_help_text_same_lazy_or_loaded() -> None:
    lazy = LazyGroup(name="lanspan", lazy=COMMANDS, help=cli.help)
    before = CliRunner().invoke(lazy, ["--help"])
    for name in COMMANDS:
        lazy.get_command(click.Context(lazy), name)
    after = CliRunner().invoke(lazy, ["--help"])
    assert before.exit_code == after.exit_code == 0
    assert before.output == after.output
    for name in COMMANDS:
        assert f"  {name} " in before.output


def test_unknown_command_is_a_usage_error() -> None:
    r = CliRunner().invoke(cli, ["nosuch"])
    assert r.exit_code == 2
    assert "No such command" in r.output
