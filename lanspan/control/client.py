"""Talk to a running agent over its control socket (used by `lanspan show` / `reload`)."""

from __future__ import annotations

import errno
import json
import socket
import time
from pathlib import Path

__all__ = ["MAX_RESPONSE_BYTES", "ControlUnavailable", "request"]

MAX_RESPONSE_BYTES = 256 * 1024 * 1024


class ControlUnavailable(Exception):
    """No usable agent behind the socket; the message says what to check."""


def request(path: Path, op: str, timeout: float = 5.0, **args: object) -> dict[str, object]:
    """Send one request and return the agent's response object.

    The response is ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": "..."}``.
    Raises `ControlUnavailable` when nothing usable answers at `path` within `timeout`.
    """
    path = Path(path)
    line = json.dumps({"op": op, **args}).encode() + b"\n"
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlUnavailable(
                f"no agent at {path}: is `lanspan agent` running? "
                "(pick another socket with --socket or LANSPAN_SOCKET)"
            ) from None
        except ConnectionRefusedError:
            raise ControlUnavailable(
                f"no agent at {path}: the socket exists but nothing listens "
                "(did `lanspan agent` stop?)"
            ) from None
        except PermissionError:
            raise ControlUnavailable(
                f"permission denied on {path}: the control socket is root-only; try sudo"
            ) from None
        except TimeoutError:
            raise ControlUnavailable(
                f"agent at {path} did not accept within {timeout:g}s"
            ) from None
        except OSError as e:
            if e.errno == errno.ENOTSOCK or e.errno == errno.ECONNREFUSED:
                raise ControlUnavailable(f"no agent at {path}: {e.strerror}") from None
            raise ControlUnavailable(f"cannot reach agent at {path}: {e}") from None
        buf = bytearray()
        try:
            sock.sendall(line)
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ControlUnavailable(
                        f"agent at {path} closed the connection without answering"
                    )
                buf += chunk
                if len(buf) > MAX_RESPONSE_BYTES:
                    raise ControlUnavailable(f"agent at {path} sent an oversized answer")
        except TimeoutError:
            raise ControlUnavailable(
                f"agent at {path} did not answer within {timeout:g}s"
            ) from None
        except (BrokenPipeError, ConnectionResetError):
            raise ControlUnavailable(
                f"agent at {path} closed the connection without answering"
            ) from None
    finally:
        sock.close()
    try:
        response = json.loads(buf[: buf.index(b"\n")])
    except ValueError as e:
        raise ControlUnavailable(
            f"agent at {path} answered something that is not JSON: {e}"
        ) from None
    if not isinstance(response, dict) or "ok" not in response:
        raise ControlUnavailable(f"agent at {path} answered an unexpected object")
    return response
