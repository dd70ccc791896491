"""The daemon's fleet mode: the store's generation polled, announcements heard, and
what another host published adopted (validated by the stapler) as soon as it is known."""

from __future__ import annotations

import asyncio

from ..core.fleet import digest
from ..core.ocsp import Staple
from ..errors import FleetError
from .host import Host
from .jobs import log


class FleetJobs:
    """The daemon's fleet jobs: the store's poll, its announcements and adopting what
    other hosts fetched, with the state they alone use."""

    def __init__(self, daemon: Host) -> None:
        self.daemon = daemon
        # The store's generation last seen, when every digest was last compared (the
        # loop's clock), and the task reading announcements.
        self._generation: int | None = None
        self._swept = 0.0
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        fleet, settings = self.daemon.stapler.fleet, self.daemon.config.fleet
        if fleet is None or settings is None:
            return
        self._generation, self._swept = None, 0.0
        self.daemon.scheduler.every(settings.poll_interval, self.poll, id="fleet-poll")
        self._listener = asyncio.ensure_future(self._listen())

    def stop(self) -> None:
        self.daemon.scheduler.cancel("fleet-poll")
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None

    async def _listen(self) -> None:
        """Adopt at once what another host announces (a speed-up: polling is the truth)."""
        fleet = self.daemon.stapler.fleet
        assert fleet is not None
        async for fingerprint in fleet.store.announcements():
            if fingerprint in self.daemon.book.groups and not self.daemon.stopping:
                await self._adopt(fingerprint)

    async def poll(self) -> None:
        """Every poll interval, one read of the store's generation; when it changed (or
        the sweep interval passed), every certificate's digest against the staple held."""
        fleet, settings = self.daemon.stapler.fleet, self.daemon.config.fleet
        if fleet is None or settings is None or self.daemon.stopping:
            return
        was = fleet.store.connected
        try:
            generation = await fleet.store.generation()
        except FleetError:
            if was:  # logged once by the store; what is on disk stays served
                self.daemon.save_state_soon()
            return
        if not was:
            self.daemon.save_state_soon()
        now = self.daemon.monotonic()
        if generation == self._generation and now - self._swept < settings.sweep_interval:
            return
        try:
            stored = await fleet.store.digests(list(self.daemon.book.groups))
        except FleetError:
            return
        self._generation, self._swept = generation, now
        for fingerprint, value in stored.items():
            held = self._held(fingerprint)
            if value != (digest(held.der) if held is not None else None):
                await self._adopt(fingerprint)

    async def _adopt(self, fingerprint: str) -> None:
        members = self.daemon.book.groups.get(fingerprint)
        if not members:
            return
        try:
            records = await self.daemon.stapler.adopt(members)
        except Exception as e:  # the per-certificate boundary: a bug stays here
            log.error("%s: adopting the fleet's staple failed: %s", members[0].name, e)
            return
        if records is not None:
            self.daemon.took(fingerprint, records)

    def _held(self, fingerprint: str) -> Staple | None:
        records = self.daemon.book.records_of(fingerprint)
        return records[0].current if records else None

    def state(self) -> dict[str, object] | None:
        """``status``'s "fleet" object as this daemon sees it; None outside fleet mode."""
        fleet = self.daemon.stapler.fleet
        return fleet.state() if fleet is not None else None
