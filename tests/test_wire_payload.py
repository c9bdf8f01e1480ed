"""The session payload format: VXLAN header, offload, fragments, control."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.errors import BadPacket
from lanspan.wire import control, payload

FRAME = bytes(range(256)) * 6


def test_frame_roundtrip_is_standard_vxlan() -> None:
    data = payload.build_frame(10, FRAME)
    assert data[:8] == bytes([0x08, 0, 0, 0, 0, 0, 10, 0])  # RFC 7348 layout
    p = payload.parse_untrusted(data)
    assert (p.vni, p.body, p.has_offload, p.is_fragment, p.is_control) == (
        10,
        FRAME,
        False,
        False,
        False,
    )


def test_offload_frame_keeps_vnet_header() -> None:
    vnet = bytes([1, 1, 54, 0, 0x48, 0x05, 34, 0, 16, 0])
    p = payload.parse_untrusted(payload.build_frame(0xABCDEF, FRAME, vnet))
    assert p.vni == 0xABCDEF and p.has_offload and p.body == vnet + FRAME


@pytest.mark.parametrize("size", [1, 1387, 1388, 1389, 5000, 65000])
def test_fragments_rebuild_the_body_and_share_one_size(size: int) -> None:
    body = (FRAME * 50)[:size]
    frags = payload.build_fragments(11, body, True, 7, 1400)
    assert all(len(f) <= 1400 for f in frags)
    assert len({len(f) for f in frags[:-1]}) <= 1  # one UDP GSO batch
    parsed = [payload.parse_untrusted(f) for f in frags]
    assert [p.frag_index for p in parsed] == list(range(len(frags)))
    assert all(p.frag_count == len(frags) and p.frag_id == 7 for p in parsed)
    assert b"".join(p.body for p in parsed) == body


def test_too_many_fragments_is_refused() -> None:
    with pytest.raises(ValueError):
        payload.build_fragments(1, bytes(200_000), False, 1, 1400)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x08\x00\x00", "payload.short"),
        (bytes([0x08, 0, 0, 0, 0, 0, 0, 0]), "payload.no_vni"),
        (bytes([0x00, 0, 0, 0, 0, 0, 5, 0]), "payload.no_vni"),
        (bytes([0x08, 0, 0, 0, 0, 0, 5, 1]), "payload.reserved_bits"),
        (bytes([0x48, 0, 0, 0, 0, 0, 5, 0]), "payload.reserved_bits"),
        (bytes([0x88, 0, 0, 0, 0, 0, 0, 0]), "payload.bad_control_header"),
        (bytes([0x0A, 0, 0, 0, 0, 0, 5, 0, 0]), "payload.short_fragment"),
        (bytes([0x0A, 0, 0, 0, 0, 0, 5, 0, 0, 1, 3, 3]), "payload.bad_fragment_index"),
        (bytes([0x0A, 0, 0, 0, 0, 0, 5, 0, 0, 1, 0, 0]), "payload.bad_fragment_index"),
    ],
)
def test_bad_payloads_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as e:
        payload.parse_untrusted(data)
    assert e.value.reason == reason


@given(st.binary(max_size=64))
def test_random_payload_only_raises_badpacket(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        payload.parse_untrusted(data)


@given(st.integers(0, 11), st.binary(max_size=16))
def test_truncated_and_extended_fragments(cut: int, extra: bytes) -> None:
    frag = payload.build_fragments(3, FRAME * 2, False, 9, 1400)[0]
    for data in (frag[:cut], frag + extra):
        try:
            p = payload.parse_untrusted(data)
        except BadPacket:
            continue
        assert p.vni == 3


def test_probe_roundtrip_and_errors() -> None:
    probe = control.Probe(False, 2, 0xDEADBEEF, 123456789)
    data = payload.build_control(control.build_probe(probe))
    p = payload.parse_untrusted(data)
    assert p.is_control and control.parse_untrusted(p.body) == probe
    for bad, reason in [
        (b"", "control.short"),
        (b"\x01\x00", "control.bad_length"),
        (b"\x09" + bytes(13), "control.unknown_type"),
    ]:
        with pytest.raises(BadPacket) as e:
            control.parse_untrusted(bad)
        assert e.value.reason == reason


@given(st.binary(max_size=40))
def test_random_control_only_raises_badpacket(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        control.parse_untrusted(data)


PLANES = control.Planes(False, (("lan", "kernel"), ("api", "userspace")))


def test_planes_roundtrip_and_wire_bytes() -> None:
    data = control.build_planes(PLANES)
    assert data == b"\x06\x00\x02\x03lan\x01\x03api\x00"
    assert control.parse_untrusted(data) == PLANES
    acked = control.Planes(True, ())
    assert control.build_planes(acked) == b"\x06\x01\x00"
    assert control.parse_untrusted(b"\x06\x01\x00") == acked


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x06\x00", "control.short"),
        (b"\x06\x02\x00", "control.bad_planes"),  # an unknown flag
        (b"\x06\x00\x01\x03lan\x02", "control.bad_planes"),  # an unknown plane
        (b"\x06\x00\x01\x03lan", "control.short"),  # no plane byte
        (b"\x06\x00\x02\x03lan\x01\x03lan\x00", "control.bad_planes"),  # named twice
        (b"\x06\x00\x00\x00", "control.bad_length"),
        (b"\x06\x00\x01\x00\x01", "control.bad_name"),
    ],
)
def test_bad_planes_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadPacket) as e:
        control.parse_untrusted(data)
    assert e.value.reason == reason


def test_planes_refuses_what_it_cannot_say() -> None:
    with pytest.raises(ValueError, match="neither"):
        control.build_planes(control.Planes(False, (("lan", "fast"),)))
    with pytest.raises(ValueError, match="at most 255"):
        control.build_planes(control.Planes(False, tuple((f"s{i}", "kernel") for i in range(256))))


@given(st.integers(min_value=0, max_value=30), st.binary(max_size=8))
def test_truncated_and_extended_planes_only_raise_badpacket(cut: int, extra: bytes) -> None:
    good = control.build_planes(PLANES)
    for data in (good[:cut], good + extra):
        try:
            got = control.parse_untrusted(data)
        except BadPacket:
            continue
        assert data == good and got == PLANES
