"""The one interface every local frame port offers to the data plane loop.

A frame port hands out and takes ``vnet header (10 bytes) + Ethernet frame``;
see `lanspan.wire.vnet` for the header. TAP devices (`TapPort`) and existing
interfaces attached over AF_PACKET (`PacketPort`) both implement it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from lanspan.records import record

__all__ = ["FramePort", "PortCounters"]

_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS})


@record(slots=True)
class PortCounters:
    """What a port counted since it was opened; errors never raise out of read/write."""

    rx_frames: int = 0
    rx_bytes: int = 0
    rx_errors: int = 0  # reads that failed with something else than EAGAIN
    tx_frames: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0  # EAGAIN / ENOBUFS: the device queue is full
    tx_errors: int = 0  # any other write error (EINVAL from a bad vnet header, EIO...)
    last_error: str = ""

    def count_rx(self, data: bytes) -> bytes:
        """Count one frame read; returns `data`."""
        self.rx_frames += 1
        self.rx_bytes += len(data)
        return data

    def count_rx_error(self, detail: object) -> None:
        """Count one failed read (an OSError or a description)."""
        self.rx_errors += 1
        self.last_error = f"read: {detail}"

    def send_counted(self, send: Callable[[bytes], object], data: bytes) -> None:
        """`send(data)` and count it: sent, dropped (full queue) or failed; never raises OSError."""
        try:
            send(data)
        except OSError as e:
            if e.errno in _DROP_ERRNOS:
                self.tx_dropped += 1
            else:
                self.tx_errors += 1
                self.last_error = f"write: {e}"
            return
        self.tx_frames += 1
        self.tx_bytes += len(data)


@runtime_checkable
class FramePort(Protocol):
    """A local Layer-2 port: read and write vnet header + frame, non-blocking."""

    name: str  # the port's name in the network file
    device: str  # the kernel interface name
    counters: PortCounters

    def fileno(self) -> int:
        """A file descriptor that polls readable when `read` has a frame."""
        ...

    def read(self) -> bytes | None:
        """One vnet header + frame, or None when nothing is waiting (EAGAIN)."""
        ...

    def write(self, data: bytes) -> None:
        """Send one vnet header + frame; a full queue or bad frame is counted, never raised."""
        ...

    def close(self) -> None:
        """Release the port (a TAP disappears; an attached interface is restored)."""
        ...
