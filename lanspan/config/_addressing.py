"""Rules for gateways, floating addresses, filtering, pools and DHCP.

Part of the checker of `lanspan.config.parse` (pure, no I/O): it reads the
tables [[pool]], [[gateway]], [[floating]], [[allow]] and [[dhcp]] once the
segments and nodes are known, reports problems in the checker's form
(`<object> <field>: <value> <what is wrong> — <fix>`), assigns the `auto`
host addresses and returns what `Network` carries.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_interface,
)
from typing import Any, Literal, Protocol, TypeVar, cast

from lanspan.config._raw import (
    RawAllow,
    RawDhcp,
    RawFloating,
    RawGateway,
    RawPool,
    _Raw,
    label,
    show,
    suggest,
)
from lanspan.config.model import (
    Allow,
    Assignment,
    Dhcp,
    DhcpHost,
    FloatingAddress,
    Gateway,
    HostPort,
    IPAddress,
    IPInterface,
    Ipv6Mode,
    Node,
    Pool,
    Port,
    Proto,
    Segment,
    Uplink,
)
from lanspan.config.pools import PoolExhausted, assign, parse_range
from lanspan.records import record

_M = TypeVar("_M", bound=_Raw)


class _Checker(Protocol):
    """What this checker uses of parse.py's checker (a Protocol: no import cycle)."""

    problems: list[str]
    seg_names: list[str]
    addresses: dict[IPAddress, str]

    def err(self, msg: str) -> None: ...
    def validate(self, model: type[_M], data: object, where: str) -> _M | None: ...
    def tables(self, doc: dict[str, Any], key: str) -> list[Any]: ...
    def check_name(self, where: str, what: str, value: str) -> None: ...
    def unicast_mac(self, where: str, text: str) -> bytes | None: ...


class _NodeInfo(Protocol):
    """What this checker reads of a node as parse.py collected it."""

    @property
    def name(self) -> str | None: ...
    @property
    def segments(self) -> set[str] | None: ...
    @property
    def ports(self) -> dict[str, Port]: ...
    @property
    def uplinks(self) -> dict[str, Uplink]: ...
    @property
    def host_segments(self) -> set[str]: ...


ADVERT_MIN, ADVERT_MAX = 0.01, 40.95  # VRRPv3: 12-bit interval in centiseconds
VRID_MIN, VRID_MAX = 1, 255
LEASE_MIN = 120  # dnsmasq refuses shorter leases
PROTOS: tuple[str, ...] = ("tcp", "udp", "icmp", "any")
IPV6_MODES: tuple[str, ...] = ("slaac", "dhcpv6", "none")
INTERNET = "internet"
_PORTS = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")
_DNSNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})\Z")

Net = IPv4Network | IPv6Network


@record
class Addressing:
    """What the checker adds to `Network`."""

    segments: dict[str, Segment] = field(default_factory=dict)  # replaced segments (gateway set)
    nodes: dict[str, Node] = field(default_factory=dict)  # replaced nodes (auto addresses)
    gateways: list[Gateway] = field(default_factory=list)
    floating: list[FloatingAddress] = field(default_factory=list)
    allows: list[Allow] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    dhcp: list[Dhcp] = field(default_factory=list)


def _fam(version: int) -> str:
    return "ipv4" if version == 4 else "ipv6"


