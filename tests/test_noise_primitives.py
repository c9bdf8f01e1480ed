"""Unit tests for lanspan.noise primitives and protocol-name parsing."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.noise import (
    CipherState,
    HandshakeState,
    ProtocolName,
    dh,
    hkdf,
    hmac_hash,
    public_key,
)

KEY = bytes(range(32))


def test_chachapoly_nonce_is_little_endian() -> None:
    cs = CipherState("chachapoly", KEY)
    cs.set_nonce(0x0102)
    nonce = bytes(4) + (0x0102).to_bytes(8, "little")
    assert cs.encrypt_with_ad(b"ad", b"x") == ChaCha20Poly1305(KEY).encrypt(nonce, b"x", b"ad")
    assert cs.n == 0x0103


def test_aesgcm_nonce_is_big_endian() -> None:
    cs = CipherState("aesgcm", KEY)
    cs.set_nonce(0x0102)
    nonce = bytes(4) + (0x0102).to_bytes(8, "big")
    assert cs.encrypt_with_ad(b"ad", b"x") == AESGCM(KEY).encrypt(nonce, b"x", b"ad")


def test_no_key_passes_through_and_repr_hides_key() -> None:
    cs = CipherState("chachapoly")
    assert cs.encrypt_with_ad(b"", b"plain") == b"plain"
    keyed = CipherState("chachapoly", KEY)
    assert KEY.hex() not in repr(keyed)


def test_decrypt_rejects_tamper_and_keeps_nonce() -> None:
    a, b = CipherState("aesgcm", KEY), CipherState("aesgcm", KEY)
    ct = bytearray(a.encrypt_with_ad(b"", b"payload"))
    ct[0] ^= 0x80
    with pytest.raises(BadPacket, match=r"session\.noise_bad_auth"):
        b.decrypt_with_ad_untrusted(b"", bytes(ct))
    assert b.n == 0


def test_rekey_changes_key_keeps_nonce() -> None:
    a, b = CipherState("chachapoly", KEY), CipherState("chachapoly", KEY)
    a.set_nonce(5)
    b.set_nonce(5)
    a.rekey()
    b.rekey()
    assert b.decrypt_with_ad_untrusted(b"", a.encrypt_with_ad(b"", b"m")) == b"m"
    fresh = CipherState("chachapoly", KEY)
    fresh.set_nonce(6)
    with pytest.raises(BadPacket):
        fresh.decrypt_with_ad_untrusted(b"", a.encrypt_with_ad(b"", b"m"))


def test_hkdf_matches_definition() -> None:
    ck, ikm = bytes(32), b"input"
    temp = hmac.new(ck, ikm, hashlib.blake2s).digest()
    o1 = hmac.new(temp, b"\x01", hashlib.blake2s).digest()
    o2 = hmac.new(temp, o1 + b"\x02", hashlib.blake2s).digest()
    o3 = hmac.new(temp, o2 + b"\x03", hashlib.blake2s).digest()
    assert hkdf(ck, ikm, 2) == (o1, o2)
    assert hkdf(ck, ikm, 3) == (o1, o2, o3)


def test_dh_agrees_and_rejects_low_order_point() -> None:
    a, b = bytes([1] * 32), bytes([2] * 32)
    assert dh(a, public_key(b)) == dh(b, public_key(a))
    with pytest.raises(BadPacket, match=r"session\.noise_bad_dh"):
        dh(a, bytes(32))


@pytest.mark.parametrize(
    "name",
    [
        "Noise_KK_25519_ChaChaPoly_BLAKE2s",
        "Noise_IK_448_ChaChaPoly_BLAKE2s",
        "Noise_IK_25519_ChaChaPoly_SHA256",
        "Noise_IKfallback_25519_AESGCM_BLAKE2s",
        "Noise_IKpsk9_25519_AESGCM_BLAKE2s",
        "nonsense",
    ],
)
def test_unsupported_names_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        ProtocolName.parse(name)


def test_psk2_appends_token_to_second_message() -> None:
    p = ProtocolName.parse("Noise_IKpsk2_25519_AESGCM_BLAKE2s")
    assert p.pattern.messages[1][-1] == "psk"
    assert p.cipher == "aesgcm"


def _pair(psk: bytes) -> tuple[HandshakeState, HandshakeState]:
    s_i, s_r = bytes([7] * 32), bytes([9] * 32)
    name = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
    init = HandshakeState(
        name,
        initiator=True,
        prologue=b"p",
        static_private=s_i,
        remote_static=public_key(s_r),
        ephemeral_private=bytes([3] * 32),
        psks=[psk],
    )
    resp = HandshakeState(
        name, initiator=False, prologue=b"p", static_private=s_r, ephemeral_private=bytes([4] * 32)
    )
    return init, resp


def test_responder_learns_static_then_psk() -> None:
    init, resp = _pair(bytes([5] * 32))
    assert resp.read_message_untrusted(init.write_message(b"ts")) == b"ts"
    assert resp.remote_static == public_key(bytes([7] * 32))
    resp.psks = [bytes([5] * 32)]
    init.read_message_untrusted(resp.write_message(b""))
    assert init.split_keys() == tuple(reversed(resp.split_keys()))


def test_wrong_turn_is_misuse() -> None:
    init, _ = _pair(bytes(32))
    with pytest.raises(ValueError):
        init.read_message_untrusted(b"")


@given(st.binary(max_size=200))
def test_random_first_message_only_bad_packet(data: bytes) -> None:
    _, resp = _pair(bytes(32))
    with pytest.raises(BadPacket):
        resp.read_message_untrusted(data)


@given(st.integers(min_value=0, max_value=107), st.binary(max_size=20))
def test_truncated_or_extended_first_message(cut: int, extra: bytes) -> None:
    init, resp = _pair(bytes(32))
    msg = init.write_message(b"123456789012")
    with pytest.raises(BadPacket):
        resp.read_message_untrusted(msg[:cut])
    if extra:
        _, resp2 = _pair(bytes(32))
        with pytest.raises(BadPacket):
            resp2.read_message_untrusted(msg + extra)


def test_clone_is_independent() -> None:
    init, resp = _pair(bytes(32))
    resp.read_message_untrusted(init.write_message(b""))
    resp.psks = [bytes(32)]
    reply = resp.write_message(b"")
    spoiled = init.clone()
    with pytest.raises(BadPacket):
        spoiled.read_message_untrusted(reply[:-1] + bytes([reply[-1] ^ 1]))
    good = init.clone()
    good.read_message_untrusted(reply)
    assert good.complete and not init.complete
    assert good.split_keys() == tuple(reversed(resp.split_keys()))


@given(st.binary(max_size=100), st.binary(max_size=200))
def test_hmac_hash_is_rfc2104_hmac_blake2s(key: bytes, data: bytes) -> None:
    # by hand (pads by translate) for speed: the same bytes as the stdlib's HMAC
    assert hmac_hash(key, data) == hmac.new(key, data, hashlib.blake2s).digest()


def test_a_handshake_loads_the_static_keys_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rekey cost (issue 10): each key object is made once — the static key once per
    process (cached), each ephemeral once per handshake — not once per DH."""
    import os
    import time

    from cryptography.hazmat.primitives.asymmetric import x25519

    from lanspan.session import SessionTable, Transmit

    kw = {"random_bytes": os.urandom, "wall_time": time.time}
    a = SessionTable(os.urandom(32), **kw)  # type: ignore[arg-type]
    b = SessionTable(os.urandom(32), **kw)  # type: ignore[arg-type]
    a.add_peer("b", b.public_key)
    b.add_peer("a", a.public_key)
    real = x25519.X25519PrivateKey.from_private_bytes
    loads: list[bytes] = []

    def counting(data: bytes) -> x25519.X25519PrivateKey:
        loads.append(bytes(data))
        return real(data)

    monkeypatch.setattr(x25519.X25519PrivateKey, "from_private_bytes", staticmethod(counting))
    t = 0.0
    for _ in range(3):  # three handshakes (rekeys) between the same pair
        t += 200.0
        a.initiate("b", t)
        for _ in range(3):
            for src, dst in ((a, b), (b, a)):
                for act in src.take_outputs():
                    if isinstance(act, Transmit):
                        dst.receive(act.data, ("peer", 1), t)
        assert a.status("b").established and b.status("a").established
    # two static keys (once each, ever) + two ephemerals a handshake; it was 12 a handshake
    assert len(loads) <= 2 + 2 * 3
    assert len(set(loads)) == len(loads)


def test_the_static_keys_dh_is_computed_once_per_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """ss is the same in every handshake of a pair (issue 10: handshake CPU at a cold
    start): after the first handshake each side makes 4 scalar multiplications, not 5,
    and the handshakes still agree."""
    from lanspan.noise import handshake as hs_module
    from lanspan.noise import primitives as prim

    calls: list[bytes] = []
    real = prim.dh

    def counting(private: bytes | X25519PrivateKey, public: bytes) -> bytes:
        calls.append(public)
        return real(private, public)

    monkeypatch.setattr(hs_module, "dh", counting)
    monkeypatch.setattr(prim, "dh", counting)  # what static_dh calls on a miss
    prim.static_dh.cache_clear()
    per_handshake = []
    for _ in range(3):
        before = len(calls)
        init, resp = _pair(bytes(32))
        resp.read_message_untrusted(init.write_message(b""))
        resp.psks = [bytes(32)]
        init.read_message_untrusted(resp.write_message(b""))
        assert init.split_keys() == tuple(reversed(resp.split_keys()))
        per_handshake.append(len(calls) - before)
    assert per_handshake == [8, 6, 6], per_handshake
