"""`lanspan lab`: up, down, status, exec, test, chaos — one lab file, one run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lanspan.errors import ConfigError
from lanspan.lab import netns, tools
from lanspan.lab.runner import STATE, LabError, LabRun, remove_recorded

F = TypeVar("F", bound=Callable[..., Any])


def _common(f: F) -> F:
    f = click.option(
        "--run-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where keys, network file, logs and state live (default ./lab-runs/<lab name>).",
    )(f)
    f = click.argument("lab_file", type=click.Path(dir_okay=False, path_type=Path))(f)
    return f


def _open(lab_file: Path, run_dir: Path | None, need_root: bool = True) -> LabRun:
    try:
        run = LabRun(lab_file, run_dir)
    except ConfigError as e:
        raise click.ClickException(e.render()) from None
    if need_root:
        why = netns.require_root()
        if why:
            raise click.ClickException(f"lanspan lab {why}")
    return run


def _err(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Build a lanspan network on this machine in network namespaces, test it, remove it."""


@lab.command()
@_common
@click.option("--prefix", default=None, help="Namespace name prefix (default lsl-<lab name>).")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for every session.")
def up(lab_file: Path, run_dir: Path | None, prefix: str | None, timeout: float | None) -> None:
    """Create namespaces, keys, the network file; start one agent per node; wait for sessions."""
    run = _open(lab_file, run_dir)
    if prefix:
        run.prefix = prefix
    try:
        plan = run.up(log=lambda m: click.echo(m, err=True), timeout=timeout)
    except (LabError, netns.NetnsError, TimeoutError) as e:
        raise _err(e) from None
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; `lanspan lab down {lab_file}` removes what was made"
        ) from None
    st = run.status()
    click.echo(_status_table(st))
    click.echo(f"lab {plan.lab!r} is up; network file {run.network_file}")


@lab.command()
@_common
def down(lab_file: Path, run_dir: Path | None) -> None:
    """Remove everything the lab created (also after a crash), and only that."""
    try:
        run = _open(lab_file, run_dir)
    except click.ClickException as e:
        if run_dir is None or not (run_dir / STATE).exists():
            raise
        # The lab file no longer loads, but the run directory says what was made.
        click.echo(f"{e.message}\nremoving what {run_dir} records anyway", err=True)
        name, target = str(lab_file), run_dir
    else:
        name, target = run.lab.name, run.run_dir
    why = netns.require_root()
    if why:
        raise click.ClickException(f"lanspan lab {why}")
    try:
        done = remove_recorded(target, log=lambda m: click.echo(m, err=True))
    except (LabError, netns.NetnsError) as e:
        raise _err(e) from None
    n_ns = sum(1 for d in done if d.startswith("namespace"))
    n_pr = sum(1 for d in done if d.startswith("process"))
    click.echo(f"lab {name!r} down: {n_ns} namespaces and {n_pr} processes removed")


def _status_table(st: dict[str, Any]) -> str:
    if not st.get("nodes"):
        return f"lab {st['lab']!r}: not up (run dir {st['run_dir']})"
    lines = [f"lab {st['lab']!r} ({st.get('phase')}), run dir {st['run_dir']}"]
    lines.append(f"{'node':<16} {'site':<10} {'agent pid':>9}  {'sessions':<9} endpoint")
    for n in st["nodes"]:
        pid = n["agent_pid"] if n["agent_running"] else "dead"
        sess = f"{n['sessions_up']}/{n['sessions_expected']}"
        lines.append(
            f"{n['name']:<16} {n['site']:<10} {pid!s:>9}  {sess:<9} "
            f"{', '.join(n.get('endpoints') or []) or 'NAT'}"
        )
    for h in st.get("helpers", []):
        lines.append(f"helper {h['what']} pid {h['pid']} {'running' if h['running'] else 'dead'}")
    for key, imp in st.get("impairments", {}).items():
        tag, site = key.split(":", 1)
        vals = ", ".join(f"{k}={v:g}" for k, v in imp.items() if v)
        lines.append(f"uplink of {site} impaired ({tag}): {vals}")
    lines.append(f"{'guest':<16} {'node':<16} addresses")
    for g in st["guests"]:
        addrs = " ".join(
            f"{i['segment']}:{','.join(i['addresses']) or '-'}" for i in g["interfaces"]
        )
        lines.append(f"{g['name']:<16} {g['node']:<16} {addrs}")
    return "\n".join(lines)


def _json(doc: object, pretty: bool) -> str:
    """One JSON document on one line (for `| tail -1` and line tools); indented with --pretty."""
    return json.dumps(doc, indent=1) if pretty else json.dumps(doc, separators=(",", ":"))


_PRETTY = click.option(
    "--pretty", is_flag=True, help="With --json: indented over many lines (default: one line)."
)


