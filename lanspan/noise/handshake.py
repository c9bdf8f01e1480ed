"""Noise SymmetricState and HandshakeState for the NN, XX and IK patterns,
with the pskN modifiers (lanspan uses IKpsk2, as WireGuard does).

Ephemeral keys are injected (`ephemeral_private`) so test vectors replay and
the core stays free of ambient randomness.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lanspan.errors import BadPacket
from lanspan.noise.primitives import (
    DHLEN,
    HASHLEN,
    CipherName,
    CipherState,
    dh,
    hash_,
    hkdf,
    private_key,
    static_dh,
    static_key,
)
from lanspan.records import record

__all__ = ["PATTERNS", "HandshakeState", "Pattern", "ProtocolName", "SymmetricState"]


@record(frozen=True, slots=True)
class Pattern:
    """Pre-messages (initiator's, responder's) and the message token lists."""

    pre_initiator: tuple[str, ...]
    pre_responder: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]


PATTERNS: dict[str, Pattern] = {
    "NN": Pattern((), (), (("e",), ("e", "ee"))),
    "XX": Pattern((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IK": Pattern((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
}


@record(frozen=True, slots=True)
class ProtocolName:
    """A parsed `Noise_<pattern><mods>_25519_<cipher>_BLAKE2s` name."""

    name: str
    pattern: Pattern
    psk_positions: tuple[int, ...]
    cipher: CipherName

    @classmethod
    def parse(cls, name: str) -> ProtocolName:
        """Raise ValueError for names this module does not implement."""
        parts = name.split("_")
        if len(parts) != 5 or parts[0] != "Noise" or parts[2] != "25519" or parts[4] != "BLAKE2s":
            raise ValueError(f"unsupported Noise protocol {name!r}")
        if parts[3] not in ("ChaChaPoly", "AESGCM"):
            raise ValueError(f"unsupported cipher in {name!r}")
        cipher: CipherName = "chachapoly" if parts[3] == "ChaChaPoly" else "aesgcm"
        base = parts[1][:2]
        if base not in PATTERNS:
            raise ValueError(f"unsupported pattern in {name!r}")
        positions: list[int] = []
        for mod in filter(None, parts[1][2:].split("+")):
            if not (mod.startswith("psk") and mod[3:].isdigit()):
                raise ValueError(f"unsupported modifier {mod!r} in {name!r}")
            positions.append(int(mod[3:]))
        pattern = PATTERNS[base]
        messages = [list(m) for m in pattern.messages]
        for pos in positions:
            if pos > len(messages):
                raise ValueError(f"psk position out of range in {name!r}")
            if pos == 0:
                messages[0].insert(0, "psk")
            else:
                messages[pos - 1].append("psk")
        pattern = Pattern(
            pattern.pre_initiator, pattern.pre_responder, tuple(tuple(m) for m in messages)
        )
        return cls(name, pattern, tuple(positions), cipher)


class SymmetricState:
    """Chaining key, handshake hash and the CipherState they key."""

    __slots__ = ("ck", "cs", "h")

    def __init__(self, protocol_name: bytes, cipher: CipherName) -> None:
        self.h = (
            protocol_name.ljust(HASHLEN, b"\0")
            if len(protocol_name) <= HASHLEN
            else hash_(protocol_name)
        )
        self.ck = self.h
        self.cs = CipherState(cipher)

    def __repr__(self) -> str:
        return "SymmetricState(<secret>)"

    def clone(self) -> SymmetricState:
        other = SymmetricState.__new__(SymmetricState)
        other.ck, other.h, other.cs = self.ck, self.h, self.cs.clone()
        return other

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, ikm, 2)
        self.cs.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = hash_(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cs.initialize_key(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash_untrusted(self, ciphertext: bytes) -> bytes:
        plaintext = self.cs.decrypt_with_ad_untrusted(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split_keys(self) -> tuple[bytes, bytes]:
        """The two transport keys (initiator→responder, responder→initiator)."""
        k1, k2 = hkdf(self.ck, b"", 2)
        return k1, k2


class HandshakeState:
    """One side of a Noise handshake.

    Keys are raw 32-byte X25519 private/public keys. `psks` may be set after
    construction (a responder learns who the initiator is, and so which PSK
    applies, only from the first message).
    """

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static_private: bytes | None = None,
        remote_static: bytes | None = None,
        ephemeral_private: bytes | None = None,
        remote_ephemeral: bytes | None = None,
        psks: Sequence[bytes] = (),
    ) -> None:
        self.protocol = ProtocolName.parse(protocol_name)
        self.initiator = initiator
        self.psks = list(psks)
        self._psk_index = 0
        self._s: X25519PrivateKey | None = None
        self._s_pub: bytes | None = None
        if static_private is not None:
            self._s, self._s_pub = static_key(static_private)
        self._e = private_key(ephemeral_private) if ephemeral_private is not None else None
        self._e_pub: bytes | None = None
        self.remote_static = remote_static
        self.remote_ephemeral = remote_ephemeral
        self._ss = SymmetricState(protocol_name.encode(), self.protocol.cipher)
        self._ss.mix_hash(prologue)
        self._message_index = 0
        pat = self.protocol.pattern
        for role_tokens, mine in (
            (pat.pre_initiator, initiator),
            (pat.pre_responder, not initiator),
        ):
            for token in role_tokens:
                key = self._pre_key(token, mine)
                self._ss.mix_hash(key)

    def __repr__(self) -> str:
        return f"HandshakeState({self.protocol.name}, initiator={self.initiator})"

    def clone(self) -> HandshakeState:
        """An independent copy: read a message into it and keep it only if it verified
        (a forged message must not spoil a handshake in flight)."""
        other = copy.copy(self)
        other._ss = self._ss.clone()
        other.psks = list(self.psks)
        return other

    def set_ephemeral(self, ephemeral_private: bytes) -> None:
        """Inject the ephemeral key late (a responder draws it when it replies)."""
        if self._e_pub is not None:
            raise ValueError("ephemeral already in use")
        self._e = private_key(ephemeral_private)

    def _pre_key(self, token: str, mine: bool) -> bytes:
        if token == "s":
            key = self._s_pub if mine else self.remote_static
        else:
            key = self._ephemeral_public() if mine else self.remote_ephemeral
        if key is None:
            raise ValueError(f"pre-message key {token!r} missing")
        return key

    def _ephemeral_public(self) -> bytes:
        if self._e is None:
            raise ValueError("ephemeral_private is required")
        if self._e_pub is None:
            self._e_pub = self._e.public_key().public_bytes_raw()
        return self._e_pub

    @property
    def handshake_hash(self) -> bytes:
        return self._ss.h

    @property
    def complete(self) -> bool:
        return self._message_index >= len(self.protocol.pattern.messages)

    @property
    def my_turn(self) -> bool:
        return (self._message_index % 2 == 0) == self.initiator

    @property
    def last_message_index(self) -> int:
        return self._message_index

    def _next_psk(self) -> bytes:
        if self._psk_index >= len(self.psks):
            raise ValueError("psk required but not set")
        psk = self.psks[self._psk_index]
        self._psk_index += 1
        if len(psk) != 32:
            raise ValueError("psk must be 32 bytes")
        return psk

    def _dh_token(self, token: str) -> bytes:
        # es: initiator's e with responder's s; se: initiator's s with responder's e.
        local_ephemeral, remote_ephemeral = {
            "ee": (True, True),
            "es": (self.initiator, not self.initiator),
            "se": (not self.initiator, self.initiator),
            "ss": (False, False),
        }[token]
        priv = self._e if local_ephemeral else self._s
        pub = self.remote_ephemeral if remote_ephemeral else self.remote_static
        if priv is None or pub is None:
            raise ValueError(f"key for {token!r} missing")
        if token == "ss":
            return static_dh(priv, pub)  # the same in every handshake of this pair
        return dh(priv, pub)

    def _tokens(self, writing: bool) -> tuple[str, ...]:
        if self.complete:
            raise ValueError("handshake already complete")
        if self.my_turn != writing:
            raise ValueError("not this side's turn")
        return self.protocol.pattern.messages[self._message_index]

    def write_message(self, payload: bytes) -> bytes:
        ss = self._ss
        out: list[bytes] = []
        psk_mode = bool(self.protocol.psk_positions)
        for token in self._tokens(writing=True):
            if token == "e":
                e_pub = self._ephemeral_public()
                out.append(e_pub)
                ss.mix_hash(e_pub)
                if psk_mode:
                    ss.mix_key(e_pub)
            elif token == "s":
                if self._s_pub is None:
                    raise ValueError("static key required")
                out.append(ss.encrypt_and_hash(self._s_pub))
            elif token == "psk":
                ss.mix_key_and_hash(self._next_psk())
            else:
                ss.mix_key(self._dh_token(token))
        out.append(ss.encrypt_and_hash(payload))
        self._message_index += 1
        return b"".join(out)

    def read_message_untrusted(self, message: bytes) -> bytes:
        """Consume a peer's handshake message; BadPacket if it does not verify."""
        ss = self._ss
        psk_mode = bool(self.protocol.psk_positions)
        view = memoryview(message)
        pos = 0
        for token in self._tokens(writing=False):
            if token == "e":
                if len(message) - pos < DHLEN:
                    raise BadPacket("session.noise_short")
                self.remote_ephemeral = bytes(view[pos : pos + DHLEN])
                pos += DHLEN
                ss.mix_hash(self.remote_ephemeral)
                if psk_mode:
                    ss.mix_key(self.remote_ephemeral)
            elif token == "s":
                n = DHLEN + (16 if ss.cs.has_key() else 0)
                if len(message) - pos < n:
                    raise BadPacket("session.noise_short")
                self.remote_static = ss.decrypt_and_hash_untrusted(bytes(view[pos : pos + n]))
                pos += n
            elif token == "psk":
                ss.mix_key_and_hash(self._next_psk())
            else:
                ss.mix_key(self._dh_token(token))
        rest = bytes(view[pos:])
        if ss.cs.has_key() and len(rest) < 16:
            raise BadPacket("session.noise_short")
        payload = ss.decrypt_and_hash_untrusted(rest)
        self._message_index += 1
        return payload

    def split_keys(self) -> tuple[bytes, bytes]:
        """(send key, receive key) from this side's point of view."""
        if not self.complete:
            raise ValueError("handshake not complete")
        k1, k2 = self._ss.split_keys()
        return (k1, k2) if self.initiator else (k2, k1)

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) CipherStates from this side's point of view."""
        send, recv = self.split_keys()
        cipher = self.protocol.cipher
        return CipherState(cipher, send), CipherState(cipher, recv)
