"""The validated network model: frozen, typed, trusted by the rest of lanspan.

`lanspan.config.load` builds these from a network file and checks every rule
once; code that receives a `Network` does not re-validate it.
"""

from __future__ import annotations

from dataclasses import field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Literal

from lanspan.records import record

DEFAULT_PORT = 51820
DEFAULT_MTU = 1400
DEFAULT_MAC_AGEING = 300.0
DEFAULT_MAC_LIMIT = 1024
DEFAULT_FLOOD_RATE = 2000.0
DEFAULT_ADVERT_INTERVAL = 0.2  # VRRPv3 advertisement interval, seconds (centisecond steps)
DEFAULT_CHECK_INTERVAL = 1.0
DEFAULT_LEASE_TIME = 3600
DEFAULT_VXLAN_PORT = 4789  # IANA VXLAN port (RFC 7348)

Cipher = Literal["aesgcm", "chachapoly"]
Proto = Literal["tcp", "udp", "icmp", "any"]
Ipv6Mode = Literal["slaac", "dhcpv6", "none"]
IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface


@record(frozen=True, slots=True)
class Segment:
    """One Layer-2 segment: a VLAN on every switch port, a VNI inside the mesh."""

    name: str
    vlan: int  # 802.1Q VLAN id, 1..4094, unique per network
    vni: int  # VXLAN network identifier, 1..2**24-1, unique; defaults to `vlan`
    ipv4: IPv4Network | None = None  # informational subnet; used for host addresses and checks
    ipv6: IPv6Network | None = None
    mtu: int = DEFAULT_MTU  # MTU guests must use on this segment
    gateway: IPAddress | None = None  # the segment's default gateway, if any


