"""Pieces of the `show` document (docs/control-api.md) shared by the control tests."""

from __future__ import annotations


def peer_up(name: str) -> dict[str, object]:
    """An established peer on two paths: IPv4 up and active, a learned IPv6 one down."""
    return {
        "name": name,
        "public_key": "YmFy",
        "session": "up",
        "endpoint": "198.19.2.2:51820",
        "via": None,
        "last_handshake_age": 4.2,
        "rtt_ms": 0.41,
        "loss": 0.0,
        "rx_bytes": 1,
        "tx_bytes": 2,
        "rx_frames": 1,
        "tx_frames": 2,
        "paths": [
            {
                "endpoint": "198.19.2.2:51820",
                "state": "up",
                "rtt_ms": 0.41,
                "loss": 0.0,
                "active": True,
            },
            {
                "endpoint": "[fd00::2]:51820",
                "state": "down",
                "rtt_ms": None,
                "loss": 1.0,
                "active": False,
                "learned": True,
            },
        ],
    }
