"""One pass over every certificate: find, decide, fetch, validate, write, reload.

This is the wiring between the pure core (certs, ocsp, policy) and the shell modules
(discovery, transport, store, reload); ``once`` runs it a single time and the daemon
reuses it per certificate.  The clock and the transport are parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import certs, discovery, ocsp, policy, snippet, store
from .certs import CertChain
from .config import Config
from .discovery import Found
from .errors import (
    CertificateError,
    FetchError,
    InvalidResponseError,
    OCSPStatusError,
    ReloadError,
    StapledError,
    StoreError,
)
from .ocsp import CertID, CertStatus, Staple
from .policy import Severity, State
from .reload import haproxy_set_ocsp, run_command
from .transport import Transport

log = logging.getLogger("stapled")

Clock = Callable[[], datetime]
_T = TypeVar("_T")
Reloader = Callable[[Sequence[str], float, str], str]
Pusher = Callable[[str, bytes, float], bool]
# What a fetch holds while it asks a responder: the per_host bound for that URL's host.
_Slot = Callable[[str], contextlib.AbstractAsyncContextManager[Any]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Record:
    """Everything ``status`` shows about one certificate."""

    name: str
    path: str
    state: State
    serial: str | None = None
    ocsp_url: str | None = None
    staple: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    next_refresh: datetime | None = None
    last_error: str | None = None
    must_staple: bool = False
    next_retry: datetime | None = None
    changed: bool = False
    # True when this pass (not an earlier one) failed to refresh it.
    failed_now: bool = False
    # The valid staple on disk, and what the responder said about caching, for scheduling.
    current: Staple | None = field(default=None, repr=False)
    fingerprint: str | None = None
    retry_after: float | None = None
    max_age: float | None = None
    # Where HAProxy reads this certificate's staple, and whether this pass rewrote it.
    haproxy_staple: str | None = None
    haproxy_changed: bool = False
    # The CertIDs clients may ask about (the local responder's index).
    cert_ids: frozenset[CertID] = field(default_factory=frozenset, repr=False)

    def severity(self, now: datetime, *, aging: bool = True) -> Severity:
        def past(fraction: float) -> bool:
            return (
                aging
                and self.this_update is not None
                and self.next_update is not None
                and policy.is_aging(self.this_update, self.next_update, now, fraction)
            )

        return policy.severity(
            self.state,
            failing=self.last_error is not None,
            aging=past(policy.AGING_FRACTION),
            has_ocsp=self.ocsp_url is not None,
            must_staple=self.must_staple,
            early_aging=past(policy.MUST_STAPLE_WARNING_FRACTION),
        )


@dataclass
class PassResult:
    records: list[Record]
    now: datetime
    reload_error: str | None = None
    changed: list[str] = field(default_factory=list)
    # The certificates that have an OCSP URL, by fingerprint (for the daemon's schedule).
    groups: dict[str, list[Found]] = field(default_factory=dict)
    # The reload (or the configuration test before it) failed: it is owed.
    reload_failed: bool = False
    # Names whose new staple HAProxy did not take over its admin socket.
    haproxy_failed: set[str] = field(default_factory=set)

    def exit_code(self) -> int:
        """0 all good; 1 some refresh or the reload failed, staples still valid; 2 worse."""
        worst = max((r.severity(self.now, aging=False) for r in self.records), default=Severity.OK)
        if worst is Severity.CRITICAL:
            return 2
        if self.reload_error or any(r.failed_now for r in self.records):
            return 1
        return 0


class Stapler:
    """Runs passes for one configuration.  ``transport=None`` means: no network at all."""

    def __init__(
        self,
        config: Config,
        *,
        transport: Transport | None = None,
        clock: Clock = utc_now,
        reloader: Reloader = run_command,
        pusher: Pusher = haproxy_set_ocsp,
    ) -> None:
        self.config = config
        self.transport = transport
        self.clock = clock
        self.reloader = reloader
        self.pusher = pusher
        self.hash = ocsp.hash_algorithm(config.cert_id_hash)
        self._host_limits: dict[str, threading.BoundedSemaphore] = {}
        self._issuers: dict[str, x509.Certificate | str] = {}
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._lock = threading.Lock()
        # The writes of the pass running on this thread, made durable together (see
        # store.Batch); the daemon's refreshes, in other threads, write each file at once.
        self._pass = threading.local()
        # What earlier scans read: a rescan reads and parses only the files that changed.
        self._discovered = discovery.Cache()

    # ---- the pass -------------------------------------------------------------------

    def once(self, *, force: bool = False, only: Path | None = None) -> PassResult:
        """Refresh whatever is due (everything with ``force``); write, then reload once.

        ``only`` limits the pass to certificates found at or below that path (a certbot
        deploy hook's ``$RENEWED_LINEAGE``); what is recorded of the others is kept.
        Raises StoreError when the output directory is unusable (nothing is written).
        """
        self.prepare()
        saved = store.load_state(self.config.state_path)
        records, groups = self.scan()
        if only is not None:
            records, groups = _limited(records, groups, only)
        self.remove_temp_files(groups)
        self._pass.batch = batch = store.Batch()
        try:
            self.settle(records)
            due: list[_Checked] = []
            for members in groups.values():
                checked = self._guarded(members, partial(self._check, members, force))
                if isinstance(checked, list):
                    records.extend(checked)
                elif checked.due:
                    due.append(checked)
                else:
                    records.extend(
                        self._guarded(members, partial(self._complete, checked, _Fetched()))
                    )
            if due:
                records.extend(self._complete_all(due))
        finally:
            # Every staple of the pass is in place, durably, before any server is told.
            self._pass.batch = None
            batch.flush()
        result = PassResult(sorted(records, key=lambda r: r.name), self.clock(), groups=groups)
        result.changed = [r.name for r in result.records if r.changed]
        for record in result.records:
            log_record(record)
        # A reload that failed last time is owed even when nothing changed since: the
        # server has not picked up the staples written then.
        owed = bool(saved.get("reload_pending"))
        reload_error = None
        if self.can_reload and (result.changed or owed):
            if owed and not result.changed:
                log.info("retrying the reload that failed in an earlier pass")
            reload_error = self.reload()
        # HAProxy updates that failed last time are owed the same way.
        push_owed = _names(saved.get("haproxy_pending"))
        failed = self.push([r for r in result.records if r.haproxy_changed or r.name in push_owed])
        result.reload_failed, result.haproxy_failed = reload_error is not None, failed
        push_error = f"HAProxy was not updated for {', '.join(sorted(failed))}" if failed else None
        result.reload_error = "; ".join(e for e in (reload_error, push_error) if e) or None
        self.save_state(
            result.records,
            reload_pending=reload_error is not None,
            haproxy_pending=failed | (push_owed - {r.name for r in result.records}),
            others=_entries(saved) if only is not None else None,
        )
        return result

    def prepare(self) -> None:
        """Make sure the output directory is usable; clear an interrupted run's leftovers.

        Raises StoreError when the output directory is unusable.
        """
        out = self.config.output_dir
        store.prepare_dir(out)
        if removed := store.remove_temp_files(out):
            log.info("removed %d temporary file(s) left by an interrupted run in %s", removed, out)

    def remove_temp_files(self, groups: dict[str, list[Found]]) -> None:
        """Clear an interrupted write's leftovers beside HAProxy's certificates too."""
        dirs = {Path(f.path).parent for members in groups.values() for f in members if f.haproxy}
        for directory in sorted(dirs):
            store.remove_temp_files(directory)

    def scan(self) -> tuple[list[Record], dict[str, list[Found]]]:
        """Find every certificate: records for those needing no fetch, the rest grouped."""
        return self._classify(discovery.discover(self.config.certificates, self._discovered))

    def settle(self, records: list[Record]) -> None:
        """Publish what is known of certificates that need no fetch (their snippets)."""
        for rec in records:
            self._write_snippet(rec)

    def status(self) -> PassResult:
        """The same records without any network request or write."""
        saved = _entries(store.load_state(self.config.state_path))
        records, groups = self.scan()
        now = self.clock()
        for members in groups.values():
            current = self._current(members, now)
            for member in members:
                rec = self._record(member, current)
                entry = saved.get(member.name, {})
                rec.last_error = entry.get("last_error")
                # The daemon's own schedule (with jitter) wins over the computed one.
                rec.next_refresh = _parse_time(entry.get("next_refresh")) or rec.next_refresh
                rec.next_retry = _parse_time(entry.get("next_retry"))
                records.append(rec)
        return PassResult(sorted(records, key=lambda r: r.name), now)

    def _classify(self, found: list[Found]) -> tuple[list[Record], dict[str, list[Found]]]:
        """Records for what needs no fetch; the rest grouped by certificate fingerprint.

        A certificate found in several places is one group: one request, every staple
        file written from it.
        """
        now = self.clock()
        records: list[Record] = []
        groups: dict[str, list[Found]] = defaultdict(list)
        for item in found:
            chain = item.chain
            if chain is None:
                records.append(Record(item.name, item.path, State.ERROR, last_error=item.error))
                continue
            base = Record(
                item.name,
                item.path,
                State.NO_OCSP,
                serial=chain.serial_hex,
                must_staple=chain.must_staple,
                ocsp_url=chain.ocsp_urls[0] if chain.ocsp_urls else None,
            )
            usable = tuple(u for u in chain.ocsp_urls if urlsplit(u).scheme in ("http", "https"))
            if not chain.ocsp_urls:
                records.append(base)
            elif not usable:
                base.state = State.ERROR
                base.last_error = (
                    f"the certificate's OCSP URL {chain.ocsp_urls[0]} is not http or https; "
                    "set ocsp_url for this source to use another responder"
                )
                records.append(base)
            elif chain.issuer is None and not chain.ca_issuers_urls:
                base.state = State.ERROR
                base.last_error = (
                    "the issuer certificate is not in the file, no issuer is configured, "
                    "and the certificate has no caIssuers URL"
                )
                records.append(base)
            elif now >= chain.not_after:
                base.state = State.EXPIRED
                base.last_error = f"the certificate expired on {_iso(chain.not_after)}"
                records.append(base)
            else:
                if usable != chain.ocsp_urls:
                    item = replace(item, chain=chain.with_ocsp_urls(usable))
                groups[chain.fingerprint].append(item)
        return records, groups

    def refresh(self, members: list[Found], *, force: bool = False) -> list[Record]:
        """Refresh one certificate (all names it is found under) if due, or if ``force``.

        For the daemon's jobs, which run in a few threads: this one waits for its fetch.
        """
        return self._guarded(members, partial(self._refresh, members, force))

    def _refresh(self, members: list[Found], force: bool) -> list[Record]:
        checked = self._issuer_fetched(self._check(members, force))
        if isinstance(checked, list):
            return checked
        fetched = _Fetched()
        if checked.due:
            fetched = self._run(self._fetch(checked.chain, self._thread_slot))
        return self._complete(checked, fetched)

    def _complete_all(self, due: list[_Checked]) -> list[Record]:
        """Fetch and write for every due certificate of a pass, all from one event loop.

        The fetches wait on the network together, on kept-alive connections; each answer
        is validated and written as it comes, in this thread.  No thread per fetch: at
        thousands of certificates the GIL hand-offs between fetch threads cost as much
        CPU as the fetches themselves.
        """
        records: list[Record] = []
        ready: list[_Checked] = []
        for checked in due:
            step = self._guarded(checked.members, partial(self._issuer_fetched, checked))
            if isinstance(step, list):
                records.extend(step)
            elif step.due:
                ready.append(step)
            else:
                done = self._guarded(step.members, partial(self._complete, step, _Fetched()))
                records.extend(done)
        if ready:
            records.extend(self._run(self._fetch_all(ready)))
        return records

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run fetches on an event loop of this thread's (the transport's, if any)."""
        return self.transport.run(coro) if self.transport is not None else asyncio.run(coro)

    async def _fetch_all(self, due: list[_Checked]) -> list[Record]:
        records: list[Record] = []
        todo = iter(due)  # shared by the workers: each takes the next certificate
        per_host: dict[str, asyncio.Semaphore] = {}

        def slot(url: str) -> asyncio.Semaphore:
            host = urlsplit(url).netloc
            if host not in per_host:
                per_host[host] = asyncio.Semaphore(self.config.per_host)
            return per_host[host]

        async def worker() -> None:
            for checked in todo:
                try:
                    fetched = await self._fetch(checked.chain, slot)
                except Exception as e:  # as in _guarded: a bug stays with its certificate
                    records.extend(_internal_error(checked.members, e))
                    continue
                done = self._guarded(checked.members, partial(self._complete, checked, fetched))
                records.extend(done)

        await asyncio.gather(*(worker() for _ in range(self._workers(due))))
        return records

    def _guarded(self, members: list[Found], step: Callable[[], _T]) -> _T | list[Record]:
        """The per-certificate boundary: whatever goes wrong stays with this certificate."""
        try:
            return step()
        except Exception as e:  # the broad except: a bug must not cost other staples
            return _internal_error(members, e)

    def _check(self, members: list[Found], force: bool) -> _Checked:
        """What is on disk for one certificate, and whether it is due: no network.

        A pass runs this for every certificate first, in one thread, and hands only the
        due ones to the pool of fetchers: a pass with nothing due (the usual case) is a
        loop of reads and signature checks, with no thread switch per certificate.
        """
        checked = _Checked(members, _best_chain(members), force, self.clock())
        try:
            checked.chain = chain = self._with_issuer(checked.chain, fetch=False)
        except StapledError:
            return checked  # due: the issuer is fetched first
        checked.current = self._current(members, checked.now, chain, checked.seen)
        checked.due = policy.needs_refresh(
            checked.current, checked.now, self.config.refresh_at, force=force
        )
        return checked

    def _issuer_fetched(self, checked: _Checked) -> _Checked | list[Record]:
        """``checked`` again once its issuer is fetched (caIssuers); records if it cannot be."""
        if checked.chain.issuer is not None:
            return checked
        try:
            self._with_issuer(checked.chain, fetch=True)  # kept for _check to find
        except StapledError as e:
            return [self._failed(m, str(e), None, State.ERROR) for m in checked.members]
        return self._check(checked.members, checked.force)

    def _complete(self, checked: _Checked, hints: _Fetched) -> list[Record]:
        """Write what the fetch (if there was one) gave, for the certificate and its names."""
        members, chain, now, seen = checked.members, checked.chain, checked.now, checked.seen
        current = checked.current
        error: str | None = None
        unknown = False
        if checked.due:
            fetched, url, error = hints.staple, hints.url, hints.error
            if fetched is not None and fetched.cert_status is CertStatus.UNKNOWN:
                error, unknown = f"{url}: the responder says the certificate is unknown", True
            elif fetched is not None and current is not None and fetched.is_older_than(current):
                error = (
                    f"{url}: response of {_iso(fetched.this_update)} is older than the staple "
                    "on disk; refused"
                )
            elif fetched is not None:
                current = fetched
        ids = ocsp.cert_ids(chain)
        records = []
        for member in members:
            existing = seen.get(member.name, store.UNREAD)
            rec = self._publish(member, current, now, chain, unknown=unknown, existing=existing)
            if error and not rec.failed_now:
                rec.last_error, rec.failed_now = error, True
            rec.retry_after, rec.max_age, rec.cert_ids = hints.retry_after, hints.max_age, ids
            records.append(rec)
        return records

    def _publish(
        self,
        member: Found,
        current: Staple | None,
        now: datetime,
        chain: CertChain,
        *,
        unknown: bool,
        existing: bytes | object | None = store.UNREAD,
    ) -> Record:
        """Write ``current`` everywhere this name's staple goes; the record of the result."""
        rec = self._record(member, current, unknown=unknown)
        if current is not None:
            try:
                rec.changed = self._write(
                    self._staple_path(member),
                    current.der,
                    existing=existing,
                    lost=partial(self._lost, rec, member, now, chain),
                )
            except StoreError as e:
                # Report what this name really has on disk, not what failed to land.
                rec = self._record(member, self._current([member], now, chain))
                rec.last_error, rec.failed_now = str(e), True
        haproxy = member.haproxy_staple
        if haproxy is not None and rec.current is not None:
            problem = rec.current.haproxy_problem
            if problem is not None:
                rec.last_error, rec.failed_now = f"{haproxy}: not written: {problem}", True
            else:
                try:
                    rec.haproxy_changed = self._write(
                        haproxy, rec.current.der, lost=partial(_note_lost, rec)
                    )
                except StoreError as e:
                    rec.last_error, rec.failed_now = str(e), True
                rec.changed |= rec.haproxy_changed
        self._write_snippet(rec)
        return rec

    def _write_snippet(self, rec: Record) -> None:
        """The nginx snippet for ``rec``: stapling on only while its staple is valid."""
        if not self.config.nginx_snippets:
            return
        valid = rec.current is not None and rec.state in (State.GOOD, State.REVOKED)
        text = snippet.render(rec.path, rec.staple if valid else None, rec.state)
        path = self.config.output_dir / f"{rec.name}{snippet.SUFFIX}"
        try:
            rec.changed |= self._write(path, text, lost=partial(_note_lost, rec))
        except StoreError as e:
            rec.last_error, rec.failed_now = str(e), True

    def _write(
        self,
        path: Path,
        data: bytes,
        *,
        existing: bytes | object | None = store.UNREAD,
        lost: Callable[[StoreError], None],
    ) -> bool:
        """Write a file of this pass's batch, or at once outside a pass."""
        batch: store.Batch | None = getattr(self._pass, "batch", None)
        if batch is None:
            return store.write_atomic(path, data, existing=existing)
        return batch.write(path, data, existing=existing, lost=lost)

    def _lost(
        self, rec: Record, member: Found, now: datetime, chain: CertChain, error: StoreError
    ) -> None:
        """A batched staple that did not land: the record tells what is on disk instead."""
        on_disk = self._record(member, self._current([member], now, chain))
        rec.state, rec.current = on_disk.state, on_disk.current
        rec.this_update, rec.next_update = on_disk.this_update, on_disk.next_update
        rec.next_refresh = on_disk.next_refresh
        _note_lost(rec, error)

    # ---- pieces -----------------------------------------------------------------------

    def _staple_path(self, item: Found) -> Path:
        return self.config.output_dir / f"{item.name}.der"

    def _record(self, item: Found, current: Staple | None, *, unknown: bool = False) -> Record:
        chain = item.chain
        assert chain is not None
        rec = Record(
            item.name,
            item.path,
            policy.state_of(current, unknown_answer=unknown),
            haproxy_staple=str(item.haproxy_staple) if item.haproxy_staple else None,
            fingerprint=chain.fingerprint,
            current=current,
            serial=chain.serial_hex,
            ocsp_url=chain.ocsp_urls[0],
            must_staple=chain.must_staple,
            staple=str(self._staple_path(item)),
        )
        if current is not None:
            rec.this_update, rec.next_update = current.this_update, current.next_update
            rec.next_refresh = policy.refresh_time(current, self.config.refresh_at)
        return rec

    def _failed(self, item: Found, error: str, current: Staple | None, state: State) -> Record:
        rec = self._record(item, current)
        rec.state, rec.last_error, rec.failed_now = state, error, True
        # Its snippet too: an nginx include must never name a missing file.
        self._write_snippet(rec)
        return rec

    def _current(
        self,
        members: list[Found],
        now: datetime,
        chain: CertChain | None = None,
        seen: dict[str, bytes | None] | None = None,
    ) -> Staple | None:
        """The newest valid staple already on disk under any of the certificate's names.

        ``seen`` collects what was read for each name (None: no file), so that writing
        the staple does not read it again.
        """
        chain = chain or _best_chain(members)
        if chain.issuer is None:
            try:
                chain = self._with_issuer(chain, fetch=False)
            except StapledError:
                return None
        best: Staple | None = None
        for member in members:
            try:
                der = store.read(self._staple_path(member))
            except StoreError:
                continue
            if seen is not None:
                seen[member.name] = der
            if der is None:
                continue
            try:
                staple = ocsp.validate(der, chain, now)
            except (InvalidResponseError, OCSPStatusError) as e:
                log.debug("%s: the staple on disk is not usable: %s", member.name, e)
                continue
            if staple.cert_status is CertStatus.UNKNOWN:
                continue
            if best is None or best.is_older_than(staple):
                best = staple
        return best

    async def _fetch(self, chain: CertChain, slot: _Slot) -> _Fetched:
        """Ask each responder in turn; the first valid answer wins, else all the errors.

        ``slot(url)`` is held while the responder is asked: the per_host bound.
        """
        if self.transport is None:
            return _Fetched(error="no network in this mode")
        request = ocsp.build_request(chain, self.hash)
        errors: list[str] = []
        retry_after: float | None = None
        for url in chain.ocsp_urls:
            http = ocsp.http_request(url, request)
            try:
                async with slot(url):
                    reply = await self.transport.fetch(http.method, http.url, http.body)
                if reply.content_type and reply.content_type != "application/ocsp-response":
                    log.debug("%s: unexpected Content-Type %r", url, reply.content_type)
                staple = ocsp.validate(reply.body, chain, self.clock())
            except (InvalidResponseError, OCSPStatusError) as e:
                errors.append(str(e.at(url)))
                continue
            except FetchError as e:
                # Name the responder, not the GET URL with the whole request in it.
                errors.append(f"{url}: {e.reason}" if e.url == http.url else str(e))
                if e.retry_after is not None:
                    retry_after = max(retry_after or 0.0, e.retry_after)
                continue
            return _Fetched(staple, url, max_age=reply.max_age)
        return _Fetched(error="; ".join(errors), retry_after=retry_after)

    def _workers(self, due: list[_Checked]) -> int:
        """Fetch workers for a pass: no more than ``per_host`` lets run for these hosts
        (more would only wait for a host's turn)."""
        hosts = {urlsplit(url).netloc for c in due for url in c.chain.ocsp_urls}
        usable = self.config.per_host * max(1, len(hosts))
        return max(1, min(self.config.concurrency, len(due), usable))

    @contextlib.asynccontextmanager
    async def _thread_slot(self, url: str) -> AsyncIterator[None]:
        """The per_host bound for the daemon's refreshes, which run in several threads.

        Waiting here blocks this thread's event loop, which has nothing else to run.
        """
        host = urlsplit(url).netloc
        with self._lock:
            if host not in self._host_limits:
                self._host_limits[host] = threading.BoundedSemaphore(self.config.per_host)
            limit = self._host_limits[host]
        with limit:
            yield

    def _with_issuer(self, chain: CertChain, *, fetch: bool) -> CertChain:
        """The chain with its issuer, from the AIA caIssuers URL when the files had none.

        Each URL is fetched once per process and cached on disk, so ``status`` (with
        ``fetch=False``) finds it without network.
        """
        if chain.issuer is not None:
            return chain
        if not chain.ca_issuers_urls:
            raise CertificateError(
                chain.path,
                "the issuer certificate is not in the file, no issuer is configured, and the "
                "certificate has no caIssuers URL",
            )
        reasons = []
        for url in chain.ca_issuers_urls:
            issuer = self._issuer_from(url, fetch=fetch)
            if isinstance(issuer, str):
                reasons.append(issuer)
            # Fetched over plain HTTP: the signature decides, not copied identifiers.
            elif certs.issued_by(chain.leaf, issuer):
                return chain.with_issuer(issuer)
            else:
                reasons.append(f"{url}: that certificate did not sign this one")
        raise CertificateError(chain.path, "cannot get the issuer: " + "; ".join(reasons))

    def _issuer_from(self, url: str, *, fetch: bool) -> x509.Certificate | str:
        with self._locks[url]:
            if url in self._issuers:
                return self._issuers[url]
            cache = (
                self.config.state_path
                / "issuers"
                / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".der")
            )
            try:
                data = store.read(cache)
                if data is not None:
                    self._issuers[url] = certs.parse_issuer_bytes(data, str(cache))
                    return self._issuers[url]
            except (StoreError, CertificateError):
                pass  # a damaged cache entry is fetched again
            if not fetch or self.transport is None:
                return f"{url}: not fetched yet"
            try:
                reply = self.transport.get(url)
                issuer = certs.parse_issuer_bytes(reply.body, url)
                store.prepare_dir(cache.parent)
                store.write_atomic(cache, issuer.public_bytes(Encoding.DER), mode=0o644)
            except StapledError as e:
                result: x509.Certificate | str = str(e)
            else:
                result = issuer
            self._issuers[url] = result
            return result

    def save_state(
        self,
        records: list[Record],
        *,
        reload_pending: bool,
        haproxy_pending: set[str] | None = None,
        daemon: dict[str, Any] | None = None,
        others: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Record what ``status`` cannot work out from disk: errors, schedule, owed reload.

        ``others`` are earlier entries kept as they are (for a pass over some certificates).
        """
        entries: dict[str, dict[str, Any]] = dict(others or {})
        for rec in records:
            entry: dict[str, Any] = {}
            if rec.last_error:
                entry["last_error"] = rec.last_error
            if rec.next_retry:
                entry["next_retry"] = _iso(rec.next_retry)
            if daemon is not None and rec.next_refresh:
                entry["next_refresh"] = _iso(rec.next_refresh)
            entries[rec.name] = entry
        state: dict[str, Any] = {
            "version": 1,
            "reload_pending": reload_pending,
            "haproxy_pending": sorted(haproxy_pending or ()),
            "certificates": entries,
        }
        if daemon is not None:
            state["daemon"] = daemon
        try:
            store.save_state(self.config.state_path, state)
        except StoreError as e:
            log.warning("cannot record state: %s", e)

    @property
    def can_reload(self) -> bool:
        return bool(self.config.reload_command or self.config.reload_request_file)

    def reload(self) -> str | None:
        """Ask for the web server to reload; the error message, or None when it worked.

        ``reload_request_file`` is rewritten atomically (a systemd path unit running as
        root can react to it, so stapled itself needs no privilege); ``reload_command``
        is run.  Either or both may be configured.
        """
        if error := self.config_test():
            return error
        request = self.config.reload_request_file
        if request is not None:
            try:
                # Full precision, so that two requests within a second still differ.
                store.write_atomic(request, f"{self.clock().isoformat()}\n".encode())
            except StoreError as e:
                log.error("cannot request a reload: %s", e)
                return str(e)
            log.info("reload requested through %s", request)
        argv = self.config.reload_command
        if argv:
            try:
                self.reloader(argv, self.config.reload_timeout, "reload command")
            except ReloadError as e:
                log.error("%s", e)
                return str(e)
            log.info("reloaded: %s", " ".join(argv))
        return None

    def config_test(self) -> str | None:
        """Run ``config_test_command``; its error (with the server's words), or None."""
        argv = self.config.config_test_command
        if not argv:
            return None
        try:
            self.reloader(argv, self.config.reload_timeout, "configuration test")
        except ReloadError as e:
            log.error("%s; not reloading", e)
            for line in e.output.strip().splitlines()[-20:]:
                log.error("  %s", line)
            return str(e)
        return None

    def push(self, records: list[Record]) -> set[str]:
        """Hand HAProxy each record's new staple over its admin socket; the names that failed.

        Without ``[haproxy] admin_socket`` nothing is pushed: HAProxy reads the .ocsp
        files when it next starts or reloads.
        """
        address = self.config.haproxy_socket
        failed: set[str] = set()
        if address is None:
            return failed
        for rec in records:
            staple = rec.current
            if rec.haproxy_staple is None or staple is None or staple.haproxy_problem:
                continue
            if not staple.valid_at(self.clock()):
                continue  # expired since it was written: HAProxy would refuse it anyway
            try:
                running = self.pusher(address, staple.der, self.config.reload_timeout)
            except ReloadError as e:
                log.error("%s: %s", rec.name, e)
                failed.add(rec.name)
                continue
            if not running:
                log.warning(
                    "nothing listens on HAProxy's admin socket %s (HAProxy not running?); "
                    "it reads the .ocsp files when it starts",
                    address,
                )
                break
            log.info("%s: HAProxy took the new staple (%s)", rec.name, address)
        return failed


def _entries(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-certificate entries of a state file, leaving out whatever is damaged."""
    entries = state.get("certificates")
    if not isinstance(entries, dict):
        return {}
    return {name: e for name, e in entries.items() if isinstance(e, dict)}


def _names(value: object) -> set[str]:
    """A list of names from the state file; anything damaged reads as none."""
    if not isinstance(value, list):
        return set()
    return {v for v in value if isinstance(v, str)}


def _limited(
    records: list[Record], groups: dict[str, list[Found]], only: Path
) -> tuple[list[Record], dict[str, list[Found]]]:
    """The records and groups found at or below ``only``."""
    top = only.resolve()

    def below(path: str) -> bool:
        resolved = Path(path).resolve()
        # A lineage's cert.pem resolves into archive/: its live/NAME directory counts too.
        return any(p == top or top in p.parents for p in (Path(path), resolved))

    kept = {fp: members for fp, members in groups.items() if any(below(m.path) for m in members)}
    return [r for r in records if below(r.path)], kept


def _best_chain(members: list[Found]) -> CertChain:
    """The same certificate may be found with and without its issuer: prefer with."""
    chains = [m.chain for m in members if m.chain is not None]
    return next((c for c in chains if c.issuer is not None), chains[0])


def log_record(rec: Record) -> None:
    """One line for one certificate, at the level its state deserves."""
    name = rec.name
    if rec.state is State.NO_OCSP:
        log.info("%s: no OCSP URL in the certificate; nothing to staple", name)
    elif rec.state is State.ERROR:
        log.error("%s: %s", name, rec.last_error)
    elif rec.state is State.EXPIRED:
        log.warning("%s: %s; not fetched", name, rec.last_error)
    elif rec.state is State.REVOKED:
        log.critical(
            "%s: certificate serial %s is REVOKED; the CA-signed revoked response is in %s",
            name,
            rec.serial,
            rec.staple,
        )
    elif rec.state in (State.MISSING, State.UNKNOWN):
        level = logging.CRITICAL if rec.must_staple else logging.ERROR
        log.log(
            level,
            "%s: no valid staple%s: %s",
            name,
            " for a must-staple certificate" if rec.must_staple else "",
            rec.last_error,
        )
    elif rec.failed_now:
        # Browsers refuse a must-staple certificate without a staple: say it louder.
        log.log(
            logging.ERROR if rec.must_staple else logging.WARNING,
            "%s: refresh failed, valid staple kept until %s%s: %s",
            name,
            _iso(rec.next_update),
            " (must-staple: browsers refuse the site without it)" if rec.must_staple else "",
            rec.last_error,
        )
    else:
        verb = "written" if rec.changed else "kept"
        log.info(
            "%s: good staple %s, valid until %s, refresh after %s",
            name,
            verb,
            _iso(rec.next_update),
            _iso(rec.next_refresh),
        )


@dataclass
class _Checked:
    """One certificate before its fetch: the staple on disk and whether it is due."""

    members: list[Found]
    chain: CertChain
    force: bool
    now: datetime
    current: Staple | None = None
    # What was read of each name's staple file (None: no file), so it is not read again.
    seen: dict[str, bytes | None] = field(default_factory=dict)
    # Whether a fetch is needed; always, while the issuer is still to be fetched.
    due: bool = True


@dataclass(frozen=True)
class _Fetched:
    """What asking the responders gave: a staple and where from, or why not."""

    staple: Staple | None = None
    url: str = ""
    error: str | None = None
    retry_after: float | None = None
    max_age: float | None = None


def _note_lost(rec: Record, error: StoreError) -> None:
    rec.last_error, rec.failed_now = str(error), True


def _internal_error(members: list[Found], error: Exception) -> list[Record]:
    """The records of a certificate whose refresh met a bug: an error, the rest goes on."""
    log.debug("refreshing %s failed", members[0].name, exc_info=error)
    reason = f"internal error ({type(error).__name__}: {error})"
    return [
        Record(m.name, m.path, State.ERROR, last_error=reason, failed_now=True) for m in members
    ]


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _iso(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"
