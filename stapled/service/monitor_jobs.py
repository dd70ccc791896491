"""The daemon's monitoring: Prometheus metrics (served and written to the textfile) and
the probes of its [[probe]] targets, periodic and after each reload."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .. import __version__
from ..config import Config
from ..core.model import Record
from ..core.verdicts import Judged, Verdict
from ..errors import ConfigError, ListenError, StapledError, StoreError
from .host import Host
from .jobs import log

if TYPE_CHECKING:
    from ..observe.metrics import Metrics, Snapshot
    from ..probes import Target

# The textfile is rewritten at most this often (seconds); the endpoint is always current.
TEXTFILE_INTERVAL = 60.0
# After a reload, the server is probed this many seconds later.
PROBE_DELAY = 2.0
_PROBE_LEVELS = {
    Verdict.OK: logging.DEBUG,
    Verdict.WARNING: logging.WARNING,
    Verdict.CRITICAL: logging.ERROR,
    Verdict.UNKNOWN: logging.WARNING,
}


# Reloads asked for one target before the chase gives up with an error.
CHASE_RELOADS = 2


@dataclass(slots=True)
class Chase:
    """A target seen serving an older staple than stapled's file: a reload is asked at
    once, and the target probed again PROBE_DELAY after it; after CHASE_RELOADS reloads
    that did not take, one error.  A chase starts at most once per probe interval."""

    started: datetime
    reloads: int = 0
    given_up: bool = False


class MonitorJobs:
    """The daemon's monitoring: the metrics endpoint and textfile, and the probes, with
    the state they alone use."""

    def __init__(self, daemon: Host) -> None:
        self.daemon = daemon
        # Records as the metrics last saw them (swapped whole: read from another thread).
        self.published: tuple[Record, ...] = ()
        self.metrics: Metrics | None = None
        # Targets seen serving an older staple than stapled's, and the reloads asked.
        self._chases: dict[Target, Chase] = {}
        # When the textfile was last written (monotonic).
        self._written = -TEXTFILE_INTERVAL

    def start_metrics(self) -> None:
        wanted = self.daemon.config.metrics
        self.published = tuple(self.daemon.book.records.values())
        if wanted is None:
            return
        # prometheus_client is imported only where metrics are wanted.
        from ..observe.metrics import Metrics

        self.metrics = Metrics(__version__, self.daemon.stapler.tally, self._snapshot)
        if wanted.listen is not None:
            try:
                self.metrics.serve(*wanted.listen)
            except ListenError as e:
                log.error("%s; no metrics are served", e)
        self.textfile_soon(at_once=True)

    def next_metrics(self, new: Config) -> Metrics | None:
        """The metrics of a re-read configuration, listening before the old endpoint
        stops: the running one when its address is unchanged.  Raises ConfigError naming
        ``metrics.listen`` when the new address cannot be bound."""
        wanted = new.metrics
        if wanted is None:
            return None
        before = self.daemon.config.metrics
        if self.metrics is not None and before is not None and before.listen == wanted.listen:
            return self.metrics
        from ..observe.metrics import Metrics

        metrics = Metrics(__version__, self.daemon.stapler.tally, self._snapshot)
        if wanted.listen is not None:
            try:
                metrics.serve(*wanted.listen)
            except ListenError as e:
                raise ConfigError(str(new.path), e.reason, "metrics.listen") from e
        return metrics

    def swap(self, metrics: Metrics | None) -> None:
        """After a reload: ``metrics`` (from :meth:`next_metrics`) in place of the old,
        and the probes and the textfile as the new configuration says."""
        old, self.metrics = self.metrics, metrics
        if old is not None and old is not metrics:
            old.stop()
        self.daemon.scheduler.cancel("probe")
        self.start_probes()
        self.textfile_soon(at_once=True)

    def _snapshot(self) -> Snapshot:
        fleet = self.daemon.stapler.fleet
        up = fleet.store.connected if fleet is not None else None
        from ..observe.metrics import Snapshot

        return Snapshot(self.published, self.daemon.clock(), up, dict(self.daemon.book.crl))

    def textfile_soon(self, *, at_once: bool = False) -> None:
        """Rewrite the textfile: at most once per TEXTFILE_INTERVAL (it costs memory and
        CPU in proportion to the certificates; docs/performance.md), in a worker thread."""
        wanted = self.daemon.config.metrics
        if self.metrics is None or wanted is None or wanted.textfile is None:
            return
        if self.daemon.scheduler.pending("textfile") and not at_once:
            return
        wait = 0.0 if at_once else TEXTFILE_INTERVAL - (time.monotonic() - self._written)
        when = self.daemon.clock() + timedelta(seconds=max(0.0, wait))
        self.daemon.scheduler.at(when, self._write_textfile, id="textfile")

    async def write_textfile(self) -> None:
        """Now, on the way out."""
        self.daemon.scheduler.cancel("textfile")
        await self._write_textfile()

    async def _write_textfile(self) -> None:
        wanted = self.daemon.config.metrics
        if self.metrics is None or wanted is None or wanted.textfile is None:
            return
        self._written = time.monotonic()
        try:
            await asyncio.to_thread(self.metrics.write_textfile, wanted.textfile)
        except StoreError as e:
            log.error("%s", e)

    def start_probes(self) -> None:
        """Probe soon after the start, then every probe interval."""
        if not self.daemon.config.probes:
            return
        self.daemon.scheduler.every(self.daemon.config.probe_interval, self._probe_job, id="probe")
        self.probe_soon()

    def probe_soon(self) -> None:
        """Probe PROBE_DELAY from now: after the start, and after every reload."""
        when = self.daemon.clock() + timedelta(seconds=PROBE_DELAY)
        self.daemon.scheduler.at(when, self._probe_job, id="probe-soon")

    async def _probe_job(self) -> None:
        """Probe every [[probe]], and chase a server that serves an older staple than
        stapled's file (see :class:`Chase`)."""
        # pyOpenSSL is imported only where something is probed.
        from ..probes import Held, Target, probe_target

        # Certificates without an OCSP URL are managed too, with nothing to staple.
        held: Held = {
            r.fingerprint: (None, None)
            for r in self.daemon.book.records.values()
            if r.fingerprint is not None
        }
        for fingerprint, members in self.daemon.book.groups.items():
            try:
                chain = self.daemon.stapler.chain_of(members)
            except StapledError:
                continue
            records = self.daemon.book.records_of(fingerprint)
            held[fingerprint] = chain, records[0].current if records else None
        targets = [Target(p.target, p.servername) for p in self.daemon.config.probes]
        now, timeout = self.daemon.clock(), self.daemon.config.timeout
        results = await asyncio.to_thread(
            lambda: [probe_target(t, held, now, timeout=timeout) for t in targets]
        )
        reload = False
        for probed in results:
            target, servername = probed.target.target, probed.target.servername
            self.daemon.stapler.tally.probed(target, servername, probed.judged)
            log.log(_PROBE_LEVELS[probed.judged.verdict], "probe: %s", probed.line)
            reload |= self._chase(probed.target, probed.judged, now)
        if reload:
            self.daemon.deliver_soon(reload=True)
        self.daemon.save_state_soon()

    def _chase(self, target: Target, judged: Judged, now: datetime) -> bool:
        """Whether to ask for a reload for what ``target`` served; logs the chase."""
        if not judged.stale:
            self._chases.pop(target, None)
            return False
        chase = self._chases.get(target)
        interval = timedelta(seconds=self.daemon.config.probe_interval)
        if chase is None or (chase.given_up and now - chase.started >= interval):
            chase = self._chases[target] = Chase(now)
        where = f"{target.target} ({target.servername}) serves {self._names(judged)}"
        if not self.daemon.stapler.servers.can_reload:
            if not chase.given_up:
                chase.given_up = True
                log.error(
                    "probe: %s an older staple than stapled's; no reload is configured", where
                )
            return False
        if chase.reloads < CHASE_RELOADS:
            chase.reloads += 1
            log.warning(
                "probe: %s an older staple than stapled's; asking for a reload (%d of %d)",
                where,
                chase.reloads,
                CHASE_RELOADS,
            )
            return True
        if not chase.given_up:
            chase.given_up = True
            log.error(
                "probe: %s an older staple than stapled's even after %d reloads; "
                "is the server reading another file?",
                where,
                CHASE_RELOADS,
            )
        return False

    def _names(self, judged: Judged) -> str:
        names = sorted(
            r.name for r in self.daemon.book.records.values() if r.fingerprint == judged.fingerprint
        )
        return ", ".join(names) or "a certificate"
