"""The lab file: sites, nodes, segments, guests, impairments and fault scenarios.

`load_lab(path)` parses and validates a lab file once; errors name the file,
the field and the bad value (`ConfigError`). The result is frozen and trusted
by the expansion (`lanspan.lab.topology`) and the runner.

Lab addresses come only from 198.18.0.0/15 and fd00::/8: a lab never routes
anything that could leave the machine.
"""

from __future__ import annotations

import tomllib
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lanspan.errors import ConfigError

LAB_V4 = IPv4Network("198.18.0.0/15")
LAB_V6 = IPv6Network("fd00::/8")

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$", min_length=1, max_length=24)]
SiteName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$", min_length=1, max_length=12)]


def _check_lab_address(value: Any) -> Any:
    net = value.network if isinstance(value, IPv4Interface | IPv6Interface) else value
    if isinstance(net, IPv4Network) and not net.subnet_of(LAB_V4):
        raise ValueError(f"{value} is outside the lab range 198.18.0.0/15")
    if isinstance(net, IPv6Network) and not net.subnet_of(LAB_V6):
        raise ValueError(f"{value} is outside the lab range fd00::/8")
    return value


def _no_bool(value: Any) -> Any:
    """`true`/`false` where an address belongs: refused (ipaddress would take it as 1/0)."""
    items = value if isinstance(value, list | tuple) else [value]
    if any(isinstance(v, bool) for v in items):
        raise ValueError(f"{value!r} is not an address")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Impairment(_Model):
    """Underlay impairment of a site's uplink (both directions)."""

    loss: float = Field(default=0.0, ge=0, le=100)  # percent of packets dropped
    delay_ms: float = Field(default=0.0, ge=0, le=10_000)  # added one-way delay
    jitter_ms: float = Field(default=0.0, ge=0, le=10_000)  # uniform +- around delay
    duplicate: float = Field(default=0.0, ge=0, le=100)  # percent sent twice
    reorder: float = Field(default=0.0, ge=0, le=100)  # percent held back behind the next packet
    corrupt: float = Field(default=0.0, ge=0, le=100)  # percent with one payload byte flipped

    @property
    def empty(self) -> bool:
        return not any(
            (self.loss, self.delay_ms, self.jitter_ms, self.duplicate, self.reorder, self.corrupt)
        )

    @property
    def needs_userspace(self) -> bool:
        """Anything but loss needs the userspace impairer (no netem here)."""
        return bool(
            self.delay_ms or self.jitter_ms or self.duplicate or self.reorder or self.corrupt
        )


class LabHeader(_Model):
    name: Name
    port: int = Field(default=51820, ge=1, le=65535)  # UDP port of every agent
    cipher: Literal["aesgcm", "chachapoly"] = "aesgcm"
    up_timeout: float = Field(default=60.0, gt=0, le=600)  # seconds to wait for every session
    # How `lab up` and a cold-start fault start all agents at once: "fork" from one
    # launcher that imported the agent once (lanspan.lab.launcher: N servers boot side by
    # side, here they share 2 cores), or "exec": one `python -m lanspan agent` each.
    agent_start: Literal["fork", "exec"] = "fork"
    throughput_seconds: float = Field(default=3.0, gt=0, le=60)
    min_throughput_mbps: float = Field(default=1.0, ge=0)


class Segment(_Model):
    name: Name
    vlan: int = Field(ge=1, le=4094)
    vni: int | None = Field(default=None, ge=1, le=2**24 - 1)
    ipv4: IPv4Network
    ipv6: IPv6Network | None = None
    mtu: int = Field(default=1400, ge=576, le=9000)

    _not_bool = field_validator("ipv4", "ipv6", mode="before")(_no_bool)
    _lab_v4 = field_validator("ipv4", "ipv6")(_check_lab_address)


class Site(_Model):
    name: SiteName
    nat: bool = False  # a NAT (masquerade) in front of the site: its nodes have no endpoints
    # 2: a second provider; every node gets a second underlay address (a second endpoint)
    uplinks: int = Field(default=1, ge=1, le=2)
    uplink: Impairment = Field(default_factory=Impairment)
    # Its own network is trusted: the network file marks it trusted with the lab's underlay
    # prefixes of the site, and its nodes carry segments between them as plain kernel VXLAN.
    trusted: bool = False

    @model_validator(mode="after")
    def _shape(self) -> Site:
        if self.nat and self.uplinks > 1:
            raise ValueError("a site behind NAT has one uplink (its nodes have no endpoints)")
        if self.nat and self.trusted:
            raise ValueError(
                "a trusted site cannot be behind NAT (its nodes have no endpoints, "
                "so no VXLAN address): drop `nat` or `trusted`"
            )
        return self


