"""Key generation, base64 form and key files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from lanspan.config.keys import (
    KeyFormatError,
    decode_key,
    encode_key,
    generate_private_key,
    load_private_key,
    public_key,
    write_private_key,
)
from lanspan.errors import ConfigError

# RFC 7748 section 6.1: Alice's private and public key.
RFC_PRIV = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC_PUB = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def test_public_key_matches_rfc7748_vector() -> None:
    assert public_key(RFC_PRIV) == RFC_PUB


def test_generated_keys_are_distinct_and_agree() -> None:
    a, b = generate_private_key(), generate_private_key()
    assert len(a) == 32 and a != b
    shared_ab = X25519PrivateKey.from_private_bytes(a).exchange(
        X25519PrivateKey.from_private_bytes(b).public_key()
    )
    assert len(public_key(a)) == 32
    shared_ba = X25519PrivateKey.from_private_bytes(b).exchange(
        X25519PublicKey.from_public_bytes(public_key(a))
    )
    assert shared_ab == shared_ba


def test_encode_decode_roundtrip() -> None:
    text = encode_key(RFC_PUB)
    assert len(text) == 44 and text.endswith("=")
    assert text == base64.b64encode(RFC_PUB).decode()
    assert decode_key(text) == RFC_PUB
    assert decode_key(f"  {text}\n") == RFC_PUB


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("not base64 !!", "not valid base64"),
        ("é" * 44, "not valid base64"),
        (base64.b64encode(b"x" * 31).decode(), "decodes to 31 bytes"),
        (base64.b64encode(b"x" * 33).decode(), "decodes to 33 bytes"),
    ],
)
def test_decode_key_names_the_problem(text: str, needle: str) -> None:
    with pytest.raises(KeyFormatError, match=needle):
        decode_key(text)


def test_encode_and_public_key_reject_wrong_length() -> None:
    with pytest.raises(KeyFormatError, match="got 31"):
        encode_key(b"x" * 31)
    with pytest.raises(KeyFormatError, match="got 16"):
        public_key(b"x" * 16)


def _keyfile(tmp_path: Path, text: str, mode: int) -> Path:
    p = tmp_path / "node.key"
    p.write_text(text)
    p.chmod(mode)
    return p


def test_load_private_key_reads_0600_file(tmp_path: Path) -> None:
    p = _keyfile(tmp_path, encode_key(RFC_PRIV) + "\n", 0o600)
    assert load_private_key(p) == RFC_PRIV


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_load_private_key_refuses_readable_by_others(tmp_path: Path, mode: int) -> None:
    p = _keyfile(tmp_path, encode_key(RFC_PRIV), mode)
    with pytest.raises(ConfigError) as ei:
        load_private_key(p)
    assert ei.value.problems == [
        f"key file {p} is readable by group/others (mode {mode:04o}): run chmod 600 {p}"
    ]


def test_load_private_key_refuses_group_writable(tmp_path: Path) -> None:
    p = _keyfile(tmp_path, encode_key(RFC_PRIV), 0o620)
    with pytest.raises(ConfigError, match=r"accessible by group/others \(mode 0620\)"):
        load_private_key(p)


def test_load_private_key_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.key"
    with pytest.raises(ConfigError) as ei:
        load_private_key(p)
    assert ei.value.problems == [
        f"key file {p} does not exist: create one with `lanspan genkey --out {p}`"
    ]


def test_load_private_key_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_private_key(tmp_path)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("garbage", "not valid base64"),
        (base64.b64encode(b"k" * 16).decode(), "decodes to 16 bytes"),
        ("", "empty"),
    ],
)
def test_load_private_key_bad_content(tmp_path: Path, content: str, needle: str) -> None:
    p = _keyfile(tmp_path, content, 0o600)
    with pytest.raises(ConfigError, match=f"is not a private key: .*{needle}"):
        load_private_key(p)


def test_load_private_key_non_ascii(tmp_path: Path) -> None:
    p = tmp_path / "k"
    p.write_bytes(b"\xff\xfe" * 22)
    p.chmod(0o600)
    with pytest.raises(ConfigError, match="non-ASCII"):
        load_private_key(p)


def test_write_private_key_mode_and_no_overwrite(tmp_path: Path) -> None:
    p = tmp_path / "k"
    old = os.umask(0)
    try:
        write_private_key(p, RFC_PRIV)
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_private_key(p) == RFC_PRIV
    with pytest.raises(FileExistsError):
        write_private_key(p, generate_private_key())
    assert load_private_key(p) == RFC_PRIV


def test_write_private_key_force_replaces_and_fixes_mode(tmp_path: Path) -> None:
    p = tmp_path / "k"
    p.write_text("old")
    p.chmod(0o644)
    new = generate_private_key()
    write_private_key(p, new, force=True)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_private_key(p) == new
    assert sorted(x.name for x in tmp_path.iterdir()) == ["k"]


@given(st.text() | st.binary().map(lambda b: base64.b64encode(b).decode()))
def test_decode_key_raises_only_keyformaterror(text: str) -> None:
    try:
        key = decode_key(text)
    except KeyFormatError as e:
        assert str(e)
    else:
        assert len(key) == 32 and decode_key(encode_key(key)) == key