class AddressingChecker:
    def __init__(
        self,
        c: _Checker,
        network: str,
        segments: list[Segment],
        nodes: Sequence[tuple[Node | None, _NodeInfo]],
    ) -> None:
        self.c = c
        self.network = network
        self.segments = {s.name: s for s in segments}
        self.infos = {i.name: i for _, i in reversed(nodes) if i.name is not None}
        self.nodes = {n.name: n for n, _ in nodes if n is not None}
        self.out = Addressing()
        # every fixed address of the file (host ports, virtual, floating, leases) -> who
        self.fixed: dict[IPAddress, str] = dict(c.addresses)
        self.pool_where: dict[tuple[str, int], tuple[Pool, str]] = {}
        self.dhcp_ranges: list[tuple[IPAddress, IPAddress, str]] = []
        self.vrids: dict[str, dict[int, str]] = {}  # segment or "uplink <name>" -> vrid -> who
        # segments some [[gateway]] / [[pool]] table names, valid or not (no cascades)
        self.gateway_named: set[str] = set()
        self.pool_named: set[str] = set()

    def err(self, msg: str) -> None:
        self.c.err(msg)

    # ---- helpers

    def seg(self, where: str, name: str) -> Segment | None:
        """The (valid) segment `name`, or None after reporting why not."""
        if name not in self.c.seg_names:
            self.err(
                f"{where} segment: {show(name)} is not a defined segment"
                + suggest(name, self.c.seg_names)
            )
            return None
        return self.segments.get(name)  # None: the segment is invalid, already reported

    def subnet(self, seg: Segment, version: int) -> Net | None:
        return seg.ipv4 if version == 4 else seg.ipv6

    def host_port(self, node: str, segment: str) -> HostPort | None:
        info = self.infos.get(node)
        if info is None:
            return None
        for p in info.ports.values():
            if isinstance(p, HostPort) and p.segment == segment:
                return p
        return None

    def port_has_family(self, port: HostPort, version: int) -> bool:
        if any(a.version == version for a in port.addresses):
            return True
        if (port.segment, version) in self.pool_where:
            return port.auto
        # an invalid pool, or none at all: reported on the pool or the port already
        return port.auto and not any(seg == port.segment for seg, _ in self.pool_where)

    def in_pool(self, addr: IPAddress) -> str | None:
        for (_, v), (pool, where) in self.pool_where.items():
            if v == addr.version and int(pool.first) <= int(addr) <= int(pool.last):
                return where
        return None

    def claim(self, where: str, addr: IPAddress) -> bool:
        """Record a fixed address; report it when already used or inside a pool or range."""
        other = self.fixed.get(addr)
        if other is not None:
            self.err(f"{where}: {addr} is already used by {other}")
            return False
        pool = self.in_pool(addr)
        if pool is not None:
            self.err(
                f"{where}: {addr} is inside {pool}, whose addresses go to `auto` host ports"
                " — pick one outside the pool"
            )
            return False
        for first, last, rwhere in self.dhcp_ranges:
            if first.version == addr.version and first <= addr <= last:  # type: ignore[operator]
                self.err(
                    f"{where}: {addr} is inside {rwhere} ({first}-{last}), handed out by DHCP"
                    " — pick one outside the range"
                )
                return False
        self.fixed[addr] = where
        return True

    def address_in_segment(self, where: str, text: str, seg: Segment) -> IPInterface | None:
        """A virtual or floating address: plain, or with the segment's prefix."""
        try:
            iface = ip_interface(text)
        except ValueError:
            self.err(f'{where}: {show(text)} is not an IP address — write e.g. "198.18.10.1"')
            return None
        net = self.subnet(seg, iface.version)
        fam = _fam(iface.version)
        if net is None:
            self.err(
                f'{where}: {iface.ip} is {fam} but segment "{seg.name}" has no {fam} subnet'
                f" — add {fam} = ... to the segment"
            )
            return None
        if iface.ip not in net:
            self.err(f'{where}: {iface.ip} is outside the segment\'s {fam} {net} of "{seg.name}"')
            return None
        if "/" in text and iface.network.prefixlen != net.prefixlen:
            self.err(f'{where}: {show(text)}: the prefix differs from {net} — write "{iface.ip}"')
            return None
        if iface.ip == net.network_address or (
            isinstance(net, IPv4Network)
            and net.prefixlen < 31
            and iface.ip == net.broadcast_address
        ):
            self.err(f"{where}: {iface.ip} is the network or broadcast address of {net}")
            return None
        return ip_interface(f"{iface.ip}/{net.prefixlen}")

    def holders(self, where: str, names: list[str]) -> list[str] | None:
        ok = True
        if not names:
            self.err(f"{where} nodes: the list is empty — name the nodes that hold the address")
            return None
        seen: set[str] = set()
        for k, n in enumerate(names):
            if n in seen:
                self.err(f"{where} nodes[{k}]: {show(n)} is listed twice")
                ok = False
            seen.add(n)
            if n not in self.infos:
                self.err(
                    f"{where} nodes[{k}]: {show(n)} is not a defined node"
                    + suggest(n, list(self.infos))
                )
                ok = False
        return names if ok else None

    def advert(self, where: str, value: float) -> None:
        if not (math.isfinite(value) and ADVERT_MIN <= value <= ADVERT_MAX):
            self.err(
                f"{where} advert_interval: {show(value)} is outside {ADVERT_MIN}..{ADVERT_MAX}"
                " seconds (VRRPv3)"
            )
        elif abs(round(value * 100) - value * 100) > 1e-6:
            self.err(
                f"{where} advert_interval: {show(value)} is not a whole number of centiseconds"
                f" — write {round(value * 100) / 100}"
            )

    def vrid(self, where: str, domain: str, explicit: int | None, default_from: int) -> int:
        used = self.vrids.setdefault(domain, {})
        if explicit is not None:
            if not VRID_MIN <= explicit <= VRID_MAX:
                self.err(f"{where} vrid: {explicit} is outside {VRID_MIN}..{VRID_MAX}")
                return explicit
            other = used.get(explicit)
            if other is not None:
                self.err(
                    f"{where} vrid: {explicit} is already used by {other} in {domain}"
                    " — every VRRP instance of one segment needs its own vrid"
                )
            used[explicit] = where
            return explicit
        vrid = default_from
        while vrid in used and vrid < VRID_MAX:
            vrid += 1
        if vrid in used:
            self.err(f"{where}: no free vrid left in {domain} — set vrid = ...")
        used[vrid] = where
        return vrid

    # ---- the tables

    def run(self, doc: dict[str, Any]) -> Addressing:
        pools = self.c.tables(doc, "pool")
        gateways = self.c.tables(doc, "gateway")
        floats = self.c.tables(doc, "floating")
        allows = self.c.tables(doc, "allow")
        dhcps = self.c.tables(doc, "dhcp")
        for table, named in ((pools, self.pool_named), (gateways, self.gateway_named)):
            for item in table:
                if isinstance(item, dict) and isinstance(item.get("segment"), str):
                    named.add(item["segment"])
        for i, item in enumerate(pools):
            self.pool(f"pool[{i}]", item)
        # DHCP ranges are read before the fixed addresses they must not contain
        raw_dhcp = [self.c.validate(RawDhcp, item, f"dhcp[{i}]") for i, item in enumerate(dhcps)]
        for i, rd in enumerate(raw_dhcp):
            if rd is not None:
                self.dhcp_range(f"dhcp[{i}]", rd)
        for i, item in enumerate(gateways):
            self.gateway(f"gateway[{i}]", item)
        names: dict[str, str] = {}
        for i, item in enumerate(floats):
            self.floating(i, item, names)
        for i, item in enumerate(allows):
            self.allow(f"allow[{i}]", item)
        for i, rd in enumerate(raw_dhcp):
            if rd is not None:
                self.dhcp(f"dhcp[{i}]", rd)
        self.assign_pools()
        return self.out

    # [[pool]]

    def pool(self, where: str, item: object) -> None:
        raw = self.c.validate(RawPool, item, where)
        if raw is None:
            return
        seg = self.seg(where, raw.segment)
        rng = parse_range(raw.range)
        if isinstance(rng, str):
            self.err(f"{where} range: {show(raw.range)} {rng}")
            return
        if seg is None:
            return
        first, last = rng
        fam = _fam(first.version)
        net = self.subnet(seg, first.version)
        if net is None:
            self.err(
                f'{where} range: {show(raw.range)} is {fam} but segment "{seg.name}" has no'
                f" {fam} subnet"
            )
            return
        if first not in net or last not in net:
            self.err(
                f'{where} range: {show(raw.range)} is not inside {net} of segment "{seg.name}"'
            )
            return
        pool = Pool(seg.name, first, last)
        label = f'{where} ({raw.range} of segment "{seg.name}")'
        key = (seg.name, first.version)
        if key in self.pool_where:
            self.err(
                f'{where} segment: segment "{seg.name}" already has an {fam} pool,'
                f" {self.pool_where[key][1]} — one pool per family and segment"
            )
            return
        for other, owhere in self.pool_where.values():
            if other.version == pool.version and not (
                pool.last < other.first or other.last < pool.first  # type: ignore[operator]
            ):
                self.err(f"{where} range: {show(raw.range)} overlaps {owhere}")
                return
        inside = sorted(
            (a for a in self.fixed if a.version == first.version and first <= a <= last),  # type: ignore[operator]
            key=int,
        )
        if inside:
            self.err(
                f"{where} range: {show(raw.range)} contains {inside[0]}, the static address of "
                f"{self.fixed[inside[0]]} — move the pool or that address"
            )
            return
        self.pool_where[key] = (pool, label)
        self.out.pools.append(pool)

    # [[gateway]]

    def gateway(self, where: str, item: object) -> None:
        raw = self.c.validate(RawGateway, item, where)
        if raw is None:
            return
        mark = len(self.c.problems)
        seg = self.seg(where, raw.segment)
        if seg is not None and any(g.segment == seg.name for g in self.out.gateways):
            self.err(f'{where} segment: segment "{seg.name}" already has a gateway')
            return
        addrs: list[IPInterface] = []
        if not raw.address:
            self.err(
                f"{where} address: the list is empty — give the virtual address, "
                'e.g. ["198.18.10.1"]'
            )
        for k, text in enumerate(raw.address):
            if seg is None:
                break
            a = self.address_in_segment(f"{where} address[{k}]", text, seg)
            if a is None:
                continue
            if any(b.version == a.version for b in addrs):
                self.err(
                    f"{where} address[{k}]: {a.ip} is a second {_fam(a.version)} address"
                    " — give at most one per family"
                )
                continue
            if self.claim(f"{where} address[{k}]", a.ip):
                addrs.append(a)
        self.advert(where, raw.advert_interval)
        nodes = self.holders(where, raw.nodes)
        if seg is not None and nodes is not None and addrs:
            primary = addrs[0].version if len({a.version for a in addrs}) == 1 else 4
            for k, n in enumerate(nodes):
                self.holder_in_segment(f"{where} nodes[{k}]", n, seg, primary)
            vrid = self.vrid(where, f'segment "{seg.name}"', raw.vrid, 1)
        else:
            vrid = raw.vrid or 1
        if (
            seg is not None
            and seg.gateway is not None
            and addrs
            and seg.gateway not in {a.ip for a in addrs}
        ):
            self.err(
                f'segment "{seg.name}" gateway: {seg.gateway} is not an address of {where} '
                f"({', '.join(str(a.ip) for a in addrs)}) — drop the segment's gateway field"
                " or make it the virtual address"
            )
        if len(self.c.problems) != mark or seg is None or nodes is None:
            return
        gw = Gateway(seg.name, tuple(addrs), tuple(nodes), raw.preempt, raw.advert_interval, vrid)
        self.out.gateways.append(gw)
        if seg.gateway is None:
            first = next((a.ip for a in addrs if a.version == 4), addrs[0].ip)
            self.out.segments[seg.name] = dataclasses.replace(seg, gateway=first)

    def holder_in_segment(self, where: str, node: str, seg: Segment, version: int) -> None:
        info = self.infos[node]
        if info.segments is not None and seg.name not in info.segments:
            self.err(
                f'{where}: node "{node}" does not carry segment "{seg.name}"'
                " — add it to the node's segments and give the node a host port in it"
            )
            return
        port = self.host_port(node, seg.name)
        if port is None:
            if info.segments is not None and seg.name not in info.host_segments:
                self.err(
                    f'{where}: node "{node}" has no host port in segment "{seg.name}"'
                    ' — add [[node.port]] kind = "host" with an address in the segment'
                )
            return
        if not self.port_has_family(port, version):
            fam = _fam(version)
            self.err(
                f'{where}: node "{node}" host port "{port.name}" has no {fam} address in segment '
                f'"{seg.name}" — VRRP needs one to send its advertisements'
            )

    # [[floating]]

    def floating(self, i: int, item: object, names: dict[str, str]) -> None:
        where = label("floating", i, item, names)
        raw = self.c.validate(RawFloating, item, where)
        if raw is None:
            return
        mark = len(self.c.problems)
        self.c.check_name(where, "name", raw.name)
        if raw.name in names:
            self.err(f"floating[{i}] name: {show(raw.name)} is already used by {names[raw.name]}")
        names.setdefault(raw.name, f"floating[{i}]")
        if (raw.segment is None) == (raw.uplink is None):
            self.err(
                f"{where}: give either segment (a service address in a segment) or uplink"
                " (a public address on the nodes' uplink), not both or neither"
            )
            return
        self.advert(where, raw.advert_interval)
        if not (math.isfinite(raw.check_interval) and raw.check_interval > 0):
            self.err(
                f"{where} check_interval: {show(raw.check_interval)} must be a positive"
                " number of seconds"
            )
        if raw.check is not None and not raw.check.strip():
            self.err(f"{where} check: the command is empty — drop the field or give a command")
        nodes = self.holders(where, raw.nodes)
        addrs: list[IPInterface] = []
        if not raw.address:
            self.err(f"{where} address: the list is empty")
        seg: Segment | None = None
        if raw.segment is not None:
            seg = self.seg(where, raw.segment)
            for k, text in enumerate(raw.address if seg is not None else []):
                a = self.address_in_segment(f"{where} address[{k}]", text, seg)  # type: ignore[arg-type]
                if a is not None and self.claim(f"{where} address[{k}]", a.ip):
                    addrs.append(a)
            if seg is not None and nodes is not None and addrs:
                for k, n in enumerate(nodes):
                    self.holder_in_segment(f"{where} nodes[{k}]", n, seg, addrs[0].version)
            domain = f'segment "{raw.segment}"'
        else:
            assert raw.uplink is not None
            for k, text in enumerate(raw.address):
                a = self.uplink_address(f"{where} address[{k}]", text)
                if a is not None and self.claim(f"{where} address[{k}]", a.ip):
                    addrs.append(a)
            if nodes is not None:
                for k, n in enumerate(nodes):
                    self.holder_on_uplink(f"{where} nodes[{k}]", n, raw.uplink, addrs)
            domain = f'uplink "{raw.uplink}"'
        if len({a.version for a in addrs}) > 1:
            self.err(f"{where} address: mixes IPv4 and IPv6 — use one floating address per family")
        vrid = self.vrid(where, domain, raw.vrid, 2)
        if len(self.c.problems) != mark or nodes is None or not addrs:
            return
        self.out.floating.append(
            FloatingAddress(
                name=raw.name,
                addresses=tuple(addrs),
                nodes=tuple(nodes),
                preempt=raw.preempt,
                segment=raw.segment,
                uplink=raw.uplink,
                advert_interval=raw.advert_interval,
                vrid=vrid,
                check=raw.check,
                check_interval=raw.check_interval,
            )
        )

    def uplink_address(self, where: str, text: str) -> IPInterface | None:
        if "/" not in text:
            self.err(f'{where}: {show(text)} has no prefix length — write e.g. "198.19.1.100/24"')
            return None
        try:
            return ip_interface(text)
        except ValueError:
            self.err(f'{where}: {show(text)} is not an address — write e.g. "198.19.1.100/24"')
            return None

    def holder_on_uplink(
        self, where: str, node: str, uplink: str, addrs: list[IPInterface]
    ) -> None:
        info = self.infos[node]
        up = info.uplinks.get(uplink)
        if up is None:
            self.err(
                f'{where}: node "{node}" has no uplink {show(uplink)}'
                + suggest(uplink, list(info.uplinks))
                + ' — add [[node.uplink]] name = "..." interface = "..." to the node'
            )
            return
        for a in addrs:
            if not any(u.version == a.version for u in up.addresses):
                fam = _fam(a.version)
                self.err(
                    f'{where}: node "{node}" uplink "{uplink}" has no {fam} address — VRRP on an'
                    " uplink speaks unicast from it; add it to the uplink's address"
                )

    # [[allow]]

    def allow(self, where: str, item: object) -> None:
        raw = self.c.validate(RawAllow, item, where)
        if raw is None:
            return
        mark = len(self.c.problems)
        src = self.allow_segment(f"{where} from", raw.source)
        gw = self.out_gateway(raw.source)
        if src is not None and raw.source not in self.gateway_named:
            self.err(
                f'{where} from: segment "{raw.source}" has no [[gateway]] — forwarding happens only'
                " on gateway nodes; add one for it"
            )
        to_kind: Literal["segment", "uplink", "internet"]
        dst: Segment | None = None
        if raw.to == INTERNET:
            to_kind = "internet"
        elif raw.to in self.c.seg_names:
            to_kind = "segment"
            dst = self.segments.get(raw.to)
            other = self.out_gateway(raw.to)
            if raw.to == raw.source:
                self.err(
                    f"{where} to: {show(raw.to)} is the same segment as from — nothing to forward"
                )
            elif other is None and raw.to not in self.gateway_named:
                self.err(
                    f'{where} to: segment "{raw.to}" has no [[gateway]], so its hosts have no route'
                    " back — add one for it"
                )
            elif gw is not None and other is not None and other.nodes != gw.nodes:
                self.err(
                    f'{where} to: the gateways of "{raw.source}" {show(list(gw.nodes))} and of '
                    f'"{raw.to}" {show(list(other.nodes))} differ — give both segments the same '
                    "gateway nodes in the same order, so both directions cross one node"
                )
        else:
            to_kind = "uplink"
            lacking = [n for n in (gw.nodes if gw else ()) if raw.to not in self.infos[n].uplinks]
            if gw is not None and lacking:
                self.err(
                    f"{where} to: {show(raw.to)} is not a segment, an uplink of every gateway of "
                    f'"{raw.source}" (node "{lacking[0]}" lacks it) or "internet"'
                )
        if raw.proto not in PROTOS:
            self.err(
                f"{where} proto: {show(raw.proto)} is not one of "
                + ", ".join(f'"{p}"' for p in PROTOS)
            )
        ports: list[tuple[int, int]] = []
        if raw.ports and raw.proto in ("icmp", "any"):
            self.err(f'{where} ports: ports need proto = "tcp" or "udp", not {show(raw.proto)}')
        for k, p in enumerate(raw.ports):
            r = self.port_range(f"{where} ports[{k}]", p)
            if r is not None:
                ports.append(r)
        want: tuple[int, ...]
        if raw.family == "both":
            want = (4, 6)
        elif raw.family in ("ipv4", "ipv6"):
            want = (int(raw.family[-1]),)
        else:
            self.err(f'{where} family: {show(raw.family)} is not "ipv4", "ipv6" or "both"')
            want = ()
        fams = tuple(
            v
            for v in want
            if src is not None
            and self.subnet(src, v) is not None
            and (dst is None or self.subnet(dst, v) is not None)
        )
        if want and src is not None and (dst is not None or to_kind != "segment") and not fams:
            self.err(
                f"{where} family: {raw.family} — the segments have no subnet of that"
                " family in common"
            )
        if len(self.c.problems) != mark or src is None:
            return
        self.out.allows.append(
            Allow(
                source=raw.source,
                to=raw.to,
                to_kind=to_kind,
                proto=cast(Proto, raw.proto),
                ports=tuple(ports),
                families=cast(tuple[Literal[4, 6], ...], fams),
            )
        )

    def allow_segment(self, where: str, name: str) -> Segment | None:
        if name not in self.c.seg_names:
            self.err(
                f"{where}: {show(name)} is not a defined segment" + suggest(name, self.c.seg_names)
            )
            return None
        return self.segments.get(name)

    def out_gateway(self, segment: str) -> Gateway | None:
        for g in self.out.gateways:
            if g.segment == segment:
                return g
        return None

    def port_range(self, where: str, p: object) -> tuple[int, int] | None:
        if isinstance(p, bool) or not isinstance(p, int | str):
            self.err(f'{where}: {show(p)} is not a port — write 443 or "8000-8100"')
            return None
        m = _PORTS.match(str(p))
        if m is None:
            self.err(f'{where}: {show(p)} is not a port — write 443 or "8000-8100"')
            return None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if not (1 <= lo <= hi <= 65535):
            self.err(f"{where}: {show(p)} is outside 1..65535 (or starts after it ends)")
            return None
        return lo, hi

    # [[dhcp]]

    def dhcp_range(self, where: str, raw: RawDhcp) -> None:
        seg = self.segments.get(raw.segment)
        for fld, text, version in (("range", raw.range, 4), ("range6", raw.range6, 6)):
            if text is None or seg is None:
                continue
            rng = parse_range(text)
            if isinstance(rng, str):
                self.err(f"{where} {fld}: {show(text)} {rng}")
                continue
            first, last = rng
            net = self.subnet(seg, version)
            if first.version != version:
                self.err(
                    f"{where} {fld}: {show(text)} is not {_fam(version)}"
                    + (" — put it in range6" if version == 4 else " — put it in range")
                )
                continue
            if net is None or first not in net or last not in net:
                self.err(
                    f"{where} {fld}: {show(text)} is not inside the {_fam(version)} subnet"
                    f' of segment "{seg.name}"'
                )
                continue
            for (_, v), (pool, pwhere) in self.pool_where.items():
                if v == version and not (last < pool.first or pool.last < first):  # type: ignore[operator]
                    self.err(f"{where} {fld}: {show(text)} overlaps {pwhere}")
                    break
            else:
                inside = sorted(
                    (a for a in self.fixed if a.version == version and first <= a <= last),  # type: ignore[operator]
                    key=int,
                )
                if inside:
                    self.err(
                        f"{where} {fld}: {show(text)} contains {inside[0]}, the static address of "
                        f"{self.fixed[inside[0]]}"
                    )
                else:
                    self.dhcp_ranges.append((first, last, f"{where} {fld}"))

    def dhcp(self, where: str, raw: RawDhcp) -> None:
        mark = len(self.c.problems)
        seg = self.seg(where, raw.segment)
        if seg is None:
            return
        if any(d.segment == seg.name for d in self.out.dhcp):
            self.err(f'{where} segment: segment "{seg.name}" already has a [[dhcp]] table')
            return
        gw = self.out_gateway(seg.name)
        if seg.name not in self.gateway_named:
            self.err(
                f'{where} segment: segment "{seg.name}" has no [[gateway]] — DHCP is served by the'
                " segment's gateways, with the virtual address as router"
            )
        mode = raw.ipv6 if raw.ipv6 is not None else ("slaac" if seg.ipv6 is not None else "none")
        if mode not in IPV6_MODES:
            self.err(
                f"{where} ipv6: {show(mode)} is not one of "
                + ", ".join(f'"{m}"' for m in IPV6_MODES)
            )
        elif mode != "none" and seg.ipv6 is None:
            self.err(f'{where} ipv6: {show(mode)} needs an ipv6 subnet on segment "{seg.name}"')
        elif mode == "slaac" and seg.ipv6 is not None and seg.ipv6.prefixlen != 64:
            self.err(
                f'{where} ipv6: "slaac" needs a /64 — segment "{seg.name}" has {seg.ipv6};'
                ' use "dhcpv6"'
            )
        elif mode == "dhcpv6" and raw.range6 is None:
            self.err(f'{where} range6: missing — "dhcpv6" hands out addresses from range6')
        if raw.range6 is not None and mode != "dhcpv6":
            self.err(f'{where} range6: only used with ipv6 = "dhcpv6"')
        if (
            raw.range is not None
            and gw is not None
            and not any(a.version == 4 for a in gw.addresses)
        ):
            self.err(
                f'{where} range: the gateway of "{seg.name}" has no IPv4 address to offer as router'
            )
        if raw.range is None and mode == "none":
            self.err(f"{where}: nothing to serve — give range (DHCPv4) or ipv6")
        if raw.lease_time < LEASE_MIN:
            self.err(
                f"{where} lease_time: {raw.lease_time} is below {LEASE_MIN} seconds"
                " (dnsmasq's minimum)"
            )
        if raw.lease_file is not None and not raw.lease_file.startswith("/"):
            self.err(f"{where} lease_file: {show(raw.lease_file)} is not an absolute path")
        ranges = {r[2]: r for r in self.dhcp_ranges}
        r4 = ranges.get(f"{where} range")
        r6 = ranges.get(f"{where} range6")
        hosts: list[DhcpHost] = []
        macs: dict[bytes, str] = {}
        for k, h in enumerate(raw.host):
            hw = f"{where} host[{k}]"
            mac = self.c.unicast_mac(f"{hw} mac", h.mac)
            if mac is not None:
                if mac in macs:
                    self.err(f"{hw} mac: {show(h.mac)} already has a lease, {macs[mac]}")
                macs.setdefault(mac, hw)
            try:
                addr = ip_address(h.address)
            except ValueError:
                self.err(f"{hw} address: {show(h.address)} is not an IP address")
                continue
            net = self.subnet(seg, addr.version)
            if net is None or addr not in net:
                self.err(f'{hw} address: {addr} is outside the subnets of segment "{seg.name}"')
                continue
            if h.name is not None and not _DNSNAME.match(h.name):
                self.err(f"{hw} name: {show(h.name)} is not a host name (letters, digits, '-')")
            inside = r4 if addr.version == 4 else r6
            if inside is not None and inside[0] <= addr <= inside[1]:  # type: ignore[operator]
                if addr in self.fixed:
                    self.err(f"{hw} address: {addr} is already used by {self.fixed[addr]}")
                    continue
                self.fixed[addr] = hw  # a static lease may sit inside the range (dnsmasq allows it)
            elif not self.claim(f"{hw} address", addr):
                continue
            if mac is not None:
                hosts.append(DhcpHost(mac, addr, h.name))
        if len(self.c.problems) != mark:
            return
        self.out.dhcp.append(
            Dhcp(
                segment=seg.name,
                range4=cast(tuple[IPv4Address, IPv4Address], r4[:2]) if r4 else None,
                ipv6=cast(Ipv6Mode, mode),
                range6=cast(tuple[IPv6Address, IPv6Address], r6[:2]) if r6 else None,
                lease_time=raw.lease_time,
                lease_file=raw.lease_file,
                dns=raw.dns,
                hosts=tuple(hosts),
            )
        )

    # ---- `auto` host addresses

    def assign_pools(self) -> None:
        wanted: dict[str, list[tuple[str, HostPort]]] = {}  # segment -> [(node, port)]
        for name, node in self.nodes.items():
            seen: set[str] = set()
            for p in node.ports:
                if not (isinstance(p, HostPort) and p.auto):
                    continue
                where = f'node "{name}" port "{p.name}" address'
                if p.segment in seen:
                    self.err(
                        f'{where}: "auto" is already used by another host port of node "{name}" in '
                        f'segment "{p.segment}" — one auto address per node and segment'
                    )
                    continue
                seen.add(p.segment)
                if p.segment not in self.pool_named:
                    self.err(
                        f'{where}: "auto" needs a [[pool]] in segment "{p.segment}"'
                        f' — add [[pool]] segment = "{p.segment}" range = "..."'
                    )
                    continue
                wanted.setdefault(p.segment, []).append((name, p))
        got: dict[tuple[str, str], list[IPInterface]] = {}
        for (segment, version), (pool, pwhere) in sorted(self.pool_where.items()):
            members = wanted.get(segment, [])
            if not members:
                continue
            names = [n for n, _ in members]
            try:
                placed = assign(self.network, pool, names, self.fixed)
            except PoolExhausted as e:
                self.err(
                    f"{pwhere}: the pool is exhausted — {e.wanted} host ports want an address,"
                    f" {e.free} are free; widen the range"
                )
                continue
            net = self.subnet(self.segments[segment], version)
            assert net is not None
            by_node = dict(members)
            for pl in placed:
                port = by_node[pl.name]
                got.setdefault((pl.name, port.name), []).append(
                    ip_interface(f"{pl.address}/{net.prefixlen}")
                )
                self.out.assignments.append(
                    Assignment(pl.name, port.name, segment, pl.address, pl.home, pl.collided_with)
                )
        for name, node in self.nodes.items():
            if not any((name, p.name) in got for p in node.ports):
                continue
            new_ports = tuple(
                dataclasses.replace(p, addresses=p.addresses + tuple(got[(name, p.name)]))
                if isinstance(p, HostPort) and (name, p.name) in got
                else p
                for p in node.ports
            )
            self.out.nodes[name] = dataclasses.replace(node, ports=new_ports)
