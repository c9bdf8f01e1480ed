"""The network file as written: per-field types only, checked by pydantic.

Each table of the file is validated on its own (so one bad node does not hide
the problems of the others); ranges and cross-field rules are checked by hand
in `lanspan.config.parse`, which also rewrites pydantic's errors into
lanspan's form (`describe_error`).
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import ErrorDetails

from lanspan.config.model import (
    DEFAULT_ADVERT_INTERVAL,
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_LEASE_TIME,
    DEFAULT_MAC_AGEING,
    DEFAULT_MTU,
    DEFAULT_PORT,
    DEFAULT_VXLAN_PORT,
)


class _Raw(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RawTimers(_Raw):
    keepalive: float = 10.0
    probe_interval: float = 0.2
    probe_multiplier: int = 3
    hold_down: float = 2.0


class RawNetworkTable(_Raw):
    name: str
    port: int = DEFAULT_PORT
    cipher: str = "aesgcm"
    mac_ageing: float = DEFAULT_MAC_AGEING
    timers: RawTimers = RawTimers()


class RawSegment(_Raw):
    name: str
    vlan: int
    vni: int | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    mtu: int = DEFAULT_MTU
    gateway: str | None = None


class RawUplink(_Raw):
    name: str
    interface: str
    address: list[str] = []


class RawNode(_Raw):
    name: str
    site: str
    public_key: str
    endpoints: list[str] = []
    segments: list[str]
    relay: bool = True
    listen_port: int | None = None
    port: list[dict[str, Any]] = []  # validated one by one as Raw*Port
    uplink: list[RawUplink] = []
    # -- kernel data plane (trusted sites) --
    vtep: Literal[False] = False  # vtep = true tables are RawVtep
    vxlan_address: str | None = None


# ---------------------------------------------------------------- kernel data plane


class RawSite(_Raw):
    name: str
    trusted: bool = False
    underlay: list[str] = []
    vxlan_port: int = DEFAULT_VXLAN_PORT


class RawVtep(_Raw):
    """A [[node]] with vtep = true: a hand-made kernel VXLAN node, no agent, no key."""

    name: str
    site: str
    vtep: Literal[True]
    vxlan_address: str
    segments: list[str]


class RawAccessPort(_Raw):
    kind: Literal["access"]
    name: str
    segment: str
    tap: str | None = None
    interface: str | None = None
    mac_limit: int | None = None
    flood_rate: float | None = None


class RawTrunkPort(_Raw):
    kind: Literal["trunk"]
    name: str
    vlans: list[int]
    native_vlan: int | None = None
    tap: str | None = None
    interface: str | None = None
    mac_limit: int | None = None
    flood_rate: float | None = None


class RawHostPort(_Raw):
    kind: Literal["host"]
    name: str
    segment: str
    address: list[str] = []  # or "auto": taken out by the checker before validation
    tap: str | None = None
    mac: str | None = None


class RawStaticMac(_Raw):
    segment: str
    mac: str
    node: str
    port: str | None = None


class RawGateway(_Raw):
    segment: str
    address: list[str]
    nodes: list[str]
    preempt: bool  # required: the file says whether a recovered node takes over again
    advert_interval: float = DEFAULT_ADVERT_INTERVAL
    vrid: int | None = None


class RawFloating(_Raw):
    name: str
    segment: str | None = None
    uplink: str | None = None
    address: list[str]
    nodes: list[str]
    preempt: bool
    advert_interval: float = DEFAULT_ADVERT_INTERVAL
    vrid: int | None = None
    check: str | None = None
    check_interval: float = DEFAULT_CHECK_INTERVAL


class RawAllow(_Raw):
    source: str = Field(alias="from")
    to: str
    proto: str = "any"
    ports: list[Any] = []  # 443 or "8000-8100", checked by hand
    family: str = "both"


class RawPool(_Raw):
    segment: str
    range: str


class RawDhcpHost(_Raw):
    mac: str
    address: str
    name: str | None = None


class RawDhcp(_Raw):
    segment: str
    range: str | None = None
    ipv6: str | None = None
    range6: str | None = None
    lease_time: int = DEFAULT_LEASE_TIME
    lease_file: str | None = None
    dns: bool = False
    host: list[RawDhcpHost] = []


RAW_PORTS: dict[str, type[_Raw]] = {
    "access": RawAccessPort,
    "trunk": RawTrunkPort,
    "host": RawHostPort,
}

# ---------------------------------------------------------------- messages


_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # as parse.py's names


def label(kind: str, index: int, item: object, taken: dict[str, str] | None = None) -> str:
    """How messages name a table: by its name, or by index when unnamed or a duplicate."""
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and _TABLE_NAME.match(name) and (taken is None or name not in taken):
        return f'{kind} "{name}"'
    return f"{kind}[{index}]"


def suggest(value: str, choices: list[str]) -> str:
    """' — did you mean "x"?' for a close match, else the known choices."""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    if close:
        return f' — did you mean "{close[0]}"?'
    if choices:
        return " (known: " + ", ".join(f'"{c}"' for c in choices) + ")"
    return ""


def show(value: object) -> str:
    """A value as it would be written in TOML (strings quoted), kept short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, float):
        text = "nan" if math.isnan(value) else repr(value)
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show(v) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def toml_type(value: object) -> str:
    """'a string', 'an integer'… : what kind of TOML value this is."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "a date/time"
    return type(value).__name__


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def field_path(loc: tuple[int | str, ...]) -> str:
    """('timers', 'keepalive') -> 'timers.keepalive'; ('endpoints', 1) -> 'endpoints[1]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def describe_error(where: str, err: ErrorDetails, model: type[BaseModel]) -> str:
    """One pydantic error as a lanspan problem: `<where> <field>: <what> — <fix>`."""
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        parent, name = loc[:-1], loc[-1]
        at = f"{where} {field_path(parent)}".rstrip()
        return f'{at}: missing required field "{name}"'
    if kind == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        at = f"{where} {field_path(parent)}".rstrip()
        msg = f'{at}: unknown field "{name}"'
        known = _fields_at(model, parent)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            msg += f' — did you mean "{close[0]}"?'
        elif known:
            msg += " (known fields: " + ", ".join(known) + ")"
        return msg
    at = f"{where} {field_path(loc)}".rstrip()
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{at}: {show(value)} is not one of {expected}"
    if kind in _EXPECTED:
        msg = f"{at}: expected {_EXPECTED[kind]}, got {show(value)} ({toml_type(value)})"
        if kind == "list_type" and isinstance(value, dict) and loc:
            table = where.split(" ")[0].split("[")[0].strip("[]")
            msg += f" — write one [[{table}.{field_path(loc)}]] table per entry"
        elif kind == "list_type" and not isinstance(value, list):
            msg += f" — write [{show(value)}]"
        return msg
    if kind == "finite_number":
        return f"{at}: {show(value)} is not a finite number"
    msg = err["msg"].replace("Input should be", "should be")
    return f"{at}: {show(value)}: {msg}"


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the (nested) model at `loc`, for 'did you mean'."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return []
        current = info.annotation
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []
