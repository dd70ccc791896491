"""One pass over every certificate: scan -> issuers -> on disk -> plan -> fetch ->
publish -> servers -> state.  Orchestration only: the decisions are in ``core.plan``, the
I/O in ``files``, ``fetch``, ``issuers`` and ``servers``.

``once`` runs a pass on an event loop of its own; the daemon runs ``refresh`` for one
certificate at a time on its one loop.  The clock and the network are parameters.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__, report
from .config import Config
from .core import plan, policy
from .core.certs import CertChain
from .core.fleet import digest
from .core.model import Fetched, Found, Owed, PassResult, Record
from .core.ocsp import Staple
from .core.origins import Origins
from .core.policy import State
from .core.times import Clock
from .core.validated import Validated
from .errors import MissingInputError, StapledError
from .fetch import Fetcher, each
from .files import discovery, parsed, state, store
from .files.lock import WAIT_SECONDS, DirectoryLock
from .files.publish import Publisher, Seen
from .fleet.share import Fleet
from .issuers import Issuers
from .net import client
from .net.client import Transport
from .observe import textfile
from .observe.tally import Tally
from .revocations import Revocations
from .servers import Pusher, Reloader, Servers, haproxy_set_ocsp, run_command

log = logging.getLogger("stapled")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Checked:
    """One certificate before its fetch: the staple on disk and whether it is due."""

    members: list[Found]
    chain: CertChain
    force: bool
    now: datetime
    current: Staple | None = None
    seen: Seen = field(default_factory=dict)
    # Whether a fetch is needed; always, while the issuer is still to be fetched.
    due: bool = True


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
        new_batch: Callable[[], store.Batch] = store.Batch,
        lock_wait: float = WAIT_SECONDS,
        fleet: Fleet | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.config = config
        self.new_batch = new_batch
        self.transport = transport
        self.clock = clock
        # What happened, for the metrics (kept whether or not they are exported); a
        # reloaded daemon hands its own on, so counters never restart.
        self.tally = tally if tally is not None else Tally()
        self.fetcher = Fetcher(
            transport,
            hash_name=config.cert_id_hash,
            per_host=config.per_host,
            clock=clock,
            timed=self.tally.timed,
        )
        self.issuers = Issuers(config.state_path / "issuers", transport, clock)
        self.validated = Validated()
        self.publisher = Publisher(
            config.output_dir, nginx_snippets=config.nginx_snippets, validated=self.validated
        )
        self.servers = Servers(config, clock, reloader=reloader, pusher=pusher)
        self._lock = DirectoryLock(config.state_path, lock_wait)
        # What earlier scans read: a rescan reads and parses only the files that changed;
        # the first scan takes what an earlier process parsed from the state directory.
        self._discovered = discovery.Cache(earlier=parsed.Parsed.load(config.state_path))
        # ``[fleet]``: staples shared through a store (None: this host alone).
        self.fleet = fleet if fleet is not None else Fleet.of(config, clock, self._rejected)
        # The certificates of the last scan by fingerprint (metrics name them).
        self._groups: dict[str, list[Found]] = {}
        self.sources = Origins()
        self.found: list[Found] = []
        self.revocations = Revocations.of(
            config, transport, clock, self.issuers, self.tally.crl_fetched
        )

    # ---- the pass -------------------------------------------------------------------

    def once(self, *, force: bool = False, only: Path | None = None) -> PassResult:
        """Refresh whatever is due (everything with ``force``); write, then reload once.

        ``only`` limits the pass to certificates found at or below that path (a certbot
        deploy hook's ``$RENEWED_LINEAGE``); what is recorded of the others is kept.
        Raises StoreError when the output directory is unusable (nothing is written).
        """
        run = client.run if self.transport is None else self.transport.run
        result = run(self._once(force, only))
        up = self.fleet.store.connected if self.fleet is not None else None
        wanted = self.config.metrics
        path = wanted.textfile if wanted is not None else None
        textfile.write(path, __version__, self.tally, result, up)
        return result

    async def _once(self, force: bool, only: Path | None) -> PassResult:
        try:
            return await self.run_pass(force=force, only=only)
        finally:
            await self.close()

    def remember(self, entries: dict[str, dict[str, Any]]) -> None:
        """What the state file says of the staples held: where each came from, and what
        validating it found."""
        self.sources.update(state.sources(entries))
        self.validated.add(state.validated(entries))

    def writing(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while writing into the output or state directory: one writer at a time
        (another pass, the daemon or certbot's hook wait for it)."""
        return self._lock.held()

    async def run_pass(
        self, *, force: bool = False, only: Path | None = None, log_records: bool = True
    ) -> PassResult:
        """:meth:`once` on the running event loop.  ``log_records=False`` leaves the line
        of each certificate to the caller (the daemon logs it once it is scheduled)."""
        self.prepare()
        async with self.writing():
            result = await self._locked_pass(force, only, log_records)
        # Outside the lock: the command may renew, and certbot's hook then runs a pass.
        await self.revocations.act(result.records, result.crl)
        return result

    async def _locked_pass(self, force: bool, only: Path | None, log_records: bool) -> PassResult:
        saved = state.load(self.config.state_path)
        self.remember(state.entries(saved))
        records, groups = self.scan()
        if only is not None:
            records, groups = discovery.below(records, groups, only)
            if not records and not groups:
                raise MissingInputError(
                    str(only), "no certificate of the configuration is at or below this path"
                )
        self._remove_leftovers(groups)
        batch = self.new_batch()
        try:
            self.publish_snippets(records, batch)
            due: list[_Checked] = []
            fresh: list[_Checked] = []
            for members in groups.values():
                try:
                    checked = self._check(members, force)
                    (due if checked.due else fresh).append(checked)
                except Exception as e:  # the per-certificate boundary: a bug stays here
                    records.extend(_internal_error(members, e))
            shared = {}
            if self.fleet is not None:
                shared = await self.fleet.reconcile_all((c.chain, c.current) for c in fresh)
            for checked in fresh:
                try:
                    adopted = shared.get(checked.chain.fingerprint)
                    records.extend(self._complete(checked, adopted, batch))
                except Exception as e:  # the per-certificate boundary: a bug stays here
                    records.extend(_internal_error(checked.members, e))
            workers = self.fetcher.workers((c.chain for c in due), self.config.concurrency)
            async for _, done in each(due, lambda c: self._finish(c, batch), workers):
                records.extend(done)
        finally:
            # Every staple of the pass is in place, durably, before any server is told.
            batch.flush()
        result = PassResult(sorted(records, key=lambda r: r.name), self.clock(), groups=groups)
        result.changed = [r.name for r in result.records if r.changed]
        result.due = plan.due(result.records, self.config.refresh_at)
        names = {r.name for r in result.records} if only is not None else None
        result.crl = await self.revocations.check(self.found, result.now, force=force, only=names)
        if log_records:
            report.log_records(result.records, result.due)
        self._deliver(result, saved, only)
        return result

    def _deliver(self, result: PassResult, saved: dict[str, Any], only: Path | None) -> None:
        """Tell the servers, then record the state (with whatever is still owed)."""
        # What an earlier pass could not deliver is owed even when nothing changed since:
        # the server has not picked up the staples written then.
        earlier = state.owed(saved)
        changed = Owed(
            bool(result.changed), frozenset(r.name for r in result.records if r.haproxy_changed)
        )
        if earlier.reload and not result.changed and self.servers.can_reload:
            log.info("retrying the reload that failed in an earlier pass")
        delivered = self.servers.deliver(earlier | changed, result.records)
        if delivered.reloaded:
            self.tally.reloaded(delivered.reload_error is None)
        result.owed = delivered.owed
        failed = delivered.owed.push & {r.name for r in result.records}
        push_error = f"HAProxy was not updated for {', '.join(sorted(failed))}" if failed else None
        errors = (delivered.reload_error, push_error)
        result.reload_error = "; ".join(e for e in errors if e) or None
        state.save(
            self.config.state_path,
            result.records,
            owed=delivered.owed,
            due=result.due,
            others=state.entries(saved) if only is not None else None,
            texts=self.validated.texts,
            earlier=saved,
        )
        self.validated.written()
        self.keep_parsed()

    def keep_parsed(self) -> None:
        """What the scans parsed, for the next process; written only when it changed."""
        discovery.keep(self._discovered, self.config.state_path)

    def prepare(self) -> None:
        """Make sure the output directory is usable.  Raises StoreError when it is not."""
        store.prepare_dir(self.config.output_dir)

    def _remove_leftovers(self, groups: dict[str, list[Found]]) -> None:
        """An interrupted run's temporary files, in the output directory and beside
        HAProxy's certificates; only with the lock held (another writer's are in flight
        otherwise)."""
        out = self.config.output_dir
        if removed := store.remove_temp_files(out):
            log.info("removed %d temporary file(s) left by an interrupted run in %s", removed, out)
        dirs = {Path(f.path).parent for members in groups.values() for f in members if f.haproxy}
        for directory in sorted(dirs):
            store.remove_temp_files(directory)

    def scan(
        self, changed: AbstractSet[str] | None = None
    ) -> tuple[list[Record], dict[str, list[Found]]]:
        """Find every certificate: records for those needing no fetch, the rest grouped.
        ``changed``: the paths seen changing since the last scan (discovery.discover)."""
        found = self.found = discovery.discover(self.config.certificates, self._discovered, changed)
        records, groups = plan.classify(found, self.clock())
        self._groups = groups
        return records, groups

    def publish_snippets(self, records: list[Record], batch: store.Batch | None = None) -> None:
        """Publish what is known of certificates that need no fetch (their snippets)."""
        for rec in records:
            self.publisher.snippet(rec, batch)

    # ---- one certificate --------------------------------------------------------------

    async def refresh(self, members: list[Found], *, force: bool = False) -> list[Record]:
        """Refresh one certificate (all names it is found under) if due, or if ``force``.

        For the daemon's jobs: the fetch runs unlocked, then, holding the directory's lock,
        what is on disk is read again and the answer written (each file made durable at
        once).  So a pass or another process that wrote meanwhile is never undone.
        """
        try:
            checked = self._check(members, force)
        except Exception as e:  # the per-certificate boundary: a bug stays here
            return _internal_error(members, e)
        return await self._finish(checked, None, locked=False)

    async def _finish(
        self, checked: _Checked, batch: store.Batch | None, *, locked: bool = True
    ) -> list[Record]:
        """Fetch the issuer if needed, then the staple if due, and publish the result.

        ``locked``: the caller holds the directory's lock (a pass); else it is taken here
        for the write.
        """
        try:
            if checked.chain.issuer is None:
                try:
                    await self.issuers.fetch(checked.chain)
                except StapledError as e:
                    return [
                        self.publisher.failed(m, str(e), None, State.ERROR, batch)
                        for m in checked.members
                    ]
                checked = self._check(checked.members, checked.force)
            fetched = await self._obtain(checked) if checked.due else None
            if locked:
                return self._complete(checked, fetched, batch)
            try:
                async with self.writing():
                    return self._complete_afresh(checked, fetched)
            except StapledError as e:
                # The lock or the state directory: nothing was written; try again later.
                records = [self.publisher.record(m, checked.current) for m in checked.members]
                for rec in records:
                    rec.failed(str(e))
                return records
        except Exception as e:  # the per-certificate boundary: a bug stays here
            return _internal_error(checked.members, e)

    async def _obtain(self, checked: _Checked) -> Fetched:
        """A due certificate's new staple: from the fleet when there is one, else the CA."""

        async def fetch(chain: CertChain) -> Fetched:
            fetched = await self.fetcher.fetch(chain)
            self.tally.fetched([m.name for m in checked.members], fetched.staple is not None)
            return fetched

        def on_disk() -> Staple | None:  # adopted from another host meanwhile, perhaps
            return self._check(checked.members, force=False).current

        if self.fleet is None:
            return await fetch(checked.chain)
        return await self.fleet.obtain(checked.chain, checked.current, fetch, on_disk)

    def _rejected(self, fingerprint: str, reason: str) -> None:
        members = self._groups.get(fingerprint)
        for name in [m.name for m in members] if members else [fingerprint[:16]]:
            self.tally.rejected(name, reason)

    async def adopt(self, members: list[Found]) -> list[Record] | None:
        """For the daemon, when the fleet store changed for this certificate: its
        staple, validated and written if it wins over the one on disk; None when nothing
        changed here."""
        checked = self._check(members, force=False)
        if self.fleet is None or checked.chain.issuer is None:
            return None
        try:
            fetched = await self.fleet.reconcile(checked.chain, checked.current)
        except StapledError as e:
            log.debug("%s: %s", members[0].name, e)
            return None
        if fetched is None:
            return None
        async with self.writing():
            return self._complete_afresh(checked, fetched)

    def _complete_afresh(self, before: _Checked, fetched: Fetched | None) -> list[Record]:
        """Publish ``fetched`` against what is on disk now, not when the fetch began."""
        if changed := self._certificate_changed(before):
            records = [self.publisher.record(m, before.current) for m in before.members]
            for rec in records:
                rec.failed(f"{changed}: the certificate changed while its staple was fetched")
            return records
        # Not forced: whether another writer refreshed it meanwhile is the question.
        now = self._check(before.members, force=False)
        answer = fetched.staple if fetched is not None else None
        if plan.keep_theirs(before.current, now.current, now.due, answer):
            fetched = None
        return self._complete(now, fetched, None)

    def _certificate_changed(self, checked: _Checked) -> str | None:
        """The path of a name whose certificate file no longer holds this certificate."""
        for member in checked.members:
            if discovery.leaf_fingerprint(member.path) != checked.chain.fingerprint:
                return member.path
        return None

    def on_disk(self, members: list[Found], now: datetime) -> tuple[CertChain, Staple | None]:
        """A certificate's chain and its newest valid staple on disk (no network).
        Raises StapledError when the chain's issuer is still to be fetched."""
        chain = self.chain_of(members)
        return chain, self.publisher.current(members, now, chain)

    def record_of(self, member: Found, current: Staple | None) -> Record:
        """The record of one name of a certificate holding ``current``."""
        return self.publisher.record(member, current)

    async def close(self) -> None:
        """Close what this configuration opened on the running loop (the fleet store)."""
        if self.fleet is not None:
            await self.fleet.store.close()

    def chain_of(self, members: list[Found]) -> CertChain:
        """A certificate's chain, with its issuer when known (from a bundle, the
        configuration or the caIssuers cache).  Raises StapledError when it is to be
        fetched first."""
        return self.issuers.known(plan.best_chain(members))

    def _check(self, members: list[Found], force: bool) -> _Checked:
        """What is on disk for one certificate, and whether it is due: no network."""
        checked = _Checked(members, plan.best_chain(members), force, self.clock())
        try:
            checked.chain = chain = self.issuers.known(checked.chain)
        except StapledError:
            return checked  # due: the issuer is fetched first
        checked.current = self.publisher.current(members, checked.now, chain, checked.seen)
        checked.due = policy.needs_refresh(
            checked.current, checked.now, self.config.refresh_at, force=force
        )
        return checked

    def _complete(
        self, checked: _Checked, fetched: Fetched | None, batch: store.Batch | None
    ) -> list[Record]:
        """Publish what the fetch (if there was one) gave, for every name of the certificate."""
        settled = plan.settle(checked.current, fetched)
        taken = fetched is not None and settled.current is fetched.staple is not None
        if taken:
            assert fetched is not None and fetched.staple is not None
            key = digest(fetched.staple.der)  # one string keys it in both tables
            self.sources.note(key, fetched.source)
            self.validated.note(fetched.staple, key)
        records = []
        for member in checked.members:
            rec = self.publisher.publish(
                member,
                settled.current,
                checked.now,
                checked.chain,
                unknown=settled.unknown,
                batch=batch,
                existing=checked.seen.get(member.name, store.UNREAD),
            )
            if settled.error and not rec.failed_now:
                rec.failed(settled.error)
            if fetched is not None:
                rec.retry_after, rec.max_age = fetched.retry_after, fetched.max_age
            rec.source = self.sources.of(rec.current)
            if taken:
                self.tally.refreshed(member.name, checked.now.timestamp())
            if rec.changed and rec.source is not None:
                self.tally.updated(member.name, rec.source)
            records.append(rec)
        return records


def _internal_error(members: list[Found], error: Exception) -> list[Record]:
    log.debug("refreshing %s failed", members[0].name, exc_info=error)
    return plan.internal_error(members, error)
