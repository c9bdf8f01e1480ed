"""The validated network model: frozen, typed, trusted by the rest of lanspan.

`lanspan.config.load` builds these from a network file and checks every rule
once; code that receives a `Network` does not re-validate it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Literal

DEFAULT_PORT = 51820
DEFAULT_MTU = 1400
DEFAULT_MAC_AGEING = 300.0
DEFAULT_MAC_LIMIT = 1024
DEFAULT_FLOOD_RATE = 2000.0
DEFAULT_VXLAN_PORT = 4789  # IANA VXLAN port (RFC 7348)

Cipher = Literal["aesgcm", "chachapoly"]
IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface


@dataclass(frozen=True, slots=True)
class Segment:
    """One Layer-2 segment: a VLAN on every switch port, a VNI inside the mesh."""

    name: str
    vlan: int  # 802.1Q VLAN id, 1..4094, unique per network
    vni: int  # VXLAN network identifier, 1..2**24-1, unique; defaults to `vlan`
    ipv4: IPv4Network | None = None  # informational subnet; used for host addresses and checks
    ipv6: IPv6Network | None = None
    mtu: int = DEFAULT_MTU  # MTU guests must use on this segment
    gateway: IPAddress | None = None  # the segment's default gateway, if any


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An underlay address a node listens on, as peers reach it."""

    host: IPAddress
    port: int

    def __str__(self) -> str:
        if isinstance(self.host, IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AccessPort:
    """Untagged port in one segment: a TAP lanspan creates, or an existing interface."""

    name: str  # unique within the node; the TAP's device name when `create`
    segment: str
    device: str  # kernel interface name
    create: bool  # True: lanspan creates a TAP; False: attach to existing `device`
    mac_limit: int = DEFAULT_MAC_LIMIT  # learned MACs allowed behind this port
    flood_rate: float = DEFAULT_FLOOD_RATE  # flooded frames per second accepted from it

    kind: Literal["access"] = field(default="access", init=False)


@dataclass(frozen=True, slots=True)
class TrunkPort:
    """802.1Q-tagged port carrying several segments, one optionally untagged."""

    name: str
    device: str
    create: bool
    vlans: tuple[int, ...]  # VLAN ids allowed on this port (segments by VLAN)
    native_vlan: int | None = None  # segment whose frames travel untagged here
    mac_limit: int = DEFAULT_MAC_LIMIT
    flood_rate: float = DEFAULT_FLOOD_RATE

    kind: Literal["trunk"] = field(default="trunk", init=False)


@dataclass(frozen=True, slots=True)
class HostPort:
    """An interface on the node itself in one segment; never bridged to another."""

    name: str
    segment: str
    device: str  # the TAP lanspan creates for the node's own stack
    addresses: tuple[IPInterface, ...] = ()
    mac: bytes | None = None  # fixed MAC; None derives a stable one from node and segment

    kind: Literal["host"] = field(default="host", init=False)
    create: bool = field(default=True, init=False)
    mac_limit: int = field(default=1, init=False)
    flood_rate: float = field(default=DEFAULT_FLOOD_RATE, init=False)


Port = AccessPort | TrunkPort | HostPort


@dataclass(frozen=True, slots=True)
class StaticMac:
    """A MAC pinned to a node (and, on that node, to a local port)."""

    segment: str
    mac: bytes  # 6 bytes
    node: str
    port: str | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """One server running `lanspan agent`."""

    name: str
    site: str
    public_key: bytes  # X25519, 32 bytes
    endpoints: tuple[Endpoint, ...]  # empty: behind NAT, reachable only after it speaks
    segments: tuple[str, ...]  # segments this node may carry (send and accept)
    ports: tuple[Port, ...] = ()
    relay: bool = True  # may forward sealed traffic between two other nodes
    listen_port: int | None = None  # UDP port to bind; None: the network's port
    # -- kernel data plane (trusted sites) --
    vxlan_address: IPAddress | None = None  # in a trusted site: its VTEP address (else None)

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(name)


# ---------------------------------------------------------------- kernel data plane
# Trusted sites and plain VTEPs (docs/kernel-dataplane.md).

IPNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class Site:
    """A site declared in [[site]]; sites only named by nodes are untrusted."""

    name: str
    trusted: bool = False  # its own network between its nodes is safe for plain VXLAN
    underlay: tuple[IPNetwork, ...] = ()  # prefixes plain VXLAN may be sent to (trusted)
    vxlan_port: int = DEFAULT_VXLAN_PORT  # UDP port of the site's plain VXLAN

    def allows(self, addr: IPAddress) -> bool:
        """True when plain VXLAN may be sent to `addr` (trusted, inside the underlay)."""
        return self.trusted and any(addr in net for net in self.underlay)


@dataclass(frozen=True, slots=True)
class Vtep:
    """A plain VXLAN VTEP in a trusted site: kernel VXLAN configured by hand, no agent, no key."""

    name: str
    site: str
    address: IPAddress  # its VXLAN local address, inside the site's underlay
    segments: tuple[str, ...]  # the segments (VNIs) it bridges


@dataclass(frozen=True, slots=True)
class Timers:
    """Protocol timers, seconds."""

    keepalive: float = 10.0  # send an empty keepalive when idle this long
    probe_interval: float = 0.2  # path liveness probe period
    probe_multiplier: int = 3  # probes missed before a path is declared down
    hold_down: float = 2.0  # a recovered path must stay up this long before use


@dataclass(frozen=True, slots=True)
class Network:
    """The whole network file, validated."""

    name: str
    port: int = DEFAULT_PORT
    cipher: Cipher = "aesgcm"
    segments: tuple[Segment, ...] = ()
    nodes: tuple[Node, ...] = ()
    static_macs: tuple[StaticMac, ...] = ()
    mac_ageing: float = DEFAULT_MAC_AGEING
    timers: Timers = field(default_factory=Timers)
    # -- kernel data plane (trusted sites) --
    sites: tuple[Site, ...] = ()  # declared [[site]] tables
    vteps: tuple[Vtep, ...] = ()  # [[node]] tables with vtep = true (never in `nodes`)

    def segment(self, name: str) -> Segment:
        for s in self.segments:
            if s.name == name:
                return s
        raise KeyError(name)

    def segment_by_vlan(self, vlan: int) -> Segment:
        for s in self.segments:
            if s.vlan == vlan:
                return s
        raise KeyError(vlan)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def site(self, name: str) -> Site:
        """The declared site, or an untrusted one for a site only named by nodes."""
        for s in self.sites:
            if s.name == name:
                return s
        return Site(name)
