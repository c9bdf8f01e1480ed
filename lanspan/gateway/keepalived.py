"""keepalived.conf for one node, rendered from the network file (pure).

One `vrrp_instance` per segment gateway (`gw_<segment>`) and per floating
address (`fl_<name>`) the node holds; VRRPv3 with the file's centisecond
`advert_int`; priority from the order of the holders (first = highest); every
instance starts BACKUP, and `nopreempt` unless the file says `preempt = true`,
so a recovered node does not take the address back (no second outage).

Segment instances speak **multicast** (224.0.0.18 / ff02::12) on the node's
host port, as VRRP does on a LAN: lanspan floods multicast of a segment to
every peer that carries it, so the advertisements reach all gateways of the
segment at every site, and the configuration is the same on every gateway
but for `priority` (no per-node `unicast_peer` lists). Floating addresses on
an uplink cannot count on the provider's network for multicast: they speak
unicast from the node's own uplink address to the other holders'.

The new master's location: keepalived does not use a virtual MAC here
(no `use_vmac`), so the virtual address moves from one real host-port MAC to
another and the switches' MAC tables already know both; what must change at
once are the neighbours' ARP/ND caches. keepalived sends gratuitous ARPs and
unsolicited neighbour advertisements for every address when it becomes
master (`vrrp_garp_master_repeat` of them at once, again after
`vrrp_garp_master_delay`); they are broadcast/multicast, so lanspan floods
them to every site. `vrrp_garp_lower_prio_repeat` re-announces when a
lower-priority advertisement shows a second master (a healed partition), and
`vrrp_garp_master_refresh` repeats it periodically for caches that missed it.

State changes reach the agent through keepalived's `notify_fifo`: lines like
`INSTANCE "gw_lan" MASTER 250`, parsed by `lanspan.gateway.status`.
"""

from __future__ import annotations

from dataclasses import field

from lanspan.config.model import FloatingAddress, Gateway, HostPort, IPInterface, Network
from lanspan.records import record

__all__ = [
    "KeepalivedConfig",
    "instance_name",
    "priority",
    "render_keepalived",
]

PRIORITY_TOP = 250
GARP_REPEAT = 3
GARP_DELAY = 1  # seconds until the second burst after becoming master
GARP_REFRESH = 60  # seconds between refreshes while master
CHECK_FALL = 2  # failed checks before a floating address moves away
CHECK_RISE = 2


@record(frozen=True, slots=True)
class KeepalivedConfig:
    """What the agent writes into its run directory and hands keepalived."""

    text: str  # keepalived.conf
    scripts: dict[str, str] = field(default_factory=dict)  # file name -> executable content
    instances: tuple[str, ...] = ()  # vrrp_instance names, in the order of the file

    @property
    def empty(self) -> bool:
        return not self.instances


def instance_name(item: Gateway | FloatingAddress) -> str:
    if isinstance(item, Gateway):
        return f"gw_{item.segment}"
    return f"fl_{item.name}"


