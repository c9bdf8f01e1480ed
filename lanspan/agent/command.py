"""`lanspan agent`: run this server's part of the mesh in the foreground."""

from __future__ import annotations

import base64
import logging
import os
import sys
from pathlib import Path
from typing import cast

import click

from lanspan.config import load_network
from lanspan.config.keys import load_private_key, public_key
from lanspan.errors import ConfigError
from lanspan.logs import setup_logging

log = logging.getLogger("lanspan.agent")


def fail(message: str) -> None:
    click.echo(f"lanspan: {message}", err=True)
    sys.exit(1)


@click.command()
@click.option(
    "--network",
    "network_file",
    required=True,
    type=click.Path(path_type=Path),
    help="The network file (TOML) shared by every node.",
)
@click.option("--node", required=True, help="This server's node name in the network file.")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(path_type=Path),
    help="This node's private key file (mode 0600; `lanspan genkey --out FILE`).",
)
@click.option(
    "--control",
    type=click.Path(path_type=Path),
    default=None,
    help="Control socket path [default: /run/lanspan/<network>.sock].",
)
@click.option(
    "--metrics",
    default=None,
    metavar="[ADDR]:PORT",
    help="Serve Prometheus metrics on ADDR:PORT; `:PORT` alone binds 127.0.0.1 "
    "(give 0.0.0.0:PORT or [::]:PORT to serve every address).",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the gateway services' files live (keepalived, dnsmasq configurations, "
    "pid files) [default: /run/lanspan/<network>].",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where DHCP lease files are kept across restarts "
    "[default: the file's lease_file, else /var/lib/lanspan/<network>].",
)
@click.option(
    "--no-kernel-filter",
    is_flag=True,
    help="Do not install the nftables filter that drops junk on the UDP port in the kernel.",
)
@click.option(
    "--tcp-segmentation",
    default="loss",
    show_default=True,
    type=click.Choice(["loss", "always", "never"]),
    help="Send TCP superframes as their TCP segments, one per datagram (a lost datagram "
    "then costs one segment, not the whole superframe): to peers whose path lost probes "
    "lately, to every peer, or never.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format", default="text", show_default=True, type=click.Choice(["text", "json"])
)
def agent(
    network_file: Path,
    node: str,
    key_file: Path,
    control: Path | None,
    metrics: str | None,
    run_dir: Path | None,
    state_dir: Path | None,
    no_kernel_filter: bool,
    tcp_segmentation: str,
    log_level: str,
    log_format: str,
) -> None:
    """Run the lanspan agent for NODE in the foreground (logs to stderr).

    Creates this node's TAP devices, attaches its interfaces, opens one UDP
    socket and keeps encrypted sessions with every other node. SIGTERM or
    SIGINT stop it and remove every device it created; SIGHUP (or
    `lanspan reload`) re-reads the network file and applies the differences.
    """
    setup_logging(log_level, "json" if log_format == "json" else "text")
    if os.geteuid() != 0:
        fail(
            "the agent needs root (or CAP_NET_ADMIN and CAP_NET_RAW) to create TAP devices "
            "and attach interfaces; run it with sudo or as the lanspan@ systemd service"
        )
    try:
        network = load_network(network_file)
        private = load_private_key(key_file)
    except ConfigError as e:
        fail(str(e))  # one line: "FILE: problem; problem"
        return
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
    )
    if opts.control is not None:
        try:
            opts.control.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as e:
            fail(f"cannot create the control socket's directory {opts.control.parent}: {e}")
    try:
        agent_ = Agent(opts, network)
        code = agent_.run()
    except AgentSetupError as e:
        fail(str(e))
        return
    sys.exit(code)


def metrics_address(value: str | None) -> str | None:
    """`--metrics :PORT` means loopback; any other address is taken as given."""
    if value is not None and value.startswith(":"):
        return f"127.0.0.1{value}"
    return value
