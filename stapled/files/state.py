"""The state file: what ``status`` cannot work out from disk (errors, the schedule, an
owed reload or HAProxy push).  Damage is never fatal: all of it can be rebuilt."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..core.fleet import digest
from ..core.model import Due, Owed, Record
from ..core.times import iso, parse_iso
from ..core.validated import facts
from ..errors import StoreError
from . import store

log = logging.getLogger("stapled")

STATE_FILE = "state.json"
SOURCES = ("ca", "fleet")


def load(state_dir: Path, *, must_read: bool = False) -> dict[str, Any]:
    """stapled's records from earlier runs; empty when missing or damaged.

    With ``must_read``, a file that exists but cannot be read (another user's, mode 0600)
    raises StoreError: ``status`` must not report a state it did not see as good.
    """
    path = state_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        if must_read:
            raise StoreError(str(path), f"cannot read the state file ({e.strerror or e})") from e
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def write(state_dir: Path, state: dict[str, Any]) -> None:
    """Raises StoreError when the state directory is unusable."""
    head = {k: v for k, v in state.items() if k != "certificates"}
    _write(state_dir, head, state.get("certificates", {}).items())


def _write(
    state_dir: Path, head: dict[str, Any], entries: Iterable[tuple[str, dict[str, Any]]]
) -> None:
    store.prepare_dir(state_dir)
    store.write_atomic_parts(state_dir / STATE_FILE, _encoded(head, entries), mode=0o600)


def _encoded(
    head: dict[str, Any], entries: Iterable[tuple[str, dict[str, Any]]]
) -> Iterator[bytes]:
    """The state file's JSON, a thousand certificates at a time: at 100,000 the whole
    document and its text took a few hundred megabytes at once.  Compact: with an
    indent, json encodes in Python (`jq .` shows it indented)."""
    encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
    opening = encode(head)[:-1] + "," if head else "{"
    yield (opening + '"certificates":{').encode()
    batch: dict[str, dict[str, Any]] = {}
    sep = ""
    for name, entry in entries:
        batch[name] = entry
        if len(batch) == _BATCH:
            # One call of the C encoder for the lot, its braces dropped.
            yield (sep + encode(batch)[1:-1]).encode()
            batch, sep = {}, ","
    if batch:
        yield (sep + encode(batch)[1:-1]).encode()
    yield b"}}\n"


_BATCH = 1000


def entries(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-certificate entries of a state file, leaving out whatever is damaged."""
    found = state.get("certificates")
    if not isinstance(found, dict):
        return {}
    return {name: e for name, e in found.items() if isinstance(e, dict)}


def names(value: object) -> set[str]:
    """A list of names from the state file; anything damaged reads as none."""
    if not isinstance(value, list):
        return set()
    return {v for v in value if isinstance(v, str)}


def owed(state: dict[str, Any]) -> Owed:
    """What an earlier run left owed to the servers; anything damaged reads as nothing."""
    return Owed(state.get("reload_pending") is True, frozenset(names(state.get("haproxy_pending"))))


def recorded_error(entry: dict[str, Any]) -> str | None:
    """The last error recorded for one certificate; None for anything but text."""
    error = entry.get("last_error")
    return error if isinstance(error, str) and error else None


def sources(found: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Where the staples recorded came from, by the digest of their bytes."""
    known: dict[str, str] = {}
    for entry in found.values():
        source, staple = entry.get("source"), entry.get("staple_sha256")
        if source in SOURCES and isinstance(staple, str):
            known[staple] = source
    return known


def validated(found: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """What validating the staples recorded found, by the digest of their bytes, as
    written (read into a Staple only when those bytes are met again)."""
    known = []
    for entry in found.values():
        digest_, facts = entry.get("staple_sha256"), entry.get("validated")
        if isinstance(digest_, str) and isinstance(facts, str):
            known.append((digest_, facts))
    return known


def recorded_due(entry: dict[str, Any]) -> Due:
    """When a daemon meant to ask about one certificate next, as it recorded it."""
    return Due(parse_iso(entry.get("next_refresh")), parse_iso(entry.get("next_retry")))


def save(
    state_dir: Path,
    records: Iterable[Record],
    *,
    owed: Owed,
    due: Mapping[str, Due],
    daemon: dict[str, Any] | None = None,
    others: dict[str, dict[str, Any]] | None = None,
    fleet: dict[str, Any] | None = None,
    texts: Mapping[str, str] | None = None,
    earlier: dict[str, Any] | None = None,
) -> None:
    """Record the state of ``records``; a failure is logged, never raised.

    ``others`` are earlier entries kept as they are (for a pass over some certificates).
    ``texts`` are what validating staples found, as the state file said it, by their
    digest.  Nothing is written when ``earlier`` (the state file as read) says it all.
    """
    records = list(records)
    described = texts or {}

    def entries() -> Iterator[tuple[str, dict[str, Any]]]:
        # Made one at a time as the file is written, never all at once.
        for rec in records:
            entry: dict[str, Any] = {}
            if rec.last_error:
                entry["last_error"] = rec.last_error
            when = due.get(rec.name)
            if when is not None and when.retry:
                entry["next_retry"] = iso(when.retry)
            if daemon is not None and when is not None and when.refresh:
                entry["next_refresh"] = iso(when.refresh)
            if rec.current is not None:
                entry["staple_sha256"] = staple = digest(rec.current.der)
                entry["validated"] = described.get(staple) or facts(rec.current)
                if rec.source in SOURCES:
                    entry["source"] = rec.source
            yield rec.name, entry
        names = {rec.name for rec in records}
        yield from ((n, e) for n, e in (others or {}).items() if n not in names)

    head: dict[str, Any] = {
        "version": 1,
        "reload_pending": owed.reload,
        "haproxy_pending": sorted(owed.push),
    }
    if daemon is not None:
        head["daemon"] = daemon
    if fleet is not None:
        head["fleet"] = fleet
    if earlier is not None and _says(earlier, head, entries()):
        return  # no temporary file, fsync and rename to say the same again
    try:
        _write(state_dir, head, entries())
    except StoreError as e:
        log.warning("cannot record state: %s", e)


def _says(
    earlier: dict[str, Any], head: dict[str, Any], entries: Iterable[tuple[str, dict[str, Any]]]
) -> bool:
    """Whether the state file as read holds exactly ``head`` and ``entries``."""
    found = earlier.get("certificates")
    if (
        not isinstance(found, dict)
        or {k: v for k, v in earlier.items() if k != "certificates"} != head
    ):
        return False
    count = 0
    for name, entry in entries:
        if found.get(name) != entry:
            return False
        count += 1
    return count == len(found)
