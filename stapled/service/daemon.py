"""``stapled run``: the long-running service, on one event loop.  The only APScheduler user.

After a first pass like ``once``, every certificate has one job at its next refresh (or
retry) time.  Jobs are coroutines on the same loop as every fetch, so refreshes share
kept-alive connections and the per-host limit.  A watcher rescans when certificate files
change, a periodic rescan is the safety net, and reloads are coalesced so that many
staples changing together cause one.  Reload commands and HAProxy pushes block, so they
run in a worker thread while the loop goes on.

APScheduler 3 drops a one-shot job that runs more than ``misfire_grace_time`` late
(default 1 s: any suspend/resume or stall).  Here late jobs always run
(``misfire_grace_time=None``), and a short periodic tick makes the scheduler look at the
wall clock again: its waits are measured on a clock that stops during suspend.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .. import __version__, report
from .. import config as config_module
from ..config import Config
from ..core import plan
from ..core.fleet import digest
from ..core.model import Found, PassResult, Record
from ..core.ocsp import Staple
from ..core.probing import Verdict
from ..core.times import Clock, iso
from ..errors import ConfigError, FleetError, StapledError, StoreError
from ..files import state, store
from ..net.client import Transport
from ..observe.metrics import Metrics, Snapshot
from ..passes import Stapler, utc_now
from ..probes import Held, Target, probe_target
from .responder import Index, Responder, next_responder, start_responder
from .schedule import Timing, next_run
from .sdnotify import Notifier
from .watcher import Watcher, roots_of

log = logging.getLogger("stapled")

TICK_SECONDS = 30.0
# After a reload, the server is probed this many seconds later.
PROBE_DELAY = 2.0
_PROBE_LEVELS = {
    Verdict.OK: logging.DEBUG,
    Verdict.WARNING: logging.WARNING,
    Verdict.CRITICAL: logging.ERROR,
    Verdict.UNKNOWN: logging.WARNING,
}
# Staples changing within this many seconds of each other share one reload.
RELOAD_DELAY = 1.0
STATE_DELAY = 1.0
# While the first pass runs, systemd's start timeout is pushed this far ahead, again and
# again: a slow pass must not put the unit into a restart loop.
START_EXTENSION = 60.0
JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}


def quiet(job: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A job that ends quietly when stopping cancels it mid-await (APScheduler would log
    the cancellation as a failure with a traceback)."""

    @functools.wraps(job)
    async def run(*args: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await job(*args)

    return run


def make_scheduler(loop: asyncio.AbstractEventLoop) -> AsyncIOScheduler:
    """A scheduler on ``loop`` whose late jobs still run, once, one at a time per job."""
    return AsyncIOScheduler(event_loop=loop, timezone="UTC", job_defaults=JOB_DEFAULTS)


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
        self.records: dict[str, Record] = {}
        self.groups: dict[str, list[Found]] = {}
        self.attempts: Counter[str] = Counter()
        # Something changed that the web server has not been told of yet (or telling failed).
        self.reload_owed = False
        # Names whose staple HAProxy still has to be handed over its admin socket.
        self.push_owed: set[str] = set()
        self.index = Index()
        self.responder: Responder | None = None
        self._stop = False
        self._hup = False
        self._pass: asyncio.Future[PassResult] | None = None
        # Fleet mode: the store's generation last seen, when every digest was last
        # compared (the loop's clock), and the task reading announcements.
        self._generation: int | None = None
        self._swept = 0.0
        self._listener: asyncio.Task[None] | None = None
        # Records as the metrics last saw them (swapped whole: read from another thread).
        self._published: tuple[Record, ...] = ()
        self.metrics: Metrics | None = None
        # A reload was followed by one more because a probe saw an older staple served.
        self._reloaded_again = False

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
        self.scheduler = make_scheduler(loop)
        try:
            first = await self._first_pass()
            if first is None:
                return await self._shutdown(save=False)
            self.reload_owed = first.reload_failed
            self.push_owed = set(first.haproxy_failed)
            self.groups = dict(first.groups)
            for rec in first.records:
                self.records[rec.name] = rec
            for fingerprint in self.groups:
                records = self._records_of(fingerprint)
                self._schedule(fingerprint, records)
                self._index(fingerprint, records)
            # Logged once scheduled, so that each line gives the refresh time really set.
            for rec in first.records:
                report.log_record(rec)
            self.index.ready = True
            tick = min(TICK_SECONDS, self.notifier.watchdog_interval or TICK_SECONDS)
            self.scheduler.add_job(quiet(self._tick), IntervalTrigger(seconds=tick), id="tick")
            self.scheduler.add_job(
                quiet(self._rescan),
                IntervalTrigger(seconds=self.config.rescan_interval),
                id="rescan",
            )
            self._start_fleet()
            self._start_metrics()
            self._start_probes(reloaded=bool(first.changed) and not first.reload_failed)
            self.scheduler.start()
            self._start_watcher()
            await self._save_state()
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
        self._stop_fleet()
        if self.metrics is not None:
            self.metrics.stop()
        # Jobs not started yet are dropped; a refresh waiting on the network is cancelled
        # (its files are written only after its fetch, in one step of the loop).
        if self.scheduler.running:
            self.scheduler.remove_all_jobs()
            self.scheduler.shutdown(wait=False)
        if self.responder is not None:
            self.responder.stop()
        # Temporary files are left to the next pass, which removes them with the lock
        # held: another process's may be in flight now.
        if save:
            await self._save_state(stopped=True)
        if self.stapler.fleet is not None:
            await self.stapler.fleet.store.close()
        return 0

    async def _reconfigure(self) -> None:
        """SIGHUP: read the configuration again; a broken one is reported and not used."""
        self.notifier.reloading()
        try:
            new = config_module.load(self.config_path)
            transport = Transport(timeout=new.timeout, pool_size=new.concurrency)
            stapler = Stapler(new, transport=transport, clock=self.clock)
            stapler.prepare()
            responder = self._next_responder(new)
        except (ConfigError, StoreError) as e:
            log.error("%s; keeping the configuration in use", e)
            self.notifier.ready(self.summary())
            return
        log.info("configuration re-read from %s", self.config_path)
        old_responder, old_transport = self.responder, self.transport
        self._stop_fleet()
        if self.stapler.fleet is not None:
            await self.stapler.fleet.store.close()
        stapler.sources.update(self.stapler.sources)
        self.config, self.transport, self.stapler = new, transport, stapler
        self._start_fleet()
        self.responder = responder
        await old_transport.close_idle()
        if old_responder is not None and old_responder is not responder:
            old_responder.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self._start_watcher()
        await self._rescan()
        self.notifier.ready(self.summary())

    def _start_responder(self, config: Config) -> Responder | None:
        return start_responder(config, self.index, self.clock)

    def _next_responder(self, new: Config) -> Responder | None:
        """The responder for a re-read configuration: the running one when unchanged."""
        return next_responder(self.config, new, self.responder, self.index, self.clock)

    def _index(self, fingerprint: str, records: list[Record]) -> None:
        """Tell the local responder what is now valid for one certificate."""
        if not records:
            return
        rec = records[0]
        self.index.update(fingerprint, rec.cert_ids, rec.servable)

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
            self._loop.call_soon_threadsafe(self._rescan_soon)

    def _rescan_soon(self) -> None:
        if not self._stop:
            self.scheduler.add_job(quiet(self._rescan), id="rescan-now", replace_existing=True)

    async def _rescan(self) -> None:
        """Find certificates again: new ones are fetched now, removed ones unscheduled.

        Runs on the loop, so it never interleaves with another rescan or a refresh's
        bookkeeping: an older scan is never applied after a newer one.
        """
        if self._stop:
            return
        try:
            records, groups = self.stapler.scan()
            # Snippets are files of the output directory too: written with its lock held.
            async with self.stapler.lock.held():
                self.stapler.settle(records)
        except Exception as e:  # a rescan must never take the daemon down
            log.error("rescanning the certificate sources failed: %s", e)
            return
        now = self.clock()
        self.index.keep_only(set(groups))
        if any(r.changed for r in records):
            self._deliver_soon(reload=True)
        old = self.groups
        for fingerprint in old.keys() - groups.keys():
            self._unschedule(fingerprint)
        names = {f.name for members in groups.values() for f in members}
        names |= {r.name for r in records}
        for name in list(self.records):
            if name not in names:
                log.info("%s: no longer found; its schedule is dropped", name)
                del self.records[name]
        for rec in records:
            if self.records.get(rec.name) != rec:
                report.log_record(rec)
            self.records[rec.name] = rec
        self.groups = groups
        for fingerprint, members in groups.items():
            before = {f.name for f in old.get(fingerprint, [])}
            if before != {f.name for f in members}:
                # New, renewed (a new fingerprint under an old name) or found elsewhere.
                self._add_job(fingerprint, now, force=False)
        self._save_state_soon()

    async def _refresh_job(self, fingerprint: str, force: bool) -> None:
        if self._stop:
            return
        members = self.groups.get(fingerprint)
        if not members:
            return
        records = await self.stapler.refresh(members, force=force)
        self._took(fingerprint, records)

    def _took(self, fingerprint: str, records: list[Record]) -> None:
        """A certificate's new records: schedule, index, log, and tell the server."""
        if fingerprint not in self.groups:
            return  # removed while it was being fetched
        self._schedule(fingerprint, records)
        self._index(fingerprint, records)
        changed = False
        for rec in records:
            self.records[rec.name] = rec
            changed |= rec.changed
            if rec.haproxy_changed:
                self.push_owed.add(rec.name)
            report.log_record(rec)
        self._deliver_soon(reload=changed)
        self._save_state_soon()

    def _schedule(self, fingerprint: str, records: list[Record]) -> None:
        """The next job for one certificate: its refresh, or a retry after a failure."""
        if not records:
            return
        timing = Timing(
            refresh_at=self.config.refresh_at,
            retry_min=self.config.retry_min,
            retry_max=self.config.retry_max,
            min_refresh_interval=self.config.min_refresh_interval,
        )
        jitter = self.rng.uniform(-1.0, 1.0)
        step = next_run(records[0], self.attempts[fingerprint], timing, self.clock(), jitter)
        self.attempts[fingerprint] = step.attempts
        for r in records:
            if step.retry:
                r.next_retry = step.when
            else:
                r.next_refresh, r.next_retry = step.when, None
        self._add_job(fingerprint, step.when, force=True)

    def _add_job(self, fingerprint: str, when: datetime, *, force: bool) -> None:
        self.scheduler.add_job(
            quiet(self._refresh_job),
            DateTrigger(run_date=when),
            args=[fingerprint, force],
            id=fingerprint,
            replace_existing=True,
        )

    def _unschedule(self, fingerprint: str) -> None:
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(fingerprint)
        self.attempts.pop(fingerprint, None)

    def _deliver_soon(self, *, reload: bool) -> None:
        """Tell the web server shortly: a reload if ``reload`` (or one is owed), and pushes."""
        if reload:
            self.reload_owed = True
        wanted = (self.reload_owed and self.stapler.servers.can_reload) or bool(self.push_owed)
        # One delivery already waiting takes in this change too; pushing it back on every
        # change would starve it while a burst of refreshes goes on.
        if not wanted or self.scheduler.get_job("reload") is not None:
            return
        when = self.clock() + timedelta(seconds=RELOAD_DELAY)
        self.scheduler.add_job(
            quiet(self._deliver_job), DateTrigger(run_date=when), id="reload", replace_existing=True
        )

    async def _deliver_job(self) -> None:
        reload, self.reload_owed = self.reload_owed, False
        push = [self.records[n] for n in self.push_owed if n in self.records]
        self.push_owed = set()
        servers = self.stapler.servers
        # Whatever fails stays owed and is tried again with the next change.
        if reload and servers.can_reload:
            reload_failed = await asyncio.to_thread(servers.reload) is not None
            self.stapler.tally.reloaded(not reload_failed)
            if reload_failed:
                self.reload_owed = True
            elif self.config.probes:
                # Did the server pick up what was written?  Look once it has settled.
                self._probe_soon(after_reload=True)
        if failed := await asyncio.to_thread(servers.push, push):
            self.push_owed |= failed
        self._save_state_soon()

    async def _tick(self) -> None:
        """Wake the scheduler against the wall clock; tell systemd we are alive."""
        self.notifier.watchdog()

    def _save_state_soon(self) -> None:
        when = self.clock() + timedelta(seconds=STATE_DELAY)
        if self.scheduler.running and self.scheduler.get_job("state") is None:
            self.scheduler.add_job(
                quiet(self._save_state),
                DateTrigger(run_date=when),
                id="state",
                replace_existing=True,
            )

    # ---- metrics and probes ------------------------------------------------------------

    def _start_metrics(self) -> None:
        wanted = self.config.metrics
        self._published = tuple(self.records.values())
        if wanted is None:
            return
        self.metrics = Metrics(__version__, self.stapler.tally, self._snapshot)
        if wanted.listen is not None:
            try:
                self.metrics.serve(*wanted.listen)
            except StoreError as e:
                log.error("%s; no metrics are served", e)
        self._write_textfile()

    def _snapshot(self) -> Snapshot:
        fleet = self.stapler.fleet
        up = fleet.store.connected if fleet is not None else None
        return Snapshot(self._published, self.clock(), up)

    def _write_textfile(self) -> None:
        wanted = self.config.metrics
        if self.metrics is None or wanted is None or wanted.textfile is None:
            return
        try:
            self.metrics.write_textfile(wanted.textfile)
        except StoreError as e:
            log.error("%s", e)

    def _start_probes(self, *, reloaded: bool) -> None:
        """Probe soon after the start (as after a reload when the first pass reloaded),
        then every probe interval."""
        if not self.config.probes:
            return
        self.scheduler.add_job(
            quiet(self._probe_job),
            IntervalTrigger(seconds=self.config.probe_interval),
            args=[False],
            id="probe",
            replace_existing=True,
        )
        self._probe_soon(after_reload=reloaded and self.stapler.servers.can_reload)

    def _probe_soon(self, *, after_reload: bool) -> None:
        when = self.clock() + timedelta(seconds=PROBE_DELAY)
        self.scheduler.add_job(
            quiet(self._probe_job),
            DateTrigger(run_date=when),
            args=[after_reload],
            id="probe-soon",
            replace_existing=True,
        )

    async def _probe_job(self, after_reload: bool) -> None:
        """Probe every [[probe]]; a server still serving an older staple after a reload
        gets one more reload, then an error."""
        held: Held = {}
        for fingerprint, members in self.groups.items():
            try:
                chain = self.stapler.issuers.known(plan.best_chain(members))
            except StapledError:
                continue
            records = self._records_of(fingerprint)
            held[fingerprint] = chain, records[0].current if records else None
        targets = [Target(p.target, p.servername) for p in self.config.probes]
        now, timeout = self.clock(), self.config.timeout
        results = await asyncio.to_thread(
            lambda: [probe_target(t, held, now, timeout=timeout) for t in targets]
        )
        stale = False
        for probed in results:
            self.stapler.tally.probed(probed.target.target, probed.target.servername, probed.judged)
            stale |= probed.judged.stale
            level = _PROBE_LEVELS[probed.judged.verdict]
            log.log(level, "probe: %s", probed.line)
        if after_reload and stale and not self._reloaded_again:
            self._reloaded_again = True
            log.warning("probe: the server still serves an older staple; reloading once more")
            self._deliver_soon(reload=True)
            return
        if after_reload and stale:
            log.error("probe: the server serves an older staple even after a second reload")
        self._reloaded_again = False
        self._save_state_soon()

    async def _save_state(self, *, stopped: bool = False) -> None:
        daemon: dict[str, Any] = {"pid": os.getpid(), "updated": iso(self.clock())}
        if stopped:
            daemon["stopped"] = True
        try:
            async with self.stapler.lock.held():
                state.save(
                    self.config.state_path,
                    list(self.records.values()),
                    reload_pending=self.reload_owed and self.stapler.servers.can_reload,
                    haproxy_pending=set(self.push_owed),
                    daemon=daemon,
                    fleet=self.fleet_state(),
                )
        except StoreError as e:
            log.warning("cannot record state: %s", e)
        self._published = tuple(self.records.values())
        self._write_textfile()
        self.notifier.status(self.summary())

    # ---- fleet mode --------------------------------------------------------------------

    def _start_fleet(self) -> None:
        fleet = self.stapler.fleet
        if fleet is None or self.config.fleet is None:
            return
        self._generation, self._swept = None, 0.0
        self.scheduler.add_job(
            quiet(self._fleet_poll),
            IntervalTrigger(seconds=self.config.fleet.poll_interval),
            id="fleet-poll",
            replace_existing=True,
        )
        self._listener = asyncio.ensure_future(self._listen())

    def _stop_fleet(self) -> None:
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job("fleet-poll")
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None

    async def _listen(self) -> None:
        """Adopt at once what another host announces (a speed-up: polling is the truth)."""
        fleet = self.stapler.fleet
        assert fleet is not None
        async for fingerprint in fleet.store.announcements():
            if fingerprint in self.groups and not self._stop:
                await self._adopt(fingerprint)

    async def _fleet_poll(self) -> None:
        """Every poll interval, one read of the store's generation; when it changed (or
        the sweep interval passed), every certificate's digest against the staple held."""
        fleet, settings = self.stapler.fleet, self.config.fleet
        if fleet is None or settings is None or self._stop:
            return
        was = fleet.store.connected
        try:
            generation = await fleet.store.generation()
        except FleetError:
            if was:  # logged once by the store; what is on disk stays served
                self._save_state_soon()
            return
        if not was:
            self._save_state_soon()
        now = self._loop.time()
        if generation == self._generation and now - self._swept < settings.sweep_interval:
            return
        try:
            stored = await fleet.store.digests(list(self.groups))
        except FleetError:
            return
        self._generation, self._swept = generation, now
        for fingerprint, value in stored.items():
            held = self._held(fingerprint)
            if value != (digest(held.der) if held is not None else None):
                await self._adopt(fingerprint)

    async def _adopt(self, fingerprint: str) -> None:
        members = self.groups.get(fingerprint)
        if not members:
            return
        try:
            records = await self.stapler.adopt(members)
        except Exception as e:  # the per-certificate boundary: a bug stays here
            log.error("%s: adopting the fleet's staple failed: %s", members[0].name, e)
            return
        if records is not None:
            self._took(fingerprint, records)

    def _held(self, fingerprint: str) -> Staple | None:
        records = self._records_of(fingerprint)
        return records[0].current if records else None

    # ---- reporting --------------------------------------------------------------------

    def _records_of(self, fingerprint: str) -> list[Record]:
        # By the group's names, not by a walk over every record: the daemon's start asks
        # this for each of thousands of certificates.
        names = dict.fromkeys(f.name for f in self.groups.get(fingerprint, []))
        return [self.records[name] for name in names if name in self.records]

    def fleet_state(self) -> dict[str, Any] | None:
        """``status``'s "fleet" object as this daemon sees it; None outside fleet mode."""
        fleet, settings = self.stapler.fleet, self.config.fleet
        if fleet is None or settings is None:
            return None
        return {
            "redis": settings.url,
            "host_id": settings.host_id,
            "connected": fleet.store.connected,
        }

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        line = report.summary(self.records.values())
        fleet = self.fleet_state()
        if fleet is not None and not fleet["connected"]:
            line += f"; fleet store {fleet['redis']} unreachable"
        return line
