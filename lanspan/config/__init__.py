"""lanspan.config: the network file, its validated model, and node keys."""

from lanspan.config.keys import (
    KeyFormatError,
    decode_key,
    encode_key,
    generate_private_key,
    load_private_key,
    public_key,
    write_private_key,
)
from lanspan.config.load import load_network
from lanspan.config.model import (
    AccessPort,
    Endpoint,
    HostPort,
    Network,
    Node,
    Port,
    Segment,
    StaticMac,
    Timers,
    TrunkPort,
)
from lanspan.config.parse import parse_endpoint, parse_network

__all__ = [
    "AccessPort",
    "Endpoint",
    "HostPort",
    "KeyFormatError",
    "Network",
    "Node",
    "Port",
    "Segment",
    "StaticMac",
    "Timers",
    "TrunkPort",
    "decode_key",
    "encode_key",
    "generate_private_key",
    "load_network",
    "load_private_key",
    "parse_endpoint",
    "parse_network",
    "public_key",
    "write_private_key",
]
