"""lanspan.session: WireGuard's session protocol (Noise_IKpsk2, cookies, timers,
replay window) as a sans-IO table of peers."""

from lanspan.session.handshake import IDENTIFIER, protocol_name, tai64n
from lanspan.session.machine import HsAction, HsInput, HsState, InvalidTransition
from lanspan.session.replay import WINDOW_SIZE, ReplayWindow
from lanspan.session.table import (
    FIRST_RETRY,
    KEEPALIVE_TIMEOUT,
    MAX_QUEUED,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    Addr,
    Delivered,
    PeerStatus,
    SessionEvent,
    SessionTable,
    Transmit,
)

__all__ = [
    "FIRST_RETRY",
    "IDENTIFIER",
    "KEEPALIVE_TIMEOUT",
    "MAX_QUEUED",
    "REJECT_AFTER_MESSAGES",
    "REJECT_AFTER_TIME",
    "REKEY_AFTER_MESSAGES",
    "REKEY_AFTER_TIME",
    "REKEY_ATTEMPT_TIME",
    "REKEY_TIMEOUT",
    "WINDOW_SIZE",
    "Addr",
    "Delivered",
    "HsAction",
    "HsInput",
    "HsState",
    "InvalidTransition",
    "PeerStatus",
    "ReplayWindow",
    "SessionEvent",
    "SessionTable",
    "Transmit",
    "protocol_name",
    "tai64n",
]
