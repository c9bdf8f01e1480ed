"""Logging for the agent: text or JSON lines on stderr, and rate-limited drop logs.

Structured fields travel with a record as ``extra={"fields": {...}}``::

    log.info("peer up", extra={"fields": {"peer": "rbx-db1", "rtt_ms": 0.41}})

Text format (journald adds its own timestamp, we keep ours for plain stderr)::

    2026-11-22T05:12:26.123Z info  lanspan.agent: peer up peer=rbx-db1 rtt_ms=0.41

JSON format, one object per line::

    {"ts": "2026-11-22T05:12:26.123Z", "level": "info", "logger": "lanspan.agent",
     "msg": "peer up", "peer": "rbx-db1", "rtt_ms": 0.41}

Bad input from the network is dropped and counted; `RateLimitedLog` makes sure a
flood of bad packets costs at most one log line per reason per interval.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Literal

from lanspan.records import record

__all__ = ["JsonFormatter", "RateLimitedLog", "TextFormatter", "setup_logging"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_RESERVED = ("ts", "level", "logger", "msg", "exc")


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))


def _timestamp(created: float) -> str:
    """UTC to the millisecond; the date and time to the second formatted once a second
    (a cold start logs ~60 lines per agent within 2 s, issue 10)."""
    fraction, whole = math.modf(created)  # rounded to the microsecond as `datetime` does
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    return f"{_second(int(whole))}{micro // 1000:03d}Z"


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    if isinstance(fields, Mapping):
        return fields
    return {}


def _level_name(record: logging.LogRecord) -> str:
    return record.levelname.lower()


def _logfmt_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' "=\\\n\t'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``<ts> <level> <logger>: <msg> key=value ...`` (values quoted when needed)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record.created),
            f"{_level_name(record):<5}",
            f"{record.name}: {record.getMessage()}",
        ]
        parts += [f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's fields.

    A field whose name collides with one of the fixed keys is kept under
    ``fields`` instead of overwriting it.
    """

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": _timestamp(record.created),
            "level": _level_name(record),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        clashing: dict[str, object] = {}
        for key, value in _fields(record).items():
            if key in _RESERVED or key == "fields":
                clashing[key] = value
            else:
                obj[key] = value
        if clashing:
            obj["fields"] = clashing
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, ensure_ascii=False)


class _LanspanHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marker class so `setup_logging` can replace its own handler and only it."""


def setup_logging(level: str = "info", fmt: Literal["text", "json"] = "text") -> None:
    """Send log records of `level` and above to stderr as text or JSON lines.

    Idempotent: calling it again replaces the handler it installed before and
    leaves other handlers (pytest's, for instance) alone.
    """
    try:
        numeric = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; use one of debug, info, warning, error"
        ) from None
    formatter: logging.Formatter
    if fmt == "text":
        formatter = TextFormatter()
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}; use 'text' or 'json'")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _LanspanHandler):
            root.removeHandler(handler)
    handler = _LanspanHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Neither format writes where a call was made from nor its thread or process: the
    # logging HOWTO's "Optimization" switches spare each record a walk of the stack and
    # three lookups (a fifth of a record's CPU here).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


@record(slots=True)
class _Reason:
    last_emit: float
    suppressed: int = 0
    total: int = 1
    last_detail: str = ""


class RateLimitedLog:
    """Logs the first drop of each reason, then one summary per reason per interval.

    ``drop(reason, detail)`` is cheap when suppressed: a dict lookup and a
    counter increment. A summary ("N more suppressed") is written by the
    first drop after the interval has passed, or by `flush()` which the agent
    may call from a timer so a burst that stopped is still reported.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.WARNING,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._level = level
        self._reasons: dict[str, _Reason] = {}

    def drop(self, reason: str, detail: str = "") -> None:
        now = self._clock()
        st = self._reasons.get(reason)
        if st is None:
            self._reasons[reason] = _Reason(last_emit=now, last_detail=detail)
            self._emit_first(reason, detail)
            return
        st.total += 1
        st.last_detail = detail
        if now - st.last_emit < self._interval:
            st.suppressed += 1
            return
        if st.suppressed == 0:
            # quiet for a whole interval: this is news again
            st.last_emit = now
            self._emit_first(reason, detail)
            return
        st.suppressed += 1
        self._emit_summary(reason, st, now)

    def flush(self) -> None:
        """Write the pending summaries whose interval has passed."""
        now = self._clock()
        for reason, st in self._reasons.items():
            if st.suppressed and now - st.last_emit >= self._interval:
                self._emit_summary(reason, st, now)

    def next_deadline(self) -> float | None:
        """When `flush()` next has something to write, on the injected clock."""
        pending = [st.last_emit + self._interval for st in self._reasons.values() if st.suppressed]
        return min(pending) if pending else None

    def totals(self) -> dict[str, int]:
        """Drops seen per reason since creation, logged or not."""
        return {reason: st.total for reason, st in self._reasons.items()}

    def _emit_first(self, reason: str, detail: str) -> None:
        msg = f"dropped: {reason}" + (f" ({detail})" if detail else "")
        self._logger.log(self._level, msg, extra={"fields": {"reason": reason, "detail": detail}})

    def _emit_summary(self, reason: str, st: _Reason, now: float) -> None:
        seconds = now - st.last_emit
        msg = f"dropped: {reason}, {st.suppressed} more in the last {seconds:.0f}s" + (
            f" (latest: {st.last_detail})" if st.last_detail else ""
        )
        self._logger.log(
            self._level,
            msg,
            extra={
                "fields": {
                    "reason": reason,
                    "suppressed": st.suppressed,
                    "interval_s": round(seconds, 3),
                    "detail": st.last_detail,
                }
            },
        )
        st.suppressed = 0
        st.last_emit = now
