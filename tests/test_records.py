"""`lanspan.records.record` behaves as `dataclasses.dataclass` with the same options."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import FrozenInstanceError, field
from functools import partial
from itertools import product
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.records import record

OPTIONS = [{"frozen": f, "slots": s, "kw_only": k} for f, s, k in product((False, True), repeat=3)]


def _body(decorate: Callable[[type], type]) -> type:
    """The same class body under either decorator: every field kind lanspan uses."""

    class Sample:
        a: int
        b: float = 1.5
        c: tuple[int, ...] = field(default_factory=tuple)
        h: list[int] = field(default_factory=list, compare=False, hash=False)
        d: str = field(default="x", compare=False)
        e: bytes = field(default=b"", repr=False)
        f: int = field(default=7, init=False)
        g: tuple[int, ...] = field(default_factory=tuple, init=False, repr=False)

    return decorate(Sample)


def pair(options: dict[str, bool]) -> tuple[type, type]:
    return _body(dataclasses.dataclass(**options)), _body(record(**options))


values = st.fixed_dictionaries(
    {
        "a": st.integers(),
        "b": st.floats(allow_nan=False),
        "c": st.lists(st.integers(), max_size=3).map(tuple),
        "d": st.text(max_size=3),
        "e": st.binary(max_size=3),
    }
)


def _same_or_both_raise(f: Callable[[], Any], g: Callable[[], Any]) -> None:
    try:
        expected: Any = f()
    except Exception as e:  # the dataclass's own exception is the reference
        with pytest.raises(type(e)):
            g()
        return
    assert g() == expected


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(k for k, v in o.items() if v))
@given(x=values, y=values)
def test_record_behaves_as_the_dataclass(options: dict[str, bool], x: Any, y: Any) -> None:
    std, rec = pair(options)
    for kw in (x, y):
        s, r = std(**kw), rec(**kw)
        assert repr(r) == repr(s)
        assert dataclasses.asdict(r) == dataclasses.asdict(s)
        assert dataclasses.astuple(r) == dataclasses.astuple(s)
        assert [f.name for f in dataclasses.fields(r)] == [f.name for f in dataclasses.fields(s)]
        _same_or_both_raise(partial(hash, s), partial(hash, r))
        assert copy.deepcopy(r) == r and copy.copy(r) == r
        assert dataclasses.replace(r, a=1) == rec(**{**kw, "a": 1})
    assert (rec(**x) == rec(**y)) == (std(**x) == std(**y))
    assert (rec(**x) == std(**x)) is False  # other classes are never equal, as in a dataclass
    if options["frozen"]:
        with pytest.raises(FrozenInstanceError):
            rec(**x).a = 2
        with pytest.raises(FrozenInstanceError):
            del rec(**x).a
    else:
        r = rec(**x)
        r.a = 2
        assert r.a == 2
    assert getattr(rec, "__match_args__") == getattr(std, "__match_args__")  # noqa: B009
    assert hasattr(rec, "__slots__") == options["slots"]


@pytest.mark.parametrize("options", OPTIONS[::3])
def test_positional_and_keyword_parameters_match(options: dict[str, bool]) -> None:
    std, rec = pair(options)
    _same_or_both_raise(lambda: repr(std(1, 2.0)), lambda: repr(rec(1, 2.0)))
    _same_or_both_raise(lambda: std(), lambda: rec())
    _same_or_both_raise(lambda: std(a=1, f=3), lambda: rec(a=1, f=3))
    _same_or_both_raise(lambda: std(a=1, zz=3), lambda: rec(a=1, zz=3))
    assert rec(a=1).h is not rec(a=1).h  # a fresh default from the factory each time


@record(frozen=True, slots=True)
class Pickled:
    x: int
    y: tuple[str, ...] = ()


def test_a_frozen_slotted_record_pickles() -> None:
    p = Pickled(3, ("a",))
    assert pickle.loads(pickle.dumps(p)) == p


def test_post_init_runs_and_own_methods_are_kept() -> None:
    calls: list[int] = []

    @record(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            calls.append(self.x)
            if self.x < 0:
                raise ValueError("negative")

        def __repr__(self) -> str:
            return "mine"

    assert repr(Checked(1)) == "mine" and calls == [1]
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)


def test_a_frozen_record_refuses_its_own_setattr() -> None:
    with pytest.raises(TypeError, match="__setattr__"):

        @record(frozen=True)
        class Bad:
            x: int

            def __setattr__(self, name: str, value: Any) -> None:
                pass


def test_a_mutable_default_is_refused_as_by_dataclass() -> None:
    with pytest.raises(ValueError, match="mutable default"):

        @record
        class Bad:
            x: list[int] = []  # noqa: RUF012


def test_the_agent_builds_no_stdlib_dataclass_methods_at_import() -> None:
    """Every lanspan class the agent imports is a record (one compiled method each)."""
    import subprocess
    import sys

    code = (
        "import dataclasses, sys\n"
        "made = []\n"
        "orig = dataclasses._process_class\n"
        "def spy(cls, init, *a, **k):\n"
        "    if init: made.append(cls.__module__ + '.' + cls.__qualname__)\n"
        "    return orig(cls, init, *a, **k)\n"
        "dataclasses._process_class = spy\n"
        "import lanspan.agent.loop\n"
        "print([m for m in made if m.startswith('lanspan')])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
