"""The daemon's CRL checks: one job, due when the first CRL held is due again (its
``refresh_at``, a retry, or a recheck after "not modified"), and at once when a rescan
finds certificates; ``revoked_command`` runs from here for both sources."""

from __future__ import annotations

import logging
from datetime import timedelta

from .host import Host

log = logging.getLogger("stapled")

# A CRL due in the past (a clock jump, a slow pass) is checked this soon, not in a loop.
MIN_WAIT = timedelta(seconds=1)


class CrlJobs:
    def __init__(self, host: Host) -> None:
        self.host = host

    def check_soon(self) -> None:
        if not self.host.stopping:
            self.host.scheduler.now(self._check, id="crl")

    def act_soon(self) -> None:
        """``revoked_command`` for what is revoked now (each serial runs it once)."""
        if not self.host.stopping and self.host.stapler.revocations.hook.command:
            self.host.scheduler.now(self._act, id="revoked-command")

    def schedule(self) -> None:
        """The next check, when the first CRL held is due; none while none is held."""
        host = self.host
        urls = {v.url for v in host.book.crl.values()}
        when = host.stapler.revocations.crls.next_check(urls)
        if when is None and urls:
            # Checked certificates whose CRL was never asked (their issuer out of reach).
            when = host.clock() + timedelta(seconds=host.config.retry_max)
        if when is None:
            host.scheduler.cancel("crl")
            return
        host.scheduler.at(max(when, host.clock() + MIN_WAIT), self._check, id="crl")

    async def _check(self) -> None:
        host = self.host
        if host.stopping:
            return
        stapler = host.stapler
        try:
            views = await stapler.revocations.check(stapler.found, host.clock(), force=False)
        except Exception as e:  # a CRL check must never take the daemon down
            log.error("checking the CRLs failed: %s", e)
            log.debug("the CRL check", exc_info=e)
        else:
            host.book.crl = views
            host.save_state_soon()
            self.act_soon()
        self.schedule()

    async def _act(self) -> None:
        host = self.host
        await host.stapler.revocations.act(list(host.book.records.values()), host.book.crl)
