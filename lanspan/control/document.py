"""The JSON form of the typed status (docs/control-api.md): the one place it is made.

`status_json` and `mac_rows_json` turn `lanspan.node.status` objects into the
documents the control socket sends; `lanspan show` and `/metrics` render
those documents (which is also all a client receives).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from lanspan.node.status import Counts, KernelLocation, MacRow, NodeStatus
from lanspan.switch import PeerLocation, PortLocation

__all__ = ["mac_rows_json", "status_encodable", "status_json", "to_json"]


# Status fields the agent fills in only where they apply: left out when None.
_OPTIONAL = frozenset({"udp", "gateways", "kernel_filter"})


# Values returned as they are, without looking further (the common case: checked first).
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Field names per dataclass type met so far (dataclasses.fields() is slow for a 100-peer
# status: ~500 objects); Counts and locations are never in it (rendered their own way).
_FIELDS: dict[type, tuple[str, ...]] = {}


def to_json(value: object) -> object:
    """Dataclasses to objects (None left out for `_OPTIONAL` fields), tuples to lists.

    Anything else is returned as it is (the control server's encoder converts
    what JSON lacks).
    """
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is not None:
        out: dict[str, object] = {}
        for name in names:
            v = getattr(value, name)
            if type(v) in _SCALARS:
                if v is None and name in _OPTIONAL:
                    continue
                out[name] = v
            else:
                out[name] = to_json(v)
        return out
    if cls in _SCALARS:
        return value
    if isinstance(value, Counts):
        return dict(value.pairs)
    if isinstance(value, PortLocation | PeerLocation | KernelLocation):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(value))
        return to_json(value)
    if isinstance(value, tuple | list):
        return [v if type(v) in _SCALARS else to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    return value


def status_json(status: NodeStatus) -> dict[str, object]:
    """The status document (`{"op": "status"}`, `lanspan show --json`)."""
    doc = to_json(status)
    assert isinstance(doc, dict)
    return doc


def status_encodable(status: NodeStatus) -> dict[str, object]:
    """The status document with `peers` left as `PeerStatus` objects, for an encoder that
    writes dataclasses field by field (orjson: the control server's answer, issue 10).

    A `PeerStatus` holds only JSON scalars, strings and tuples of `PathStatus` and
    `PeerSegment`, which hold only those: written field by field they are what
    `to_json` makes (tests/test_control_encode.py checks it on random statuses).
    """
    doc = status_json(dataclasses.replace(status, peers=()))
    doc["peers"] = status.peers  # in place: the key keeps its place in the document
    return doc


def mac_rows_json(rows: Sequence[MacRow]) -> list[dict[str, object]]:
    """MAC rows (`{"op": "macs"}`)."""
    return [d for d in (to_json(r) for r in rows) if isinstance(d, dict)]
