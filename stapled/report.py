"""Records -> text: the ``status`` table, its JSON form, and the log line of each."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from .core import revocation
from .core.model import NOT_DUE, Due, PassResult, Record
from .core.policy import State
from .core.revocation import CrlView
from .core.times import iso

log = logging.getLogger("stapled")


def rfc3339(t: datetime | None) -> str | None:
    return iso(t) if t else None


def as_json(result: PassResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "certificates": [
            _json_record(r, result.due.get(r.name, NOT_DUE), result.crl.get(r.name))
            for r in result.records
        ]
    }
    if result.fleet is not None:
        out["fleet"] = result.fleet
    return out


def _staple(r: Record) -> str | None:
    return revocation.staple_verdict(r.state, r.ocsp_url is not None)


def _revoked(r: Record, crl: CrlView | None) -> str:
    """The REVOKED? cell: the verdict from either source (PROBLEM says which)."""
    found = revocation.verdict(_staple(r), crl, r.crl_url is not None)
    return "REVOKED" if found == revocation.REVOKED else found or "-"


def _json_record(r: Record, due: Due, crl: CrlView | None) -> dict[str, Any]:
    staple = _staple(r)
    return {
        "name": r.name,
        "path": r.path,
        "serial": r.serial,
        "ocsp_url": r.ocsp_url,
        "staple": r.staple_path,
        "status": str(r.state),
        "this_update": rfc3339(r.this_update),
        "next_update": rfc3339(r.next_update),
        "next_refresh": rfc3339(due.refresh),
        "next_retry": rfc3339(due.retry),
        "last_error": _errors(r, staple, crl),
        "must_staple": r.must_staple,
        "source": r.source,
        "revocation": revocation.verdict(staple, crl, r.crl_url is not None),
        "crl": _json_crl(crl) if crl is not None else None,
    }


def _json_crl(c: CrlView) -> dict[str, Any]:
    return {
        "url": c.url,
        "status": c.status,
        "this_update": rfc3339(c.this_update),
        "next_update": rfc3339(c.next_update),
        "revoked_at": rfc3339(c.revoked_at),
        "reason": c.reason,
        "last_error": c.last_error,
        "evidence": c.evidence,
    }


def _errors(r: Record, staple: str | None, crl: CrlView | None) -> str | None:
    """The record's own error and what its CRL adds (naming the CRL's URL)."""
    parts = [e for e in (r.last_error, revocation.problem(staple, crl)) if e]
    return "; ".join(parts) or None


_COLUMNS = (
    "NAME",
    "STATE",
    "REVOKED?",
    "FROM",
    "SERIAL",
    "THIS UPDATE",
    "NEXT UPDATE",
    "NEXT ATTEMPT",
    "STAPLE",
    "SOURCE",
    "OCSP URL",
    "CRL URL",
    "LAST ERROR",
)


WIDTH = 100
_NARROW = ("NAME", "STATE", "REVOKED?", "FROM", "NEXT UPDATE", "NEXT ATTEMPT", "PROBLEM")
_NAME_MAX = 28


def table(result: PassResult, *, wide: bool = False) -> str:
    """An aligned text table, one certificate per line.  It fits WIDTH columns; ``wide``
    adds serials, files, URLs and whole errors (the last column is not padded)."""
    lines = _wide(result) if wide else _narrow(result)
    if not result.records:
        lines.append("(no certificates found in the configured sources)")
    if result.fleet is not None:
        f = result.fleet
        how = "connected" if f["connected"] else "NOT CONNECTED: staples on disk are served"
        line = f"fleet: {f['redis']} as host {f['host_id']}, {how}"
        lines.append(line if wide else _cut(line, WIDTH))
    return "\n".join(lines)


def _narrow(result: PassResult) -> list[str]:
    rows = [_NARROW] + [
        (
            _cut(r.name + (" (must-staple)" if r.must_staple else ""), _NAME_MAX),
            str(r.state),
            _revoked(r, result.crl.get(r.name)),
            _SOURCES.get(r.source or "", "-"),
            _brief(r.next_update),
            _next(result.due.get(r.name, NOT_DUE), _brief, " retry"),
            _errors(r, _staple(r), result.crl.get(r.name)) or "-",
        )
        for r in result.records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_NARROW) - 1)]
    room = max(10, WIDTH - sum(widths) - 2 * (len(widths)))
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
        + "  "
        + _cut(row[-1], room)
        for row in rows
    ]


def _wide(result: PassResult) -> list[str]:
    rows = [_COLUMNS] + [
        (
            r.name + (" (must-staple)" if r.must_staple else ""),
            str(r.state),
            _revoked(r, result.crl.get(r.name)),
            _SOURCES.get(r.source or "", "-"),
            r.serial or "-",
            _short(r.this_update),
            _short(r.next_update),
            _next(result.due.get(r.name, NOT_DUE), _short, " (retry)"),
            r.staple_path or "-",
            r.path,
            r.ocsp_url or "-",
            r.crl_url or "-",
            _errors(r, _staple(r), result.crl.get(r.name)) or "-",
        )
        for r in result.records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]


def _cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, on one line."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _next(due: Due, show: Callable[[datetime | None], str], retry: str) -> str:
    return show(due.retry) + retry if due.retry else show(due.refresh)


def _brief(t: datetime | None) -> str:
    # Formatted by hand: strftime costs a microsecond or two, and status shows two a row.
    return f"{t.month:02}-{t.day:02} {t.hour:02}:{t.minute:02}Z" if t else "-"


_SOURCES = {"ca": "CA", "fleet": "fleet", "disk": "disk"}


def _short(t: datetime | None) -> str:
    return f"{t.year:04}-{_brief(t)}" if t else "-"


def log_record(rec: Record, due: Due | None = None) -> None:
    """One line for one certificate, at the level its state deserves; ``due`` gives the
    refresh time a good staple's line names."""
    level = _level(rec)
    if log.isEnabledFor(level):  # a good staple's times are formatted only to be shown
        log.log(level, *_line(rec, due))


