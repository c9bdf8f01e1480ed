"""Reading a network file from disk: the only file I/O of the network loader.

`preload_network(path)` parses a file now and keeps the result: a later
`load_network` of the same path returns it when the file still holds the same
bytes (it is read again and compared), and parses afresh otherwise. The lab's
launcher preloads its network file once before it forks every agent of a lab:
parsing and validating a 32-node file took each agent ~15 ms of CPU (about half
of its start), and 32 agents starting at once on 2 cores queue those behind
each other, where servers of their own parse side by side (issue 10).
"""

from __future__ import annotations

from pathlib import Path

from lanspan.config.model import Network
from lanspan.config.parse import parse_network
from lanspan.errors import ConfigError

MAX_FILE_SIZE = 16 * 1024 * 1024

# path -> (the bytes parsed, their Network): a Network is immutable, so one is shared
_PRELOADED: dict[str, tuple[bytes, Network]] = {}


def preload_network(path: Path) -> None:
    """Parse `path` now for later `load_network`s of it; a file with a problem is
    not kept (its load says what is wrong)."""
    try:
        data = _read(str(path))
        _PRELOADED[str(path)] = (data, _parse(data, str(path)))
    except ConfigError:
        _PRELOADED.pop(str(path), None)


def load_network(path: Path) -> Network:
    """Read and validate a network file; `ConfigError` names the path on any problem."""
    source = str(path)
    data = _read(source)
    kept = _PRELOADED.get(source)
    if kept is not None and kept[0] == data:
        return kept[1]
    return _parse(data, source)


def _read(source: str) -> bytes:
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        raise ConfigError(source, ["no such file"]) from None
    except IsADirectoryError:
        raise ConfigError(source, ["is a directory, not a network file"]) from None
    except PermissionError:
        raise ConfigError(source, ["cannot be read: permission denied"]) from None
    except OSError as e:
        raise ConfigError(source, [f"cannot be read: {e.strerror or e}"]) from None
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(source, [f"is larger than {MAX_FILE_SIZE} bytes: not a network file"])
    return data


def _parse(data: bytes, source: str) -> Network:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            source,
            [
                f"line {line}, column {col}: byte 0x{data[e.start]:02x} is not UTF-8 "
                "— save the file as UTF-8 text"
            ],
        ) from None
    return parse_network(text.removeprefix("\ufeff"), source)
