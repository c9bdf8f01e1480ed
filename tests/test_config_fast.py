"""The config fast path (`_raw.fast_validate`) and pydantic (`_pydantic`) agree.

A valid file is read without pydantic: every table of every example network
goes the fast path. Whatever the fast path accepts, pydantic accepts too and
gives the same table; what it declines goes to pydantic, which judges it
(the error messages are tested in test_config_parse.py and friends).
"""

from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanspan.config import _pydantic, _raw, encode_key, generate_private_key, public_key
from lanspan.config.parse import parse_network
from lanspan.lab.model import load_lab
from lanspan.lab.topology import expand

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "examples").glob("*.toml"))
TABLES = [
    c
    for c in vars(_raw).values()
    if isinstance(c, type) and issubclass(c, _raw._Raw) and c is not _raw._Raw
]


def _networks() -> list[tuple[str, str]]:
    out = [("examples/network.toml", (ROOT / "examples/network.toml").read_text())]
    for path in LABS:
        text = path.read_text()
        if "[lab]" not in text:
            continue
        lab = load_lab(path)
        keys = {n.name: encode_key(public_key(generate_private_key())) for n in lab.node}
        out.append((path.name, expand(lab, "lsl-t", keys).network_toml))
    return out


@pytest.mark.parametrize(("name", "text"), _networks(), ids=lambda v: v if "\n" not in v else "")
def test_every_table_of_the_example_networks_goes_the_fast_path(
    name: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow: list[str] = []

    def no_pydantic(cls: type, data: dict[str, Any], where: str, err: Any) -> None:
        slow.append(where)

    monkeypatch.setattr(_pydantic, "validate", no_pydantic)
    net = parse_network(text, name)
    assert net.nodes and slow == []


def test_the_models_have_the_tables_fields_and_defaults() -> None:
    assert {c.__name__ for c in TABLES} >= {"RawNode", "RawSegment", "RawAccessPort", "RawDhcp"}
    for cls in TABLES:
        model = _pydantic.model_for(cls)
        fields = dataclasses.fields(cls)
        assert list(model.model_fields) == [f.name for f in fields]
        for f in fields:
            info = model.model_fields[f.name]
            assert info.alias == f.metadata.get("alias")
            assert info.is_required() == (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )


# TOML-like values: what tomllib can hand the checker
_scalar = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.just(math.inf),
    st.text(max_size=8),
    st.sampled_from(["access", "trunk", "host", "lan", "a", "198.18.0.1:51820"]),
)
_value = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _typed(tp: Any) -> st.SearchStrategy[Any]:
    """Values of annotation `tp` (mostly), with near misses: 1 for 1.0, 0 for false."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is str:
        return st.text(max_size=6)
    if tp is int:
        return st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.booleans()
    if tp is float:
        return st.floats() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if tp is bool:
        return st.booleans() | st.sampled_from([0, 1])
    if tp is Any:
        return _value
    if origin is Literal:
        return st.sampled_from([*args, 0, 1, "x"])
    if origin in (types.UnionType, Union):
        return _typed(next(a for a in args if a is not type(None)))
    if origin is list:
        return st.lists(_typed(args[0]) | _value, max_size=3) | _value
    if origin is dict:
        return st.dictionaries(st.text(max_size=4), _value, max_size=3)
    assert isinstance(tp, type) and issubclass(tp, _raw._Raw), tp
    return _table_of(tp).map(lambda case: case[1])


@st.composite
def _table_of(draw: st.DrawFn, cls: type[_raw._Raw]) -> tuple[type[_raw._Raw], dict[str, Any]]:
    hints = get_type_hints(cls)
    data: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f.metadata.get("alias", f.name)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if draw(st.integers(0, 9)) < (9 if required else 5):
            data[key] = draw(_typed(hints[f.name]) if draw(st.integers(0, 9)) else _value)
    if not draw(st.integers(0, 9)):
        data[draw(st.text(max_size=5))] = draw(_value)
    return cls, data


_table_data = st.sampled_from(TABLES).flatmap(_table_of)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_table_data)
def test_what_the_fast_path_accepts_pydantic_accepts_alike(
    case: tuple[type[_raw._Raw], dict[str, Any]],
) -> None:
    cls, data = case
    fast = _raw.fast_validate(cls, data)
    problems: list[str] = []
    slow = _pydantic.validate(cls, data, "t", problems.append)
    if fast is not None:
        assert problems == [] and slow == fast


def test_a_valid_table_with_every_field_goes_the_fast_path() -> None:
    data = {
        "name": "n1",
        "site": "s",
        "public_key": "k",
        "endpoints": ["198.18.0.1:51820"],
        "segments": ["lan"],
        "relay": False,
        "listen_port": 5,
        "port": [{"kind": "access", "name": "p", "segment": "lan", "interface": "x"}],
        "uplink": [{"name": "u", "interface": "eth0", "address": ["198.18.0.1/24"]}],
        "vtep": False,
        "vxlan_address": "198.18.0.1",
    }
    fast = _raw.fast_validate(_raw.RawNode, data)
    assert fast is not None and fast.uplink == [
        _raw.RawUplink(name="u", interface="eth0", address=["198.18.0.1/24"])
    ]
    problems: list[str] = []
    assert _pydantic.validate(_raw.RawNode, data, "t", problems.append) == fast and not problems
    timers = _raw.fast_validate(_raw.RawNetworkTable, {"name": "n", "timers": {"keepalive": 5}})
    assert timers is not None and timers.timers == _raw.RawTimers(keepalive=5.0)
    allow = _raw.fast_validate(_raw.RawAllow, {"from": "a", "to": "b"})
    assert allow is not None and allow.source == "a"
    assert _raw.fast_validate(_raw.RawAllow, {"source": "a", "to": "b"}) is None  # alias only
