"""Reading a network file from disk: the only file I/O of the network loader."""

from __future__ import annotations

from pathlib import Path

from lanspan.config.model import Network
from lanspan.config.parse import parse_network
from lanspan.errors import ConfigError

MAX_FILE_SIZE = 16 * 1024 * 1024


def load_network(path: Path) -> Network:
    """Read and validate a network file; `ConfigError` names the path on any problem."""
    source = str(path)
    try:
        with open(path, "rb") as f:
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