@record(frozen=True, slots=True)
class Endpoint:
    """An underlay address a node listens on, as peers reach it."""

    host: IPAddress
    port: int

    def __str__(self) -> str:
        if isinstance(self.host, IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@record(frozen=True, slots=True)
class AccessPort:
    """Untagged port in one segment: a TAP lanspan creates, or an existing interface."""

    name: str  # unique within the node; the TAP's device name when `create`
    segment: str
    device: str  # kernel interface name
    create: bool  # True: lanspan creates a TAP; False: attach to existing `device`
    mac_limit: int = DEFAULT_MAC_LIMIT  # learned MACs allowed behind this port
    flood_rate: float = DEFAULT_FLOOD_RATE  # flooded frames per second accepted from it

    kind: Literal["access"] = field(default="access", init=False)


@record(frozen=True, slots=True)
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


@record(frozen=True, slots=True)
class HostPort:
    """An interface on the node itself in one segment; never bridged to another."""

    name: str
    segment: str
    device: str  # the TAP lanspan creates for the node's own stack
    addresses: tuple[IPInterface, ...] = ()  # includes those assigned from pools (`auto`)
    mac: bytes | None = None  # fixed MAC; None derives a stable one from node and segment
    auto: bool = False  # `address = "auto"`: `addresses` came from the segment's pools

    kind: Literal["host"] = field(default="host", init=False)
    create: bool = field(default=True, init=False)
    mac_limit: int = field(default=1, init=False)
    flood_rate: float = field(default=DEFAULT_FLOOD_RATE, init=False)


Port = AccessPort | TrunkPort | HostPort


@record(frozen=True, slots=True)
class StaticMac:
    """A MAC pinned to a node (and, on that node, to a local port)."""

    segment: str
    mac: bytes  # 6 bytes
    node: str
    port: str | None = None


@record(frozen=True, slots=True)
class Uplink:
    """A node's interface towards its provider (not part of the mesh): floating
    public addresses live here, and filtering rules may name it."""

    name: str
    interface: str
    addresses: tuple[IPInterface, ...] = ()  # the node's own addresses on it


@record(frozen=True, slots=True)
class Gateway:
    """A segment's virtual gateway address(es), held by VRRPv3 among `nodes`.

    Priority follows the order of `nodes`: the first is the preferred master.
    """

    segment: str
    addresses: tuple[IPInterface, ...]  # at most one IPv4 and one IPv6, with the segment's prefix
    nodes: tuple[str, ...]  # gateway nodes, highest priority first
    preempt: bool  # True: a recovered higher-priority node takes the address back
    advert_interval: float = DEFAULT_ADVERT_INTERVAL
    vrid: int = 1  # VRRP virtual router id, unique among the instances of one segment


@record(frozen=True, slots=True)
class FloatingAddress:
    """A service address that moves between `nodes` (VRRPv3), in a segment or on an uplink."""

    name: str
    addresses: tuple[IPInterface, ...]
    nodes: tuple[str, ...]
    preempt: bool
    segment: str | None = None  # exactly one of segment and uplink is set
    uplink: str | None = None  # an uplink name every holder has
    advert_interval: float = DEFAULT_ADVERT_INTERVAL
    vrid: int = 2
    check: str | None = None  # shell command; failing moves the address away
    check_interval: float = DEFAULT_CHECK_INTERVAL


@record(frozen=True, slots=True)
class Allow:
    """One flow the gateways forward; everything else between segments is dropped."""

    source: str  # a segment
    to: str  # a segment, an uplink name, or "internet"
    to_kind: Literal["segment", "uplink", "internet"]
    proto: Proto = "any"
    ports: tuple[tuple[int, int], ...] = ()  # destination port ranges, tcp/udp only; () = all
    families: tuple[Literal[4, 6], ...] = (4, 6)


@record(frozen=True, slots=True)
class Pool:
    """Addresses a segment hands to host ports with `address = "auto"`."""

    segment: str
    first: IPAddress
    last: IPAddress

    @property
    def version(self) -> int:
        return self.first.version

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1


@record(frozen=True, slots=True)
class Assignment:
    """How one `auto` host port got its address from a pool (printed by `lanspan check`)."""

    node: str
    port: str
    segment: str
    address: IPAddress
    home: IPAddress  # where the node's identity hashed to
    collided_with: tuple[str, ...] = ()  # nodes that hashed to the same home address


@record(frozen=True, slots=True)
class DhcpHost:
    """A static lease: this MAC always gets this address."""

    mac: bytes
    address: IPAddress
    name: str | None = None


@record(frozen=True, slots=True)
class Dhcp:
    """DHCPv4 and router advertisements for a segment's guests, served by its gateway master."""

    segment: str
    range4: tuple[IPv4Address, IPv4Address] | None = None
    ipv6: Ipv6Mode = "none"
    range6: tuple[IPv6Address, IPv6Address] | None = None  # dhcpv6 only
    lease_time: int = DEFAULT_LEASE_TIME
    lease_file: str | None = None  # None: /var/lib/lanspan/<network>/<segment>.leases
    dns: bool = False  # False: dnsmasq serves no DNS (port=0)
    hosts: tuple[DhcpHost, ...] = ()


@record(frozen=True, slots=True)
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
    uplinks: tuple[Uplink, ...] = ()  # the node's own interfaces towards a provider
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


@record(frozen=True, slots=True)
class Site:
    """A site declared in [[site]]; sites only named by nodes are untrusted."""

    name: str
    trusted: bool = False  # its own network between its nodes is safe for plain VXLAN
    underlay: tuple[IPNetwork, ...] = ()  # prefixes plain VXLAN may be sent to (trusted)
    vxlan_port: int = DEFAULT_VXLAN_PORT  # UDP port of the site's plain VXLAN

    def allows(self, addr: IPAddress) -> bool:
        """True when plain VXLAN may be sent to `addr` (trusted, inside the underlay)."""
        return self.trusted and any(addr in net for net in self.underlay)


@record(frozen=True, slots=True)
class Vtep:
    """A plain VXLAN VTEP in a trusted site: kernel VXLAN configured by hand, no agent, no key."""

    name: str
    site: str
    address: IPAddress  # its VXLAN local address, inside the site's underlay
    segments: tuple[str, ...]  # the segments (VNIs) it bridges


@record(frozen=True, slots=True)
class Timers:
    """Protocol timers, seconds."""

    keepalive: float = 10.0  # send an empty keepalive when idle this long
    probe_interval: float = 0.2  # path liveness probe period
    probe_multiplier: int = 3  # probes missed before a path is declared down
    hold_down: float = 2.0  # a recovered path must stay up this long before use


@record(frozen=True, slots=True)
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
    gateways: tuple[Gateway, ...] = ()
    floating: tuple[FloatingAddress, ...] = ()
    allows: tuple[Allow, ...] = ()
    pools: tuple[Pool, ...] = ()
    assignments: tuple[Assignment, ...] = ()
    dhcp: tuple[Dhcp, ...] = ()

    def gateway_of(self, segment: str) -> Gateway | None:
        for g in self.gateways:
            if g.segment == segment:
                return g
        return None

    def gateway_nodes(self) -> tuple[str, ...]:
        """Every node that is a gateway of some segment, in file order."""
        out: list[str] = []
        for g in self.gateways:
            out += [n for n in g.nodes if n not in out]
        return tuple(out)

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
