"""The tables `fast_validate` did not accept, judged by pydantic: errors in lanspan's form.

Imported only then (a valid file never needs it). Each `_raw` table class
gets a pydantic model with the same fields, types, defaults and aliases
(strict, unknown fields forbidden, frozen); what it accepts is handed back
as the `_raw` dataclass, so the checker sees one kind of table either way.
`describe_error` rewrites pydantic's errors as `<where> <field>: <what> — <fix>`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

from lanspan.config._raw import _Raw, show, toml_type

_R = TypeVar("_R", bound=_Raw)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_MODELS: dict[type[_Raw], type[BaseModel]] = {}
_TABLES: dict[type[BaseModel], type[_Raw]] = {}


def _annotation(tp: Any) -> Any:
    """`tp` with every `_raw` table class in it replaced by its pydantic model."""
    if isinstance(tp, type) and issubclass(tp, _Raw):
        return model_for(tp)
    origin, args = get_origin(tp), get_args(tp)
    if origin is None or not args or not any(_has_table(a) for a in args):
        return tp
    if origin is list:
        return list[_annotation(args[0])]  # type: ignore[misc]
    raise TypeError(f"no pydantic annotation for {tp!r}")


def _has_table(tp: Any) -> bool:
    if isinstance(tp, type) and issubclass(tp, _Raw):
        return True
    return any(_has_table(a) for a in get_args(tp))


def model_for(cls: type[_Raw]) -> type[BaseModel]:
    """The pydantic model of a `_raw` table class (made once)."""
    model = _MODELS.get(cls)
    if model is None:
        hints = get_type_hints(cls)
        spec: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            kw: dict[str, Any] = {}
            if "alias" in f.metadata:
                kw["alias"] = f.metadata["alias"]
            if f.default is not dataclasses.MISSING:
                kw["default"] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                kw["default_factory"] = f.default_factory
            spec[f.name] = (_annotation(hints[f.name]), Field(**kw))
        model = create_model(cls.__name__, __base__=_Model, **spec)
        _MODELS[cls] = model
        _TABLES[model] = cls
    return model


def _table(value: Any) -> Any:
    """A validated pydantic value with its models turned into `_raw` dataclasses."""
    if isinstance(value, BaseModel):
        cls = _TABLES[type(value)]
        return cls(**{f.name: _table(getattr(value, f.name)) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
    if isinstance(value, list):
        return [_table(v) for v in value]
    return value


def validate(
    cls: type[_R], data: dict[str, Any], where: str, err: Callable[[str], None]
) -> _R | None:
    """Validate one table with pydantic; every problem goes to `err`.

    When fields are in error, the rest of the table is still checked: the
    fields in error are dropped (their defaults stand in) unless one was
    required, and that salvaged table is returned.
    """
    model = model_for(cls)
    try:
        return _table(model.model_validate(data))  # type: ignore[no-any-return]
    except ValidationError as e:
        errors = e.errors(include_url=False)
    for d in errors:
        err(describe_error(where, d, model))
    clean = dict(data)
    for d in errors:
        loc = d["loc"]
        if not loc or loc[0] not in clean:
            continue
        inner = clean[loc[0]]
        if len(loc) > 1 and isinstance(inner, dict) and isinstance(loc[1], str):
            clean[loc[0]] = {k: v for k, v in inner.items() if k != loc[1]}  # [network.timers]
        else:
            del clean[loc[0]]
    try:
        return _table(model.model_validate(clean))  # type: ignore[no-any-return]
    except ValidationError:
        return None


# ---------------------------------------------------------------- messages


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
