"""`lanspan` command line: one group; each area contributes its commands."""

from __future__ import annotations

import click

from lanspan import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lanspan")
def cli() -> None:
    """lanspan: VLAN segments stretched over datacenters as one encrypted switch."""


def main() -> None:
    cli()