# A pass over thousands of certificates would log a line for each good one, past
# journald's rate limit (10,000 lines a service in 30 s by default), which then drops
# the lines that matter along with them.
QUIET_LINES = 100


def log_records(records: Iterable[Record], due: Mapping[str, Due]) -> None:
    """:func:`log_record` for each record, but only the first QUIET_LINES of those with
    nothing wrong (logged at INFO); one line then counts the others, by state."""
    quiet = 0
    unshown: Counter[State] = Counter()
    for rec in records:
        if _level(rec) == logging.INFO:
            quiet += 1
            if quiet > QUIET_LINES:
                unshown[rec.state] += 1
                continue
        log_record(rec, due.get(rec.name))
    if unshown:
        counts = ", ".join(
            f"{n} {_LABELS.get(kind, str(kind))}" for kind, n in sorted(unshown.items())
        )
        log.info(
            "%d more certificates with nothing wrong (%s) not listed here; "
            "`stapled status` lists every one",
            sum(unshown.values()),
            counts,
        )


def log_dropped(names: Iterable[str]) -> None:
    """A line for each name a rescan no longer finds, up to QUIET_LINES; one line then
    counts the others (removing a source of thousands is one event)."""
    unshown = 0
    for n, name in enumerate(names):
        if n < QUIET_LINES:
            log.info("%s: no longer found; its schedule is dropped", name)
        else:
            unshown += 1
    if unshown:
        log.info("%d more certificates no longer found; their schedules are dropped", unshown)


def _level(rec: Record) -> int:
    if rec.state is State.NO_OCSP:
        return logging.INFO
    if rec.state is State.ERROR:
        return logging.ERROR
    if rec.state is State.EXPIRED:
        return logging.WARNING
    if rec.state is State.REVOKED:
        return logging.CRITICAL
    if rec.state in (State.MISSING, State.UNKNOWN):
        return logging.CRITICAL if rec.must_staple else logging.ERROR
    if rec.failed_now:
        # Browsers refuse a must-staple certificate without a staple: say it louder.
        return logging.ERROR if rec.must_staple else logging.WARNING
    return logging.INFO


def _line(rec: Record, due: Due | None) -> tuple[str, ...]:
    """The line :func:`_level` rates: its format and arguments.  Both take the same
    branches in the same order; apart, a pass learns a line's level without making it."""
    name = rec.name
    if rec.state is State.NO_OCSP:
        return "%s: no OCSP URL in the certificate; nothing to staple", name
    if rec.state is State.ERROR:
        return "%s: %s", name, str(rec.last_error)
    if rec.state is State.EXPIRED:
        return "%s: %s; not fetched", name, str(rec.last_error)
    if rec.state is State.REVOKED:
        return (
            "%s: certificate serial %s is REVOKED; the CA-signed revoked response is in %s",
            name,
            str(rec.serial),
            str(rec.staple_path),
        )
    if rec.state in (State.MISSING, State.UNKNOWN):
        must = " for a must-staple certificate" if rec.must_staple else ""
        return "%s: no valid staple%s: %s", name, must, str(rec.last_error)
    if rec.failed_now:
        refused = " (must-staple: browsers refuse the site without it)" if rec.must_staple else ""
        return (
            "%s: refresh failed, valid staple kept until %s%s: %s",
            name,
            iso(rec.next_update),
            refused,
            str(rec.last_error),
        )
    verb = "written" if rec.changed else "kept"
    if rec.changed and rec.source == "fleet":
        verb = "written (from the fleet store)"
    return (
        "%s: good staple %s, valid until %s, refresh after %s",
        name,
        verb,
        iso(rec.next_update),
        iso(due.refresh) if due is not None and due.refresh else "-",
    )


_LABELS = {State.NO_OCSP: "without OCSP"}


def summary(records: Iterable[Record], due: Mapping[str, Due]) -> str:
    """One line for systemd's STATUS=, e.g. '12 good, 1 revoked; next refresh 14:02 UTC'."""
    counts: Counter[State] = Counter()
    for r in records:
        counts[r.state] += 1
    upcoming = [d.next for d in due.values()]
    parts = [f"{n} {_LABELS.get(kind, str(kind))}" for kind, n in sorted(counts.items())]
    text = ", ".join(parts) or "no certificates"
    times = [t for t in upcoming if t is not None]
    if times:
        text += f"; next refresh {min(times):%Y-%m-%d %H:%M} UTC"
    return text
