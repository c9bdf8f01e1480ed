"""Non-blocking stream connections and listeners on the agent's selector (control and metrics).

The agent's loop is single-threaded: nothing here may block. Each connection
has a bounded input and a bounded output buffer; a connection that exceeds
either, or that errors, is closed and forgotten. While output is pending the
connection stops reading, so a client that never reads its answers cannot make
the agent queue more for it.

A connection that makes no progress (nothing received, nothing written) for
`idle_timeout` seconds is closed by `handle_timer`; the listener's
`next_timer` says when that is due. When all `max_clients` places are taken,
a new connection pushes out the client idle longest — one that never sent a
byte first — provided it has been idle for `EVICT_AFTER` seconds; if every
client is younger than that, the newcomer is turned away instead. So idle
connections cannot push out a client that is being served, and a burst of
new ones cannot push out the client that connected just before them.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Self

from lanspan.logs import RateLimitedLog

log = logging.getLogger("lanspan.control")

RECV_SIZE = 65536
EVICT_AFTER = 0.5  # seconds without progress before a client may be pushed out


class Conn:
    """One accepted socket; `on_data` is called with the new bytes in `inbuf`."""

    def __init__(
        self,
        sock: socket.socket,
        sel: selectors.BaseSelector | None,
        on_data: Callable[[Conn], None],
        on_closed: Callable[[Conn], None],
        max_in: int,
        max_out: int,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closed = False
        self.close_when_flushed = False
        self._sel = sel
        self._on_data = on_data
        self._on_closed = on_closed
        self._max_in = max_in
        self._max_out = max_out
        self._mask = 0
        self._clock = clock
        self._on_error = on_error
        self.last_active = clock()  # last byte received or written
        self.spoke = False  # the client has sent something
        if sel is not None:
            self._set_mask(selectors.EVENT_READ)

    def attach(self, sel: selectors.BaseSelector) -> None:
        self._sel = sel
        self._set_mask(selectors.EVENT_WRITE if self.outbuf else selectors.EVENT_READ)

    def _set_mask(self, mask: int) -> None:
        if self._sel is None or self.closed or mask == self._mask:
            return
        if self._mask == 0:
            self._sel.register(self.sock, mask, self.handle)
        else:
            self._sel.modify(self.sock, mask, self.handle)
        self._mask = mask

    def handle(self, mask: int) -> None:
        """Selector callback: never raises."""
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush()
                if not self.closed and not self.outbuf and self.inbuf:
                    # requests that arrived while we were writing: serve them now
                    self._on_data(self)
            if mask & selectors.EVENT_READ and not self.closed:
                self._read()
        except Exception as e:  # a bug here must not take the agent down
            if self._on_error is not None:
                self._on_error(e)
            else:
                log.exception("control connection failed; closing it")
            self.close()

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.debug("control client read error: %s", e)
            self.close()
            return
        if not data:
            self.close()
            return
        self.last_active = self._clock()
        self.spoke = True
        self.inbuf += data
        self._on_data(self)
        # with no output pending the handler has consumed every complete
        # request, so what is left is one unfinished request
        if not self.closed and not self.outbuf and len(self.inbuf) > self._max_in:
            log.warning(
                "control client sent %d bytes without a complete request; dropping it",
                len(self.inbuf),
                extra={"fields": {"limit": self._max_in}},
            )
            self.close()

    def send(self, data: bytes) -> None:
        """Queue `data` and try to write it now; closes the client if it is too far behind."""
        if self.closed:
            return
        self.outbuf += data
        if len(self.outbuf) > self._max_out:
            log.warning(
                "control client is not reading its answers (%d bytes queued); dropping it",
                len(self.outbuf),
            )
            self.close()
            return
        self._flush()

    def _flush(self) -> None:
        while self.outbuf and not self.closed:
            try:
                n = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("control client write error: %s", e)
                self.close()
                return
            del self.outbuf[:n]
            if n:
                self.last_active = self._clock()
        if self.closed:
            return
        if not self.outbuf and self.close_when_flushed:
            self.close()
            return
        self._set_mask(selectors.EVENT_WRITE if self.outbuf else selectors.EVENT_READ)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._sel is not None and self._mask:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self.sock)
        self._mask = 0
        self.sock.close()
        self._on_closed(self)


class Listener(abc.ABC):
    """A bound, listening, non-blocking socket whose accepted clients are `Conn`s.

    Subclasses set up `sock` and implement `_on_data`. Beyond `max_clients`
    the client idle longest is dropped (with `crowded_warning` logged, rate limited,
    when given); accept errors (EMFILE...) go to `logger`, rate limited.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        logger: logging.Logger,
        max_clients: int,
        max_in: int,
        max_out: int,
        crowded_warning: str | None = None,
        idle_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self._sock = sock
        self._sel: selectors.BaseSelector | None = None
        self._clients: list[Conn] = []
        self._closed = False
        self._accept_errors = RateLimitedLog(logger, interval=60.0)
        self._logger = logger
        self._max_clients = max_clients
        self._max_in = max_in
        self._max_out = max_out
        self._crowded_warning = crowded_warning
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._on_error = on_error

    def fileno(self) -> int:
        return self._sock.fileno()

    def register(self, sel: selectors.BaseSelector) -> None:
        """Watch the listening socket and every client on `sel`; data is a `handle(mask)`."""
        self._sel = sel
        sel.register(self._sock, selectors.EVENT_READ, self.handle)
        for c in self._clients:
            c.attach(sel)

    def handle(self, mask: int) -> None:
        """Accept every pending connection; never raises."""
        while not self._closed:
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: say so, without flooding the log
                self._accept_errors.drop("accept_failed", str(e))
                return
            if len(self._clients) >= self._max_clients:
                if self._crowded_warning is not None:
                    self._accept_errors.drop("crowded", self._crowded_warning)
                now = self._clock()
                idle = [c for c in self._clients if now - c.last_active >= EVICT_AFTER]
                if not idle:
                    sock.close()  # everyone is busy or just arrived: turn the newcomer away
                    continue
                min(idle, key=lambda c: (c.spoke, c.last_active)).close()
            self._clients.append(
                Conn(
                    sock,
                    self._sel,
                    on_data=self._on_data,
                    on_closed=self._on_closed,
                    max_in=self._max_in,
                    max_out=self._max_out,
                    clock=self._clock,
                    on_error=self._on_error,
                )
            )

    @abc.abstractmethod
    def _on_data(self, conn: Conn) -> None:
        """New bytes are in `conn.inbuf`: answer what is complete."""

    def _on_closed(self, conn: Conn) -> None:
        with contextlib.suppress(ValueError):
            self._clients.remove(conn)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def next_timer(self) -> float | None:
        """When the longest idle client is due to be closed (None: no client)."""
        if not self._clients:
            return None
        return min(c.last_active for c in self._clients) + self._idle_timeout

    def handle_timer(self, now: float) -> None:
        """Close every client idle for `idle_timeout` seconds or more."""
        for c in [c for c in self._clients if now - c.last_active >= self._idle_timeout]:
            self._logger.debug("closing a client idle for %.0f s", now - c.last_active)
            c.close()

    def close(self) -> None:
        """Close every client and the listener."""
        if self._closed:
            return
        self._closed = True
        for c in list(self._clients):
            c.close()
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self._sock)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
