"""Certificates' CRLs: each URL fetched once however many certificates share it, checked
completely (``core.crl``), and remembered as verdicts for the serials asked about, with
the validators for a conditional GET; the CRL itself is freed.  The list that said
"revoked" is kept under the state directory as the bytes received (the evidence).

A CRL that fails never changes a verdict: the last valid one stands until that CRL's
nextUpdate, then there is none ("unknown").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .core import crl, revocation
from .core.crl import Revoked
from .core.policy import Timing
from .core.revocation import CrlView
from .core.times import Clock, iso, parse_iso
from .errors import StapledError, StoreError
from .files import store
from .net.client import Transport, Validators

log = logging.getLogger("stapled")

# Large CAs shard their CRLs to hundreds of KB; an unsharded one of a big CA runs to
# tens of MB.  The 64 KiB cap of OCSP answers would refuse most of them.
MAX_BYTES = 32 * 1024 * 1024
STATE_FILE = "crls.json"
EVIDENCE_DIR = "crls"


@dataclass(frozen=True)
class Want:
    """A CRL URL and what is asked of it: the issuer that must have signed it, and the
    serials of the certificates (of that issuer) that name it."""

    url: str
    issuer: x509.Certificate
    serials: frozenset[int]


@dataclass
class _Entry:
    """What is kept of one URL's CRL."""

    issuer: str  # SHA-256 of the issuer's DER: another issuer is fetched anew
    serials: frozenset[int]
    this_update: datetime | None = None
    next_update: datetime | None = None
    revoked: dict[int, Revoked] = field(default_factory=dict)
    validators: Validators = field(default_factory=Validators)
    last_error: str | None = None
    failures: int = 0
    next_check: datetime | None = None
    evidence: str | None = None

    def holds(self, want: Want, issuer: str) -> bool:
        """Whether a valid list was read for every serial ``want`` asks about."""
        return (
            self.this_update is not None and self.issuer == issuer and want.serials <= self.serials
        )


