"""lanspan.control: the agent's control socket, `lanspan show`, metrics.

- `ControlServer` / `StatusSource`: JSON-lines unix socket on the agent's selector.
- `request` / `ControlUnavailable`: the client side.
- `document`: the typed status (`lanspan.node.status`) as the JSON document.
- `render_status` / `render_macs`: human text for `lanspan show`.
- `render_prometheus` / `MetricsServer`: Prometheus text format and ``GET /metrics``.
- `commands`: the click commands (`show`, `show macs`, `reload`).

Protocol and document schema: docs/control-api.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lanspan.control.client import ControlUnavailable, request
    from lanspan.control.metrics import MetricsServer, render_prometheus
    from lanspan.control.render import render_macs, render_status
    from lanspan.control.server import ControlError, ControlServer, StatusSource

# Re-exported names load their module on first use (PEP 562), so that
# `lanspan show` imports the client and the renderer only, not the server,
# metrics and the node core behind them.
_EXPORTS = {
    "ControlError": "server",
    "ControlServer": "server",
    "ControlUnavailable": "client",
    "MetricsServer": "metrics",
    "StatusSource": "server",
    "render_macs": "render",
    "render_prometheus": "metrics",
    "render_status": "render",
    "request": "client",
}

__all__ = [
    "ControlError",
    "ControlServer",
    "ControlUnavailable",
    "MetricsServer",
    "StatusSource",
    "render_macs",
    "render_prometheus",
    "render_status",
    "request",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
