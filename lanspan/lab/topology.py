"""Pure expansion of a lab: lab file -> namespaces, links, addresses, routes, network file.

Nothing here touches the system; `expand()` is a function of the lab, the
namespace prefix and the nodes' public keys, and its output is compared with
golden files in the tests. The runner (`lanspan.lab.runner`) carries it out.

Underlay plan (all from 198.19.0.0/16, inside the lab range 198.18.0.0/15):

    core  <-- to-<site> / up0 -->  router of site i      198.19.0.<4(i-1)+1,+2>/30
    router <-- n<j> / up0 -->      node j of site i       198.19.<i>.<4(j-1)+1,+2>/30

A site with `uplinks = 2` has a second provider: a second core link and a
second prefix, and each node a second veth (`up1`) and address:

    core  <-- u2-<site> / up1 -->  router of site i      198.19.254.<4(i-1)+1,+2>/30
    router <-- m<j> / up1 -->      node j of site i       198.19.<100+i>.<4(j-1)+1,+2>/30

The router sends what comes from the second prefix out of `up1` (policy
routing); a node prefers `up0` (default route metric 0, `up1` metric 200) and
ignores routes over a link without carrier, so it leaves by the other uplink
when one goes dark. Both addresses are the node's endpoints in the network file.

The core routes 198.19.<i>.0/24 to site i unless the site is behind NAT: then
the router masquerades, the core knows no route inside, and the site's nodes
get no endpoints in the network file. Guests hang off their node by a veth:
node side `gv<k>` (named as the port's interface in the network file), guest
side `eth0`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, ip_interface
from typing import Any

from lanspan.lab.model import Guest, Lab, Node, Site
from lanspan.records import record

UNDERLAY = IPv4Network("198.19.0.0/16")
CORE_SHORT = "core"
PROBE_INTERFACE = "eth0"


@record(frozen=True)
class Link:
    """A veth pair; each end named, addressed by MAC, in its namespace."""

    ns_a: str
    if_a: str
    mac_a: str
    ns_b: str
    if_b: str
    mac_b: str
    mtu: int = 1500


@record(frozen=True)
class SitePlan:
    name: str
    ns: str  # the site router
    core_if: str  # the core's interface towards this site
    core_mac: str
    router_mac: str
    core_addr: str  # core side of the uplink
    public_addr: str  # router side of the uplink (the NAT's public address)
    prefix: str  # the site's underlay prefix
    nat: bool
    # the second uplink (uplinks = 2), else None
    core_if2: str | None = None
    core_addr2: str | None = None
    public_addr2: str | None = None
    prefix2: str | None = None

    def prefixes(self) -> tuple[str, ...]:
        """The site's underlay prefixes, one per uplink."""
        return (self.prefix,) if self.prefix2 is None else (self.prefix, self.prefix2)


@record(frozen=True)
class PortPlan:
    guest: str
    device: str  # node-side veth
    kind: str  # access | trunk
    segments: tuple[str, ...]
    vlans: tuple[int, ...]
    native_vlan: int | None


@record(frozen=True)
class HostPlan:
    """A host port of the node itself (a TAP the agent creates) in one segment."""

    segment: str
    device: str
    addresses: tuple[str, ...]


@record(frozen=True)
class NodePlan:
    name: str
    site: str
    ns: str
    underlay: str  # address/len on up0
    endpoint: str | None  # host:port, None behind NAT
    segments: tuple[str, ...]
    ports: tuple[PortPlan, ...]
    underlay2: str | None = None  # address/len on up1 (second uplink)
    endpoint2: str | None = None
    hosts: tuple[HostPlan, ...] = ()
    gateway: bool = False  # named by a [[gateway]] or [[floating]]: routes, runs keepalived

    def endpoints(self) -> tuple[str, ...]:
        return tuple(e for e in (self.endpoint, self.endpoint2) if e is not None)


@record(frozen=True)
class GuestIf:
    ifname: str  # in the guest's namespace
    segment: str
    vlan: int | None  # None: untagged on eth0
    addresses: tuple[str, ...]
    mtu: int


