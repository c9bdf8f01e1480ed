"""lanspan.session.handshake: WireGuard's messages over Noise IKpsk2, lanspan's identifier."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.noise import HandshakeState, public_key
from lanspan.session.cookie import CookieChecker, CookieJar
from lanspan.session.handshake import (
    IDENTIFIER,
    consume_initiation_untrusted,
    consume_response_untrusted,
    create_initiation,
    create_response,
    protocol_name,
    tai64n,
)
from lanspan.wire.messages import HandshakeInitiation, HandshakeResponse, parse_untrusted

I_PRIV, R_PRIV = bytes([0x11] * 32), bytes([0x22] * 32)
PSK = bytes([0x33] * 32)


def test_identifier_is_lanspans() -> None:
    assert IDENTIFIER == b"lanspan v1 encrypted L2 mesh"
    assert protocol_name("aesgcm") == "Noise_IKpsk2_25519_AESGCM_BLAKE2s"
    assert protocol_name("chachapoly") == "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"


def test_tai64n_layout_and_order() -> None:
    assert tai64n(0.0) == (2**62).to_bytes(8, "big") + bytes(4)
    assert tai64n(1.5)[8:] == (500_000_000).to_bytes(4, "big")
    times = [0.0, 0.25, 1.0, 1.000001, 1_700_000_000.5, 1_700_000_001.0]
    labels = [tai64n(t) for t in times]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)


def _initiation(cipher: str = "aesgcm", psk: bytes | None = PSK) -> tuple[bytes, HandshakeState]:
    return create_initiation(
        cipher=cipher,  # type: ignore[arg-type]
        static_private=I_PRIV,
        peer_public=public_key(R_PRIV),
        psk=psk,
        ephemeral_private=bytes([0x44] * 32),
        sender_index=0xAABBCCDD,
        timestamp=tai64n(1000.0),
        jar=CookieJar(public_key(R_PRIV)),
        now=0.0,
    )


@pytest.mark.parametrize("cipher", ["aesgcm", "chachapoly"])
def test_full_handshake(cipher: str) -> None:
    data, init_hs = _initiation(cipher)
    assert len(data) == 148
    assert CookieChecker(public_key(R_PRIV), bytes).check_mac1(data, 116)
    msg = parse_untrusted(data)
    assert isinstance(msg, HandshakeInitiation) and msg.sender == 0xAABBCCDD
    resp_hs, ts = consume_initiation_untrusted(
        cipher=cipher,  # type: ignore[arg-type]
        static_private=R_PRIV,
        msg=msg,
    )
    assert ts == tai64n(1000.0)
    assert resp_hs.remote_static == public_key(I_PRIV)
    raw = create_response(
        hs=resp_hs,
        psk=PSK,
        ephemeral_private=bytes([0x55] * 32),
        sender_index=5,
        receiver_index=msg.sender,
        jar=CookieJar(public_key(I_PRIV)),
        now=0.0,
    )
    assert len(raw) == 92
    response = parse_untrusted(raw)
    assert isinstance(response, HandshakeResponse) and response.receiver == 0xAABBCCDD
    done = consume_response_untrusted(init_hs, response)
    assert done.split_keys() == tuple(reversed(resp_hs.split_keys()))
    assert not init_hs.complete  # the original state is untouched


def test_wrong_psk_response_rejected_state_kept() -> None:
    data, init_hs = _initiation()
    msg = parse_untrusted(data)
    assert isinstance(msg, HandshakeInitiation)
    resp_hs, _ = consume_initiation_untrusted(cipher="aesgcm", static_private=R_PRIV, msg=msg)
    raw = create_response(
        hs=resp_hs,
        psk=bytes(32),
        ephemeral_private=bytes([0x55] * 32),
        sender_index=5,
        receiver_index=msg.sender,
        jar=CookieJar(public_key(I_PRIV)),
        now=0.0,
    )
    response = parse_untrusted(raw)
    assert isinstance(response, HandshakeResponse)
    with pytest.raises(BadPacket):
        consume_response_untrusted(init_hs, response)
    assert init_hs.last_message_index == 1


def test_other_cipher_or_key_cannot_read() -> None:
    data, _ = _initiation("aesgcm")
    msg = parse_untrusted(data)
    assert isinstance(msg, HandshakeInitiation)
    with pytest.raises(BadPacket):
        consume_initiation_untrusted(cipher="chachapoly", static_private=R_PRIV, msg=msg)
    with pytest.raises(BadPacket):
        consume_initiation_untrusted(cipher="aesgcm", static_private=I_PRIV, msg=msg)


def test_wireguard_identifier_would_not_match() -> None:
    """A peer using WireGuard's identifier derives other keys: no accidental interop."""
    wg = HandshakeState(
        protocol_name("chachapoly"),
        initiator=True,
        prologue=b"WireGuard v1 zx2c4 Jason@zx2c4.com",
        static_private=I_PRIV,
        remote_static=public_key(R_PRIV),
        ephemeral_private=bytes([0x44] * 32),
        psks=[PSK],
    )
    body = wg.write_message(tai64n(1.0))
    msg = HandshakeInitiation(1, body[:32], body[32:80], body[80:108])
    with pytest.raises(BadPacket):
        consume_initiation_untrusted(cipher="chachapoly", static_private=R_PRIV, msg=msg)


@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=48, max_size=48),
    st.binary(min_size=28, max_size=28),
)
def test_random_initiation_only_bad_packet(eph: bytes, stat: bytes, ts: bytes) -> None:
    msg = HandshakeInitiation(1, eph, stat, ts)
    with pytest.raises(BadPacket):
        consume_initiation_untrusted(cipher="aesgcm", static_private=R_PRIV, msg=msg)
