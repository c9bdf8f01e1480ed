"""lanspan.wire.messages: layouts, round trips, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.wire.messages import (
    MAC1_OFFSET_INITIATION,
    MAC1_OFFSET_RESPONSE,
    MAC2_OFFSET_INITIATION,
    MAC2_OFFSET_RESPONSE,
    CookieReply,
    HandshakeInitiation,
    HandshakeResponse,
    Message,
    TransportData,
    build,
    parse_transport_header_untrusted,
    parse_untrusted,
    receiver_index_untrusted,
)

INIT = HandshakeInitiation(
    0x01020304, b"E" * 32, b"S" * 48, b"T" * 28, mac1=b"1" * 16, mac2=b"2" * 16
)
RESP = HandshakeResponse(0x0A0B0C0D, 0x11223344, b"E" * 32, b"N" * 16, b"1" * 16, b"2" * 16)
COOKIE = CookieReply(0xDEADBEEF, b"n" * 24, b"c" * 32)
DATA = TransportData(0x55667788, 0x0102030405060708, b"x" * 40)
SAMPLES: list[Message] = [INIT, RESP, COOKIE, DATA]


def test_initiation_layout() -> None:
    raw = build(INIT)
    assert len(raw) == 148
    assert raw[:8] == bytes([1, 0, 0, 0, 4, 3, 2, 1])
    assert raw[8:40] == b"E" * 32
    assert raw[MAC1_OFFSET_INITIATION:MAC2_OFFSET_INITIATION] == b"1" * 16
    assert raw[MAC2_OFFSET_INITIATION:] == b"2" * 16


def test_response_layout() -> None:
    raw = build(RESP)
    assert len(raw) == 92
    assert raw[:12] == bytes([2, 0, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A, 0x44, 0x33, 0x22, 0x11])
    assert raw[MAC1_OFFSET_RESPONSE:MAC2_OFFSET_RESPONSE] == b"1" * 16


def test_cookie_and_transport_layout() -> None:
    raw = build(COOKIE)
    assert len(raw) == 64 and raw[:8] == bytes([3, 0, 0, 0, 0xEF, 0xBE, 0xAD, 0xDE])
    raw = build(DATA)
    assert raw[:16] == bytes([4, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 8, 7, 6, 5, 4, 3, 2, 1])
    assert parse_transport_header_untrusted(raw) == (0x55667788, 0x0102030405060708)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    assert parse_untrusted(build(msg)) == msg


def test_receiver_index() -> None:
    assert receiver_index_untrusted(build(INIT)) is None
    assert receiver_index_untrusted(build(RESP)) == 0x11223344
    assert receiver_index_untrusted(build(COOKIE)) == 0xDEADBEEF
    assert receiver_index_untrusted(build(DATA)) == 0x55667788
    assert receiver_index_untrusted(b"\x04\0\0") is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "wire.short_datagram"),
        (b"\x04\0", "wire.short_datagram"),
        (bytes([9, 0, 0, 0]) + bytes(200), "wire.bad_type"),
        (bytes([0, 0, 0, 0]) + bytes(200), "wire.bad_type"),
        (bytes([4, 0, 1, 0]) + bytes(40), "wire.bad_reserved"),
        (build(INIT) + b"\0", "wire.bad_length"),
        (build(RESP)[:-1], "wire.short_datagram"),
        (build(COOKIE) + b"\0", "wire.bad_length"),
        (build(DATA)[:31], "wire.short_datagram"),
    ],
)
def test_rejections(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as info:
        parse_untrusted(data)
    assert info.value.reason == reason


def test_fast_path_rejects() -> None:
    with pytest.raises(BadPacket, match=r"wire\.short_datagram"):
        parse_transport_header_untrusted(build(DATA)[:20])
    with pytest.raises(BadPacket, match=r"wire\.bad_type"):
        parse_transport_header_untrusted(bytes([4, 0, 0, 1]) + bytes(40))


def test_builders_refuse_bad_fields() -> None:
    with pytest.raises(ValueError):
        HandshakeInitiation(2**32, b"E" * 32, b"S" * 48, b"T" * 28)
    with pytest.raises(ValueError):
        CookieReply(1, b"n" * 23, b"c" * 32)
    with pytest.raises(ValueError):
        TransportData(1, 2**64, b"x" * 16)


@given(st.sampled_from(SAMPLES), st.data())
def test_truncations_only_bad_packet(msg: Message, data: st.DataObject) -> None:
    raw = build(msg)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if isinstance(msg, TransportData) and cut >= 32:
        assert parse_untrusted(raw[:cut]).ciphertext == raw[16:cut]  # type: ignore[union-attr]
    else:
        with pytest.raises(BadPacket):
            parse_untrusted(raw[:cut])


@given(st.sampled_from(SAMPLES), st.binary(min_size=1, max_size=64))
def test_appended_bytes(msg: Message, extra: bytes) -> None:
    raw = build(msg) + extra
    if isinstance(msg, TransportData):
        parsed = parse_untrusted(raw)
        assert isinstance(parsed, TransportData) and parsed.ciphertext.endswith(extra)
    else:
        with pytest.raises(BadPacket, match=r"wire\.bad_length"):
            parse_untrusted(raw)


@given(st.binary(max_size=300))
def test_random_input_parses_or_bad_packet(data: bytes) -> None:
    try:
        msg = parse_untrusted(data)
    except BadPacket:
        return
    assert build(msg) == data
