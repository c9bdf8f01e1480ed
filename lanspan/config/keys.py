"""X25519 node keys: generation, base64 text form, and private key files.

A key is 32 raw bytes; its text form is standard base64 (44 characters ending
in "="), the form WireGuard uses. Private key files hold that text and must not
be accessible by group or others; `load_private_key` refuses them otherwise.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lanspan.errors import ConfigError

KEY_SIZE = 32
_MAX_KEY_FILE = 4096  # a key file is ~45 bytes; refuse to slurp anything large


class KeyFormatError(ValueError):
    """Text that is not a base64-encoded 32-byte key; the message says why."""


def generate_private_key() -> bytes:
    """A fresh X25519 private key, 32 raw bytes."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(private: bytes) -> bytes:
    """The X25519 public key (32 raw bytes) of a 32-byte private key."""
    if len(private) != KEY_SIZE:
        raise KeyFormatError(f"a private key is {KEY_SIZE} bytes, got {len(private)}")
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def encode_key(key: bytes) -> str:
    """The base64 text form of a 32-byte key."""
    if len(key) != KEY_SIZE:
        raise KeyFormatError(f"a key is {KEY_SIZE} bytes, got {len(key)}")
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """32 raw bytes from base64 text (surrounding whitespace ignored).

    Raises `KeyFormatError` whose message names the problem: not base64, or
    the wrong length.
    """
    t = text.strip()
    if not t:
        raise KeyFormatError("the key is empty")
    try:
        raw = base64.b64decode(t.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise KeyFormatError(
            "not valid base64 (a key is 44 characters of A-Z a-z 0-9 + / ending in '=')"
        ) from None
    if len(raw) != KEY_SIZE:
        raise KeyFormatError(
            f"decodes to {len(raw)} bytes, a key is {KEY_SIZE} (44 base64 characters ending in '=')"
        )
    return raw


def load_private_key(path: Path) -> bytes:
    """Read a private key file, refusing one that group or others may access.

    Raises `ConfigError` (source = the path) when the file is missing,
    unreadable, too permissive, or does not hold a base64 32-byte key.
    """
    src = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(
            src, [f"key file {src} does not exist: create one with `lanspan genkey --out {src}`"]
        ) from None
    except PermissionError:
        raise ConfigError(src, [f"key file {src} cannot be read: permission denied"]) from None
    except OSError as e:
        raise ConfigError(src, [f"key file {src} cannot be opened: {e.strerror}"]) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(src, [f"key file {src} is a directory, not a file"])
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(src, [f"key file {src} is not a regular file"])
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            how = "readable" if mode & 0o044 else "accessible"
            raise ConfigError(
                src,
                [f"key file {src} is {how} by group/others (mode {mode:04o}): run chmod 600 {src}"],
            )
        try:
            data = os.read(fd, _MAX_KEY_FILE + 1)
        except OSError as e:
            raise ConfigError(src, [f"key file {src} cannot be read: {e.strerror}"]) from None
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(src, [f"key file {src} is too large to be a key"])
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(
            src, [f"key file {src} is not a base64 key: it contains non-ASCII bytes"]
        ) from None
    try:
        return decode_key(text)
    except KeyFormatError as e:
        raise ConfigError(src, [f"key file {src} is not a private key: {e}"]) from None


def write_private_key(path: Path, key: bytes, *, force: bool = False) -> None:
    """Write a key file created with mode 0600 (never briefly readable by others).

    Without `force` an existing file is refused (`FileExistsError`); with it, the
    key goes to a new 0600 file beside it that then replaces the old one.
    """
    data = (encode_key(key) + "\n").encode("ascii")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    if not force:
        _write_new(path, data, flags)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_new(tmp, data, flags)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_new(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
