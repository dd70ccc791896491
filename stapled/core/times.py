"""Times as stapled writes them: RFC 3339 in UTC to the second, in logs, JSON and state."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# What FORMAT writes, and no other spelling fromisoformat would take (a week date, an
# offset, a fraction): the state file holds one or two for each certificate, and
# fromisoformat is several times faster than strptime.
_WRITTEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", re.ASCII)

# Where "now" comes from: a parameter everywhere, so tests can set it.
Clock = Callable[[], datetime]


def iso(t: datetime | None) -> str:
    """``t`` as RFC 3339 text; "-" for no time (a log line's placeholder)."""
    return t.strftime(FORMAT) if t else "-"


def shared(t: datetime) -> datetime:
    """One object for equal times: CAs sign responses in batches (Let's Encrypt's
    thisUpdate falls on the hour), so thousands of staples hold the same few times,
    48 bytes a copy.  Only UTC times: an equal instant in another zone shows otherwise."""
    if t.tzinfo is not UTC:
        return t
    one = _TIMES.setdefault(t, t)
    if len(_TIMES) > _TIMES_HELD:
        _TIMES.clear()  # bounded; what was shared stays shared
    return one


_TIMES: dict[datetime, datetime] = {}
_TIMES_HELD = 4096


def parse_iso(value: object) -> datetime | None:
    """A time written by :func:`iso`; None for anything else (a damaged state file)."""
    if not isinstance(value, str) or _WRITTEN.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # a month 13, a February 30
        return None
