"""lanspan.session.replay: the sliding window against a reference model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lanspan.session.replay import WINDOW_SIZE, ReplayWindow


def test_window_is_at_least_2048() -> None:
    assert WINDOW_SIZE >= 2048


def test_in_order_then_duplicates() -> None:
    w = ReplayWindow()
    for n in range(5000):
        assert w.check(n)
        assert w.update(n)
    for n in (4999, 4000, 1000, 0):
        assert not w.check(n)
        assert not w.update(n)


def test_out_of_order_inside_window_accepted_once() -> None:
    w = ReplayWindow()
    assert w.update(3000)
    assert w.check(3000 - WINDOW_SIZE + 1)
    assert w.update(3000 - WINDOW_SIZE + 1)
    assert not w.update(3000 - WINDOW_SIZE + 1)
    assert not w.check(3000 - WINDOW_SIZE)  # fell out of the window
    assert w.update(2999)


def test_big_jump_clears_everything() -> None:
    w = ReplayWindow()
    for n in range(100):
        w.update(n)
    assert w.update(10**12)
    assert w.check(10**12 - 5)
    assert not w.check(99)
    assert w.update(10**12 - 64)
    assert not w.update(10**12 - 64)


def test_counter_zero_first() -> None:
    w = ReplayWindow()
    assert w.check(0) and w.update(0) and not w.check(0)


def test_check_does_not_mark() -> None:
    w = ReplayWindow()
    assert w.check(7) and w.check(7)
    assert w.update(7)


@given(st.lists(st.integers(min_value=0, max_value=20_000), max_size=400))
def test_matches_reference_model(counters: list[int]) -> None:
    w = ReplayWindow()
    seen: set[int] = set()
    greatest = 0
    for n in counters:
        expected = n not in seen and n + WINDOW_SIZE > greatest
        assert w.check(n) == expected
        assert w.update(n) == expected
        if expected:
            seen.add(n)
            greatest = max(greatest, n)
