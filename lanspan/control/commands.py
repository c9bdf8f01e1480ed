"""`lanspan show`, `lanspan show macs` and `lanspan reload`: clients of the control socket.

Which agent: ``--socket PATH``, else ``$LANSPAN_SOCKET`` (``lanspan lab exec``
sets it in a lab node's namespace to that node's agent), else
``--network NAME`` (``/run/lanspan/NAME.sock``, the systemd unit's path),
else ``/run/lanspan/lanspan.sock`` — and when that does not exist but exactly
one agent socket is in /run/lanspan, that one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lanspan.control.client import ControlUnavailable, request
from lanspan.control.render import render_macs, render_status

__all__ = ["COMMANDS", "DEFAULT_SOCKET", "RUN_DIR", "register", "reload", "resolve_socket", "show"]

RUN_DIR = Path("/run/lanspan")
DEFAULT_SOCKET = RUN_DIR / "lanspan.sock"

F = TypeVar("F", bound=Callable[..., Any])


def resolve_socket(socket: Path | None, network: str | None) -> Path:
    """The control socket to talk to, from the options (see module docstring)."""
    if socket is not None:
        return socket
    if network is not None:
        if not network or "/" in network or network.startswith("."):
            raise click.BadParameter(f"{network!r} is not a network name", param_hint="--network")
        return RUN_DIR / f"{network}.sock"
    default = RUN_DIR / DEFAULT_SOCKET.name
    if default.exists():
        return default
    try:
        found = sorted(p for p in RUN_DIR.glob("*.sock") if p.is_socket())
    except OSError:
        found = []
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(p.stem for p in found)
        raise click.UsageError(
            f"several agents run here ({names}); pick one with --network NAME or --socket PATH"
        )
    return default


def _socket_options(f: F) -> F:
    f = click.option(
        "--network",
        "-n",
        metavar="NAME",
        default=None,
        help=f"Agent of this network: {RUN_DIR}/NAME.sock (as the systemd unit names it).",
    )(f)
    f = click.option(
        "--socket",
        "socket_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="LANSPAN_SOCKET",
        default=None,
        help=f"Agent control socket [env LANSPAN_SOCKET; default {DEFAULT_SOCKET}].",
    )(f)
    return f


def _call(path: Path, op: str, **args: Any) -> object:
    try:
        response = request(path, op, **args)
    except ControlUnavailable as e:
        raise click.ClickException(str(e)) from None
    if not response.get("ok"):
        raise click.ClickException(f"agent at {path}: {response.get('error')}")
    return response.get("result")


def _dump(obj: object) -> None:
    """One JSON document on one line, as every `--json` of lanspan prints it."""
    click.echo(json.dumps(obj, separators=(",", ":")))


@click.group(invoke_without_command=True)
@_socket_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw status document.")
@click.pass_context
def show(ctx: click.Context, socket_path: Path | None, network: str | None, as_json: bool) -> None:
    """Show the agent's live state: segments, ports, peers, paths, drops.

    `lanspan show macs` lists the MAC tables.
    """
    ctx.meta["lanspan.show"] = (socket_path, network, as_json)
    if ctx.invoked_subcommand is not None:
        return
    doc = _call(resolve_socket(socket_path, network), "status")
    if as_json:
        _dump(doc)
    elif isinstance(doc, dict):
        click.echo(render_status(doc), nl=False)
    else:
        raise click.ClickException("agent sent a status document that is not an object")


@show.command("macs")
@click.option("--segment", "-s", metavar="NAME", default=None, help="Only this segment.")
@_socket_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw rows.")
@click.pass_context
def show_macs(
    ctx: click.Context,
    segment: str | None,
    socket_path: Path | None,
    network: str | None,
    as_json: bool,
) -> None:
    """List learned and static MAC addresses, per segment."""
    parent_socket, parent_network, parent_json = ctx.meta.get("lanspan.show", (None, None, False))
    path = resolve_socket(socket_path or parent_socket, network or parent_network)
    rows = _call(path, "macs", segment=segment)
    if not isinstance(rows, list):
        raise click.ClickException("agent sent a MAC table that is not a list")
    if as_json or parent_json:
        _dump(rows)
    else:
        click.echo(render_macs([r for r in rows if isinstance(r, dict)]), nl=False)


@click.command()
@_socket_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw reload result.")
@click.pass_context
def reload(
    ctx: click.Context, socket_path: Path | None, network: str | None, as_json: bool
) -> None:
    """Make the agent re-read its network file (like `systemctl reload`).

    The agent applies the new file only if it is valid as a whole; otherwise it
    keeps running the old one and this command says why and exits 1.
    """
    result = _call(resolve_socket(socket_path, network), "reload")
    if not isinstance(result, dict):
        raise click.ClickException("agent sent a reload result that is not an object")
    if as_json:
        _dump(result)
        ctx.exit(0 if result.get("ok") else 1)
    if not result.get("ok"):
        click.echo("reload rejected; the agent keeps its running configuration:", err=True)
        click.echo(str(result.get("error") or "no reason given"), err=True)
        ctx.exit(1)
    changes = result.get("changes")
    changes = changes if isinstance(changes, list) else []
    if not changes:
        click.echo("reloaded: no changes")
        return
    click.echo(f"reloaded: {len(changes)} change{'s' if len(changes) != 1 else ''}")
    for c in changes:
        click.echo(f"  - {c}")


COMMANDS: tuple[click.Command, ...] = (show, reload)


def register(group: click.Group) -> None:
    """Add `show` (with `show macs`) and `reload` to the `lanspan` group."""
    for cmd in COMMANDS:
        group.add_command(cmd)
