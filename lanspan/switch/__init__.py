"""lanspan.switch: VLAN-aware forwarding across the mesh (sans-IO)."""

from lanspan.switch.bucket import TokenBucket, flood_burst
from lanspan.switch.core import (
    DEFAULT_FLAP_MOVES,
    DEFAULT_FLAP_WINDOW,
    Forward,
    Location,
    MacEntry,
    PeerLocation,
    PortLocation,
    Switch,
    SwitchEvent,
    SwitchEventKind,
)

__all__ = [
    "DEFAULT_FLAP_MOVES",
    "DEFAULT_FLAP_WINDOW",
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
]
