"""The agent's control socket: a unix stream socket speaking JSON lines.

One request per line, one response line per request, in order::

    -> {"op": "status"}
    <- {"ok": true, "result": {...the show document...}}
    -> {"op": "sessions"}
    <- {"ok": true, "result": {"b": "up", "c": "handshaking"}}
    -> {"op": "macs", "segment": "lan"}
    <- {"ok": true, "result": [{"segment": "lan", "mac": "52:54:00:12:34:56", ...}]}
    -> {"op": "nope"}
    <- {"ok": false, "error": "unknown op 'nope'; expected one of macs, ping, ..."}

Everything runs on the agent's selector and never blocks: sockets are
non-blocking, per-client buffers are bounded, a client that sends an
over-long line or does not read its answers is dropped. Malformed requests
get an error response; a failing `StatusSource` gets an error response and a
log line, never an exception into the agent's loop. See docs/control-api.md.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import errno
import ipaddress
import json
import logging
import math
import os
import socket
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Protocol

from lanspan.control._conn import Conn, Listener

if TYPE_CHECKING:
    from lanspan.node.status import MacRow, NodeStatus

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_CLIENTS",
    "MAX_REQUEST_BYTES",
    "OPS",
    "ControlError",
    "ControlServer",
    "StatusSource",
    "handle_request",
]

log = logging.getLogger("lanspan.control")

OPS = ("macs", "ping", "reload", "sessions", "status")
MAX_REQUEST_BYTES = 64 * 1024  # one request line
MAX_RESPONSE_BACKLOG = 64 * 1024 * 1024  # unread answers queued for one client
MAX_CLIENTS = 32  # beyond this the longest idle client is dropped
IDLE_TIMEOUT = 60.0  # seconds a client may stay connected without sending a request


class StatusSource(Protocol):
    """What the agent exposes to the control socket and the metrics endpoint."""

    def status(self) -> NodeStatus:
        """The typed status; its JSON form is the `show` document (docs/control-api.md)."""
        ...

    def sessions(self) -> Mapping[str, str]:
        """Each peer's `session` as the status shows it ("up", "handshaking", "down")."""
        ...

    def macs(self, segment: str | None) -> Sequence[MacRow]:
        """MAC table rows, all segments when `segment` is None."""
        ...

    def reload(self) -> dict[str, object]:
        """Re-read the network file: {"ok": bool, "changes": [...], "error": str | None}."""
        ...


class ControlError(Exception):
    """The control socket cannot be set up (path in use, not a socket, permissions)."""


def _error(message: str) -> dict[str, object]:
    return {"ok": False, "error": message}


