"""`lanspan check`, `lanspan genkey`, `lanspan pubkey`: click commands.

`lanspan.cli` registers them on the main group. Operator mistakes end with a
clear message on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from lanspan.config.keys import (
    KeyFormatError,
    decode_key,
    encode_key,
    generate_private_key,
    public_key,
    write_private_key,
)
from lanspan.config.load import load_network
from lanspan.config.model import HostPort, Network, Port, TrunkPort
from lanspan.errors import ConfigError

__all__ = ["check", "genkey", "pubkey", "render_errors", "summary"]


def render_errors(error: ConfigError) -> str:
    """Every problem on its own line, prefixed by the file (`net.toml: ...`)."""
    lines = [f"{error.source}: {p}" for p in error.problems]
    n = len(error.problems)
    lines.append(f"{error.source}: {n} error{'s' if n != 1 else ''}")
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _port_row(node: str, p: Port, net: Network) -> tuple[str, ...]:
    if isinstance(p, TrunkPort):
        segs = ",".join(
            net.segment_by_vlan(v).name + ("(untagged)" if v == p.native_vlan else "")
            for v in p.vlans
        )
    else:
        segs = p.segment
    device = p.device + (" (new TAP)" if p.create else "")
    extra = ""
    if isinstance(p, HostPort):
        extra = " ".join(str(a) for a in p.addresses)
    return (node, p.name, p.kind, segs, device, extra or "-")


def summary(net: Network) -> str:
    """The one-screen description `lanspan check` prints for a valid file."""
    lines = [
        f'network "{net.name}": UDP port {net.port}, cipher {net.cipher}, '
        f"{len(net.segments)} segment(s), {len(net.nodes)} node(s), "
        f"{len(net.static_macs)} static MAC(s)",
        "",
        "segments:",
    ]
    lines += _table(
        ("NAME", "VLAN", "VNI", "IPV4", "IPV6", "MTU", "GATEWAY"),
        [
            (
                s.name,
                str(s.vlan),
                str(s.vni),
                str(s.ipv4 or "-"),
                str(s.ipv6 or "-"),
                str(s.mtu),
                str(s.gateway or "-"),
            )
            for s in net.segments
        ],
    )
    lines += ["", "nodes:"]
    lines += _table(
        ("NAME", "SITE", "ENDPOINTS", "SEGMENTS", "PORTS"),
        [
            (
                n.name + ("" if n.relay else " (no relay)"),
                n.site,
                " ".join(str(e) for e in n.endpoints) or "- (behind NAT)",
                ",".join(n.segments),
                " ".join(f"{p.name}:{p.kind}" for p in n.ports) or "-",
            )
            for n in net.nodes
        ],
    )
    rows = [_port_row(n.name, p, net) for n in net.nodes for p in n.ports]
    if rows:
        lines += ["", "ports:"]
        lines += _table(("NODE", "PORT", "KIND", "SEGMENTS", "DEVICE", "ADDRESSES"), rows)
    lines += _addressing(net)
    return "\n".join(lines)


def _addressing(net: Network) -> list[str]:
    """Gateways, floating addresses, filtering, pools (with every assignment) and DHCP."""
    lines: list[str] = []
    vrrp = [
        (
            f"gateway {g.segment}",
            f"segment {g.segment}",
            " ".join(str(a.ip) for a in g.addresses),
            " > ".join(g.nodes),
            "yes" if g.preempt else "no",
            f"{g.advert_interval:g}s",
            str(g.vrid),
        )
        for g in net.gateways
    ] + [
        (
            f"floating {f.name}",
            f"segment {f.segment}" if f.segment else f"uplink {f.uplink}",
            " ".join(str(a) for a in f.addresses),
            " > ".join(f.nodes),
            "yes" if f.preempt else "no",
            f"{f.advert_interval:g}s",
            str(f.vrid) + (" (checked)" if f.check else ""),
        )
        for f in net.floating
    ]
    if vrrp:
        lines += ["", "gateways and floating addresses (VRRPv3; priority by order):"]
        lines += _table(("NAME", "WHERE", "ADDRESSES", "NODES", "PREEMPT", "ADVERT", "VRID"), vrrp)
    if net.allows:
        lines += ["", "allowed between segments (everything else is dropped on the gateways):"]
        lines += _table(
            ("FROM", "TO", "PROTO", "PORTS", "FAMILY"),
            [
                (
                    a.source,
                    a.to,
                    a.proto,
                    ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in a.ports) or "all",
                    "+".join(f"ipv{v}" for v in a.families),
                )
                for a in net.allows
            ],
        )
    if net.pools:
        lines += ["", "pools:"]
        lines += _table(
            ("SEGMENT", "FIRST", "LAST", "SIZE", "ASSIGNED"),
            [
                (
                    p.segment,
                    str(p.first),
                    str(p.last),
                    str(p.size),
                    str(
                        sum(
                            1
                            for a in net.assignments
                            if a.segment == p.segment and a.address.version == p.version
                        )
                    ),
                )
                for p in net.pools
            ],
        )
    if net.assignments:
        lines += ["", 'pool assignments (address = "auto"):']
        lines += _table(
            ("NODE", "PORT", "SEGMENT", "ADDRESS", "NOTE"),
            [
                (
                    a.node,
                    a.port,
                    a.segment,
                    str(a.address),
                    "-"
                    if a.address == a.home and not a.collided_with
                    else f"home {a.home}"
                    + (f" shared with {', '.join(a.collided_with)}" if a.collided_with else "")
                    + ("" if a.address == a.home else f", moved to {a.address}"),
                )
                for a in net.assignments
            ],
        )
    if net.dhcp:
        lines += ["", "DHCP / RA for guests (served by the segment's gateway master):"]
        lines += _table(
            ("SEGMENT", "RANGE", "IPV6", "LEASE", "STATIC LEASES"),
            [
                (
                    d.segment,
                    f"{d.range4[0]}-{d.range4[1]}" if d.range4 else "-",
                    d.ipv6 + (f" {d.range6[0]}-{d.range6[1]}" if d.range6 else ""),
                    f"{d.lease_time}s",
                    str(len(d.hosts)),
                )
                for d in net.dhcp
            ],
        )
    return lines


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
def check(file: Path) -> None:
    """Validate a network file and summarise it; list every error otherwise."""
    try:
        net = load_network(file)
    except ConfigError as e:
        click.echo(render_errors(e), err=True)
        raise SystemExit(1) from None
    click.echo(summary(net))
    click.echo(f"\n{file}: ok")


@click.command()
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the key to this file (created with mode 0600) and print the public key.",
)
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
def genkey(out: Path | None, force: bool) -> None:
    """Generate a node private key (base64 on stdout, or into --out FILE)."""
    key = generate_private_key()
    if out is None:
        click.echo(encode_key(key))
        return
    try:
        write_private_key(out, key, force=force)
    except FileExistsError:
        click.echo(
            f"{out} already exists: not overwriting it (use --force to replace it)", err=True
        )
        raise SystemExit(1) from None
    except OSError as e:
        click.echo(f"cannot write {out}: {e.strerror or e}", err=True)
        raise SystemExit(1) from None
    click.echo(f"wrote private key to {out} (mode 0600); its public key:", err=True)
    click.echo(encode_key(public_key(key)))


@click.command()
def pubkey() -> None:
    """Print the public key of the private key read on stdin."""
    data = sys.stdin.buffer.read(4097)
    try:
        if len(data) > 4096:
            raise KeyFormatError("the input is far too long to be a key")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError("the input contains non-ASCII bytes") from None
        private = decode_key(text)
    except KeyFormatError as e:
        click.echo(f"stdin is not a private key: {e}", err=True)
        raise SystemExit(1) from None
    click.echo(encode_key(public_key(private)))
