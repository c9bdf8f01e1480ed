"""lanspan.session.cookie: HChaCha20/XChaCha20-Poly1305 vectors, mac1, mac2, cookies."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.session.cookie import (
    COOKIE_LIFETIME,
    COOKIE_SECRET_MAX_AGE,
    CookieChecker,
    CookieJar,
    hchacha20,
    xchacha20poly1305_decrypt_untrusted,
    xchacha20poly1305_encrypt,
)
from lanspan.wire.messages import CookieReply, parse_untrusted

# draft-irtf-cfrg-xchacha-03 §2.2.1
HCHACHA_KEY = bytes(range(32))
HCHACHA_INPUT = bytes.fromhex("000000090000004a0000000031415927")
HCHACHA_OUT = bytes.fromhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
# draft-irtf-cfrg-xchacha-03 §A.3.1
X_KEY = bytes(range(0x80, 0xA0))
X_NONCE = bytes(range(0x40, 0x58))
X_AD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
X_PT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
    b"the future, sunscreen would be it."
)
X_CT = bytes.fromhex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
    "c0875924c1c7987947deafd8780acf49"
)


def test_hchacha20_draft_vector() -> None:
    assert hchacha20(HCHACHA_KEY, HCHACHA_INPUT) == HCHACHA_OUT


def test_xchacha20poly1305_draft_vector() -> None:
    assert xchacha20poly1305_encrypt(X_KEY, X_NONCE, X_PT, X_AD) == X_CT
    assert xchacha20poly1305_decrypt_untrusted(X_KEY, X_NONCE, X_CT, X_AD) == X_PT


def test_xchacha_rejects_tamper() -> None:
    with pytest.raises(BadPacket, match=r"session\.bad_cookie"):
        xchacha20poly1305_decrypt_untrusted(X_KEY, X_NONCE, X_CT, X_AD + b"x")


def _rng(seed: int) -> random.Random:
    return random.Random(seed)


RESPONDER_PUB = bytes([0x42] * 32)


def _msg(jar: CookieJar, now: float) -> bytes:
    return jar.add_macs(bytearray(b"\x01" + bytes(147)), 116, now)


def test_mac1_checked_with_our_key_only() -> None:
    checker = CookieChecker(RESPONDER_PUB, _rng(1).randbytes)
    good = _msg(CookieJar(RESPONDER_PUB), 0.0)
    assert checker.check_mac1(good, 116)
    assert not checker.check_mac1(_msg(CookieJar(bytes(32)), 0.0), 116)
    tampered = bytearray(good)
    tampered[10] ^= 1
    assert not checker.check_mac1(bytes(tampered), 116)


def test_cookie_round_trip_enables_mac2() -> None:
    src = ("198.18.0.1", 51820)
    checker = CookieChecker(RESPONDER_PUB, _rng(2).randbytes)
    jar = CookieJar(RESPONDER_PUB)
    first = _msg(jar, 0.0)
    assert first[132:] == bytes(16)
    assert not checker.check_mac2(first, 132, src, 0.0)
    reply = parse_untrusted(checker.cookie_reply(first, 116, 7, src, 0.0))
    assert isinstance(reply, CookieReply) and reply.receiver == 7
    jar.consume_reply_untrusted(reply, 1.0)
    second = _msg(jar, 2.0)
    assert checker.check_mac2(second, 132, src, 2.0)
    assert not checker.check_mac2(second, 132, ("198.18.0.2", 51820), 2.0)
    # The cookie ages out at the initiator, and the secret turns at the responder.
    assert _msg(jar, 1.0 + COOKIE_LIFETIME)[132:] == bytes(16)
    assert not checker.check_mac2(second, 132, src, COOKIE_SECRET_MAX_AGE + 0.5)


def test_cookie_reply_bound_to_last_mac1() -> None:
    src = ("198.18.0.1", 1)
    checker = CookieChecker(RESPONDER_PUB, _rng(3).randbytes)
    jar = CookieJar(RESPONDER_PUB)
    with pytest.raises(BadPacket, match=r"session\.unexpected_cookie"):
        jar.consume_reply_untrusted(CookieReply(1, bytes(24), bytes(32)), 0.0)
    first = _msg(jar, 0.0)
    reply = parse_untrusted(checker.cookie_reply(first, 116, 1, src, 0.0))
    # We sent a newer initiation since: the reply (bound to the old mac1) no longer opens.
    other = bytearray(first)
    other[20] ^= 1
    jar.add_macs(other, 116, 0.5)
    assert isinstance(reply, CookieReply)
    with pytest.raises(BadPacket, match=r"session\.bad_cookie"):
        jar.consume_reply_untrusted(reply, 0.6)


@given(st.binary(min_size=24, max_size=24), st.binary(min_size=32, max_size=32))
def test_random_cookie_reply_is_bad_packet(nonce: bytes, sealed: bytes) -> None:
    jar = CookieJar(RESPONDER_PUB)
    _msg(jar, 0.0)
    with pytest.raises(BadPacket):
        jar.consume_reply_untrusted(CookieReply(1, nonce, sealed), 0.0)


def test_reprs_hide_secrets() -> None:
    checker = CookieChecker(RESPONDER_PUB, _rng(4).randbytes)
    checker.check_mac2(bytes(148), 132, ("h", 1), 0.0)
    assert "secret" in repr(checker) and RESPONDER_PUB.hex() not in repr(checker)
