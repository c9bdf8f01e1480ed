"""`lanspan agent`: run this server's part of the mesh in the foreground.

The click command is the agent's documented interface (`lanspan agent --help`,
its error messages); the work is `lanspan.agent.start.run`, which imports no
click. `python -m lanspan agent ...` and the `lanspan` script take a
click-free path (`lanspan.agent.start.parse`) when the arguments are plain
and valid, and come here for anything else (help, a mistake to explain).
"""

from __future__ import annotations

from pathlib import Path

import click

from lanspan.agent.start import (
    LOG_FORMATS,
    LOG_LEVELS,
    PARITY_GROUPS,
    TCP_SEGMENTATION,
    metrics_address,
    run,
)

__all__ = ["agent", "metrics_address"]


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
    default="parity",
    show_default=True,
    type=click.Choice(TCP_SEGMENTATION),
    help="How superframes travel to peers showing loss (a probe lost, a local TCP sender "
    "retransmitting): parity: as fragments followed by an XOR parity per group of "
    "fragments (one lost datagram per group is rebuilt); loss: TCP superframes as their "
    "TCP segments, one per datagram; always / never: as segments / as fragments whatever "
    "the loss.",
)
@click.option(
    "--parity-group",
    default="5",
    show_default=True,
    type=click.Choice(PARITY_GROUPS),
    metavar="N",
    help="With --tcp-segmentation parity: one parity per N fragments (1..16; interleaved "
    "groups, each rebuilds one lost datagram; smaller N: more datagrams, fewer "
    "superframes lost).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS),
)
@click.option("--log-format", default="text", show_default=True, type=click.Choice(LOG_FORMATS))
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
    parity_group: str,
    log_level: str,
    log_format: str,
) -> None:
    """Run the lanspan agent for NODE in the foreground (logs to stderr).

    Creates this node's TAP devices, attaches its interfaces, opens one UDP
    socket and keeps encrypted sessions with every other node. SIGTERM or
    SIGINT stop it and remove every device it created; SIGHUP (or
    `lanspan reload`) re-reads the network file and applies the differences.
    """
    run(
        network_file=network_file,
        node=node,
        key_file=key_file,
        control=control,
        metrics=metrics,
        run_dir=run_dir,
        state_dir=state_dir,
        no_kernel_filter=no_kernel_filter,
        tcp_segmentation=tcp_segmentation,
        parity_group=parity_group,
        log_level=log_level,
        log_format=log_format,
    )
