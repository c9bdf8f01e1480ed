"""`lanspan` command line: one group; each area contributes its commands."""

from __future__ import annotations

import click

from lanspan import __version__
from lanspan.agent.command import agent
from lanspan.config.commands import check, genkey, pubkey
from lanspan.control.commands import reload, show
from lanspan.lab.commands import lab


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lanspan")
def cli() -> None:
    """lanspan: VLAN segments stretched over datacenters as one encrypted switch."""


for command in (agent, check, genkey, pubkey, show, reload, lab):
    cli.add_command(command)


def main() -> None:
    cli()