class Crls:
    def __init__(
        self,
        state_dir: Path,
        transport: Transport | None,
        clock: Clock,
        timing: Timing,
        counted: Callable[[str, int], None] = lambda result, size: None,
        host: str = "",
    ) -> None:
        """``counted(result, size)``: each fetch ("success", "not_modified", "failure")
        and the bytes received.  ``host`` spreads this host's fetches over the window."""
        self.state_dir = state_dir
        self.transport = transport
        self.clock = clock
        self.timing = timing
        self.counted = counted
        self.host = host
        self._entries: dict[str, _Entry] = {}
        self._loaded = False
        # Whether anything changed since the file was read or written.
        self._changed = False

    # ---- verdicts ---------------------------------------------------------------------

    def view(self, url: str, serial: int, now: datetime) -> CrlView:
        """What the CRL at ``url`` says of ``serial`` at ``now`` (no network)."""
        self.load()
        entry = self._entries.get(url)
        if entry is None:
            return CrlView(url)
        error = entry.last_error
        if entry.this_update is None or entry.next_update is None or serial not in entry.serials:
            return CrlView(url, last_error=error)
        if now >= entry.next_update:
            stale = f"{url}: the CRL held expired at its nextUpdate {iso(entry.next_update)}"
            return CrlView(url, last_error=error or stale)
        listed = entry.revoked.get(serial)
        return CrlView(
            url,
            revocation.REVOKED if listed else revocation.GOOD,
            entry.this_update,
            entry.next_update,
            listed.revoked_at if listed else None,
            listed.reason if listed else None,
            error,
            entry.evidence if listed else None,
        )

    def next_check(self, urls: Iterable[str]) -> datetime | None:
        """The earliest moment one of ``urls`` is due (None: none is known)."""
        times = [e.next_check for u in urls if (e := self._entries.get(u)) and e.next_check]
        return min(times, default=None)

    # ---- fetching ---------------------------------------------------------------------

    async def refresh(self, wants: Mapping[str, Want], *, force: bool, concurrency: int) -> None:
        """Fetch each wanted CRL that is due (every one with ``force``, conditionally
        where what is held covers it), at most ``concurrency`` at a time."""
        self.load()
        now = self.clock()
        due = [w for w in wants.values() if force or self._due(w, now)]
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(want: Want) -> None:
            async with limit:
                await self._fetch(want)
                self._changed = True

        await asyncio.gather(*(one(w) for w in due))

    def _due(self, want: Want, now: datetime) -> bool:
        entry = self._entries.get(want.url)
        if entry is None or not entry.holds(want, _digest(want.issuer)):
            # Something new to look up: at once, unless this URL is failing.
            return entry is None or entry.failures == 0 or _passed(entry.next_check, now)
        return _passed(entry.next_check, now)

    async def _fetch(self, want: Want) -> None:
        url, issuer = want.url, _digest(want.issuer)
        entry = self._entries.get(url)
        held = entry if entry is not None and entry.holds(want, issuer) else None
        now = self.clock()
        try:
            if self.transport is None:
                raise StapledError(f"{url}: no network in this mode")
            reply = await self.transport.fetch(
                "GET",
                url,
                None,
                max_size=MAX_BYTES,
                validators=held.validators if held is not None else None,
            )
            if reply.status == 304:
                assert held is not None  # only a conditional request is answered 304
                self.counted("not_modified", 0)
                self._unchanged(url, held, now, "not modified")
                return
            self.counted("success", len(reply.body))
            checked = crl.check(reply.body, url, want.issuer, want.serials, now)
        except StapledError as e:
            self.counted("failure", 0)
            self._failed(url, want, issuer, entry, str(e), now)
            return
        if (
            held is not None
            and held.this_update is not None
            and checked.this_update < held.this_update
        ):
            # An older list than the one held (a lagging mirror): it decides nothing.
            self._unchanged(url, held, now, "an older list than the one held")
            return
        evidence = self._keep_evidence(url, reply.body if checked.revoked else None)
        self._entries[url] = _Entry(
            issuer,
            want.serials,
            checked.this_update,
            checked.next_update,
            dict(checked.revoked),
            reply.validators,
            next_check=self._refresh_time(url, checked.this_update, checked.next_update, now),
            evidence=evidence,
        )

    def _unchanged(self, url: str, held: _Entry, now: datetime, answer: str) -> None:
        """Nothing newer than what is held: look again later in its window."""
        assert held.next_update is not None
        if now >= held.next_update:
            reason = f"{url}: {answer}, and the nextUpdate {iso(held.next_update)} has passed"
            held.last_error, held.failures = reason, held.failures + 1
            held.next_check = now + self._retry(held.failures)
            return
        floor = timedelta(seconds=self.timing.min_refresh_interval)
        held.last_error, held.failures = None, 0
        held.next_check = revocation.recheck_time(now, held.next_update, floor)

    def _failed(
        self,
        url: str,
        want: Want,
        issuer: str,
        entry: _Entry | None,
        reason: str,
        now: datetime,
    ) -> None:
        if entry is None or entry.issuer != issuer:
            entry = self._entries[url] = _Entry(issuer, frozenset())
        entry.last_error, entry.failures = reason, entry.failures + 1
        entry.next_check = now + self._retry(entry.failures)
        held = f"the verdict held stands until {iso(entry.next_update)}"
        log.warning("CRL not refreshed: %s; %s", reason, held if entry.this_update else "none held")

    def _retry(self, failures: int) -> timedelta:
        t = self.timing
        wait = min(t.retry_max, t.retry_min * 2 ** min(failures - 1, 20))
        return timedelta(seconds=max(wait, t.min_refresh_interval))

    def _refresh_time(
        self, url: str, this_update: datetime, next_update: datetime, now: datetime
    ) -> datetime:
        jitter = revocation.jitter(url, self.host)
        due = revocation.refresh_time(this_update, next_update, self.timing.refresh_at, jitter)
        if due > now:
            return due
        # Fetched late in its window: the CA has not published a newer one yet.
        floor = timedelta(seconds=self.timing.min_refresh_interval)
        return revocation.recheck_time(now, next_update, floor)

    def _keep_evidence(self, url: str, body: bytes | None) -> str | None:
        """Keep the DER of a CRL that lists a certificate asked about; a failure is
        logged (the verdict stands without it)."""
        path = self.state_dir / EVIDENCE_DIR / (_url_digest(url) + ".crl")
        try:
            if body is None:
                path.unlink(missing_ok=True)
                return None
            store.prepare_dir(path.parent)
            # As received; a PEM one (no distribution point should serve it) as its DER.
            der = body if body[:1] == b"\x30" else crl.parse(body).public_bytes(Encoding.DER)
            store.write_atomic(path, der, mode=0o644)
        except (OSError, StoreError, ValueError) as e:
            log.warning("%s: the revoking CRL could not be kept in %s: %s", url, path, e)
            return None
        return str(path)

    # ---- what is kept -----------------------------------------------------------------

    def keep_only(self, urls: Iterable[str]) -> None:
        """Forget the CRLs no certificate names any more (and their evidence)."""
        wanted = set(urls)
        for url in [u for u in self._entries if u not in wanted]:
            self._changed = True
            entry = self._entries.pop(url)
            if entry.evidence:
                Path(entry.evidence).unlink(missing_ok=True)

    def load(self) -> None:
        """What earlier runs kept (once); a damaged file is as good as none."""
        if self._loaded:
            return
        self._loaded = True
        path = self.state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as e:
            log.warning("%s: ignored, the CRLs are fetched again: %s", path, e)
            return
        found = data.get("crls") if isinstance(data, dict) else None
        for url, raw in (found or {}).items() if isinstance(found, dict) else ():
            try:
                self._entries[url] = _entry_from(raw)
            except (TypeError, ValueError, KeyError, AttributeError):
                continue  # that one is fetched again

    def save(self) -> None:
        """Write what changed.  Raises StoreError when the state directory is unusable."""
        if not self._changed:
            return
        data = {"version": 1, "crls": {u: _entry_to(e) for u, e in sorted(self._entries.items())}}
        store.prepare_dir(self.state_dir)
        text = json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"
        store.write_atomic(self.state_dir / STATE_FILE, text.encode(), mode=0o600)
        self._changed = False


