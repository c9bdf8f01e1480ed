"""WireGuard's handshake (paper §5.4) as Noise_IKpsk2 with lanspan's identifier.

The Noise prologue is `IDENTIFIER`, not WireGuard's, so a lanspan node and a
WireGuard peer can never complete a handshake with each other by accident.
The initiation's payload is a TAI64N timestamp; the response's is empty.
Sender/receiver indexes sit outside Noise, protected by mac1 only (as in
WireGuard).
"""

from __future__ import annotations

import math
import struct

from lanspan.config.model import Cipher
from lanspan.errors import BadPacket
from lanspan.noise import HandshakeState
from lanspan.session.cookie import CookieJar
from lanspan.wire.messages import (
    MAC1_OFFSET_INITIATION,
    MAC1_OFFSET_RESPONSE,
    RESPONSE_LEN,
    TYPE_INITIATION,
    TYPE_RESPONSE,
    HandshakeInitiation,
    HandshakeResponse,
)

__all__ = [
    "IDENTIFIER",
    "TAI64N_LEN",
    "CipherChoice",
    "consume_initiation_untrusted",
    "consume_response_untrusted",
    "create_initiation",
    "create_response",
    "protocol_name",
    "tai64n",
]

IDENTIFIER = b"lanspan v1 encrypted L2 mesh"
TAI64N_LEN = 12
_TAI64N = struct.Struct(">QI")
_HEAD = struct.Struct("<II")
_HEAD_RESPONSE = struct.Struct("<III")
_NO_PSK = bytes(32)

CipherChoice = Cipher  # the one cipher type: lanspan.config.model.Cipher


def protocol_name(cipher: CipherChoice) -> str:
    return f"Noise_IKpsk2_25519_{'AESGCM' if cipher == 'aesgcm' else 'ChaChaPoly'}_BLAKE2s"


def tai64n(wall: float) -> bytes:
    """TAI64N label of a Unix time (big-endian, so byte order is time order)."""
    seconds = math.floor(wall)
    nanos = min(int((wall - seconds) * 1e9), 999_999_999)
    return _TAI64N.pack(2**62 + seconds, nanos)


def create_initiation(
    *,
    cipher: CipherChoice,
    static_private: bytes,
    peer_public: bytes,
    psk: bytes | None,
    ephemeral_private: bytes,
    sender_index: int,
    timestamp: bytes,
    jar: CookieJar,
    now: float,
) -> tuple[bytes, HandshakeState]:
    hs = HandshakeState(
        protocol_name(cipher),
        initiator=True,
        prologue=IDENTIFIER,
        static_private=static_private,
        remote_static=peer_public,
        ephemeral_private=ephemeral_private,
        psks=[psk or _NO_PSK],
    )
    body = hs.write_message(timestamp)
    msg = bytearray(_HEAD.pack(TYPE_INITIATION, sender_index) + body + bytes(32))
    return jar.add_macs(msg, MAC1_OFFSET_INITIATION, now), hs


def consume_initiation_untrusted(
    *, cipher: CipherChoice, static_private: bytes, msg: HandshakeInitiation
) -> tuple[HandshakeState, bytes]:
    """(responder state, timestamp); the initiator's key is `state.remote_static`.

    The PSK is not known yet: set `state.psks` once the peer is identified.
    """
    hs = HandshakeState(
        protocol_name(cipher),
        initiator=False,
        prologue=IDENTIFIER,
        static_private=static_private,
    )
    timestamp = hs.read_message_untrusted(
        msg.ephemeral + msg.encrypted_static + msg.encrypted_timestamp
    )
    if len(timestamp) != TAI64N_LEN:
        raise BadPacket("session.bad_timestamp")
    return hs, timestamp


def create_response(
    *,
    hs: HandshakeState,
    psk: bytes | None,
    ephemeral_private: bytes,
    sender_index: int,
    receiver_index: int,
    jar: CookieJar,
    now: float,
) -> bytes:
    hs.set_ephemeral(ephemeral_private)
    hs.psks = [psk or _NO_PSK]
    body = hs.write_message(b"")
    msg = bytearray(_HEAD_RESPONSE.pack(TYPE_RESPONSE, sender_index, receiver_index) + body)
    msg += bytes(RESPONSE_LEN - len(msg))
    return jar.add_macs(msg, MAC1_OFFSET_RESPONSE, now)


def consume_response_untrusted(hs: HandshakeState, msg: HandshakeResponse) -> HandshakeState:
    """The completed initiator state; `hs` itself is left untouched on failure."""
    done = hs.clone()
    if done.read_message_untrusted(msg.ephemeral + msg.encrypted_nothing):
        raise BadPacket("session.response_payload")  # the payload must be empty
    return done
