"""The network file as written: per-field types only.

Each table of the file is validated on its own (so one bad node does not hide
the problems of the others); ranges and cross-field rules are checked by hand
in `lanspan.config.parse`.

A table is a frozen dataclass here; its annotations are the schema (strict:
no coercion but an integer for a number, no unknown field). `fast_validate`
builds one when every field is exactly of its type, with no import beyond
the standard library: that is every table of a valid file, and it keeps
pydantic out of the agent. Any other table goes to pydantic
(`lanspan.config._pydantic`, imported then), which has the last word on
what is accepted and turns what is wrong into lanspan's messages; a test
checks that the two agree on whatever `fast_validate` accepts.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, field, fields
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from lanspan.config.model import (
    DEFAULT_ADVERT_INTERVAL,
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_LEASE_TIME,
    DEFAULT_MAC_AGEING,
    DEFAULT_MTU,
    DEFAULT_PORT,
    DEFAULT_VXLAN_PORT,
)
from lanspan.records import record


class _Raw:
    """A table of the file as written: a frozen dataclass whose annotations are its schema.

    `fast_validate` builds one from a TOML table when every field is exactly of
    its type; anything else goes to pydantic (`lanspan.config._pydantic`),
    which is the judge of what is accepted and says what is wrong.
    """

    __slots__ = ()


@record(frozen=True, slots=True, kw_only=True)
class RawTimers(_Raw):
    keepalive: float = 10.0
    probe_interval: float = 0.2
    probe_multiplier: int = 3
    hold_down: float = 2.0


@record(frozen=True, slots=True, kw_only=True)
class RawNetworkTable(_Raw):
    name: str
    port: int = DEFAULT_PORT
    cipher: str = "aesgcm"
    mac_ageing: float = DEFAULT_MAC_AGEING
    timers: RawTimers = field(default_factory=RawTimers)


@record(frozen=True, slots=True, kw_only=True)
class RawSegment(_Raw):
    name: str
    vlan: int
    vni: int | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    mtu: int = DEFAULT_MTU
    gateway: str | None = None


@record(frozen=True, slots=True, kw_only=True)
class RawUplink(_Raw):
    name: str
    interface: str
    address: list[str] = field(default_factory=list)


@record(frozen=True, slots=True, kw_only=True)
class RawNode(_Raw):
    name: str
    site: str
    public_key: str
    endpoints: list[str] = field(default_factory=list)
    segments: list[str]
    relay: bool = True
    listen_port: int | None = None
    port: list[dict[str, Any]] = field(default_factory=list)  # validated one by one as Raw*Port
    uplink: list[RawUplink] = field(default_factory=list)
    # -- kernel data plane (trusted sites) --
    vtep: Literal[False] = False  # vtep = true tables are RawVtep
    vxlan_address: str | None = None


# ---------------------------------------------------------------- kernel data plane


@record(frozen=True, slots=True, kw_only=True)
class RawSite(_Raw):
    name: str
    trusted: bool = False
    underlay: list[str] = field(default_factory=list)
    vxlan_port: int = DEFAULT_VXLAN_PORT


@record(frozen=True, slots=True, kw_only=True)
class RawVtep(_Raw):
    """A [[node]] with vtep = true: a hand-made kernel VXLAN node, no agent, no key."""

    name: str
    site: str
    vtep: Literal[True]
    vxlan_address: str
    segments: list[str]


@record(frozen=True, slots=True, kw_only=True)
class RawAccessPort(_Raw):
    kind: Literal["access"]
    name: str
    segment: str
    tap: str | None = None
    interface: str | None = None
    mac_limit: int | None = None
    flood_rate: float | None = None


@record(frozen=True, slots=True, kw_only=True)
class RawTrunkPort(_Raw):
    kind: Literal["trunk"]
    name: str
    vlans: list[int]
    native_vlan: int | None = None
    tap: str | None = None
    interface: str | None = None
    mac_limit: int | None = None
    flood_rate: float | None = None


@record(frozen=True, slots=True, kw_only=True)
class RawHostPort(_Raw):
    kind: Literal["host"]
    name: str
    segment: str
    # or "auto": taken out by the checker before validation
    address: list[str] = field(default_factory=list)
    tap: str | None = None
    mac: str | None = None


@record(frozen=True, slots=True, kw_only=True)
class RawStaticMac(_Raw):
    segment: str
    mac: str
    node: str
    port: str | None = None


@record(frozen=True, slots=True, kw_only=True)
class RawGateway(_Raw):
    segment: str
    address: list[str]
    nodes: list[str]
    preempt: bool  # required: the file says whether a recovered node takes over again
    advert_interval: float = DEFAULT_ADVERT_INTERVAL
    vrid: int | None = None


@record(frozen=True, slots=True, kw_only=True)
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


@record(frozen=True, slots=True, kw_only=True)
class RawAllow(_Raw):
    source: str = field(metadata={"alias": "from"})
    to: str
    proto: str = "any"
    ports: list[Any] = field(default_factory=list)  # 443 or "8000-8100", checked by hand
    family: str = "both"


@record(frozen=True, slots=True, kw_only=True)
class RawPool(_Raw):
    segment: str
    range: str


@record(frozen=True, slots=True, kw_only=True)
class RawDhcpHost(_Raw):
    mac: str
    address: str
    name: str | None = None


@record(frozen=True, slots=True, kw_only=True)
class RawDhcp(_Raw):
    segment: str
    range: str | None = None
    ipv6: str | None = None
    range6: str | None = None
    lease_time: int = DEFAULT_LEASE_TIME
    lease_file: str | None = None
    dns: bool = False
    host: list[RawDhcpHost] = field(default_factory=list)


RAW_PORTS: dict[str, type[_Raw]] = {
    "access": RawAccessPort,
    "trunk": RawTrunkPort,
    "host": RawHostPort,
}

# ---------------------------------------------------------------- the fast path

_R = TypeVar("_R", bound=_Raw)
_Check = Callable[[object], object]


class _Reject(Exception):
    """A value is not exactly of its field's type: pydantic will judge the table."""