def priority(nodes: tuple[str, ...], node: str) -> int:
    """250 for the first holder, then down in equal steps (≥ 1, unique up to 250 nodes)."""
    step = min(10, (PRIORITY_TOP - 1) // max(1, len(nodes) - 1))
    return PRIORITY_TOP - step * nodes.index(node)


def _host_port(network: Network, node: str, segment: str) -> HostPort:
    for p in network.node(node).ports:
        if isinstance(p, HostPort) and p.segment == segment:
            return p
    raise KeyError(f"node {node!r} has no host port in segment {segment!r}")  # validated


def _interval(seconds: float) -> str:
    return f"{round(seconds * 100) / 100:g}"


def _addresses(addrs: tuple[IPInterface, ...], device: str) -> list[str]:
    """virtual_ipaddress (the instance's family) and _excluded (the other family)."""
    primary = addrs[0].version if len({a.version for a in addrs}) == 1 else 4
    main = [a for a in addrs if a.version == primary]
    other = [a for a in addrs if a.version != primary]
    out = ["    virtual_ipaddress {", *(f"        {a} dev {device}" for a in main), "    }"]
    if other:
        out += [
            "    virtual_ipaddress_excluded {",
            *(f"        {a} dev {device}" for a in other),
            "    }",
        ]
    return out


def _instance(
    network: Network,
    node: str,
    item: Gateway | FloatingAddress,
    run_dir: str,
    scripts: dict[str, str],
    header: list[str],
) -> list[str]:
    name = instance_name(item)
    segment = item.segment
    lines = [f"vrrp_instance {name} {{", "    state BACKUP"]
    if segment is not None:
        device = _host_port(network, node, segment).device
        lines.append(f"    interface {device}")
    else:
        assert isinstance(item, FloatingAddress) and item.uplink is not None
        uplinks = {u.name: u for u in network.node(node).uplinks}
        up = uplinks[item.uplink]
        device = up.interface
        version = item.addresses[0].version
        lines.append(f"    interface {device}")
        own = next(a for a in up.addresses if a.version == version)
        lines.append(f"    unicast_src_ip {own.ip}")
        lines.append("    unicast_peer {")
        for other in item.nodes:
            if other == node:
                continue
            peer_up = {u.name: u for u in network.node(other).uplinks}[item.uplink]
            peer = next(a for a in peer_up.addresses if a.version == version)
            lines.append(f"        {peer.ip}")
        lines.append("    }")
    lines += [
        f"    virtual_router_id {item.vrid}",
        f"    priority {priority(item.nodes, node)}",
        f"    advert_int {_interval(item.advert_interval)}",
    ]
    if not item.preempt:
        lines.append("    nopreempt")
    lines += _addresses(item.addresses, device)
    if isinstance(item, FloatingAddress) and item.check is not None:
        script = f"check-{item.name}.sh"
        scripts[script] = (
            f"#!/bin/sh\n# lanspan: health check of floating {item.name}\n{item.check}\n"
        )
        header += [
            f"vrrp_script chk_{item.name} {{",
            f'    script "{run_dir}/{script}"',
            f"    interval {_interval(item.check_interval)}",
            f"    timeout {_interval(max(item.check_interval, 1.0))}",
            f"    fall {CHECK_FALL}",
            f"    rise {CHECK_RISE}",
            "}",
            "",
        ]
        lines += ["    track_script {", f"        chk_{item.name}", "    }"]
    lines.append("}")
    return lines


def render_keepalived(network: Network, node: str, run_dir: str) -> KeepalivedConfig:
    """keepalived.conf for `node` (empty of instances when it holds nothing).

    `run_dir` is where the agent keeps the FIFO and check scripts; give every
    gateway the same one (e.g. /run/lanspan/<network>) and their
    configurations differ only in `priority`.
    """
    items: list[Gateway | FloatingAddress] = [g for g in network.gateways if node in g.nodes]
    items += [f for f in network.floating if node in f.nodes]
    header = [
        f"# generated by lanspan from network {network.name!r}: do not edit, it is rewritten",
        "global_defs {",
        f"    router_id lanspan_{network.name}",
        "    vrrp_version 3",
        "    enable_script_security",
        "    script_user root",
        f'    notify_fifo "{run_dir}/vrrp.fifo"',
        f"    vrrp_garp_master_repeat {GARP_REPEAT}",
        f"    vrrp_garp_master_delay {GARP_DELAY}",
        f"    vrrp_garp_master_refresh {GARP_REFRESH}",
        f"    vrrp_garp_lower_prio_repeat {GARP_REPEAT}",
        "}",
        "",
    ]
    scripts: dict[str, str] = {}
    body: list[str] = []
    for item in items:
        body += [*_instance(network, node, item, run_dir, scripts, header), ""]
    gateways = [instance_name(g) for g in items if isinstance(g, Gateway)]
    if len(gateways) > 1:
        # the segments' gateways move together, so traffic between two segments
        # crosses one node both ways (the allow rules need the same gateway nodes)
        body += ["vrrp_sync_group gateways {", "    group {"]
        body += [f"        {n}" for n in gateways]
        body += ["    }", "}", ""]
    text = "\n".join(header + body).rstrip("\n") + "\n"
    return KeepalivedConfig(text, scripts, tuple(instance_name(i) for i in items))
