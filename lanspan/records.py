"""`record`: `dataclasses.dataclass` for lanspan's own classes, at a fraction of the start-up cost.

A dataclass compiles five or six methods from source for every class
(`__init__`, `__repr__`, `__eq__`, `__hash__`, and for a frozen one
`__setattr__` and `__delattr__`): about 1.4 ms a class on this project's
2-core test machine, and the agent imports over a hundred of them, which made
the dataclass decorator half of an agent's start-up CPU (and 13 agents
starting at once on 2 cores the larger part of a lab's cold start). `record`
compiles only `__init__` and gives every class the same shared, compiled-once
implementations of the others. The result is a real dataclass
(`dataclasses.fields`, `replace`, `asdict` and `is_dataclass` work) with the
same behaviour as `@dataclass(frozen=..., slots=..., kw_only=...)`: equality
and hashing over the comparable fields, the dataclass repr, assignment to a
frozen instance raising `FrozenInstanceError`, copy and pickle of frozen
slotted instances. Not supported (unused here): `order`, `unsafe_hash`,
`InitVar`, `eq=False`, `repr=False` on the class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

_T = TypeVar("_T")
_HAS_FACTORY = object()  # stands for "call the default factory" in a signature


@overload
def record(cls: type[_T], /) -> type[_T]: ...


@overload
def record(
    *, frozen: bool = False, slots: bool = False, kw_only: bool = False
) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def record(
    cls: type[_T] | None = None,
    /,
    *,
    frozen: bool = False,
    slots: bool = False,
    kw_only: bool = False,
) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Make `cls` a dataclass, as `@dataclass(frozen=, slots=, kw_only=)` would."""

    def wrap(c: type[_T]) -> type[_T]:
        return _make(c, frozen=frozen, slots=slots, kw_only=kw_only)

    return wrap if cls is None else wrap(cls)


def _make(cls: type[_T], *, frozen: bool, slots: bool, kw_only: bool) -> type[_T]:
    for name in ("__setattr__", "__delattr__") if frozen else ():
        if name in cls.__dict__:
            raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")
    documented = bool(cls.__dict__.get("__doc__"))
    if not documented:
        cls.__doc__ = cls.__name__  # spares dataclass an inspect.signature; set below
    # Fields, defaults, slots and __match_args__ as dataclass makes them; no method compiled.
    out: Any = dataclasses.dataclass(
        cls, init=False, repr=False, eq=False, frozen=False, slots=slots, kw_only=kw_only
    )
    fields = dataclasses.fields(out)
    _set(out, "__init__", _init(out, fields, frozen))
    _set(out, "__repr__", _repr(tuple(f.name for f in fields if f.repr)))
    compared = tuple(f.name for f in fields if f.compare)
    _set(out, "__eq__", _eq(compared))
    own_hash = cls.__dict__.get("__hash__", dataclasses.MISSING)
    if own_hash is dataclasses.MISSING or (own_hash is None and "__eq__" in cls.__dict__):
        # dataclass's rule for eq=True: hashable by value when frozen, else unhashable
        hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
        out.__hash__ = _hash(hashed) if frozen else None
    if frozen:
        names = frozenset(f.name for f in fields)
        out.__setattr__ = _frozen_setattr(out, names)
        out.__delattr__ = _frozen_delattr(out, names)
        if slots:
            out.__getstate__ = _getstate
            out.__setstate__ = _setstate
    if not documented:
        out.__doc__ = f"{cls.__name__}({', '.join(f.name for f in fields if f.init)})"
    return out  # type: ignore[no-any-return]


def _set(cls: type, name: str, value: Any) -> None:
    """Add a method unless the class body defines it (as dataclass does)."""
    if name not in cls.__dict__:
        value.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, value)


def _init(cls: type, fields: tuple[dataclasses.Field[Any], ...], frozen: bool) -> Any:
    """Compile `__init__`: the same parameters, defaults and assignments as dataclass's."""
    env: dict[str, Any] = {"_HAS_FACTORY": _HAS_FACTORY, "_object_setattr": object.__setattr__}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        name = f.name
        factory = f.default_factory is not dataclasses.MISSING
        if factory:
            env[f"_factory_{name}"] = f.default_factory
        if f.default is not dataclasses.MISSING:
            env[f"_default_{name}"] = f.default
        if f.init:
            if factory:
                param = f"{name}=_HAS_FACTORY"
                value = f"_factory_{name}() if {name} is _HAS_FACTORY else {name}"
            elif f.default is not dataclasses.MISSING:
                param, value = f"{name}=_default_{name}", name
            else:
                param, value = name, name
            (keyword if f.kw_only else positional).append(param)
        elif factory:
            value = f"_factory_{name}()"
        elif f.default is not dataclasses.MISSING:
            value = f"_default_{name}"
        else:
            continue  # init=False without a default: left unset, as dataclass does
        if frozen:
            body.append(f"  _object_setattr(self, {name!r}, {value})")
        else:
            body.append(f"  self.{name} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("  self.__post_init__()")
    params = ["self", *positional, *(["*", *keyword] if keyword else [])]
    src = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "  pass") + "\n"
    exec(src, env)  # one compile per class, where dataclass does five or six
    return env["__init__"]


def _repr(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{self.__class__.__qualname__}({inner})"

    return __repr__


def _values(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The fields' values as a tuple (attrgetter gives a bare value for one name)."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names)


def _eq(names: tuple[str, ...]) -> Callable[[Any, Any], Any]:
    values = _values(names)

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    return __eq__


def _hash(names: tuple[str, ...]) -> Callable[[Any], int]:
    values = _values(names)

    def __hash__(self: Any) -> int:
        return hash(values(self))

    return __hash__


def _frozen_setattr(owner: type[Any], names: frozenset[str]) -> Callable[[Any, str, Any], None]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is owner or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(owner, self).__setattr__(name, value)

    return __setattr__


def _frozen_delattr(owner: type[Any], names: frozenset[str]) -> Callable[[Any, str], None]:
    def __delattr__(self: Any, name: str) -> None:
        if type(self) is owner or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(owner, self).__delattr__(name)

    return __delattr__


def _getstate(self: Any) -> list[Any]:
    return [getattr(self, f.name) for f in dataclasses.fields(self)]


def _setstate(self: Any, state: list[Any]) -> None:
    for f, value in zip(dataclasses.fields(self), state, strict=False):
        object.__setattr__(self, f.name, value)  # past the frozen __setattr__