@record(frozen=True)
class GuestPlan:
    name: str
    node: str
    ns: str
    kind: str
    interfaces: tuple[GuestIf, ...]

    def on(self, segment: str) -> GuestIf | None:
        for i in self.interfaces:
            if i.segment == segment:
                return i
        return None


@record(frozen=True)
class Plan:
    lab: str
    prefix: str
    core_ns: str
    namespaces: tuple[str, ...]  # in creation order
    links: tuple[Link, ...]
    sites: tuple[SitePlan, ...]
    nodes: tuple[NodePlan, ...]
    guests: tuple[GuestPlan, ...]
    commands: tuple[tuple[str, tuple[str, ...]], ...]  # (namespace, argv) after the links
    network_toml: str = field(repr=False)
    internet_ns: str | None = None  # the host outside the mesh, in the internet core
    internet_addr: str | None = None  # its address/len

    def site(self, name: str) -> SitePlan:
        return next(s for s in self.sites if s.name == name)

    def node(self, name: str) -> NodePlan:
        return next(n for n in self.nodes if n.name == name)

    def guest(self, name: str) -> GuestPlan:
        return next(g for g in self.guests if g.name == name)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["commands"] = [[ns, list(argv)] for ns, argv in self.commands]
        del d["network_toml"]
        # gateway-lab fields only where used: labs without gateways keep their shape
        for k in ("internet_ns", "internet_addr"):
            if d[k] is None:
                del d[k]
        for n in d["nodes"]:
            if not n["hosts"] and not n["gateway"]:
                del n["hosts"], n["gateway"]
        return d


def _mac(kind: int, a: int, b: int, c: int = 0) -> str:
    return f"02:1a:{kind:02x}:{a:02x}:{b:02x}:{c:02x}"


def _q(s: str) -> str:
    return json.dumps(s)


def _guest_ifs(lab: Lab, g: Guest, auto: dict[str, list[str]]) -> tuple[GuestIf, ...]:
    out: list[GuestIf] = []
    for s in g.guest_segments:
        seg = lab.seg(s)
        addrs = [str(a) for a in g.addresses(s)] or auto.get(f"{g.name}/{s}", [])
        vlan: int | None = None
        ifname = PROBE_INTERFACE
        if g.kind == "trunk" and s != g.native:
            vlan, ifname = seg.vlan, f"vl{seg.vlan}"
        out.append(GuestIf(ifname, s, vlan, tuple(addrs), seg.mtu))
    return tuple(out)


def _auto_addresses(lab: Lab) -> dict[str, list[str]]:
    """Guests without an address get one from their segment, from .101 up.

    An address is never handed out twice in the whole lab, whatever the segment:
    two segments may share a subnet (so a leak answers a ping), and a guest of
    one must never hold the address an isolation check aims at from the other.
    """
    taken = {str(a.ip) for g in lab.guest for s in g.guest_segments for a in g.addresses(s)}
    taken |= {str(a.ip) for n in lab.node for addrs in n.host.values() for a in addrs}
    taken |= {str(_vip(a)) for gw in (*lab.gateway, *lab.floating) for a in gw.get("address", [])}
    out: dict[str, list[str]] = {}
    nxt: dict[str, int] = {}
    for g in lab.guest:
        for s in g.guest_segments:
            if g.addresses(s) or g.dhcp:
                continue
            net = lab.seg(s).ipv4
            i = nxt.get(s, 101)
            while str(net[i]) in taken:
                i += 1
            taken.add(str(net[i]))
            nxt[s] = i + 1
            out[f"{g.name}/{s}"] = [str(IPv4Interface(f"{net[i]}/{net.prefixlen}"))]
    return out


Cmd = tuple[str, tuple[str, ...]]


def _vip(text: Any) -> IPv4Address | IPv6Address:
    return ip_interface(str(text)).ip


def gateway_router(lab: Lab, segment: str, version: int) -> str | None:
    """The segment's virtual gateway address of that family (the guests' default route)."""
    for gw in lab.gateway:
        if gw.get("segment") == segment:
            for a in gw.get("address", []):
                if _vip(a).version == version:
                    return str(_vip(a))
    return None


