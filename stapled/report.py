"""Records -> the ``status`` table and its JSON form."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .pipeline import PassResult, Record


def rfc3339(t: datetime | None) -> str | None:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def as_json(result: PassResult) -> dict[str, Any]:
    return {"certificates": [_json_record(r) for r in result.records]}


def _json_record(r: Record) -> dict[str, Any]:
    return {
        "name": r.name,
        "path": r.path,
        "serial": r.serial,
        "ocsp_url": r.ocsp_url,
        "staple": r.staple,
        "status": str(r.state),
        "this_update": rfc3339(r.this_update),
        "next_update": rfc3339(r.next_update),
        "next_refresh": rfc3339(r.next_refresh),
        "next_retry": rfc3339(r.next_retry),
        "last_error": r.last_error,
        "must_staple": r.must_staple,
    }


_COLUMNS = (
    "NAME",
    "STATE",
    "SERIAL",
    "THIS UPDATE",
    "NEXT UPDATE",
    "NEXT ATTEMPT",
    "STAPLE",
    "SOURCE",
    "OCSP URL",
    "LAST ERROR",
)


def table(result: PassResult) -> str:
    """An aligned text table, one certificate per line (the last error is not padded)."""
    rows = [_COLUMNS] + [
        (
            r.name + (" (must-staple)" if r.must_staple else ""),
            str(r.state),
            r.serial or "-",
            _short(r.this_update),
            _short(r.next_update),
            _short(r.next_retry) + " (retry)" if r.next_retry else _short(r.next_refresh),
            r.staple or "-",
            r.path,
            r.ocsp_url or "-",
            r.last_error or "-",
        )
        for r in result.records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    if not result.records:
        lines.append("(no certificates found in the configured sources)")
    return "\n".join(lines)


def _short(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%MZ") if t else "-"
