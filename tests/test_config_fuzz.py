"""Whatever the text, parse_network returns a Network or raises ConfigError.

Three generators: arbitrary text; line-level mutations of a valid file; and
structural mutations (any value replaced, removed or added) of the parsed
valid file, written back as TOML.
"""

from __future__ import annotations

import datetime
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanspan.config import Network, parse_network
from lanspan.errors import ConfigError

BASE = (Path(__file__).parent / "data" / "config" / "base.toml").read_text()
KEY_A = "sGC8mXFbN0Wf+S6UUw7wh3Cy9p7Ldu6Bo9dHOZAZ6Ws="


def outcome(text: str) -> Network | ConfigError:
    try:
        return parse_network(text, "fuzz.toml")
    except ConfigError as e:
        assert e.source == "fuzz.toml"
        assert e.problems, "a ConfigError must carry at least one problem"
        for p in e.problems:
            assert isinstance(p, str) and p
            assert "Input should" not in p and "pydantic" not in p and "errors.pydantic" not in p
        assert e.render().startswith("fuzz.toml: ")
        return e


# ------------------------------------------------------------------ text

_safe = st.characters(blacklist_categories=("Cs",))


@given(st.text(alphabet=_safe))
def test_random_text(text: str) -> None:
    outcome(text)


_tokens = st.sampled_from(
    [
        "[network]\n",
        "[[segment]]\n",
        "[[node]]\n",
        "[[node.port]]\n",
        "[[static_mac]]\n",
        "[network.timers]\n",
        'name = "lan"\n',
        "vlan = 10\n",
        "vni = 0\n",
        'kind = "trunk"\n',
        'kind = "host"\n',
        "vlans = [10, 11]\n",
        'segments = ["lan"]\n',
        f'public_key = "{KEY_A}"\n',
        'endpoints = ["1.2.3.4:1"]\n',
        'address = ["198.18.10.5/24"]\n',
        'ipv4 = "198.18.10.0/24"\n',
        'site = "x"\n',
        "port = 1\n",
        "= [\n",
        '"\n',
        "x = {a = 1}\n",
    ]
)


@given(st.lists(_tokens, max_size=30))
def test_random_toml_ish_text(tokens: list[str]) -> None:
    outcome("".join(tokens))


@given(st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_line_mutations_of_valid_file(data: st.DataObject) -> None:
    lines = BASE.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["delete", "duplicate", "swap", "edit", "insert"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "edit" and lines[i]:
            k = data.draw(st.integers(0, len(lines[i]) - 1))
            c = data.draw(st.text(alphabet=_safe, max_size=3))
            lines[i] = lines[i][:k] + c + lines[i][k + 1 :]
        else:
            lines.insert(i, data.draw(_tokens).rstrip("\n"))
        if not lines:
            break
    outcome("\n".join(lines))


# ------------------------------------------------------------------ structure


def dump_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(dump_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{dump_value(k)} = {dump_value(x)}" for k, x in v.items()) + "}"


def dump(doc: dict[str, Any]) -> str:
    return "\n".join(f"{dump_value(k)} = {dump_value(v)}" for k, v in doc.items()) + "\n"


_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-5, 70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=_safe, max_size=20),
    st.dates(),
    st.sampled_from(
        [
            "lan",
            "api",
            "gra-hv1",
            "rbx-db1",
            "vm1",
            "uplink",
            "access",
            "trunk",
            "host",
            "198.18.10.0/24",
            "198.18.10.7/24",
            "fd00:10::7/64",
            "1.2.3.4:51820",
            "[fd00::1]:51820",
            "02:aa:00:00:00:01",
            KEY_A,
            "chachapoly",
        ]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet=_safe, min_size=1, max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def mutate(node: Any, data: st.DataObject) -> Any:
    """Return `node` with one random change somewhere inside it."""
    children: list[Any] = list(node) if isinstance(node, dict) else list(range(len(node)))
    if children and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(children))
        child = node[key]
        if isinstance(child, dict | list) and data.draw(st.booleans()):
            node[key] = mutate(child, data)
            return node
        action = data.draw(st.sampled_from(["replace", "delete"]))
        if action == "replace":
            node[key] = data.draw(_values)
        elif isinstance(node, dict):
            del node[key]
        else:
            node.pop(key)
        return node
    if isinstance(node, dict):
        name = data.draw(
            st.sampled_from(["name", "vlan", "kind", "port", "extra", "tap", "segment"])
            | st.text(alphabet=_safe, min_size=1, max_size=8)
        )
        node[name] = data.draw(_values)
    else:
        node.append(data.draw(_values))
    return node


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_structural_mutations_of_valid_file(data: st.DataObject) -> None:
    doc = tomllib.loads(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        doc = mutate(doc, data)
    text = dump(doc)
    assert tomllib.loads(text) is not None  # the dumper writes valid TOML
    outcome(text)


def test_dumper_roundtrips_base() -> None:
    doc = tomllib.loads(BASE)
    assert tomllib.loads(dump(doc)) == doc
    assert isinstance(outcome(dump(doc)), Network)


def test_a_port_kind_of_the_wrong_type_is_a_config_error() -> None:
    # found by test_structural_mutations_of_valid_file: `kind = []` raised TypeError
    for bad in ("[]", "{}", "3"):
        text = BASE.replace('kind = "access"', f"kind = {bad}", 1)
        assert text != BASE
        got = outcome(text)
        assert isinstance(got, ConfigError), got
        assert "kind" in str(got) and "is not a port kind" in str(got), str(got)
