"""A pass's lines: every certificate with something wrong gets its own, whatever the
count; those with nothing wrong only up to report.QUIET_LINES, then one line counts the
rest (journald drops a service's lines past its rate limit, the wrong ones with them)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stapled import report
from stapled.core.model import Due, Record
from stapled.core.policy import State

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
_kinds = st.tuples(st.sampled_from(list(State)), st.booleans(), st.booleans(), st.booleans())


def _records(kinds: list[tuple[State, bool, bool, bool]]) -> list[Record]:
    return [
        Record(
            f"n{i}.example",
            f"/etc/letsencrypt/live/n{i}.example/cert.pem",
            state,
            serial_number=i + 1,
            output="/var/lib/stapled",
            next_update=NOW + timedelta(days=3),
            last_error="the responder said tryLater" if failed or state is not State.GOOD else None,
            must_staple=must,
            failed_now=failed,
            changed=changed,
        )
        for i, (state, must, failed, changed) in enumerate(kinds)
    ]


@contextlib.contextmanager
def _lines() -> Iterator[list[logging.LogRecord]]:
    """What stapled's logger emits meanwhile, every level."""
    logger = logging.getLogger("stapled")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _alone(rec: Record, due: Due | None) -> logging.LogRecord:
    """The line log_record gives this record on its own."""
    with _lines() as seen:
        report.log_record(rec, due)
    assert len(seen) == 1
    return seen[0]


@settings(max_examples=60, deadline=None)
@given(st.lists(_kinds, max_size=160), st.integers(0, 160), st.randoms())
def test_problems_always_have_their_line_and_quiet_ones_are_counted(
    kinds: list[tuple[State, bool, bool, bool]], good: int, rng: Random
) -> None:
    # Good staples added in any order, so that the limit is often passed.
    kinds = kinds + [(State.GOOD, False, False, False)] * good
    rng.shuffle(kinds)
    records = _records(kinds)
    due = {r.name: Due(refresh=NOW + timedelta(days=1)) for r in records[::2]}
    with _lines() as lines:
        report.log_records(records, due)
    expected = [_alone(r, due.get(r.name)) for r in records]
    quiet = [(r, e) for r, e in zip(records, expected, strict=True) if e.levelno == logging.INFO]
    shown_quiet = {r.name for r, _ in quiet[: report.QUIET_LINES]}
    wanted = [
        (e.levelno, e.getMessage())
        for r, e in zip(records, expected, strict=True)
        if e.levelno != logging.INFO or r.name in shown_quiet
    ]
    got = [(line.levelno, line.getMessage()) for line in lines]
    if len(quiet) <= report.QUIET_LINES:
        assert got == wanted
        return
    assert got[:-1] == wanted
    level, last = got[-1]
    assert level == logging.INFO
    counted = re.match(r"(\d+) more certificates with nothing wrong \((.*)\) not listed", last)
    assert counted is not None, last
    assert int(counted.group(1)) == len(quiet) - report.QUIET_LINES
    by_state = {
        kind: sum(1 for r, _ in quiet[report.QUIET_LINES :] if r.state is kind) for kind in State
    }
    for part in counted.group(2).split(", "):
        number, label = part.split(" ", 1)
        kind = State.NO_OCSP if label == "without OCSP" else State(label)
        assert int(number) == by_state.pop(kind)
    assert not any(by_state.values())


def test_a_hundred_thousand_good_staples_log_a_hundred_lines_and_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = _records([(State.GOOD, False, False, True)] * 100_000)
    records[70_000].state = State.ERROR
    records[70_000].last_error = "the responder said tryLater"
    with caplog.at_level(logging.INFO, logger="stapled"):
        report.log_records(records, {})
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == report.QUIET_LINES + 2
    assert "n70000.example: the responder said tryLater" in messages
    assert messages[-1].startswith("99899 more certificates with nothing wrong (99899 good)")


@given(st.integers(0, 3 * report.QUIET_LINES))
def test_names_no_longer_found_are_listed_up_to_the_limit_then_counted(count: int) -> None:
    names = [f"n{i}.example" for i in range(count)]
    with _lines() as seen:
        report.log_dropped(names)
    messages = [r.getMessage() for r in seen]
    shown = min(count, report.QUIET_LINES)
    assert messages[:shown] == [
        f"{n}: no longer found; its schedule is dropped" for n in names[:shown]
    ]
    rest = count - shown
    tail = [f"{rest} more certificates no longer found; their schedules are dropped"]
    assert messages[shown:] == (tail if rest else [])
    assert all(r.levelno == logging.INFO for r in seen)