def handle_request(
    line: bytes, source: StatusSource, on_error: Callable[[Exception], None] | None = None
) -> dict[str, object]:
    """Answer one request line; pure apart from calling `source`. Never raises.

    A failure of `source` is answered with an error and handed to `on_error`
    (the agent counts and logs it) or, without one, logged here.
    """
    try:
        req = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return _error(f"malformed request: not JSON ({e})")
    except RecursionError:  # deeply nested arrays: still only a malformed request
        return _error("malformed request: nested too deeply")
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return _error(f"malformed request: {e}")
    if not isinstance(req, dict):
        return _error('malformed request: expected a JSON object like {"op": "status"}')
    op = req.get("op")
    if not isinstance(op, str):
        return _error('malformed request: missing "op" (string)')
    if op not in OPS:
        return _error(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    try:
        if op == "ping":
            return {"ok": True, "result": "pong"}
        if op == "status":
            # imported when asked: the status types cost an agent's start (issue 10)
            from lanspan.control.document import status_encodable, to_json
            from lanspan.node.status import NodeStatus

            status = source.status()
            if isinstance(status, NodeStatus):  # peers left to the encoder (see `_encode`)
                return {"ok": True, "result": status_encodable(status)}
            return {"ok": True, "result": to_json(status)}
        if op == "sessions":  # what a waiting lab or monitor asks: no paths, no counters
            return {"ok": True, "result": dict(source.sessions())}
        if op == "macs":
            segment = req.get("segment")
            if segment is not None and not isinstance(segment, str):
                return _error('malformed request: "segment" must be a string or null')
            from lanspan.control.document import to_json

            return {"ok": True, "result": to_json(source.macs(segment))}
        return {"ok": True, "result": source.reload()}
    except Exception as e:
        if on_error is not None:
            on_error(e)
        else:
            log.exception("control op %r failed", op, extra={"fields": {"op": op}})
        return _error(f"internal error in the agent while handling {op!r}: {e}")


def _jsonable(obj: object) -> object:
    """`json.dumps` fallback for values the agent may hand over as-is."""
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        if len(raw) == 6:  # a MAC address
            return ":".join(f"{b:02x}" for b in raw)
        return base64.b64encode(raw).decode()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, ipaddress.IPv4Address | ipaddress.IPv6Address | PurePath):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # `status_encodable`'s peers
        from lanspan.control.document import to_json

        return to_json(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _finite(obj: object) -> object:
    """Replace NaN and infinities (not JSON) by null, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _encode(response: dict[str, object]) -> bytes:
    """One answer line: by orjson (the status of 99 peers in ~1 ms, a fifth of `json`'s
    time with `to_json`; answers wait for each other, issue 10), else by `json`, which
    also writes what orjson refuses (integers beyond 64 bits, lone surrogates)."""
    import orjson  # imported when asked: not at an agent's start

    # non-str keys written as `json` writes them; both write NaN and infinities as null
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
    try:
        return orjson.dumps(response, default=_jsonable, option=options)
    except (TypeError, ValueError, RecursionError):  # orjson.JSONEncodeError is a TypeError
        pass
    try:
        try:
            text = json.dumps(response, separators=(",", ":"), allow_nan=False, default=_jsonable)
        except ValueError:  # NaN or infinity somewhere
            text = json.dumps(
                _finite(response), separators=(",", ":"), allow_nan=False, default=_jsonable
            )
    except (TypeError, ValueError, RecursionError) as e:
        log.error("control response is not JSON-serialisable: %s", e)
        text = json.dumps(_error(f"internal error: response not serialisable ({e})"))
    return text.encode() + b"\n"


def _someone_listens(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as e:
        # EAGAIN (backlog full) or a timeout: something is there
        return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


class ControlServer(Listener):
    """Listens on `path` (mode 0600) and answers requests from `source`.

    `on_error` receives every exception met while answering (a failing
    `source`, a bug in the connection handling); the client gets an error or
    is closed, the server goes on.
    """

    def __init__(
        self,
        path: Path,
        source: StatusSource,
        on_error: Callable[[Exception], None] | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self._source = source
        self._on_error = on_error
        self._prepare_path()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError as e:
            sock.close()
            raise ControlError(f"cannot bind control socket {self.path}: {e}") from e
        finally:
            os.umask(old_umask)
        try:
            os.chmod(self.path, 0o600)
            st = os.stat(self.path)
            self._ident = (st.st_dev, st.st_ino)
            sock.listen(16)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise ControlError(f"cannot set up control socket {self.path}: {e}") from e
        super().__init__(
            sock,
            logger=log,
            max_clients=MAX_CLIENTS,
            max_in=MAX_REQUEST_BYTES,
            max_out=MAX_RESPONSE_BACKLOG,
            crowded_warning="too many control clients; dropping the longest idle one",
            idle_timeout=idle_timeout,
            on_error=on_error,
        )

    def _prepare_path(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            if not self.path.parent.is_dir():
                raise ControlError(
                    f"cannot create control socket {self.path}: "
                    f"directory {self.path.parent} does not exist"
                ) from None
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; refusing to replace it")
        if _someone_listens(self.path):
            raise ControlError(
                f"another agent is already listening on {self.path}; "
                "stop it first or choose another --control path"
            )
        log.info("removing stale control socket %s", self.path)
        self.path.unlink()

    def _on_data(self, conn: Conn) -> None:
        # answer complete lines while the client keeps up; the rest waits
        while not conn.closed and not conn.outbuf:
            nl = conn.inbuf.find(b"\n")
            if nl < 0:
                return
            line = bytes(conn.inbuf[:nl]).strip()
            del conn.inbuf[: nl + 1]
            if not line:
                continue
            conn.send(_encode(handle_request(line, self._source, self._on_error)))

    def close(self) -> None:
        """Close every client and the listener; unlink the socket file if it is still ours."""
        if self._closed:
            return
        super().close()
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._ident:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
