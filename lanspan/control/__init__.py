"""lanspan.control: the agent's control socket, `lanspan show`, metrics.

- `ControlServer` / `StatusSource`: JSON-lines unix socket on the agent's selector.
- `request` / `ControlUnavailable`: the client side.
- `document`: the typed status (`lanspan.node.status`) as the JSON document.
- `render_status` / `render_macs`: human text for `lanspan show`.
- `render_prometheus` / `MetricsServer`: Prometheus text format and ``GET /metrics``.
- `commands`: the click commands (`show`, `show macs`, `reload`).

Protocol and document schema: docs/control-api.md.
"""

from lanspan.control.client import ControlUnavailable, request
from lanspan.control.metrics import MetricsServer, render_prometheus
from lanspan.control.render import render_macs, render_status
from lanspan.control.server import ControlError, ControlServer, StatusSource

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