def _passed(when: datetime | None, now: datetime) -> bool:
    return when is None or now >= when


def _digest(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def _entry_to(e: _Entry) -> dict[str, Any]:
    return {
        "issuer": e.issuer,
        "serials": sorted(format(s, "X") for s in e.serials),
        "this_update": iso(e.this_update) if e.this_update else None,
        "next_update": iso(e.next_update) if e.next_update else None,
        "revoked": {
            format(s, "X"): [iso(r.revoked_at), r.reason] for s, r in sorted(e.revoked.items())
        },
        "etag": e.validators.etag,
        "last_modified": e.validators.last_modified,
        "last_error": e.last_error,
        "failures": e.failures,
        "next_check": iso(e.next_check) if e.next_check else None,
        "evidence": e.evidence,
    }


def _entry_from(raw: dict[str, Any]) -> _Entry:
    """Raises TypeError, ValueError or KeyError for an entry not written by _entry_to."""
    revoked = {}
    for serial, (when, reason) in raw["revoked"].items():
        at = parse_iso(when)
        if at is None or not isinstance(reason, str):
            raise ValueError(serial)
        revoked[int(serial, 16)] = Revoked(at, reason)
    entry = _Entry(
        str(raw["issuer"]),
        frozenset(int(s, 16) for s in raw["serials"]),
        parse_iso(raw["this_update"]),
        parse_iso(raw["next_update"]),
        revoked,
        Validators(_text(raw.get("etag")), _text(raw.get("last_modified"))),
        _text(raw.get("last_error")),
        int(raw.get("failures", 0)),
        parse_iso(raw.get("next_check")),
        _text(raw.get("evidence")),
    )
    if (entry.this_update is None) != (entry.next_update is None):
        raise ValueError("half a window")
    return entry


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(value)
