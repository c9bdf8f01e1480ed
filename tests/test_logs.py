"""Structured logging and the rate-limited drop log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanspan.logs import JsonFormatter, RateLimitedLog, TextFormatter, _timestamp, setup_logging


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, Capture]]:
    logger = logging.getLogger("lanspan.test.drops")
    cap = Capture()
    logger.addHandler(cap)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, cap
    logger.removeHandler(cap)
    logger.propagate = True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def make_record(
    msg: str, fields: dict[str, object] | None = None, **kw: object
) -> logging.LogRecord:
    rec = logging.LogRecord("lanspan.agent", logging.INFO, __file__, 1, msg, (), None)
    rec.created = 1795324346.123456  # 2026-11-22T05:12:26.123Z
    if fields is not None:
        rec.fields = fields
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_json_line_has_fixed_keys_and_fields() -> None:
    line = JsonFormatter().format(
        make_record("peer up", {"peer": "rbx-db1", "rtt_ms": 0.41, "msg": "clash"})
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2026-11-22T05:12:26.123Z",
        "level": "info",
        "logger": "lanspan.agent",
        "msg": "peer up",
        "peer": "rbx-db1",
        "rtt_ms": 0.41,
        "fields": {"msg": "clash"},
    }


def test_json_line_with_exception_and_odd_values() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        rec = make_record("failed", {"raw": b"\x00\x01"}, exc_info=sys.exc_info())
    obj = json.loads(JsonFormatter().format(rec))
    assert obj["raw"] == "b'\\x00\\x01'"
    assert "ValueError: bad" in obj["exc"]


def test_text_line_is_logfmt_like() -> None:
    line = TextFormatter().format(
        make_record("peer up", {"peer": "rbx-db1", "why": "two words", "n": 3})
    )
    assert line == (
        '2026-11-22T05:12:26.123Z info  lanspan.agent: peer up peer=rbx-db1 why="two words" n=3'
    )


def test_setup_logging_json_to_stderr(
    capsys: pytest.CaptureFixture[str], restore_root: None
) -> None:
    setup_logging("debug", "json")
    setup_logging("debug", "json")  # idempotent: one handler, one line per record
    logging.getLogger("lanspan.x").debug("hello %s", "world", extra={"fields": {"k": 1}})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    obj = json.loads(err[0])
    assert (obj["level"], obj["logger"], obj["msg"], obj["k"]) == (
        "debug",
        "lanspan.x",
        "hello world",
        1,
    )


def test_setup_logging_level_filters(
    capsys: pytest.CaptureFixture[str], restore_root: None
) -> None:
    setup_logging("warning", "text")
    log = logging.getLogger("lanspan.y")
    log.info("quiet")
    log.warning("loud")
    err = capsys.readouterr().err
    assert "quiet" not in err
    assert "warning lanspan.y: loud" in err


def test_setup_logging_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging("loud")


def test_rate_limited_first_then_summary(captured: tuple[logging.Logger, Capture]) -> None:
    logger, cap = captured
    clock = FakeClock()
    rl = RateLimitedLog(logger, interval=10.0, clock=clock)
    rl.drop("replay", "counter 5 from 198.19.2.2:51820")
    assert [r.getMessage() for r in cap.records] == [
        "dropped: replay (counter 5 from 198.19.2.2:51820)"
    ]
    for i in range(99):
        clock.now += 0.05
        rl.drop("replay", f"counter {i}")
    assert len(cap.records) == 1  # all suppressed inside the interval
    assert rl.next_deadline() == 1010.0
    clock.now = 1010.0
    rl.drop("replay", "counter 1000")
    assert len(cap.records) == 2
    summary = cap.records[1]
    assert summary.getMessage() == (
        "dropped: replay, 100 more in the last 10s (latest: counter 1000)"
    )
    assert summary.fields["suppressed"] == 100  # type: ignore[attr-defined]
    assert summary.levelno == logging.WARNING
    assert rl.totals() == {"replay": 101}


def test_rate_limited_reasons_are_independent(captured: tuple[logging.Logger, Capture]) -> None:
    logger, cap = captured
    clock = FakeClock()
    rl = RateLimitedLog(logger, interval=10.0, clock=clock)
    rl.drop("replay")
    rl.drop("bad_mac1", "from 198.19.9.9")
    rl.drop("replay")
    assert [r.getMessage() for r in cap.records] == [
        "dropped: replay",
        "dropped: bad_mac1 (from 198.19.9.9)",
    ]


def test_rate_limited_quiet_reason_logs_afresh(captured: tuple[logging.Logger, Capture]) -> None:
    logger, cap = captured
    clock = FakeClock()
    rl = RateLimitedLog(logger, interval=10.0, clock=clock)
    rl.drop("replay", "a")
    clock.now += 30
    rl.drop("replay", "b")
    assert [r.getMessage() for r in cap.records] == ["dropped: replay (a)", "dropped: replay (b)"]


def test_rate_limited_flush_reports_burst_that_stopped(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = captured
    clock = FakeClock()
    rl = RateLimitedLog(logger, interval=10.0, clock=clock)
    rl.drop("short")
    rl.drop("short")
    rl.drop("short")
    rl.flush()
    assert len(cap.records) == 1  # not yet: interval not over
    clock.now += 12
    rl.flush()
    assert cap.records[-1].getMessage() == "dropped: short, 2 more in the last 12s"
    assert rl.next_deadline() is None
    rl.flush()
    assert len(cap.records) == 2  # at most one summary per interval


def test_rate_limited_at_most_one_line_per_interval(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = captured
    clock = FakeClock()
    rl = RateLimitedLog(logger, interval=5.0, clock=clock)
    for _ in range(10_000):  # 100 s of drops at 100/s
        rl.drop("flood")
        clock.now += 0.01
    # first line plus one summary per 5 s window
    assert 1 + 19 <= len(cap.records) <= 1 + 20
    assert rl.totals() == {"flood": 10_000}
    clock.now += 60
    rl.flush()
    # nothing is lost: first + every summary's count add up to all drops
    reported = 1 + sum(r.fields["suppressed"] for r in cap.records[1:])  # type: ignore[attr-defined]
    assert reported == 10_000


def test_rate_limited_rejects_bad_interval(captured: tuple[logging.Logger, Capture]) -> None:
    with pytest.raises(ValueError):
        RateLimitedLog(captured[0], interval=0)


@given(
    st.one_of(
        st.floats(min_value=-1e9, max_value=4e9),
        st.integers(0, 4 * 10**9).map(lambda s: s + 0.9999996),  # rounds up to the next second
        st.integers(0, 4 * 10**12).map(lambda ms: ms / 1000),
    )
)
def test_the_timestamp_is_what_datetime_writes(created: float) -> None:
    # formatted a second at a time (cached), rounded to the microsecond as datetime rounds
    dt = datetime.fromtimestamp(created, tz=UTC)
    assert (
        _timestamp(created) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    )
