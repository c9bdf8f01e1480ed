"""Typed status of a node: what `lanspan show`, the control socket and /metrics report.

Built by the core (`NodeCore.status`, `NodeCore.mac_rows`), frozen, and
formatted only at the edge: `lanspan.control.document` turns these into the
JSON document of docs/control-api.md (field names are its keys, values are in
its units), from which `lanspan show` text and Prometheus metrics are rendered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

from lanspan.gateway.status import GatewayStatus, InstanceStatus, Lease
from lanspan.records import record
from lanspan.switch import Location

__all__ = [
    "Counts",
    "GatewayStatus",
    "InstanceStatus",
    "KernelFilterStatus",
    "KernelLocation",
    "Lease",
    "MacRow",
    "NodeStatus",
    "PathStatus",
    "PeerSegment",
    "PeerStatus",
    "PortStatus",
    "SegmentStatus",
    "UdpStatus",
]


@record(frozen=True, slots=True)
class Counts(Mapping[str, int]):
    """Counts by name (drops by reason, or event counters), sorted by name."""

    pairs: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> Counts:
        return cls(tuple(sorted(counts.items())))

    def __getitem__(self, key: str) -> int:
        for k, v in self.pairs:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


@record(frozen=True, slots=True)
class SegmentStatus:
    name: str
    vlan: int
    vni: int
    mtu: int
    macs: int  # MACs known now
    # Which data plane carries it on this node, and why (set by the agent: kernel_plane).
    plane: Literal["userspace", "kernel"] = "userspace"
    plane_reason: str | None = None


@record(frozen=True, slots=True)
class PortStatus:
    name: str
    kind: Literal["access", "trunk", "host"]
    device: str
    segments: tuple[str, ...]
    rx_frames: int
    tx_frames: int
    rx_bytes: int
    tx_bytes: int


@record(frozen=True)  # no slots: orjson writes a __dict__ 3x faster (a status has ~800)
class PathStatus:
    endpoint: str  # "198.19.2.2:51820", "[fd00::2]:51820" or "via NODE"
    state: Literal["up", "down"]
    rtt_ms: float | None
    loss: float
    active: bool
    learned: bool


@record(frozen=True)  # no slots: see PathStatus
class PeerSegment:
    """How one segment's traffic to a peer goes: kernel VXLAN (same trusted site) or the mesh."""

    segment: str
    plane: Literal["kernel_vxlan", "mesh"]  # mesh: encrypted, through lanspan's sessions
    vtep: str | None = None  # kernel_vxlan: the peer's VXLAN address the FDB sends it to


@record(frozen=True)  # no slots: see PathStatus
class PeerStatus:
    name: str
    public_key: str  # base64
    session: Literal["up", "handshaking", "down"]
    endpoint: str | None
    via: str | None
    last_handshake_age: float | None
    rtt_ms: float | None
    loss: float | None
    rx_bytes: int
    tx_bytes: int
    rx_frames: int
    tx_frames: int
    paths: tuple[PathStatus, ...]
    segments: tuple[PeerSegment, ...] = ()  # segments shared with it, per plane (by the agent)


@record(frozen=True, slots=True)
class UdpStatus:
    """Offloads of the agent's UDP socket (filled in by the agent, not the core)."""

    gso: bool
    gro: bool


@record(frozen=True, slots=True)
class KernelFilterStatus:
    """The agent's nftables filter on its UDP port (filled in by the agent, not the core)."""

    table: str  # "inet lanspan_<network>_<port>"
    receiver_prefix: str | None  # "0x1a2b": transport indexes must carry it; None: unchecked
    drops: Counts  # what the kernel dropped, by reason (docs/drops.md, ## kernel)


@record(frozen=True, slots=True)
class NodeStatus:
    node: str
    network: str
    public_key: str  # base64
    listen_port: int
    uptime_s: float
    segments: tuple[SegmentStatus, ...]
    ports: tuple[PortStatus, ...]
    peers: tuple[PeerStatus, ...]
    drops: Counts  # by reason, docs/drops.md
    counters: Counts
    udp: UdpStatus | None = None  # left out of the document when None
    gateways: GatewayStatus | None = None  # set by the agent on gateway nodes; else left out
    kernel_filter: KernelFilterStatus | None = None  # set by the agent when its filter is on


@record(frozen=True, slots=True)
class KernelLocation:
    """A MAC a kernel bridge learned (trusted sites): an access port, or a VTEP over VXLAN."""

    port: str  # the access port's name, or the VXLAN device
    remote: str | None = None  # the site member's VTEP address for a VXLAN entry

    def __str__(self) -> str:
        return f"kernel:{self.port}" if self.remote is None else f"kernel:vxlan {self.remote}"


@record(frozen=True, slots=True)
class MacRow:
    """One row of `lanspan show macs`."""

    segment: str
    vlan: int
    mac: str  # "52:54:00:12:34:56"
    where: Location | KernelLocation  # "port:vm1" / "peer:rbx-db1" / "kernel:vm2" in JSON
    static: bool
    age: float | None  # seconds since last seen, 0.1 s; 0 for static; None: the kernel's