@lab.command()
@_common
@click.option("--json", "as_json", is_flag=True, help="One JSON object, on one line.")
@_PRETTY
def status(lab_file: Path, run_dir: Path | None, as_json: bool, pretty: bool) -> None:
    """What runs: nodes, agent PIDs, sessions up, guests."""
    run = _open(lab_file, run_dir)
    st = run.status()
    click.echo(_json(st, pretty) if as_json else _status_table(st))


@lab.command(name="exec", context_settings={"ignore_unknown_options": True})
@_common
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(lab_file: Path, run_dir: Path | None, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in the namespace of guest or node NAME (`-- CMD ARGS`).

    In a node's namespace LANSPAN_SOCKET names that node's control socket, so
    `lanspan show` and `lanspan reload` there talk to its agent.
    """
    run = _open(lab_file, run_dir)
    try:
        ns = run.namespace_of(name)
    except LabError as e:
        raise _err(e) from None
    if ns not in netns.existing():
        raise click.ClickException(f"namespace {ns} does not exist: is the lab up?")
    env = dict(os.environ)
    if any(n.name == name for n in run.lab.node):
        env["LANSPAN_SOCKET"] = str(run.control(name).resolve())
    proc = subprocess.run(["ip", "netns", "exec", ns, *command], check=False, env=env)
    sys.exit(proc.returncode)


@lab.command()
@_common
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, on one line.")
@_PRETTY
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write an HTML report (topology, fault timelines) into this directory.",
)
@click.option("--no-faults", is_flag=True, help="Run the checks only.")
def test(
    lab_file: Path,
    run_dir: Path | None,
    as_json: bool,
    pretty: bool,
    report_dir: Path | None,
    no_faults: bool,
) -> None:
    """Reachability, isolation, MTU, throughput, then each fault scenario; exit 0 if all pass."""
    from lanspan.lab import checks, report

    run = _open(lab_file, run_dir)
    if run.state() is None:
        raise click.ClickException(f"lab {run.lab.name!r} is not up: `lanspan lab up {lab_file}`")
    why = tools.problem(tools.for_test(run.lab, faults=not no_faults), "lanspan lab test")
    if why:
        raise click.ClickException(why)

    def log(m: str) -> None:
        if not as_json:
            click.echo(m, err=True)

    try:
        result = checks.run_all(run, faults=not no_faults, log=log)
    except (LabError, netns.NetnsError) as e:
        raise _err(e) from None
    if report_dir is not None:
        path = report.write(report_dir, run, result)
        log(f"report: {path}")
    if as_json:
        click.echo(_json(result, pretty))
    else:
        click.echo(checks.table(result))
    sys.stdout.flush()
    sys.exit(0 if result["passed"] else 1)


@lab.command()
@_common
@click.option("--minutes", type=float, default=1.0, show_default=True, help="Fault time to run.")
@click.option("--seed", type=int, default=None, help="Seed of the schedule (default: random).")
@click.option(
    "--episode",
    "episodes",
    type=int,
    multiple=True,
    help="Replay only this episode of the seed's schedule (repeatable; in the order given, "
    "a number given twice runs twice): a violation again, without the rest.",
)
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON line on stdout.")
@_PRETTY
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write chaos.json and an HTML page (index.html) into this directory.",
)
def chaos(
    lab_file: Path,
    run_dir: Path | None,
    minutes: float,
    seed: int | None,
    episodes: tuple[int, ...],
    as_json: bool,
    pretty: bool,
    report_dir: Path | None,
) -> None:
    """Random overlapping faults for MINUTES; after each episode every guest pair must
    answer within 2 s and nothing may leak across segments. Exit 1 on any violation;
    the same --seed replays the same schedule."""
    import random

    from lanspan.lab import chaos as chaos_mod
    from lanspan.lab import chaos_report

    run = _open(lab_file, run_dir)
    if run.state() is None:
        raise click.ClickException(f"lab {run.lab.name!r} is not up: `lanspan lab up {lab_file}`")
    why = tools.problem(["ip", "ping", "nft"], "lanspan lab chaos")
    if why:
        raise click.ClickException(why)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)

    def log(m: str) -> None:
        click.echo(m, err=as_json)

    faults = chaos_mod.schedule(run.lab, minutes, seed)
    if episodes:
        try:
            faults = chaos_mod.replay(faults, list(episodes))
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    log(f"chaos on lab {run.lab.name!r}: seed {seed}, {len(faults)} faults")
    try:
        result = chaos_mod.run_chaos(run, faults, seed, log=log)
    except (LabError, netns.NetnsError) as e:
        raise _err(e) from None
    if report_dir is not None:
        log(f"report: {chaos_report.write(report_dir, result)}")
    if as_json:
        click.echo(_json(result, pretty))
    else:
        n = len(result["violations"])
        click.echo("PASSED" if result["passed"] else f"FAILED ({n} violations)")
    sys.stdout.flush()
    sys.exit(0 if result["passed"] else 1)


__all__ = ["lab"]
