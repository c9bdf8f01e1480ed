"""Noise Protocol Framework primitives (revision 34): DH, HASH, HKDF, CipherState.

DH is X25519, HASH is BLAKE2s (HASHLEN 32, BLOCKLEN 64), the cipher is
ChaChaPoly (nonce: 4 zero bytes + 64-bit little-endian counter) or AESGCM
(AES-256-GCM, nonce: 4 zero bytes + 64-bit big-endian counter).
"""

from __future__ import annotations

import functools
import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from lanspan.config.model import Cipher
from lanspan.errors import BadPacket

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_NONCE",
    "CipherName",
    "CipherState",
    "aead_for",
    "dh",
    "hash_",
    "hkdf",
    "hmac_hash",
    "nonce_struct",
    "private_key",
    "public_key",
    "static_dh",
    "static_key",
]

DHLEN = 32
HASHLEN = 32
MAX_NONCE = 2**64 - 1  # reserved by the spec: never used to encrypt

CipherName = Cipher  # the one cipher type: lanspan.config.model.Cipher

_NONCE_LE = struct.Struct("<4xQ")
_NONCE_BE = struct.Struct(">4xQ")


def nonce_struct(cipher: CipherName) -> struct.Struct:
    """The packer turning a 64-bit counter into this cipher's 96-bit nonce."""
    return _NONCE_LE if cipher == "chachapoly" else _NONCE_BE


def aead_for(cipher: CipherName, key: bytes) -> ChaCha20Poly1305 | AESGCM:
    return ChaCha20Poly1305(key) if cipher == "chachapoly" else AESGCM(key)


def public_key(private: bytes) -> bytes:
    """X25519 public key of a 32-byte private key (clamped by `cryptography`)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def private_key(private: bytes) -> X25519PrivateKey:
    """The key object for a 32-byte private key: made once per key, used for every DH."""
    return X25519PrivateKey.from_private_bytes(private)


@functools.lru_cache(maxsize=8)
def static_key(private: bytes) -> tuple[X25519PrivateKey, bytes]:
    """(key object, public key) of a node's static key, made once per process.

    Every handshake uses the static key two or three times; loading it and
    deriving its public key each time was most of a rekey's X25519 work
    (issue 10). Only static keys come here, never ephemerals (those are not
    kept past their handshake).
    """
    key = X25519PrivateKey.from_private_bytes(private)
    return key, key.public_key().public_bytes_raw()


def dh(private: bytes | X25519PrivateKey, public: bytes) -> bytes:
    """X25519; a low-order public key (all-zero output) is a peer's fault."""
    try:
        key = (
            X25519PrivateKey.from_private_bytes(private) if isinstance(private, bytes) else private
        )
        return key.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # cryptography rejects an all-zero shared secret
        raise BadPacket("session.noise_bad_dh") from exc


# ss, the static keys' DH, is the same in every handshake of a pair: computed once per
# (our key, peer key) and kept, as WireGuard keeps it per peer. 2 of a handshake's 10
# scalar multiplications (30 us each here); at a 100-node cold start the handshakes
# were a quarter of the agents' CPU (issue 10). Bounded: keys that come and go (an
# initiation names any static key it likes) evict the oldest; nothing else changes.
STATIC_DH_CACHE = 4096


@functools.lru_cache(maxsize=STATIC_DH_CACHE)
def static_dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """DH of a static key object (from `static_key`, so one per key) and a peer's
    static public key, computed once; raises like `dh` (a failure is not kept)."""
    return dh(private, public)


def hash_(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


# HMAC (RFC 2104) over BLAKE2s by hand: the pads by `bytes.translate`, two hash calls.
# The stdlib's `hmac.new` takes its slow pure-Python path for BLAKE2s (no OpenSSL
# HMAC for it): ~50 calls a handshake, a fifth of its CPU (issue 10).
_BLOCKLEN = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_hash(key: bytes, data: bytes) -> bytes:
    if len(key) > _BLOCKLEN:
        key = hashlib.blake2s(key).digest()
    key = key.ljust(_BLOCKLEN, b"\0")
    inner = hashlib.blake2s(key.translate(_IPAD) + data).digest()
    return hashlib.blake2s(key.translate(_OPAD) + inner).digest()


def hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """Noise HKDF: 2 or 3 outputs of HASHLEN bytes."""
    temp = hmac_hash(chaining_key, ikm)
    out1 = hmac_hash(temp, b"\x01")
    out2 = hmac_hash(temp, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, hmac_hash(temp, out2 + b"\x03")


class CipherState:
    """Noise CipherState: a key (or none) and a 64-bit nonce counter."""

    __slots__ = ("_aead", "_cipher", "_nonce", "n")

    def __init__(self, cipher: CipherName, key: bytes | None = None) -> None:
        self._cipher: CipherName = cipher
        self._nonce = nonce_struct(cipher)
        self._aead: ChaCha20Poly1305 | AESGCM | None = None
        self.n = 0
        if key is not None:
            self.initialize_key(key)

    def __repr__(self) -> str:  # never show the key
        return f"CipherState({self._cipher}, has_key={self.has_key()}, n={self.n})"

    def clone(self) -> CipherState:
        """An independent copy (the AEAD object is stateless, so it is shared)."""
        other = CipherState(self._cipher)
        other._aead = self._aead
        other.n = self.n
        return other

    def initialize_key(self, key: bytes) -> None:
        self._aead = aead_for(self._cipher, key)
        self.n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def set_nonce(self, n: int) -> None:
        self.n = n

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise OverflowError("nonce exhausted")
        out = self._aead.encrypt(self._nonce.pack(self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad_untrusted(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise BadPacket("session.noise_nonce_exhausted")
        try:
            out = self._aead.decrypt(self._nonce.pack(self.n), ciphertext, ad)
        except InvalidTag as exc:
            raise BadPacket("session.noise_bad_auth") from exc
        self.n += 1
        return out

    def rekey(self) -> None:
        """REKEY(k) = first 32 bytes of ENCRYPT(k, maxnonce, zerolen, zeros)."""
        if self._aead is None:
            raise ValueError("no key")
        key = self._aead.encrypt(self._nonce.pack(MAX_NONCE), bytes(32), b"")[:32]
        n = self.n
        self.initialize_key(key)
        self.n = n
