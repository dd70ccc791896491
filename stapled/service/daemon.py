"""``stapled run``: the long-running service, on one event loop.

After a first pass like ``once``, every certificate has one run pending at its next
refresh (or retry) time, all of them on one timeline (``jobs.Timeline``).  Runs are
coroutines on the same loop as every fetch, so refreshes share kept-alive connections
and the per-host limit.  A watcher rescans what changed, a periodic rescan of everything
is the safety net, and reloads are coalesced so that many staples changing together
cause one.  Reload commands and HAProxy pushes block, so they run in a worker thread
while the loop goes on.

Late jobs always run (see ``jobs``), and a short periodic tick makes the scheduler look
at the wall clock again: its waits are measured on a clock that stops during suspend.
Fleet mode lives in ``fleet_jobs``, metrics and probes in ``monitor_jobs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .. import config as config_module
from .. import report
from ..config import Config
from ..core import ocsp
from ..core.model import NOT_DUE, Due, Owed, PassResult, Record
from ..core.policy import State
from ..core.times import Clock, iso
from ..errors import ConfigError, StapledError, StoreError
from ..files import state, store
from ..net.client import Transport
from ..passes import Stapler, utc_now
from . import memory
from .book import Book
from .crl_jobs import CrlJobs
from .fleet_jobs import FleetJobs
from .jobs import Jobs, Timeline
from .monitor_jobs import MonitorJobs
from .responder import Index, Responder, next_responder, start_responder
from .schedule import next_run
from .sdnotify import Notifier
from .watcher import Changes, Watcher, roots_of

log = logging.getLogger("stapled")

TICK_SECONDS = 30.0
RELOAD_DELAY = 1.0
STATE_DELAY = 1.0
# While the first pass runs, systemd's start timeout is pushed this far ahead, again and
# again: a slow pass must not put the unit into a restart loop.
START_EXTENSION = 60.0


class Daemon:
    def __init__(
        self,
        config_path: Path,
        *,
        notifier: Notifier | None = None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self.config_path = config_path
        self.config: Config = config_module.load(config_path)
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self.transport = Transport(timeout=self.config.timeout, pool_size=self.config.concurrency)
        self.stapler = Stapler(self.config, transport=self.transport, clock=clock)
        self.watcher: Watcher | None = None
        self.book = Book()
        self.index = Index()
        self.responder: Responder | None = None
        self._stop = False
        self._hup = False
        # Paths the watcher saw change, each batch rescanned in turn.
        self.changes = Changes(self._rescan)
        self._pass: asyncio.Future[PassResult] | None = None
        self.fleet_jobs = FleetJobs(self)
        self.monitor = MonitorJobs(self)
        self.crl_jobs = CrlJobs(self)

    # ---- life cycle -------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 after a clean stop."""
        # Listen before the first pass, so a web server starting with us finds the port
        # (it is told "try again" until the first pass has filled the index).
        self.responder = self._start_responder(self.config)
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._wake = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._signal, signum)
        self.scheduler = Jobs(loop)
        self.refreshes = Timeline(self.scheduler, self._refresh_job, id="refresh")
        try:
            first = await self._first_pass()
            if first is None:
                return await self._shutdown(save=False)
            self.book.start(first.records, first.groups, first.owed, first.crl)
            for fingerprint in self.book.groups:
                records = self.book.records_of(fingerprint)
                self._schedule(fingerprint, records)
                self._index(fingerprint, records)
            # Logged once scheduled, so that each line gives the refresh time really set.
            report.log_records(first.records, self.book.due)
            del first  # the book holds what lasts; the pass's schedule would stay here
            self.index.ready = True
            tick = min(TICK_SECONDS, self.notifier.watchdog_interval or TICK_SECONDS)
            self.scheduler.every(tick, self._tick, id="tick")
            self.scheduler.every(self.config.rescan_interval, self._rescan, id="rescan")
            self.fleet_jobs.start()
            self.crl_jobs.schedule()
            self.monitor.start_metrics()
            self.monitor.start_probes()
            self.scheduler.start()
            self._start_watcher()
            await self._save_state()
            # What the first pass and the first state file needed only while they ran.
            memory.give_back()
            self.notifier.ready(self.summary())
            log.info("running: %s", self.summary())
            while not self._stop:
                await self._wake.wait()
                self._wake.clear()
                if self._hup and not self._stop:
                    self._hup = False
                    await self._reconfigure()
            return await self._shutdown()
        finally:
            await self.transport.close_idle()

    async def _first_pass(self) -> PassResult | None:
        """The first pass; None when SIGTERM or SIGINT ended it.

        Until READY=1 only the unit's start timeout bounds it, and a slow responder or
        thousands of certificates can take longer: systemd is told to extend it while the
        pass goes on, and what the pass is doing.  A stop signal cancels it at once; the
        staples already written stay, and nothing half-written does.
        """
        self._pass = asyncio.ensure_future(self.stapler.run_pass(log_records=False))
        keepalive = asyncio.ensure_future(self._extend_start())
        try:
            return await self._pass
        except asyncio.CancelledError:
            if not self._stop:
                raise
            log.info("stopped during the first pass")
            return None
        finally:
            keepalive.cancel()
            self._pass = None  # a done future would hold the whole pass's result

    async def _extend_start(self) -> None:
        while True:
            self.notifier.send(
                EXTEND_TIMEOUT_USEC=int(START_EXTENSION * 1e6),
                STATUS="first pass: fetching and checking staples",
            )
            await asyncio.sleep(START_EXTENSION / 3)

    def _signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop = True
            if self._pass is not None and not self._pass.done():
                self._pass.cancel()
        self._wake.set()

    async def _shutdown(self, *, save: bool = True) -> int:
        """Stop everything; ``save=False`` leaves the state file as the last run left it
        (the first pass was cut short and knows less than it)."""
        log.info("stopping")
        self.notifier.stopping()
        if self.watcher is not None:
            self.watcher.stop()
        self.fleet_jobs.stop()
        if self.monitor.metrics is not None:
            self.monitor.metrics.stop()
        # Jobs not started yet are dropped; a refresh waiting on the network is cancelled
        # (its files are written only after its fetch, in one step of the loop).
        self.scheduler.stop()
        self.refreshes.stop()
        self.changes.stop()
        if self.responder is not None:
            self.responder.stop()
        # Temporary files are left to the next pass, which removes them with the lock
        # held: another process's may be in flight now.
        if save:
            await self._save_state(stopped=True)
        await self.stapler.close()
        return 0

    async def _reconfigure(self) -> None:
        """SIGHUP: read the configuration again; a broken one is reported and not used."""
        self.notifier.reloading()
        responder: Responder | None = self.responder
        try:
            new = config_module.load(self.config_path)
            transport = Transport(timeout=new.timeout, pool_size=new.concurrency)
            stapler = Stapler(new, transport=transport, clock=self.clock, tally=self.stapler.tally)
            stapler.prepare()
            # New listeners start before the old ones stop; one that cannot refuses all.
            responder = self._next_responder(new)
            metrics = self.monitor.next_metrics(new)
        except (ConfigError, StoreError) as e:
            if responder is not None and responder is not self.responder:
                responder.stop()
            log.error("%s; keeping the configuration in use", e)
            self.notifier.ready(self.summary())
            return
        log.info("configuration re-read from %s", self.config_path)
        old_responder, old_transport = self.responder, self.transport
        self.fleet_jobs.stop()
        await self.stapler.close()
        stapler.sources.update(self.stapler.sources.by_digest)
        stapler.validated.add(self.stapler.validated.remembered())
        self.config, self.transport, self.stapler = new, transport, stapler
        self.fleet_jobs.start()
        self.responder = responder
        if responder is None:
            self.index.keep_only(set())
        elif old_responder is None:
            self._fill_index()
        if responder is not None and new.responder is not None:
            responder.max_clients = new.responder.max_clients
        self.monitor.swap(metrics)
        await old_transport.close_idle()
        if old_responder is not None and old_responder is not responder:
            old_responder.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self._start_watcher()
        await self._rescan()
        self.crl_jobs.check_soon()
        self.notifier.ready(self.summary())

    def _start_responder(self, config: Config) -> Responder | None:
        return start_responder(config, self.index, self.clock)

    def _next_responder(self, new: Config) -> Responder | None:
        """The responder for a re-read configuration: the running one when unchanged."""
        return next_responder(self.config, new, self.responder, self.index, self.clock)

    def _index(self, fingerprint: str, records: list[Record]) -> None:
        """Tell the local responder what is now valid for one certificate.  Without one
        nothing is kept: at 100,000 certificates the index is tens of megabytes."""
        if not records or self.responder is None:
            return
        members = self.book.groups.get(fingerprint)
        try:
            ids = ocsp.cert_ids(self.stapler.chain_of(members)) if members else frozenset()
        except StapledError:
            ids = frozenset()  # the issuer is still to be fetched: no CertID names it yet
        self.index.update(fingerprint, ids, records[0].servable)

    def _fill_index(self) -> None:
        """Every certificate in the index, for a responder a reload has just started."""
        for fingerprint in self.book.groups:
            self._index(fingerprint, self.book.records_of(fingerprint))

    def _start_watcher(self) -> None:
        self.watcher = Watcher(
            roots_of(s.path for s in self.config.certificates),
            self._changed,
            debounce=self.config.debounce,
            ignore_under=self.config.output_dir,
            ignore_names=(store.TEMP_PREFIX,),
            ignore_suffixes=(".ocsp",),
        )
        self.watcher.start()

    # ---- jobs -------------------------------------------------------------------------

    def _changed(self, paths: set[str]) -> None:
        """From the watcher's thread: rescan on the loop."""
        log.debug("changes under %s", ", ".join(sorted(paths)[:5]))
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are stopping
            self._loop.call_soon_threadsafe(self.changes.add, paths)

    async def _rescan(self, changed: set[str] | None = None) -> None:
        """Find certificates again: new ones are fetched now, removed ones unscheduled.
        ``changed``: only the files under these paths changed since the last scan (the
        periodic rescan, with none, reads everything).

        Runs on the loop, so it never interleaves with another rescan or a refresh's
        bookkeeping: an older scan is never applied after a newer one.
        """
        if self._stop:
            return
        try:
            records, groups = self.stapler.scan(changed)
            # Snippets are files of the output directory too: written with its lock held.
            async with self.stapler.writing():
                self.stapler.publish_snippets(records)
        except Exception as e:  # a rescan must never take the daemon down
            log.error("rescanning the certificate sources failed: %s", e)
            return
        now = self.clock()
        self.index.keep_only(set(groups))
        if any(r.changed for r in records):
            self.deliver_soon(reload=True)
        found = self.book.rescan(records, groups)
        for fingerprint in found.gone:
            self.refreshes.cancel(fingerprint)
        report.log_dropped(found.dropped)
        report.log_records(found.changed, self.book.due)
        for fingerprint in found.arrived:
            self._add_job(fingerprint, now, force=False)
        if found.arrived or found.changed or found.dropped:
            self.crl_jobs.check_soon()
        self.save_state_soon()

    async def _refresh_job(self, fingerprint: str, force: bool) -> None:
        if self._stop:
            return
        members = self.book.groups.get(fingerprint)
        if not members:
            return
        records = await self.stapler.refresh(members, force=force)
        self.took(fingerprint, records)

    @property
    def stopping(self) -> bool:
        return self._stop

    def monotonic(self) -> float:
        return self._loop.time()

    def took(self, fingerprint: str, records: list[Record]) -> None:
        """A certificate's new records: schedule, index, log, and tell the server."""
        if not self.book.take(fingerprint, records):
            return  # removed while it was being fetched
        self._schedule(fingerprint, records)
        self._index(fingerprint, records)
        for rec in records:
            report.log_record(rec, self.book.due.get(rec.name))
        if any(r.state is State.REVOKED for r in records):
            self.crl_jobs.act_soon()
        self.deliver_soon(reload=any(r.changed for r in records))
        self.save_state_soon()

    def _schedule(self, fingerprint: str, records: list[Record]) -> None:
        """The next job for one certificate: its refresh, or a retry after a failure."""
        if not records:
            return
        timing = self.config.timing
        jitter = self.rng.uniform(-1.0, 1.0)
        attempts = self.book.attempts
        step = next_run(records[0], attempts[fingerprint], timing, self.clock(), jitter)
        if step.attempts:
            attempts[fingerprint] = step.attempts
        else:  # none in a row, as a Counter reads a missing key: no entry for each good one
            attempts.pop(fingerprint, None)
        if step.retry:
            earlier = self.book.due.get(records[0].name, NOT_DUE)
            self.book.plan(fingerprint, Due(earlier.refresh, step.when))
        else:
            self.book.plan(fingerprint, Due(refresh=step.when))
        self._add_job(fingerprint, step.when, force=True)

    def _add_job(self, fingerprint: str, when: datetime, *, force: bool) -> None:
        self.refreshes.at(when, fingerprint, force=force)

    def deliver_soon(self, *, reload: bool) -> None:
        """Tell the web server shortly: a reload if ``reload`` (or one is owed), and pushes."""
        if reload:
            self.book.owe(Owed(reload=True))
        owed = self.book.owed
        wanted = (owed.reload and self.stapler.servers.can_reload) or bool(owed.push)
        # One delivery already waiting takes in this change too; pushing it back on every
        # change would starve it while a burst of refreshes goes on.
        if not wanted or self.scheduler.pending("reload"):
            return
        when = self.clock() + timedelta(seconds=RELOAD_DELAY)
        self.scheduler.at(when, self._deliver_job, id="reload")

    async def _deliver_job(self) -> None:
        owed = self.book.take_owed()
        records = list(self.book.records.values())
        delivered = await asyncio.to_thread(self.stapler.servers.deliver, owed, records)
        # Whatever failed stays owed and is tried again with the next change.
        self.book.still_owed(delivered.owed)
        if delivered.reloaded:
            self.stapler.tally.reloaded(delivered.reload_error is None)
            if delivered.reload_error is None and self.config.probes:
                # Did the server pick up what was written?  Look once it has settled.
                self.monitor.probe_soon()
        self.save_state_soon()

    async def _tick(self) -> None:
        """Wake the scheduler against the wall clock; tell systemd we are alive."""
        self.notifier.watchdog()

    def save_state_soon(self) -> None:
        when = self.clock() + timedelta(seconds=STATE_DELAY)
        if self.scheduler.running and not self.scheduler.pending("state"):
            self.scheduler.at(when, self._save_state, id="state")

    async def _save_state(self, *, stopped: bool = False) -> None:
        daemon: dict[str, Any] = {"pid": os.getpid(), "updated": iso(self.clock())}
        if stopped:
            daemon["stopped"] = True
        try:
            async with self.stapler.writing():
                state.save(
                    self.config.state_path,
                    list(self.book.records.values()),
                    owed=Owed(
                        self.book.owed.reload and self.stapler.servers.can_reload,
                        self.book.owed.push,
                    ),
                    due=self.book.due,
                    daemon=daemon,
                    fleet=self.fleet_jobs.state(),
                )
                self.stapler.keep_parsed()
        except StoreError as e:
            log.warning("cannot record state: %s", e)
        self.stapler.sources.keep_only(r.current for r in self.book.records.values())
        self.stapler.validated.keep_only(r.current for r in self.book.records.values())
        self.monitor.published = tuple(self.book.records.values())
        if stopped:
            await self.monitor.write_textfile()
        else:
            self.monitor.textfile_soon()
        self.notifier.status(self.summary())

    # ---- reporting --------------------------------------------------------------------

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        line = report.summary(self.book.records.values(), self.book.due)
        fleet = self.fleet_jobs.state()
        if fleet is not None and not fleet["connected"]:
            line += f"; fleet store {fleet['redis']} unreachable"
        return line
