"""`lanspan` command line: one group; each area contributes its commands.

The group loads a command's module only when that command runs (click's
"lazily loading subcommands" pattern): `lanspan show` imports the control
client and the renderer, not the lab, pydantic or the config parser, and
`lanspan --help` lists the commands from the table below without importing
any of them. Keep each short help string in `COMMANDS` in step with the
command's docstring (tests/test_cli_lazy.py checks both).
"""

from __future__ import annotations

import importlib

import click

from lanspan import __version__

__all__ = ["COMMANDS", "LazyGroup", "cli", "main"]

# name -> ("module:attribute", short help shown by `lanspan --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "agent": (
        "lanspan.agent.command:agent",
        "Run the lanspan agent for NODE in the foreground (logs to stderr).",
    ),
    "check": (
        "lanspan.config.commands:check",
        "Validate a network file and summarise it; list every error otherwise.",
    ),
    "genkey": (
        "lanspan.config.commands:genkey",
        "Generate a node private key (base64 on stdout, or into --out FILE).",
    ),
    "pubkey": (
        "lanspan.config.commands:pubkey",
        "Print the public key of the private key read on stdin.",
    ),
    "show": (
        "lanspan.control.commands:show",
        "Show the agent's live state: segments, ports, peers, paths, drops.",
    ),
    "reload": (
        "lanspan.control.commands:reload",
        "Make the agent re-read its network file (like `systemctl reload`).",
    ),
    "lab": (
        "lanspan.lab.commands:lab",
        "Build a lanspan network on this machine in network namespaces, test it, remove it.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported from `lazy` when first needed."""

    def __init__(
        self, *args: object, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy: dict[str, tuple[str, str]] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(self._load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, cmd_name: str) -> click.Command:
        target, _ = self.lazy[cmd_name]
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not loaded yet shows its help from the table."""
        shown: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name) or click.Command(name, help=self.lazy[name][1])
            if not cmd.hidden:
                shown.append((name, cmd))
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        with formatter.section("Commands"):
            formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in shown])


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="lanspan")
def cli() -> None:
    """lanspan: VLAN segments stretched over datacenters as one encrypted switch."""


def main() -> None:
    cli()
