"""lanspan.noise: the Noise Protocol Framework on `cryptography` (25519, BLAKE2s,
ChaChaPoly or AESGCM), enough for WireGuard's Noise_IKpsk2 and the test vectors."""

from lanspan.noise.handshake import PATTERNS, HandshakeState, Pattern, ProtocolName, SymmetricState
from lanspan.noise.primitives import (
    DHLEN,
    HASHLEN,
    CipherName,
    CipherState,
    aead_for,
    dh,
    hash_,
    hkdf,
    hmac_hash,
    nonce_struct,
    public_key,
)

__all__ = [
    "DHLEN",
    "HASHLEN",
    "PATTERNS",
    "CipherName",
    "CipherState",
    "HandshakeState",
    "Pattern",
    "ProtocolName",
    "SymmetricState",
    "aead_for",
    "dh",
    "hash_",
    "hkdf",
    "hmac_hash",
    "nonce_struct",
    "public_key",
]