INTERNET_NET = IPv4Network("198.19.250.0/24")


class Internet(_Model):
    """A host outside the mesh in the internet core, reachable from guests only through
    their gateway (which masquerades towards it)."""

    address: IPv4Interface = IPv4Interface("198.19.250.2/24")

    @field_validator("address")
    @classmethod
    def _in_core(cls, v: IPv4Interface) -> IPv4Interface:
        if v.network != INTERNET_NET or v.ip == INTERNET_NET[1]:
            raise ValueError(
                f"{v} must be in {INTERNET_NET} with that prefix, not .1 (the core's address)"
            )
        return v


class Node(_Model):
    name: Name
    site: SiteName
    segments: tuple[Name, ...] | None = None  # default: the segments its guests use
    relay: bool = True
    # host ports of the node itself: {segment = ["a/len", ...]} (gateways need one per segment)
    host: dict[str, tuple[IPv4Interface | IPv6Interface, ...]] = Field(default_factory=dict)

    @field_validator("host", mode="before")
    @classmethod
    def _host_one_or_many(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (x,) if isinstance(x, str) else _no_bool(x) for k, x in v.items()}
        return v


class Guest(_Model):
    """A machine plugged into a node: access (one segment) or trunk (several, tagged)."""

    name: Name
    node: Name
    kind: Literal["access", "trunk"] = "access"
    segment: Name | None = None  # access
    segments: tuple[Name, ...] | None = None  # trunk
    native: Name | None = None  # trunk: the segment travelling untagged
    # access: ["198.18.10.11/24", ...]; trunk: {segment = [addresses]}
    address: (
        tuple[IPv4Interface | IPv6Interface, ...]
        | dict[str, tuple[IPv4Interface | IPv6Interface, ...]]
    ) = ()
    dhcp: bool = False  # access only: no static address; the `dhcp` check asks the gateway

    @field_validator("address", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if isinstance(v, str):
            return (v,)
        if isinstance(v, dict):
            return {k: (x,) if isinstance(x, str) else _no_bool(x) for k, x in v.items()}
        return _no_bool(v)

    @model_validator(mode="after")
    def _shape(self) -> Guest:
        if self.dhcp and (self.kind != "access" or self.address):
            raise ValueError("`dhcp = true` is for access guests without `address`")
        if self.kind == "access":
            if self.segment is None:
                raise ValueError("an access guest needs `segment`")
            if self.segments is not None or self.native is not None:
                raise ValueError("`segments`/`native` are for trunk guests; use `segment`")
            if isinstance(self.address, dict):
                raise ValueError('an access guest takes `address = ["a/len", ...]`')
        else:
            if not self.segments:
                raise ValueError("a trunk guest needs `segments = [...]`")
            if self.segment is not None:
                raise ValueError("a trunk guest takes `segments`, not `segment`")
            if self.native is not None and self.native not in self.segments:
                raise ValueError(f"native = {self.native!r} is not in segments")
            if not isinstance(self.address, dict) and self.address:
                raise ValueError("a trunk guest takes `address = {segment = [...]}`")
        addrs = self.address.values() if isinstance(self.address, dict) else [self.address]
        for group in addrs:
            for a in group:
                _check_lab_address(a)
        return self

    @property
    def guest_segments(self) -> tuple[str, ...]:
        if self.kind == "access":
            assert self.segment is not None
            return (self.segment,)
        assert self.segments is not None
        return self.segments

    def addresses(self, segment: str) -> tuple[IPv4Interface | IPv6Interface, ...]:
        if isinstance(self.address, dict):
            return self.address.get(segment, ())
        return self.address


class Probe(_Model):
    source: Name  # guest sending the continuous probe
    target: Name  # guest answering it (same segment)


class Fault(_Model):
    name: Name
    kind: Literal[
        "cut-uplink",
        "kill-agent",
        "impair",
        "block",
        "kill-relay",
        "cold-start",
        "flood",
        "kill-gateway",
    ]
    site: SiteName | None = None  # cut-uplink, impair
    # cut-uplink of a two-uplink site: 1, 2, or "active" (the one the probe's traffic uses);
    # default: every uplink (the site is cut off)
    uplink: Literal["active", 1, 2] | None = None
    # with `uplink`: cut only beyond the site router, the node's line keeps its carrier
    # (the node's kernel keeps routing out of the dead uplink; default: the line goes dark)
    upstream_only: bool = False
    node: Name | None = None  # kill-agent; flood: the node whose underlay address is flooded
    # block: drop everything between these two sites' underlay addresses in the internet core
    sites: tuple[SiteName, SiteName] | None = None
    duration: float = Field(default=2.0, gt=0, le=900)  # seconds the fault lasts
    recovery_timeout: float = Field(default=20.0, gt=0, le=300)  # seconds allowed to recover after
    # after clearing, every guest pair of each segment must answer within this many seconds
    # (as `lab chaos` checks after each episode; default: only the fault's probe is timed)
    heal_within: float | None = Field(default=None, gt=0, le=60)
    probe: Probe | None = None  # default: a pair of guests across the faulted place
    impair: Impairment = Field(default_factory=Impairment)  # impair
    # flood: one unprivileged sender in the internet core sends `rate` datagrams/s of
    # `junk` to `node`'s underlay address and agent port for `seconds`, then stops
    junk: Literal["random", "initiation", "transport", "mac1-initiation"] | None = None
    rate: int = Field(default=40_000, ge=1, le=1_000_000)  # flood: datagrams per second
    seconds: float = Field(default=5.0, gt=0, le=60)  # flood: how long it lasts
    # kill-gateway: the segment whose gateway master is killed (default: the first [[gateway]])
    segment: Name | None = None
    # kill-gateway: seconds the probe keeps running after the old master is back (second window)
    settle: float = Field(default=3.0, gt=0, le=60)
    max_outage_ms: float = Field(default=1000.0, gt=0)  # kill-gateway: the target
    # cold-start: every guest pair of every segment must answer within this many ms of
    # the first agent started, or the fault fails (the pairs are still waited for, up to
    # `recovery_timeout`, so that a slow start says how slow)
    within_ms: float = Field(default=2000.0, gt=0, le=300_000)

    @model_validator(mode="after")
    def _shape(self) -> Fault:
        self._flood_shape()
        if self.kind in ("cut-uplink", "impair") and self.site is None:
            raise ValueError(f"a {self.kind} fault needs `site`")
        if self.uplink is not None and self.kind != "cut-uplink":
            raise ValueError("`uplink` is for cut-uplink faults")
        if self.upstream_only and self.uplink is None:
            raise ValueError("`upstream_only` needs `uplink` (a cut-uplink of a two-uplink site)")
        if self.kind == "block" and (self.sites is None or self.sites[0] == self.sites[1]):
            raise ValueError('a block fault needs `sites = ["a", "b"]`, two different sites')
        if self.sites is not None and self.kind != "block":
            raise ValueError("`sites` is for block faults")
        if self.kind == "kill-relay" and self.probe is None:
            raise ValueError(
                "a kill-relay fault needs `probe`: it kills the node relaying the probe's traffic"
            )
        gw_only = {"segment", "settle", "max_outage_ms"} & self.model_fields_set
        if gw_only and self.kind != "kill-gateway":
            raise ValueError(f"`{'`, `'.join(sorted(gw_only))}` are for kill-gateway faults")
        if "within_ms" in self.model_fields_set and self.kind != "cold-start":
            raise ValueError("`within_ms` is for cold-start faults")
        if self.kind == "kill-agent" and self.node is None:
            raise ValueError("a kill-agent fault needs `node`")
        if self.kind == "impair" and self.impair.empty:
            raise ValueError(
                "an impair fault needs at least one of [fault.impair] loss, "
                "delay_ms, jitter_ms, duplicate, reorder, corrupt"
            )
        return self

    def _flood_shape(self) -> None:
        flood_only = {"junk", "rate", "seconds"} & self.model_fields_set
        if self.kind != "flood":
            if flood_only:
                raise ValueError(f"`{'`, `'.join(sorted(flood_only))}` are for flood faults")
            return
        if self.node is None:
            raise ValueError("a flood fault needs `node` (the node whose address is flooded)")
        if self.junk is None:
            raise ValueError(
                'a flood fault needs `junk = "random" | "initiation" | "transport" '
                '| "mac1-initiation"`'
            )
        if "duration" in self.model_fields_set:
            raise ValueError("a flood fault lasts `seconds`, not `duration`")


class Lab(_Model):
    lab: LabHeader
    segment: tuple[Segment, ...] = Field(min_length=1)
    site: tuple[Site, ...] = Field(min_length=1)
    node: tuple[Node, ...] = Field(min_length=1)
    guest: tuple[Guest, ...] = ()
    fault: tuple[Fault, ...] = ()
    internet: Internet | None = None
    # passed through to the network file as they are (docs/gateways.md); the generated
    # file is validated by lanspan's own loader, which names any bad field
    gateway: tuple[dict[str, Any], ...] = ()
    floating: tuple[dict[str, Any], ...] = ()
    allow: tuple[dict[str, Any], ...] = ()
    pool: tuple[dict[str, Any], ...] = ()
    dhcp: tuple[dict[str, Any], ...] = ()

    def gateway_nodes(self) -> set[str]:
        """Nodes named by a [[gateway]]: they route between segments and to the internet."""
        return {str(n) for t in self.gateway for n in t.get("nodes", [])}

    @property
    def name(self) -> str:
        return self.lab.name

    def seg(self, name: str) -> Segment:
        return next(s for s in self.segment if s.name == name)

    def node_by_name(self, name: str) -> Node:
        return next(n for n in self.node if n.name == name)

    def guest_by_name(self, name: str) -> Guest:
        return next(g for g in self.guest if g.name == name)

    def node_segments(self, node: Node) -> tuple[str, ...]:
        if node.segments is not None:
            return node.segments
        used: list[str] = list(node.host)
        for g in self.guest:
            if g.node == node.name:
                used += [s for s in g.guest_segments if s not in used]
        return tuple(s.name for s in self.segment if s.name in used)


def _cross_check(lab: Lab) -> list[str]:
    """Rules between sections; each message names the field and the value."""
    problems: list[str] = []

    def dupes(kind: str, names: list[str]) -> None:
        seen: set[str] = set()
        for n in names:
            if n in seen:
                problems.append(f"{kind}: name {n!r} is used twice")
            seen.add(n)

    dupes("segment", [s.name for s in lab.segment])
    dupes("segment.vlan", [str(s.vlan) for s in lab.segment])
    dupes("site", [s.name for s in lab.site])
    dupes("node/guest", [n.name for n in lab.node] + [g.name for g in lab.guest])
    if len(lab.site) > 60:
        problems.append(f"site: at most 60 sites (got {len(lab.site)})")
    for site in lab.site:
        count = sum(1 for n in lab.node if n.site == site.name)
        if count > 63:
            problems.append(f"site {site.name!r}: at most 63 nodes per site (got {count})")
    segs = {s.name for s in lab.segment}
    sites = {s.name for s in lab.site}
    nodes = {n.name: n for n in lab.node}
    for i, n in enumerate(lab.node):
        if n.site not in sites:
            problems.append(f"node[{i}].site: unknown site {n.site!r} (sites: {sorted(sites)})")
        for s in n.segments or ():
            if s not in segs:
                problems.append(f"node[{i}].segments: unknown segment {s!r}")
        for s, addrs in n.host.items():
            if s not in segs:
                problems.append(f"node[{i}].host: unknown segment {s!r}")
                continue
            if n.segments is not None and s not in n.segments:
                problems.append(f"node[{i}].host: {s!r} is not among its segments")
            seg = lab.seg(s)
            for a in addrs:
                _check_lab_address(a)
                net = seg.ipv4 if a.version == 4 else seg.ipv6
                if net is None or a.network != net:
                    problems.append(f"node[{i}].host: {a} is not in segment {s!r} subnet {net}")
    per_node: dict[str, int] = {}
    used: dict[str, tuple[str, str]] = {}  # address -> (guest, segment), across all segments
    for i, g in enumerate(lab.guest):
        if g.node not in nodes:
            problems.append(f"guest[{i}].node: unknown node {g.node!r} (nodes: {sorted(nodes)})")
            continue
        per_node[g.node] = per_node.get(g.node, 0) + 1
        node = nodes[g.node]
        for s in g.guest_segments:
            if s not in segs:
                problems.append(f"guest[{i}].segment: unknown segment {s!r}")
                continue
            if node.segments is not None and s not in node.segments:
                problems.append(
                    f"guest[{i}].segment: {s!r} is not among node {g.node!r} segments "
                    f"{list(node.segments)}"
                )
            seg = lab.seg(s)
            for a in g.addresses(s):
                net = seg.ipv4 if a.version == 4 else seg.ipv6
                if net is None or a.network != net:
                    problems.append(f"guest[{i}].address: {a} is not in segment {s!r} subnet {net}")
                elif str(a.ip) in used:
                    other, other_seg = used[str(a.ip)]
                    why = (
                        ""
                        if other_seg == s
                        else f" in segment {other_seg!r}: addresses are unique across the "
                        "whole lab, or the isolation check from one segment would aim at "
                        "an address present in the other; pick another one"
                    )
                    problems.append(
                        f"guest[{i}].address: {a.ip} is already used by guest {other!r}{why}"
                    )
                else:
                    used[str(a.ip)] = (g.name, s)
        if isinstance(g.address, dict):
            for k in g.address:
                if k not in g.guest_segments:
                    problems.append(f"guest[{i}].address: {k!r} is not among its segments")
        if g.kind == "trunk":
            nets = [lab.seg(s).ipv4 for s in g.guest_segments if s in segs]
            for n_i, na in enumerate(nets):
                for nb in nets[n_i + 1 :]:
                    if na.overlaps(nb):
                        problems.append(
                            f"guest[{i}].segments: a trunk guest holds all its segments in one "
                            f"namespace; subnets {na} and {nb} overlap"
                        )
    for name, count in per_node.items():
        if count > 50:
            problems.append(f"node {name!r}: at most 50 guests (got {count})")
    guests = {g.name: g for g in lab.guest}
    for i, f in enumerate(lab.fault):
        if f.site is not None and f.site not in sites:
            problems.append(f"fault[{i}].site: unknown site {f.site!r}")
        if f.node is not None and f.node not in nodes:
            problems.append(f"fault[{i}].node: unknown node {f.node!r}")
        elif f.kind == "flood" and f.node is not None:
            site_of_node = nodes[f.node].site
            if any(x.name == site_of_node and x.nat for x in lab.site):
                behind = site_of_node
                problems.append(
                    f"fault[{i}].node: {f.node!r} is behind the NAT of site {behind!r}: "
                    "the internet core cannot reach its address; flood a node of a public site"
                )
        for s in f.sites or ():
            if s not in sites:
                problems.append(f"fault[{i}].sites: unknown site {s!r}")
        if f.uplink is not None and f.site in sites:
            n_up = next(x.uplinks for x in lab.site if x.name == f.site)
            if n_up < 2:
                problems.append(
                    f"fault[{i}].uplink: site {f.site!r} has one uplink; "
                    "`uplink` needs a site with `uplinks = 2`"
                )
        if f.probe is not None:
            for fld in ("source", "target"):
                gname = getattr(f.probe, fld)
                if gname not in guests:
                    problems.append(f"fault[{i}].probe.{fld}: unknown guest {gname!r}")
            if f.probe.source in guests and f.probe.target in guests:
                common = set(guests[f.probe.source].guest_segments) & set(
                    guests[f.probe.target].guest_segments
                )
                if not common:
                    problems.append(
                        f"fault[{i}].probe: guests {f.probe.source!r} and {f.probe.target!r} "
                        "share no segment"
                    )
    for i, f in enumerate(lab.fault):
        if f.kind != "kill-gateway":
            continue
        gw_segs = [str(g.get("segment")) for g in lab.gateway]
        if not gw_segs:
            problems.append(f"fault[{i}]: a kill-gateway fault needs a [[gateway]]")
        elif f.segment is not None and f.segment not in gw_segs:
            problems.append(
                f"fault[{i}].segment: {f.segment!r} has no [[gateway]] (gateways: {gw_segs})"
            )
    dupes("fault", [f.name for f in lab.fault])
    if not problems:
        for i, f in enumerate(lab.fault):
            miss = _misses(lab, f)
            if miss:
                problems.append(f"fault[{i}] {f.name!r}: {miss}")
    return problems


def _misses(lab: Lab, fault: Fault) -> str | None:
    """Why the fault's probe cannot cross the faulted place (None when it can).

    The probe crosses a site's uplink when one of its guests is in the site; a
    block when its guests are in the two blocked sites; a killed agent when one
    guest is on that node. Traffic between two guests behind NAT goes through
    relays in public sites, so any public site's uplink, block or agent can
    carry it. Without `probe`, some pair of guests must cross (the default).
    """
    if fault.kind not in ("cut-uplink", "impair", "block", "kill-agent", "flood"):
        return None
    site_of = {n.name: n.site for n in lab.node}
    nat = {s.name for s in lab.site if s.nat}
    guests = {g.name: g for g in lab.guest}

    def place(g: Guest) -> tuple[str, str]:
        return g.node, site_of[g.node]

    def crosses(a: Guest, b: Guest) -> bool:
        (na, sa), (nb, sb) = place(a), place(b)
        relayed = sa in nat and sb in nat
        if fault.kind == "block":
            assert fault.sites is not None
            blocked = set(fault.sites)
            if relayed:
                return bool({sa, sb} & blocked) and not blocked <= nat
            return {sa, sb} == blocked
        if fault.kind in ("kill-agent", "flood"):
            node = fault.node
            return node in (na, nb) or (relayed and site_of.get(node or "") not in nat)
        here = (sa == fault.site) + (sb == fault.site)
        return here == 1 or (relayed and fault.site not in nat)

    place_text = {
        "block": f"the block of {list(fault.sites or ())}",
        "kill-agent": f"node {fault.node!r}",
        "flood": f"node {fault.node!r}",
    }.get(fault.kind, f"the uplink of site {fault.site!r}")
    if fault.probe is not None:
        a, b = guests[fault.probe.source], guests[fault.probe.target]
        if not crosses(a, b):
            return (
                f"its probe {a.name!r} ({place(a)[1]}) -> {b.name!r} ({place(b)[1]}) "
                f"never crosses {place_text}, so the fault cannot show; choose a "
                "`probe` with a guest on each side"
            )
        return None
    for a in lab.guest:
        for b in lab.guest:
            if a is not b and set(a.guest_segments) & set(b.guest_segments) and crosses(a, b):
                return None
    return (
        f"no pair of guests on one segment crosses {place_text}; add guests there "
        "or give the fault a `probe`"
    )


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(
            ("function-after", "function-before", "tuple[", "dict[", "str", "int")
        ):
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def parse_lab(data: dict[str, Any], source: str) -> Lab:
    """Validate a parsed lab document; raise ConfigError naming `source`."""
    try:
        lab = Lab.model_validate(data)
    except ValidationError as e:
        problems = []
        errors = e.errors()
        failed = {_loc(tuple(err["loc"])) for err in errors}
        for err in errors:
            msg = err["msg"].removeprefix("Value error, ")
            where = _loc(tuple(err["loc"]))
            got = err.get("input")
            if err["type"] == "too_short" and any(f.startswith(where + "[") for f in failed):
                continue  # the items' own errors say it better
            if err["type"] == "missing":
                problems.append(f"{where}: missing")
            elif err["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown field")
            elif err["type"] == "string_pattern_mismatch":
                problems.append(
                    f"{where}: {got!r} is not a valid name: use lowercase letters, digits "
                    "and '-', starting with a letter"
                )
            elif isinstance(got, dict | list):
                problems.append(f"{where}: {msg}")
            else:
                problems.append(f"{where}: {msg} (got {got!r})")
        raise ConfigError(source, problems) from None
    problems = _cross_check(lab)
    if problems:
        raise ConfigError(source, problems)
    return lab


def load_lab(path: str | Path) -> Lab:
    """Read and validate a lab file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(str(p), [f"cannot read: {e.strerror}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(p), [f"not valid TOML: {e}"]) from None
    return parse_lab(data, str(p))


__all__ = [
    "Fault",
    "Guest",
    "Impairment",
    "Internet",
    "Lab",
    "Node",
    "Probe",
    "Segment",
    "Site",
    "load_lab",
]