def _exact(tp: type) -> _Check:
    def check(v: object) -> object:
        if type(v) is not tp:
            raise _Reject
        return v

    return check


def _number(v: object) -> object:
    if type(v) is float:
        return v
    if type(v) is int:
        return float(v)  # as pydantic's strict mode: an integer is a number
    raise _Reject


def _any(v: object) -> object:
    return v


def _checker(tp: object) -> _Check:
    """The check of one annotation; only the kinds the tables above use."""
    if tp is float:
        return _number
    if tp in (str, int, bool):
        return _exact(tp)
    if tp is Any:
        return _any
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:

        def literal(v: object) -> object:
            if not any(type(v) is type(a) and v == a for a in args):
                raise _Reject
            return v

        return literal
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        inner = _checker(next(a for a in args if a is not type(None)))
        return lambda v: None if v is None else inner(v)
    if origin is list:
        item = _checker(args[0])

        def items(v: object) -> object:
            if type(v) is not list:
                raise _Reject
            return [item(x) for x in v]

        return items
    if origin is dict and args[0] is str:
        value = _checker(args[1])

        def table(v: object) -> object:
            if type(v) is not dict or not all(type(k) is str for k in v):
                raise _Reject
            return {k: value(x) for k, x in v.items()}

        return table
    if isinstance(tp, type) and issubclass(tp, _Raw):
        nested = tp

        def sub(v: object) -> object:
            if type(v) is not dict:
                raise _Reject
            return _build(nested, v)

        return sub
    raise TypeError(f"no fast check for the annotation {tp!r}: teach _checker")


# table class -> (accepted keys, [(key, field name, check, required)])
_Plan = tuple[frozenset[str], list[tuple[str, str, _Check, bool]]]
_PLANS: dict[type[_Raw], _Plan] = {}


def _plan(cls: type[_Raw]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = get_type_hints(cls)
        steps = [
            (
                f.metadata.get("alias", f.name),
                f.name,
                _checker(hints[f.name]),
                f.default is MISSING and f.default_factory is MISSING,
            )
            for f in fields(cls)  # type: ignore[arg-type]
        ]
        plan = _PLANS[cls] = (frozenset(k for k, _, _, _ in steps), steps)
    return plan


def _build(cls: type[_R], data: dict[Any, object]) -> _R:
    keys, steps = _plan(cls)
    if not keys.issuperset(data):
        raise _Reject  # an unknown field
    kw: dict[str, object] = {}
    for key, name, check, required in steps:
        if key in data:
            kw[name] = check(data[key])
        elif required:
            raise _Reject
    return cls(**kw)


def fast_validate(cls: type[_R], data: dict[Any, object]) -> _R | None:
    """The table as `cls` when every field is exactly of its type; None: ask pydantic."""
    try:
        return _build(cls, data)
    except _Reject:
        return None


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
    import difflib  # only a mistake needs it: not imported by a valid file's agent

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
