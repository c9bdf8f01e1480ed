"""WireGuard's mac1/mac2 and cookie replies (paper §5.4.4, §5.4.7).

- mac1 = MAC(HASH("mac1----" || receiver's static public), msg[:mac1]) is on
  every handshake message: only someone who knows our public key gets us to
  do any Curve25519 work.
- Under load, an initiation without a valid mac2 gets a cookie reply
  instead of a response. cookie = MAC(secret, source address) with a secret
  rotated every 120 s; it travels encrypted with XChaCha20-Poly1305 under
  HASH("cookie--" || responder's public), the initiation's mac1 as AD. The
  initiator then adds mac2 = MAC(cookie, msg[:mac2]) for the cookie's life.

MAC is keyed BLAKE2s with a 16-byte digest. `cryptography` has no
XChaCha20, so HChaCha20 is derived from its ChaCha20 keystream: one block is
the 20-round state plus the initial state, so subtracting the known initial
words 0-3 (constants) and 12-15 (the 16-byte input) recovers HChaCha20.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lanspan.addr import Target as Addr
from lanspan.errors import BadPacket
from lanspan.wire.messages import CookieReply, build

__all__ = [
    "COOKIE_LIFETIME",
    "COOKIE_SECRET_MAX_AGE",
    "CookieChecker",
    "CookieJar",
    "hchacha20",
    "mac",
    "xchacha20poly1305_decrypt_untrusted",
    "xchacha20poly1305_encrypt",
]

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
COOKIE_SECRET_MAX_AGE = 120.0
COOKIE_SECRET_LATENCY = 5.0
# The initiator stops using a cookie a little before the responder's secret turns.
COOKIE_LIFETIME = COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_WORDS16 = struct.Struct("<16I")
_WORDS4 = struct.Struct("<4I")
_OUT8 = struct.Struct("<8I")
_ZERO_BLOCK = bytes(64)


def mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    if len(key) != 32 or len(nonce16) != 16:
        raise ValueError("hchacha20 needs a 32-byte key and a 16-byte input")
    # cryptography's 16-byte ChaCha20 "nonce" fills state words 12-15 verbatim.
    enc = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor()
    block = _WORDS16.unpack(enc.update(_ZERO_BLOCK))
    inp = _WORDS4.unpack(nonce16)
    m = 0xFFFFFFFF
    head = [(block[i] - _SIGMA[i]) & m for i in range(4)]
    tail = [(block[12 + i] - inp[i]) & m for i in range(4)]
    return _OUT8.pack(*head, *tail)


def _xchacha_key_nonce(key: bytes, nonce24: bytes) -> tuple[bytes, bytes]:
    if len(nonce24) != 24:
        raise ValueError("XChaCha20 nonce must be 24 bytes")
    return hchacha20(key, nonce24[:16]), bytes(4) + nonce24[16:]


def xchacha20poly1305_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    subkey, nonce = _xchacha_key_nonce(key, nonce24)
    return ChaCha20Poly1305(subkey).encrypt(nonce, plaintext, ad)


def xchacha20poly1305_decrypt_untrusted(
    key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes
) -> bytes:
    subkey, nonce = _xchacha_key_nonce(key, nonce24)
    try:
        return ChaCha20Poly1305(subkey).decrypt(nonce, ciphertext, ad)
    except InvalidTag as exc:
        raise BadPacket("session.bad_cookie") from exc


def _addr_bytes(addr: Addr) -> bytes:
    # The address is opaque to the session layer; any stable encoding will do.
    return repr(addr).encode()


class CookieChecker:
    """Our side as a receiver of handshake messages (keys from our public key)."""

    __slots__ = ("_cookie_key", "_mac1_key", "_random_bytes", "_secret", "_secret_born")

    def __init__(self, our_public: bytes, random_bytes: Callable[[int], bytes]) -> None:
        self._mac1_key = _hash(LABEL_MAC1 + our_public)
        self._cookie_key = _hash(LABEL_COOKIE + our_public)
        self._random_bytes = random_bytes
        self._secret = b""
        self._secret_born = float("-inf")

    def __repr__(self) -> str:
        return "CookieChecker(<secret>)"

    def check_mac1(self, msg: bytes, mac1_offset: int) -> bool:
        expected = mac(self._mac1_key, msg[:mac1_offset])
        return hmac.compare_digest(expected, msg[mac1_offset : mac1_offset + 16])

    def _cookie(self, src: Addr, now: float) -> bytes:
        if now - self._secret_born >= COOKIE_SECRET_MAX_AGE:
            self._secret = self._random_bytes(32)
            self._secret_born = now
        return mac(self._secret, _addr_bytes(src))

    def check_mac2(self, msg: bytes, mac2_offset: int, src: Addr, now: float) -> bool:
        expected = mac(self._cookie(src, now), msg[:mac2_offset])
        return hmac.compare_digest(expected, msg[mac2_offset : mac2_offset + 16])

    def cookie_reply(
        self, msg: bytes, mac1_offset: int, receiver: int, src: Addr, now: float
    ) -> bytes:
        """A type-3 message for the sender of `msg` (its sender index is `receiver`)."""
        nonce = self._random_bytes(24)
        sealed = xchacha20poly1305_encrypt(
            self._cookie_key, nonce, self._cookie(src, now), msg[mac1_offset : mac1_offset + 16]
        )
        return build(CookieReply(receiver, nonce, sealed))


class CookieJar:
    """Our side as a sender to one peer: adds mac1/mac2, keeps the peer's cookie."""

    __slots__ = ("_cookie", "_cookie_key", "_cookie_time", "_mac1_key", "last_mac1")

    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = _hash(LABEL_MAC1 + peer_public)
        self._cookie_key = _hash(LABEL_COOKIE + peer_public)
        self._cookie: bytes | None = None
        self._cookie_time = 0.0
        self.last_mac1: bytes | None = None

    def __repr__(self) -> str:
        return f"CookieJar(has_cookie={self._cookie is not None})"

    def has_cookie(self, now: float) -> bool:
        return self._cookie is not None and now - self._cookie_time < COOKIE_LIFETIME

    def add_macs(self, msg: bytearray, mac1_offset: int, now: float) -> bytes:
        """Fill mac1 (and mac2 when we hold a fresh cookie) of a handshake message."""
        mac1 = mac(self._mac1_key, bytes(msg[:mac1_offset]))
        msg[mac1_offset : mac1_offset + 16] = mac1
        self.last_mac1 = mac1
        mac2_offset = mac1_offset + 16
        if self._cookie is not None and self.has_cookie(now):
            msg[mac2_offset : mac2_offset + 16] = mac(self._cookie, bytes(msg[:mac2_offset]))
        else:
            msg[mac2_offset : mac2_offset + 16] = bytes(16)
        return bytes(msg)

    def consume_reply_untrusted(self, reply: CookieReply, now: float) -> None:
        """Store the cookie if it decrypts against the last mac1 we sent."""
        if self.last_mac1 is None:
            raise BadPacket("session.unexpected_cookie")
        self._cookie = xchacha20poly1305_decrypt_untrusted(
            self._cookie_key, reply.nonce, reply.encrypted_cookie, self.last_mac1
        )
        self._cookie_time = now
