"""WireGuard's four session message formats (lanspan uses them unchanged).

All integers little-endian; the type byte and 3 reserved zero bytes read
together as one u32le, as WireGuard does::

    struct initiation {            /* 148 bytes */
        u8  type;                  /* 1 */
        u8  reserved[3];           /* 0 */
        u32 sender;                /* initiator's receiver index */
        u8  ephemeral[32];
        u8  encrypted_static[48];  /* 32 + 16 tag */
        u8  encrypted_timestamp[28];  /* TAI64N 12 + 16 tag */
        u8  mac1[16];
        u8  mac2[16];
    };
    struct response {              /* 92 bytes */
        u8  type;                  /* 2 */
        u8  reserved[3];
        u32 sender;
        u32 receiver;
        u8  ephemeral[32];
        u8  encrypted_nothing[16];
        u8  mac1[16];
        u8  mac2[16];
    };
    struct cookie_reply {          /* 64 bytes */
        u8  type;                  /* 3 */
        u8  reserved[3];
        u32 receiver;
        u8  nonce[24];
        u8  encrypted_cookie[32];  /* 16 + 16 tag */
    };
    struct transport {             /* 16-byte header + >= 16 bytes */
        u8  type;                  /* 4 */
        u8  reserved[3];
        u32 receiver;
        u64 counter;
        u8  ciphertext[];          /* payload + 16 tag */
    };

mac1 covers the message up to `mac1`; mac2 up to `mac2` (see
`MAC1_OFFSET_*`, `MAC2_OFFSET_*`).
"""

from __future__ import annotations

import struct

from lanspan.errors import BadPacket
from lanspan.records import record

__all__ = [
    "COOKIE_REPLY_LEN",
    "INITIATION_LEN",
    "MAC1_OFFSET_INITIATION",
    "MAC1_OFFSET_RESPONSE",
    "MAC2_OFFSET_INITIATION",
    "MAC2_OFFSET_RESPONSE",
    "MIN_TRANSPORT_LEN",
    "RESPONSE_LEN",
    "TRANSPORT_HEADER",
    "TRANSPORT_HEADER_LEN",
    "TYPE_COOKIE_REPLY",
    "TYPE_INITIATION",
    "TYPE_RESPONSE",
    "TYPE_TRANSPORT",
    "CookieReply",
    "HandshakeInitiation",
    "HandshakeResponse",
    "Message",
    "TransportData",
    "build",
    "parse_transport_header_untrusted",
    "parse_untrusted",
    "receiver_index_untrusted",
]

TYPE_INITIATION = 1
TYPE_RESPONSE = 2
TYPE_COOKIE_REPLY = 3
TYPE_TRANSPORT = 4

INITIATION_LEN = 148
RESPONSE_LEN = 92
COOKIE_REPLY_LEN = 64
TRANSPORT_HEADER_LEN = 16
TAG_LEN = 16
MIN_TRANSPORT_LEN = TRANSPORT_HEADER_LEN + TAG_LEN

MAC1_OFFSET_INITIATION = 116
MAC2_OFFSET_INITIATION = 132
MAC1_OFFSET_RESPONSE = 60
MAC2_OFFSET_RESPONSE = 76

_INITIATION = struct.Struct("<II32s48s28s16s16s")
_RESPONSE = struct.Struct("<III32s16s16s16s")
_COOKIE = struct.Struct("<II24s32s")
# Public: the session hot path packs/unpacks transport headers with it directly.
TRANSPORT_HEADER = struct.Struct("<IIQ")
_U32 = struct.Struct("<I")

assert _INITIATION.size == INITIATION_LEN
assert _RESPONSE.size == RESPONSE_LEN
assert _COOKIE.size == COOKIE_REPLY_LEN
assert TRANSPORT_HEADER.size == TRANSPORT_HEADER_LEN


def _check_len(name: str, value: bytes, n: int) -> None:
    if len(value) != n:
        raise ValueError(f"{name} must be {n} bytes, got {len(value)}")


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value < 2**32:
        raise ValueError(f"{name} must fit in u32, got {value}")


@record(frozen=True, slots=True)
class HandshakeInitiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def __post_init__(self) -> None:
        _check_u32("sender", self.sender)
        _check_len("ephemeral", self.ephemeral, 32)
        _check_len("encrypted_static", self.encrypted_static, 48)
        _check_len("encrypted_timestamp", self.encrypted_timestamp, 28)
        _check_len("mac1", self.mac1, 16)
        _check_len("mac2", self.mac2, 16)