@record
class _Build:
    """What the expansion has laid out so far, in creation order."""

    lab: Lab
    prefix: str
    namespaces: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    cmds: list[Cmd] = field(default_factory=list)
    sites: list[SitePlan] = field(default_factory=list)
    nodes: list[NodePlan] = field(default_factory=list)
    guests: list[GuestPlan] = field(default_factory=list)
    auto: dict[str, list[str]] = field(default_factory=dict)

    def ns(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def add_ns(self, short: str) -> str:
        name = self.ns(short)
        self.namespaces.append(name)
        return name

    @property
    def core(self) -> str:
        return self.ns(CORE_SHORT)


def _site_plan(b: _Build, i: int, site: Site) -> SitePlan:
    """Site i's router namespace and its uplink addresses (both uplinks when it has two)."""
    base = 4 * (i - 1)
    sp = SitePlan(
        name=site.name,
        ns=b.add_ns(f"r-{site.name}"),
        core_if=f"to-{site.name}",
        core_mac=_mac(1, i, 0),
        router_mac=_mac(2, i, 0),
        core_addr=f"198.19.0.{base + 1}",
        public_addr=f"198.19.0.{base + 2}",
        prefix=f"198.19.{i}.0/24",
        nat=site.nat,
    )
    if site.uplinks == 2:
        sp = replace(
            sp,
            core_if2=f"u2-{site.name}",
            core_addr2=f"198.19.254.{base + 1}",
            public_addr2=f"198.19.254.{base + 2}",
            prefix2=f"198.19.{100 + i}.0/24",
        )
    return sp


def _first_uplink(b: _Build, sp: SitePlan) -> None:
    """The core <-> router link of the first provider, routed by default."""
    core, r = b.core, sp.ns
    b.links.append(Link(core, sp.core_if, sp.core_mac, r, "up0", sp.router_mac))
    b.cmds += [
        (core, ("ip", "addr", "add", f"{sp.core_addr}/30", "dev", sp.core_if)),
        (r, ("ip", "addr", "add", f"{sp.public_addr}/30", "dev", "up0")),
        (r, ("ip", "route", "add", "default", "via", sp.core_addr)),
        (r, ("sysctl", "-qw", "net.ipv4.ip_forward=1")),
    ]


def _second_uplink(b: _Build, i: int, sp: SitePlan) -> None:
    """The second provider's link; what comes from its prefix leaves by it (policy routing)."""
    assert sp.core_if2 and sp.prefix2
    core, r = b.core, sp.ns
    b.links.append(Link(core, sp.core_if2, _mac(1, i, 2), r, "up1", _mac(2, i, 2)))
    b.cmds += [
        (core, ("ip", "addr", "add", f"{sp.core_addr2}/30", "dev", sp.core_if2)),
        (core, ("ip", "route", "add", sp.prefix2, "via", f"{sp.public_addr2}")),
        (r, ("ip", "addr", "add", f"{sp.public_addr2}/30", "dev", "up1")),
        # the second provider's prefix leaves by the second uplink
        (r, ("ip", "rule", "add", "from", sp.prefix2, "lookup", "102", "priority", "100")),
        (r, ("ip", "route", "add", "default", "via", f"{sp.core_addr2}", "table", "102")),
        (r, ("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")),
        (r, ("sysctl", "-qw", "net.ipv4.conf.up1.rp_filter=0")),
    ]


def _nat_or_route(b: _Build, sp: SitePlan) -> None:
    """Behind NAT the router masquerades; otherwise the core routes the site's prefix."""
    r = sp.ns
    if sp.nat:
        b.cmds += [
            (r, ("nft", "add", "table", "ip", "lablanspan")),
            (
                r,
                (
                    "nft", "add", "chain", "ip", "lablanspan", "post",
                    "{ type nat hook postrouting priority 100 ; }",
                ),
            ),
            (r, ("nft", "add", "rule", "ip", "lablanspan", "post",
                 "oifname", "up0", "masquerade")),
        ]  # fmt: skip
    else:
        b.cmds.append((b.core, ("ip", "route", "add", sp.prefix, "via", sp.public_addr)))


def _node_first_line(b: _Build, i: int, j: int, sp: SitePlan, nns: str) -> str:
    """Router <-> node j over the first provider; the node's address on up0."""
    nb = 4 * (j - 1)
    gw, addr = f"198.19.{i}.{nb + 1}", f"198.19.{i}.{nb + 2}"
    b.links.append(Link(sp.ns, f"n{j}", _mac(3, i, j), nns, "up0", _mac(4, i, j)))
    b.cmds += [
        (sp.ns, ("ip", "addr", "add", f"{gw}/30", "dev", f"n{j}")),
        (nns, ("ip", "addr", "add", f"{addr}/30", "dev", "up0")),
        (nns, ("ip", "route", "add", "default", "via", gw)),
    ]
    return addr


def _node_second_line(b: _Build, i: int, j: int, sp: SitePlan, nns: str) -> str:
    """Router <-> node j over the second provider (up1, default route metric 200)."""
    r, nb = sp.ns, 4 * (j - 1)
    gw2, addr2 = f"198.19.{100 + i}.{nb + 1}", f"198.19.{100 + i}.{nb + 2}"
    b.links.append(Link(r, f"m{j}", _mac(3, i, j, 2), nns, "up1", _mac(4, i, j, 2)))
    b.cmds += [
        (r, ("ip", "addr", "add", f"{gw2}/30", "dev", f"m{j}")),
        (r, ("sysctl", "-qw", f"net.ipv4.conf.m{j}.rp_filter=0")),
        # a dark uplink's routes are ignored: the node leaves by the other one
        (nns, ("sysctl", "-qw", "net.ipv4.conf.all.ignore_routes_with_linkdown=1")),
        (nns, ("sysctl", "-qw", "net.ipv4.conf.up0.ignore_routes_with_linkdown=1")),
        (nns, ("sysctl", "-qw", "net.ipv4.conf.up1.ignore_routes_with_linkdown=1")),
        (nns, ("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")),
        (nns, ("sysctl", "-qw", "net.ipv4.conf.up1.rp_filter=0")),
        (nns, ("ip", "addr", "add", f"{addr2}/30", "dev", "up1")),
        (nns, ("ip", "route", "add", "default", "via", gw2, "metric", "200")),
    ]
    return addr2


def _guest(b: _Build, i: int, j: int, k: int, nns: str, node: str, g: Guest) -> PortPlan:
    """Guest k of node j: its namespace, its veth to the node, its addresses; the node's port."""
    lab = b.lab
    gns = b.add_ns(f"g-{g.name}")
    dev = f"gv{k}"
    ifs = _guest_ifs(lab, g, b.auto)
    mtu = max(x.mtu for x in ifs) + (4 if g.kind == "trunk" else 0)
    b.links.append(Link(nns, dev, _mac(5, i, j, k), gns, "eth0", _mac(6, i, j, k), mtu))
    vlans = tuple(lab.seg(s).vlan for s in g.guest_segments)
    native = lab.seg(g.native).vlan if g.native else None
    if g.kind == "trunk":
        # One namespace holds every segment of a trunk guest: answer ARP
        # only on the interface holding the address (no weak-host leak).
        b.cmds.append((gns, ("sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")))
    for gi in ifs:
        if gi.vlan is None:
            if g.kind == "access":
                b.cmds.append((gns, ("ip", "link", "set", "eth0", "mtu", str(gi.mtu))))
            for a in gi.addresses:
                b.cmds.append((gns, ("ip", "addr", "add", a, "dev", gi.ifname)))
            if g.kind == "access":
                for ver in sorted({ip_interface(a).version for a in gi.addresses}):
                    router = gateway_router(lab, gi.segment, ver)
                    if router is not None:
                        six = ("-6",) if ver == 6 else ()
                        b.cmds.append((gns, ("ip", *six, "route", "add", "default", "via", router)))
    b.guests.append(GuestPlan(g.name, node, gns, g.kind, ifs))
    return PortPlan(g.name, dev, g.kind, g.guest_segments, vlans, native)


def _node(b: _Build, i: int, j: int, site: Site, sp: SitePlan, node: Node) -> NodePlan:
    """Node j of site i: namespace, one line per provider, its guests and their ports."""
    nns = b.add_ns(f"n-{node.name}")
    addr = _node_first_line(b, i, j, sp, nns)
    addr2 = _node_second_line(b, i, j, sp, nns) if site.uplinks == 2 else None
    guests = [g for g in b.lab.guest if g.node == node.name]
    ports = [_guest(b, i, j, k, nns, node.name, g) for k, g in enumerate(guests)]
    port = b.lab.lab.port
    hosts = tuple(
        HostPlan(seg, f"h-{seg}"[:15], tuple(str(a) for a in addrs))
        for seg, addrs in node.host.items()
    )
    is_gw = node.name in b.lab.gateway_nodes()
    if is_gw:
        b.cmds += _gateway_cmds(b.lab, nns)
    return NodePlan(
        name=node.name,
        site=site.name,
        ns=nns,
        underlay=f"{addr}/30",
        endpoint=None if site.nat else f"{addr}:{port}",
        segments=b.lab.node_segments(node),
        ports=tuple(ports),
        underlay2=f"{addr2}/30" if addr2 else None,
        endpoint2=f"{addr2}:{port}" if addr2 else None,
        hosts=hosts,
        gateway=is_gw,
    )


def _gateway_cmds(lab: Lab, nns: str) -> list[Cmd]:
    """A gateway routes between its host ports and out of its uplink (masquerading the
    segments towards the internet core, whose hosts know no route into a segment)."""
    cmds: list[Cmd] = [
        (nns, ("sysctl", "-qw", "net.ipv4.ip_forward=1")),
        (nns, ("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")),
    ]
    if lab.internet is not None:
        nets = ", ".join(sorted({str(s.ipv4) for s in lab.segment}))
        cmds += [
            (nns, ("nft", "add", "table", "ip", "lablanspan")),
            (nns, ("nft", "add", "chain", "ip", "lablanspan", "post",
                   "{ type nat hook postrouting priority 100 ; }")),
            (nns, ("nft", "add", "rule", "ip", "lablanspan", "post", "ip", "saddr",
                   "{ " + nets + " }", "oifname", "up0", "masquerade")),
        ]  # fmt: skip
    return cmds


def _internet(b: _Build) -> tuple[str, str] | None:
    """The host outside the mesh: a namespace on the core, 198.19.250.0/24."""
    inet = b.lab.internet
    if inet is None:
        return None
    ns = b.add_ns("inet")
    core_addr = f"{inet.address.network[1]}/{inet.address.network.prefixlen}"
    b.links.append(Link(b.core, "to-inet", _mac(7, 0, 0), ns, "eth0", _mac(7, 0, 1)))
    b.cmds += [
        (b.core, ("ip", "addr", "add", core_addr, "dev", "to-inet")),
        (ns, ("ip", "addr", "add", str(inet.address), "dev", "eth0")),
        (ns, ("ip", "route", "add", "default", "via", str(inet.address.network[1]))),
    ]
    return ns, str(inet.address)


def _site(b: _Build, i: int, site: Site) -> None:
    """Site i: its router and uplinks, then each of its nodes with their guests."""
    sp = _site_plan(b, i, site)
    b.sites.append(sp)
    _first_uplink(b, sp)
    if site.uplinks == 2:
        _second_uplink(b, i, sp)
    _nat_or_route(b, sp)
    site_nodes = [n for n in b.lab.node if n.site == site.name]
    for j, node in enumerate(site_nodes, start=1):
        b.nodes.append(_node(b, i, j, site, sp, node))


def expand(lab: Lab, prefix: str, public_keys: dict[str, str]) -> Plan:
    """The whole lab as data: what to create, in which order, and the network file."""
    b = _Build(lab, prefix, auto=_auto_addresses(lab))
    b.add_ns(CORE_SHORT)
    b.cmds.append((b.core, ("sysctl", "-qw", "net.ipv4.ip_forward=1")))
    for i, site in enumerate(lab.site, start=1):
        _site(b, i, site)
    inet = _internet(b)
    return Plan(
        lab=lab.name,
        prefix=prefix,
        core_ns=b.core,
        namespaces=tuple(b.namespaces),
        links=tuple(b.links),
        sites=tuple(b.sites),
        nodes=tuple(b.nodes),
        guests=tuple(b.guests),
        commands=tuple(b.cmds),
        network_toml=render_network(lab, b.nodes, public_keys, b.sites),
        internet_ns=inet[0] if inet else None,
        internet_addr=inet[1] if inet else None,
    )


def render_network(
    lab: Lab,
    nodes: list[NodePlan],
    public_keys: dict[str, str],
    sites: Sequence[SitePlan] = (),
) -> str:
    """The network file the agents read, in the format of examples/network.toml.

    A trusted lab site becomes a trusted `[[site]]` whose underlay is the lab's
    own prefixes of that site (`sites`, from the plan).
    """
    out = [
        f"# Generated by `lanspan lab` from lab {lab.name!r}; do not edit.",
        "",
        "[network]",
        f"name = {_q(lab.name)}",
        f"port = {lab.lab.port}",
        f"cipher = {_q(lab.lab.cipher)}",
        "",
    ]
    for s in lab.segment:
        out += [
            "[[segment]]",
            f"name = {_q(s.name)}",
            f"vlan = {s.vlan}",
            f"vni = {s.vni or s.vlan}",
        ]
        clash = [o.name for o in lab.segment if o is not s and o.ipv4.overlaps(s.ipv4)]
        if clash:
            # The network file refuses overlapping subnets (informational there);
            # the lab overlaps them on purpose so that a leak answers a ping.
            out.append(f"# ipv4 {s.ipv4} left out: the lab overlaps it with {', '.join(clash)}")
        else:
            out.append(f"ipv4 = {_q(str(s.ipv4))}")
        if s.ipv6:
            out.append(f"ipv6 = {_q(str(s.ipv6))}")
        out += [f"mtu = {s.mtu}", ""]
    for site in lab.site:
        sp = next((x for x in sites if x.name == site.name), None)
        if site.trusted and sp is not None:
            out += [
                "[[site]]",
                f"name = {_q(site.name)}",
                "trusted = true",
                "underlay = [" + ", ".join(_q(p) for p in sp.prefixes()) + "]",
                "",
            ]
    for n in nodes:
        lab_node = lab.node_by_name(n.name)
        out += [
            "[[node]]",
            f"name = {_q(n.name)}",
            f"site = {_q(n.site)}",
            f"public_key = {_q(public_keys[n.name])}",
            "endpoints = [" + ", ".join(_q(e) for e in n.endpoints()) + "]",
            "segments = [" + ", ".join(_q(s) for s in n.segments) + "]",
        ]
        if not lab_node.relay:
            out.append("relay = false")
        for p in n.ports:
            out += ["", "  [[node.port]]", f"  kind = {_q(p.kind)}", f"  name = {_q(p.guest)}"]
            if p.kind == "access":
                out.append(f"  segment = {_q(p.segments[0])}")
            out.append(f"  interface = {_q(p.device)}")
            if p.kind == "trunk":
                out.append("  vlans = [" + ", ".join(str(v) for v in p.vlans) + "]")
                if p.native_vlan is not None:
                    out.append(f"  native_vlan = {p.native_vlan}")
        for h in n.hosts:
            out += ["", "  [[node.port]]", '  kind = "host"', f"  name = {_q(h.device)}",
                    f"  segment = {_q(h.segment)}",
                    "  address = [" + ", ".join(_q(a) for a in h.addresses) + "]"]  # fmt: skip
        out.append("")
    for kind in ("pool", "gateway", "floating", "allow", "dhcp"):
        for table in getattr(lab, kind):
            out += [*_toml_table(kind, table), ""]
    return "\n".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} into the network file")


def _toml_table(name: str, table: dict[str, Any]) -> list[str]:
    """One [[name]] table as TOML; lists of tables ([[dhcp.host]]) follow its keys."""
    out = [f"[[{name}]]"]
    subs: list[tuple[str, list[dict[str, Any]]]] = []
    for k, v in table.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            subs.append((k, v))
        else:
            out.append(f"{k} = {_toml_value(v)}")
    for k, items in subs:
        for item in items:
            out += _toml_table(f"{name}.{k}", item)
    return out


def default_prefix(lab_name: str) -> str:
    return f"lsl-{lab_name}"


__all__ = [
    "GuestPlan",
    "HostPlan",
    "Link",
    "NodePlan",
    "Plan",
    "SitePlan",
    "default_prefix",
    "expand",
]
