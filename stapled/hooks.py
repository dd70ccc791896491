"""``revoked_command``: run once when a certificate becomes revoked, by either source.

The command (never through a shell) reads what happened from its environment:
STAPLED_NAME, STAPLED_CERT, STAPLED_SERIAL, STAPLED_REASON, STAPLED_SOURCE.  It is run
once per serial, remembered across restarts in the state directory; a failure is logged
and tried again at a later pass, at most once an hour.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .core.model import Record
from .core.policy import State
from .core.revocation import CrlView
from .core.times import Clock, iso, parse_iso
from .errors import ReloadError, StoreError
from .files import store
from .servers import run_command

log = logging.getLogger("stapled")

STATE_FILE = "revoked.json"
RETRY_AFTER = timedelta(hours=1)
Runner = Callable[[Sequence[str], float, str, Mapping[str, str]], str]


@dataclass(frozen=True)
class Revocation:
    """One certificate found revoked, as the command's environment tells it."""

    name: str
    path: str
    serial: str
    reason: str
    source: str  # "ocsp" or "crl"

    def environment(self) -> dict[str, str]:
        return {
            "STAPLED_NAME": self.name,
            "STAPLED_CERT": self.path,
            "STAPLED_SERIAL": self.serial,
            "STAPLED_REASON": self.reason,
            "STAPLED_SOURCE": self.source,
        }


def found_revoked(records: Iterable[Record], crl: Mapping[str, CrlView]) -> list[Revocation]:
    """The certificates revoked by their staple or their CRL (the staple named first)."""
    found = []
    for rec in records:
        if rec.serial is None:
            continue
        staple = rec.current
        view = crl.get(rec.name)
        if rec.state is State.REVOKED and staple is not None:
            reason = staple.revocation_reason or "unspecified"
            found.append(Revocation(rec.name, rec.path, rec.serial, reason, "ocsp"))
        elif view is not None and view.revoked:
            reason = view.reason or "unspecified"
            found.append(Revocation(rec.name, rec.path, rec.serial, reason, "crl"))
    return found


class RevokedHook:
    def __init__(
        self,
        command: Sequence[str],
        state_dir: Path,
        clock: Clock,
        timeout: float,
        runner: Runner = run_command,
    ) -> None:
        self.command = tuple(command)
        self.state_dir = state_dir
        self.clock = clock
        self.timeout = timeout
        self.runner = runner

    def run(self, found: Iterable[Revocation]) -> None:
        """Run the command for each serial not yet handled (blocking: up to ``timeout``
        for each)."""
        if not self.command:
            return
        done = self._load()
        now = self.clock()
        changed = False
        for event in found:
            key = event.serial
            seen = done.get(key, {})
            if seen.get("done") or not _waited(parse_iso(seen.get("failed")), now):
                continue
            changed = True
            try:
                self.runner(self.command, self.timeout, "revoked_command", event.environment())
            except ReloadError as e:
                log.error("%s: %s; tried again in an hour at the earliest", event.name, e)
                done[key] = {"failed": iso(now), "name": event.name}
                continue
            log.info("%s: revoked_command ran for serial %s", event.name, event.serial)
            done[key] = {"done": iso(now), "name": event.name}
        if changed:
            self._save(done)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.state_dir / STATE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as e:
            # Run again rather than never: a renewal twice is better than none.
            log.warning("%s: unreadable, forgotten: %s", self.state_dir / STATE_FILE, e)
            return {}
        serials = data.get("serials") if isinstance(data, dict) else None
        if not isinstance(serials, dict):
            return {}
        return {k: v for k, v in serials.items() if isinstance(v, dict)}

    def _save(self, done: dict[str, dict[str, Any]]) -> None:
        text = json.dumps({"version": 1, "serials": done}, indent=1, sort_keys=True) + "\n"
        try:
            store.prepare_dir(self.state_dir)
            store.write_atomic(self.state_dir / STATE_FILE, text.encode(), mode=0o600)
        except StoreError as e:
            log.error("%s", e)


def _waited(failed: datetime | None, now: datetime) -> bool:
    return failed is None or now >= failed + RETRY_AFTER