@record(frozen=True, slots=True)
class HandshakeResponse:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def __post_init__(self) -> None:
        _check_u32("sender", self.sender)
        _check_u32("receiver", self.receiver)
        _check_len("ephemeral", self.ephemeral, 32)
        _check_len("encrypted_nothing", self.encrypted_nothing, 16)
        _check_len("mac1", self.mac1, 16)
        _check_len("mac2", self.mac2, 16)


@record(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def __post_init__(self) -> None:
        _check_u32("receiver", self.receiver)
        _check_len("nonce", self.nonce, 24)
        _check_len("encrypted_cookie", self.encrypted_cookie, 32)


@record(frozen=True, slots=True)
class TransportData:
    receiver: int
    counter: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        _check_u32("receiver", self.receiver)
        if not 0 <= self.counter < 2**64:
            raise ValueError(f"counter must fit in u64, got {self.counter}")
        if len(self.ciphertext) < TAG_LEN:
            raise ValueError("ciphertext shorter than the AEAD tag")


Message = HandshakeInitiation | HandshakeResponse | CookieReply | TransportData


def build(msg: Message) -> bytes:
    if isinstance(msg, TransportData):
        return TRANSPORT_HEADER.pack(TYPE_TRANSPORT, msg.receiver, msg.counter) + msg.ciphertext
    if isinstance(msg, HandshakeInitiation):
        return _INITIATION.pack(
            TYPE_INITIATION,
            msg.sender,
            msg.ephemeral,
            msg.encrypted_static,
            msg.encrypted_timestamp,
            msg.mac1,
            msg.mac2,
        )
    if isinstance(msg, HandshakeResponse):
        return _RESPONSE.pack(
            TYPE_RESPONSE,
            msg.sender,
            msg.receiver,
            msg.ephemeral,
            msg.encrypted_nothing,
            msg.mac1,
            msg.mac2,
        )
    return _COOKIE.pack(TYPE_COOKIE_REPLY, msg.receiver, msg.nonce, msg.encrypted_cookie)


def parse_transport_header_untrusted(data: bytes) -> tuple[int, int]:
    """Fast path: (receiver, counter) of a type-4 datagram."""
    if len(data) < MIN_TRANSPORT_LEN:
        raise BadPacket("wire.short_datagram")
    kind, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
    if kind != TYPE_TRANSPORT:
        raise BadPacket("wire.bad_type")
    return receiver, counter


def receiver_index_untrusted(data: bytes) -> int | None:
    """Receiver index of a response, cookie reply or transport datagram, else None."""
    if len(data) < TRANSPORT_HEADER_LEN:
        return None
    kind = _U32.unpack_from(data)[0]
    if kind in (TYPE_TRANSPORT, TYPE_COOKIE_REPLY):
        return int(_U32.unpack_from(data, 4)[0])
    if kind == TYPE_RESPONSE:
        return int(_U32.unpack_from(data, 8)[0])
    return None


def parse_untrusted(data: bytes) -> Message:
    """Decode one datagram; BadPacket `wire.short_datagram`, `wire.bad_type`,
    `wire.bad_reserved` or `wire.bad_length`."""
    if len(data) < 4:
        raise BadPacket("wire.short_datagram")
    kind = data[0]
    if kind not in (1, 2, 3, 4):
        raise BadPacket("wire.bad_type")
    if data[1] or data[2] or data[3]:
        raise BadPacket("wire.bad_reserved")
    n = len(data)
    if kind == TYPE_TRANSPORT:
        if n < MIN_TRANSPORT_LEN:
            raise BadPacket("wire.short_datagram")
        _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        return TransportData(receiver, counter, bytes(data[TRANSPORT_HEADER_LEN:]))
    if kind == TYPE_INITIATION:
        if n != INITIATION_LEN:
            raise BadPacket("wire.bad_length" if n > INITIATION_LEN else "wire.short_datagram")
        _, sender, eph, stat, ts, mac1, mac2 = _INITIATION.unpack(data)
        return HandshakeInitiation(sender, eph, stat, ts, mac1, mac2)
    if kind == TYPE_RESPONSE:
        if n != RESPONSE_LEN:
            raise BadPacket("wire.bad_length" if n > RESPONSE_LEN else "wire.short_datagram")
        _, sender, receiver, eph, nothing, mac1, mac2 = _RESPONSE.unpack(data)
        return HandshakeResponse(sender, receiver, eph, nothing, mac1, mac2)
    if n != COOKIE_REPLY_LEN:
        raise BadPacket("wire.bad_length" if n > COOKIE_REPLY_LEN else "wire.short_datagram")
    _, receiver, nonce, cookie = _COOKIE.unpack(data)
    return CookieReply(receiver, nonce, cookie)
