"""The agent's start, without click: `run` does what `lanspan agent` does.

`parse(argv)` reads `lanspan agent`'s options when they are plain and valid
(every required option given, known names, known choices) and returns None
otherwise, so that click (`lanspan.agent.command`) explains help and mistakes.
At a cold start every agent of a host starts at once: click's import (~20-30 ms
of CPU each) is not spent when nothing needs explaining. A test holds this
table and the click command's options to the same names, flags and choices.

`run` imports almost nothing before it has attached the interfaces the node's
ports name (`lanspan.agent.early`): the network file's loader, the node core and
the loop (most of the start's CPU) come after, so the guests' frames of those
~100 ms (over a second at a cold start of 13 agents on 2 cores) are queued, not lost.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from lanspan.logs import setup_logging

if TYPE_CHECKING:
    from lanspan.config.model import Network

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "OPTIONS",
    "TCP_SEGMENTATION",
    "fail",
    "metrics_address",
    "parse",
    "run",
]

log = logging.getLogger("lanspan.agent")

TCP_SEGMENTATION = ("loss", "always", "never", "parity")
# --parity-group: fragments per XOR parity with --tcp-segmentation parity
PARITY_GROUPS = tuple(str(k) for k in range(1, 17))
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

# option -> (keyword of `run`, takes a value, required, choices or None, default)
OPTIONS: dict[str, tuple[str, bool, bool, tuple[str, ...] | None, object]] = {
    "--network": ("network_file", True, True, None, None),
    "--node": ("node", True, True, None, None),
    "--key": ("key_file", True, True, None, None),
    "--control": ("control", True, False, None, None),
    "--metrics": ("metrics", True, False, None, None),
    "--run-dir": ("run_dir", True, False, None, None),
    "--state-dir": ("state_dir", True, False, None, None),
    "--no-kernel-filter": ("no_kernel_filter", False, False, None, False),
    "--tcp-segmentation": ("tcp_segmentation", True, False, TCP_SEGMENTATION, "parity"),
    "--parity-group": ("parity_group", True, False, PARITY_GROUPS, "5"),
    "--log-level": ("log_level", True, False, LOG_LEVELS, "info"),
    "--log-format": ("log_format", True, False, LOG_FORMATS, "text"),
}
_PATHS = {"network_file", "key_file", "control", "run_dir", "state_dir"}


def parse(argv: list[str]) -> dict[str, object] | None:
    """`run`'s keywords from `lanspan agent ARGV`, or None: let click judge ARGV."""
    got: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        spec = OPTIONS.get(name)
        if spec is None:
            return None  # help, a short option, a typo, an argument: click says what
        key, takes, _, choices, _ = spec
        if key in got:
            return None
        if not takes:
            if eq:
                return None
            got[key] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
            i += 1
        i += 1
        if value == "" or value.startswith("-") or (choices is not None and value not in choices):
            return None
        got[key] = Path(value) if key in _PATHS else value
    for key, _, required, _, default in OPTIONS.values():
        if key not in got:
            if required:
                return None
            got[key] = default
    return got


def fail(message: str) -> None:
    print(f"lanspan: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(
    *,
    network_file: Path,
    node: str,
    key_file: Path,
    control: Path | None,
    metrics: str | None,
    run_dir: Path | None,
    state_dir: Path | None,
    no_kernel_filter: bool,
    tcp_segmentation: str,
    parity_group: str,
    log_level: str,
    log_format: str,
) -> None:
    """Run the agent for `node` until SIGTERM/SIGINT; exit 1 with one line if it cannot start."""
    setup_logging(log_level, "json" if log_format == "json" else "text")
    if os.geteuid() != 0:
        fail(
            "the agent needs root (or CAP_NET_ADMIN and CAP_NET_RAW) to create TAP devices "
            "and attach interfaces; run it with sudo or as the lanspan@ systemd service"
        )
    # Before the imports below (most of the agent's start-up CPU): from here on the
    # kernel queues the guests' frames on the ports' interfaces (lanspan.agent.early).
    from lanspan.agent.early import open_early

    early = open_early(network_file, node)
    try:
        network, private = _load(network_file, node, key_file)
        from lanspan.agent.loop import Agent, AgentOptions, AgentSetupError
        from lanspan.node.core import TcpSegmentation

        opts = AgentOptions(
            network_file=network_file,
            node=node,
            private_key=private,
            control=control or Path("/run/lanspan") / f"{network.name}.sock",
            metrics=metrics_address(metrics),
            run_dir=run_dir,
            state_dir=state_dir,
            kernel_filter=not no_kernel_filter,
            tcp_segmentation=cast(TcpSegmentation, tcp_segmentation),
            parity_group=int(parity_group),
        )
        if opts.control is not None:
            try:
                opts.control.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            except OSError as e:
                fail(f"cannot create the control socket's directory {opts.control.parent}: {e}")
        try:
            code = Agent(opts, network, early=early).run()
        except AgentSetupError as e:
            fail(str(e))
            return
    finally:
        early.close()  # what no port took (or everything, when the agent did not start)
    sys.exit(code)


def _load(network_file: Path, node: str, key_file: Path) -> tuple[Network, bytes]:
    """The validated network file and the node's private key; exit 1 with one line if
    either is wrong or they do not belong together."""
    from lanspan.config import load_network
    from lanspan.config.keys import load_private_key, public_key
    from lanspan.errors import ConfigError

    try:
        network = load_network(network_file)
        private = load_private_key(key_file)
    except ConfigError as e:
        fail(str(e))  # one line: "FILE: problem; problem"
        raise  # not reached: fail exits
    names = [n.name for n in network.nodes]
    if node not in names:
        fail(f"{network_file}: no node named {node!r}; nodes are: {', '.join(names)}")
    me = network.node(node)
    mine = public_key(private)
    if mine != me.public_key:
        fail(
            f"{key_file}: its public key {base64.b64encode(mine).decode()} is not node "
            f"{node!r}'s public_key {base64.b64encode(me.public_key).decode()} in {network_file}"
        )
    if any(p.create for p in me.ports) and not Path("/dev/net/tun").exists():
        fail("/dev/net/tun is missing: load the tun module (modprobe tun) to create TAP ports")
    return network, private


def metrics_address(value: str | None) -> str | None:
    """`--metrics :PORT` means loopback; any other address is taken as given."""
    if value is not None and value.startswith(":"):
        return f"127.0.0.1{value}"
    return value
