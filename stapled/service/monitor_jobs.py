"""The daemon's monitoring: Prometheus metrics (served and written to the textfile) and
the probes of its [[probe]] targets, periodic and after each reload."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from .. import __version__
from ..config import Config
from ..core.model import Record
from ..core.probing import Verdict
from ..errors import ConfigError, StapledError, StoreError
from .jobs import log

if TYPE_CHECKING:
    from ..observe.metrics import Metrics, Snapshot
    from .daemon import Daemon

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


class MonitorJobs:
    """A part of :class:`stapled.service.daemon.Daemon`, with the state it alone uses."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        # Records as the metrics last saw them (swapped whole: read from another thread).
        self.published: tuple[Record, ...] = ()
        self.metrics: Metrics | None = None
        # A reload was followed by one more because a probe saw an older staple served.
        self._reloaded_again = False
        # When the textfile was last written (monotonic).
        self._written = -TEXTFILE_INTERVAL

    def start_metrics(self) -> None:
        wanted = self.daemon.config.metrics
        self.published = tuple(self.daemon.records.values())
        if wanted is None:
            return
        # prometheus_client is imported only where metrics are wanted.
        from ..observe.metrics import Metrics

        self.metrics = Metrics(__version__, self.daemon.stapler.tally, self._snapshot)
        if wanted.listen is not None:
            try:
                self.metrics.serve(*wanted.listen)
            except StoreError as e:
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
            except StoreError as e:
                raise ConfigError(str(new.path), e.reason, "metrics.listen") from e
        return metrics

    def swap(self, metrics: Metrics | None) -> None:
        """After a reload: ``metrics`` (from :meth:`next_metrics`) in place of the old,
        and the probes and the textfile as the new configuration says."""
        old, self.metrics = self.metrics, metrics
        if old is not None and old is not metrics:
            old.stop()
        self.daemon.scheduler.cancel("probe")
        self.start_probes(reloaded=False)
        self.textfile_soon(at_once=True)

    def _snapshot(self) -> Snapshot:
        fleet = self.daemon.stapler.fleet
        up = fleet.store.connected if fleet is not None else None
        from ..observe.metrics import Snapshot

        return Snapshot(self.published, self.daemon.clock(), up)

    def textfile_soon(self, *, at_once: bool = False) -> None:
        """Rewrite the textfile: at most once per TEXTFILE_INTERVAL (at 10,000
        certificates it is 9 MiB and 0.6 s of CPU), in a worker thread."""
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

    def start_probes(self, *, reloaded: bool) -> None:
        """Probe soon after the start (as after a reload when the first pass reloaded),
        then every probe interval."""
        if not self.daemon.config.probes:
            return
        self.daemon.scheduler.every(
            self.daemon.config.probe_interval, self._probe_job, id="probe", args=[False]
        )
        self.probe_soon(after_reload=reloaded and self.daemon.stapler.servers.can_reload)

    def probe_soon(self, *, after_reload: bool) -> None:
        when = self.daemon.clock() + timedelta(seconds=PROBE_DELAY)
        self.daemon.scheduler.at(when, self._probe_job, id="probe-soon", args=[after_reload])

    async def _probe_job(self, after_reload: bool) -> None:
        """Probe every [[probe]]; a server still serving an older staple after a reload
        gets one more reload, then an error."""
        # pyOpenSSL is imported only where something is probed.
        from ..probes import Held, Target, probe_target

        # Certificates without an OCSP URL are managed too, with nothing to staple.
        held: Held = {
            r.fingerprint: (None, None)
            for r in self.daemon.records.values()
            if r.fingerprint is not None
        }
        for fingerprint, members in self.daemon.groups.items():
            try:
                chain = self.daemon.stapler.chain_of(members)
            except StapledError:
                continue
            records = self.daemon._records_of(fingerprint)
            held[fingerprint] = chain, records[0].current if records else None
        targets = [Target(p.target, p.servername) for p in self.daemon.config.probes]
        now, timeout = self.daemon.clock(), self.daemon.config.timeout
        results = await asyncio.to_thread(
            lambda: [probe_target(t, held, now, timeout=timeout) for t in targets]
        )
        stale = False
        for probed in results:
            self.daemon.stapler.tally.probed(
                probed.target.target, probed.target.servername, probed.judged
            )
            stale |= probed.judged.stale
            level = _PROBE_LEVELS[probed.judged.verdict]
            log.log(level, "probe: %s", probed.line)
        if after_reload and stale and not self._reloaded_again:
            self._reloaded_again = True
            log.warning("probe: the server still serves an older staple; reloading once more")
            self.daemon._deliver_soon(reload=True)
            return
        if after_reload and stale:
            log.error("probe: the server serves an older staple even after a second reload")
        self._reloaded_again = False
        self.daemon._save_state_soon()
