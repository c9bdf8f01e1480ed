"""What the node core hands the agent to carry out: typed outputs.

`NodeCore.take_outputs()` returns them in the order they were decided; the
agent's one executor sends, writes and logs them and nothing else.
"""

from __future__ import annotations

from typing import Any

from lanspan.addr import Addr
from lanspan.records import record

__all__ = ["Log", "NodeOutput", "Send", "Write"]


@record(frozen=True, slots=True)
class Send:
    """Send datagrams to an underlay address; each equal-sized but for the last."""

    target: Addr
    batch: list[bytes]


@record(frozen=True, slots=True)
class Write:
    """Write one frame (10-byte vnet header, then the frame) to a local port."""

    port: str
    data: bytes


@record(frozen=True, slots=True)
class Log:
    """One line for the log: a state change somewhere in the node."""

    kind: str
    fields: dict[str, Any]


NodeOutput = Send | Write | Log
