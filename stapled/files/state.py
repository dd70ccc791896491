"""The state file: what ``status`` cannot work out from disk (errors, the schedule, an
owed reload or HAProxy push).  Damage is never fatal: all of it can be rebuilt."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.fleet import digest
from ..core.model import Due, Owed, Record
from ..core.ocsp import CertID, CertStatus, Staple
from ..core.times import iso, parse_iso
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
    store.prepare_dir(state_dir)
    # Compact: with an indent, json encodes in Python, which at thousands of certificates
    # costs more than the rest of a pass that asks nothing (`jq .` shows it indented).
    text = json.dumps(state, sort_keys=True, separators=(",", ":")) + "\n"
    store.write_atomic(state_dir / STATE_FILE, text.encode(), mode=0o600)


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


def validated(found: dict[str, dict[str, Any]]) -> list[tuple[str, Staple]]:
    """The staples recorded as validated, by the digest of their bytes (without them);
    an entry that does not read back whole is left out (its staple is validated anew)."""
    known = []
    for entry in found.values():
        facts = entry.get("validated")
        if not isinstance(facts, dict):
            continue
        try:
            known.append((str(facts["sha256"]), _staple(facts)))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            continue
    return known


def _facts(staple: Staple) -> dict[str, Any]:
    """What validating ``staple`` found, with times to the microsecond."""
    cert_id = staple.cert_id
    window = staple.signer_window
    return {
        "sha256": digest(staple.der),
        "status": str(staple.cert_status),
        "serial": format(staple.serial, "X"),
        "this_update": staple.this_update.isoformat(),
        "next_update": staple.next_update.isoformat(),
        "produced_at": staple.produced_at.isoformat(),
        "signer": staple.signer,
        "revocation_time": staple.revocation_time.isoformat() if staple.revocation_time else None,
        "revocation_reason": staple.revocation_reason,
        "cert_id": [
            cert_id.hash_name,
            cert_id.name_hash.hex(),
            cert_id.key_hash.hex(),
            format(cert_id.serial, "X"),
        ]
        if cert_id
        else None,
        "single_count": staple.single_count,
        "signer_window": [window[0].isoformat(), window[1].isoformat()] if window else None,
    }


def _staple(facts: dict[str, Any]) -> Staple:
    """Raises KeyError, IndexError, TypeError, ValueError or AttributeError for facts
    not written by _facts."""

    def when(value: object) -> datetime:
        at = datetime.fromisoformat(str(value))
        if at.tzinfo is None:
            raise ValueError(value)
        return at

    hash_name, name_hash, key_hash, serial = facts["cert_id"]
    window = facts["signer_window"]
    revoked_at, reason = facts["revocation_time"], facts["revocation_reason"]
    return Staple(
        der=b"",
        cert_status=CertStatus(facts["status"]),
        serial=int(facts["serial"], 16),
        this_update=when(facts["this_update"]),
        next_update=when(facts["next_update"]),
        produced_at=when(facts["produced_at"]),
        signer=str(facts["signer"]),
        revocation_time=when(revoked_at) if revoked_at is not None else None,
        revocation_reason=str(reason) if reason is not None else None,
        cert_id=CertID(
            str(hash_name), bytes.fromhex(name_hash), bytes.fromhex(key_hash), int(serial, 16)
        ),
        single_count=int(facts["single_count"]),
        signer_window=(when(window[0]), when(window[1])) if window is not None else None,
    )


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
) -> None:
    """Record the state of ``records``; a failure is logged, never raised.

    ``others`` are earlier entries kept as they are (for a pass over some certificates).
    """
    kept: dict[str, dict[str, Any]] = dict(others or {})
    for rec in records:
        entry: dict[str, Any] = {}
        if rec.last_error:
            entry["last_error"] = rec.last_error
        when = due.get(rec.name)
        if when is not None and when.retry:
            entry["next_retry"] = iso(when.retry)
        if daemon is not None and when is not None and when.refresh:
            entry["next_refresh"] = iso(when.refresh)
        if rec.current is not None and rec.source in SOURCES:
            entry["source"], entry["staple_sha256"] = rec.source, digest(rec.current.der)
        if rec.current is not None:
            entry["validated"] = _facts(rec.current)
        kept[rec.name] = entry
    state: dict[str, Any] = {
        "version": 1,
        "reload_pending": owed.reload,
        "haproxy_pending": sorted(owed.push),
        "certificates": kept,
    }
    if daemon is not None:
        state["daemon"] = daemon
    if fleet is not None:
        state["fleet"] = fleet
    try:
        write(state_dir, state)
    except StoreError as e:
        log.warning("cannot record state: %s", e)
