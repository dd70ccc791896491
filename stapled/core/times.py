"""Times as stapled writes them: RFC 3339 in UTC to the second, in logs, JSON and state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# Where "now" comes from: a parameter everywhere, so tests can set it.
Clock = Callable[[], datetime]


def iso(t: datetime | None) -> str:
    """``t`` as RFC 3339 text; "-" for no time (a log line's placeholder)."""
    return t.strftime(FORMAT) if t else "-"


def parse_iso(value: object) -> datetime | None:
    """A time written by :func:`iso`; None for anything else (a damaged state file)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
