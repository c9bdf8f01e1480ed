"""lanspan.dataplane: I/O adapters of the userspace data plane.

`TapPort` and `PacketPort` are frame ports (`FramePort`), `UdpEndpoint` the
node's UDP socket. Nothing else in lanspan opens devices or sockets.
"""

from lanspan.dataplane.packet import PacketPort
from lanspan.dataplane.ports import FramePort, PortCounters
from lanspan.dataplane.tap import TapPort
from lanspan.dataplane.udp import Addr, UdpCounters, UdpEndpoint
from lanspan.wire.vnet import with_zero_header

__all__ = [
    "Addr",
    "FramePort",
    "PacketPort",
    "PortCounters",
    "TapPort",
    "UdpCounters",
    "UdpEndpoint",
    "with_zero_header",
]
