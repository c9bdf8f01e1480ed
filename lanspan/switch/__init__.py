"""lanspan.switch: VLAN-aware forwarding across the mesh (sans-IO)."""

from lanspan.switch.bucket import TokenBucket, flood_burst
from lanspan.switch.core import (
    DEFAULT_FLAP_HOLD,
    DEFAULT_FLAP_MOVES,
    DEFAULT_FLAP_WINDOW,
    FLOOD_HOLD,
    FLOOD_HOLD_MAX,
    Forward,
    Location,
    MacEntry,
    PeerLocation,
    PortLocation,
    Switch,
    SwitchEvent,
    SwitchEventKind,
    host_port_mac,
)

__all__ = [
    "DEFAULT_FLAP_HOLD",
    "DEFAULT_FLAP_MOVES",
    "DEFAULT_FLAP_WINDOW",
    "FLOOD_HOLD",
    "FLOOD_HOLD_MAX",
    "Forward",
    "Location",
    "MacEntry",
    "PeerLocation",
    "PortLocation",
    "Switch",
    "SwitchEvent",
    "SwitchEventKind",
    "TokenBucket",
    "flood_burst",
    "host_port_mac",
]
