"""One CA request per certificate for a whole fleet: read the store first, ask the CA
under a lease, publish for the others, adopt what they published.

The lease saves CA load; correctness never rests on it.  Every staple read from the store
is validated here against this host's own certificate and issuer, and kept only when
:func:`stapled.core.plan.settle` would keep it over what is on disk, so a duplicate fetch
(a failover granting the lease twice) or a poisoned value costs nothing but the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from ..config import Config
from ..core import fleet, ocsp, plan, policy
from ..core.certs import CertChain
from ..core.fleet import Entry
from ..core.model import Fetched
from ..core.ocsp import CertStatus, Staple
from ..core.times import Clock, iso
from ..errors import ConfigError, FleetError, StapledError
from .store import Backoff, Lease, Outcome, Store

log = logging.getLogger("stapled")

Fetch = Callable[[CertChain], Awaitable[Fetched]]
Rejected = Callable[[str, str], None]
OnDisk = Callable[[], Staple | None]

# A host waits for another's answer at most this many lease lengths.
WAIT_LEASES = 2
# How often a host waiting for the lease holder looks for its answer (seconds).
WAIT_STEPS = (0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class Settings:
    """What fleet mode needs besides the store; the configuration's ``[fleet]``."""

    host_id: str
    lease: float
    grace: float
    spread: float
    refresh_at: float
    retry_min: float
    retry_max: float


class Fleet:
    @classmethod
    def of(cls, config: Config, clock: Clock, rejected: Rejected | None = None) -> Fleet | None:
        """The fleet of ``config``'s ``[fleet]``; None without one.  Connects lazily."""
        f = config.fleet
        if f is None:
            return None
        # redis-py is slow to import: only hosts of a fleet pay for it.
        from .redis import RedisStore

        try:
            store = RedisStore(
                f.redis,
                host_id=f.host_id,
                prefix=f.key_prefix,
                timeout=f.timeout,
                retry_max=config.retry_max,
            )
        except FleetError as e:
            raise ConfigError(str(config.path), str(e), "fleet.redis") from e
        settings = Settings(
            host_id=f.host_id,
            lease=f.lease,
            grace=f.grace,
            spread=f.spread,
            refresh_at=config.refresh_at,
            retry_min=config.retry_min,
            retry_max=config.retry_max,
        )
        return cls(store, settings, clock, rejected)

    def __init__(
        self, store: Store, settings: Settings, clock: Clock, rejected: Rejected | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        # Told of each staple refused from the store: (leaf fingerprint, reason).
        self.on_rejected = rejected
        self._logged: set[tuple[str, str]] = set()

    def state(self, *, connected: bool | None = None) -> dict[str, object]:
        """``status``'s "fleet" object: the store (never with its password), this host,
        and whether the store answers (as last seen, unless ``connected`` says)."""
        up = self.store.connected if connected is None else connected
        return {"redis": self.store.url, "host_id": self.settings.host_id, "connected": up}

    async def ping(self) -> bool:
        """Whether the store answers now (one short timeout); its connections are closed."""
        try:
            await self.store.ping()
            return True
        except FleetError:
            return False
        finally:
            await self.store.close()

    # ---- a due certificate --------------------------------------------------------------

    async def obtain(
        self, chain: CertChain, current: Staple | None, fetch: Fetch, on_disk: OnDisk | None = None
    ) -> Fetched:
        """A staple for a due certificate: the store's when it is valid and newer than
        ``current``, else the CA's, asked under the fleet's lease and shared.  With the
        store unreachable: the staple held is kept until a grace period has passed, then
        the CA is asked alone.  ``on_disk``: the staple held now, which may have changed
        since ``current`` was read (the daemon adopts what others announce meanwhile)."""
        try:
            return await self._obtain(chain, current, fetch)
        except FleetError as e:
            return await self._alone(chain, on_disk() if on_disk else current, fetch, e)

    async def _obtain(self, chain: CertChain, current: Staple | None, fetch: Fetch) -> Fetched:
        fp = chain.fingerprint
        seen, adopted = await self._look(chain, current)
        if adopted is not None:
            return adopted
        loop = asyncio.get_running_loop()
        # Long enough for a holder to fetch, and for a dead holder's lease to run out.
        end = loop.time() + WAIT_LEASES * self.settings.lease
        steps = iter(WAIT_STEPS)
        while True:
            grant = await self.store.acquire(fp, self.settings.lease)
            if isinstance(grant, Lease):
                return await self._ask(chain, current, grant, fetch)
            if isinstance(grant, Backoff):
                until = iso(self.clock() + timedelta(seconds=grant.remaining))
                return Fetched(
                    error=f"the CA failed for {grant.host} ({grant.error}); "
                    f"the fleet waits until {until} before asking again",
                    retry_after=grant.remaining,
                )
            if loop.time() >= end:
                return Fetched(
                    error=f"{grant.host} holds the fleet's lease for this certificate and "
                    "published nothing yet; trying again later",
                    retry_after=self.settings.lease,
                )
            # Another host is asking: wait for its answer, or for its lease to go.
            await asyncio.sleep(next(steps, WAIT_STEPS[-1]))
            if (await self.store.digests([fp]))[fp] != seen:
                seen, adopted = await self._look(chain, current)
                if adopted is not None:
                    return adopted

    async def _ask(
        self, chain: CertChain, current: Staple | None, lease: Lease, fetch: Fetch
    ) -> Fetched:
        """Holding the lease: ask the CA, then share the answer (or the failure)."""
        fp = chain.fingerprint
        # Another holder may have published between this host's look and its lease.
        _, adopted = await self._look(chain, current)
        if adopted is not None:
            await _quietly(self.store.release(fp, lease))
            return adopted
        try:
            fetched = await fetch(chain)
        except BaseException:
            await _quietly(self.store.release(fp, lease))
            raise
        try:
            return await self._share(chain, current, lease, fetched)
        except FleetError as e:
            # The CA has answered: that answer is served (and offered to the store at its
            # next comparison with this host's staples), never thrown away for the CA
            # to be asked again.
            log.debug("%s: sharing this host's answer: %s", chain.path, e)
            return fetched

    async def _share(
        self, chain: CertChain, current: Staple | None, lease: Lease, fetched: Fetched
    ) -> Fetched:
        """The CA's answer (or failure) to the store, under ``lease``: what to serve."""
        fp = chain.fingerprint
        answer = fetched.staple
        if answer is None or answer.cert_status is CertStatus.UNKNOWN:
            delay = policy.retry_delay(
                lease.failures + 1,
                now=self.clock(),
                retry_min=self.settings.retry_min,
                retry_max=self.settings.retry_max,
                valid_until=current.usable_until if current is not None else None,
                retry_after=fetched.retry_after,
            ).total_seconds()
            why = fetched.error or "the responder says unknown"
            if not await self.store.back_off(fp, lease, why, delay):
                # This host stalled past its lease and another asked meanwhile.
                _, adopted = await self._look(chain, current)
                return adopted or fetched
            return fetched
        if plan.settle(current, fetched).current is not answer:
            await _quietly(self.store.release(fp, lease))
            return fetched
        outcome = await self.store.publish(fp, lease, Entry.of(answer))
        if outcome is Outcome.STORED:
            await _quietly(self.store.heartbeat(fp, fleet.digest(answer.der), _expiry(answer)))
            return fetched
        # Refused: the lease ran out while this host waited, or the store holds something
        # ranking higher.  Serve what the fleet serves if it is valid, else repair it.
        log.info("%s: the fleet store refused this host's answer (%s)", chain.path, outcome)
        seen, adopted = await self._look(chain, current)
        if adopted is not None:
            return adopted
        await self._offer(chain, seen, answer)
        return fetched

    async def _alone(
        self, chain: CertChain, current: Staple | None, fetch: Fetch, error: FleetError
    ) -> Fetched:
        s = self.settings
        when = fleet.alone_at(
            current,
            refresh_at=s.refresh_at,
            grace=timedelta(seconds=s.grace),
            spread=timedelta(seconds=s.spread),
            host_id=s.host_id,
        )
        now = self.clock()
        if when is not None and now < when:
            return Fetched(
                error=f"{error}; keeping the staple on disk, asking the CA alone from {iso(when)}",
                retry_after=max(1.0, (when - now).total_seconds()),
            )
        log.info("%s: %s; asking the CA alone", chain.path, error)
        return await fetch(chain)

    # ---- what the store holds -----------------------------------------------------------

    async def reconcile_all(
        self, held: Iterable[tuple[CertChain, Staple | None]]
    ) -> dict[str, Fetched]:
        """Certificates that need no fetch, against the store: by fingerprint, what it
        holds that is valid and newer, to adopt; this host's staples are offered where
        it holds nothing, something older or garbage (a store restarted empty is seeded
        again).  The store gone away leaves what is on disk as it is."""
        held = list(held)
        adopted: dict[str, Fetched] = {}
        if not held:
            return adopted
        try:
            stored = await self.store.digests(chain.fingerprint for chain, _ in held)
            for chain, current in held:
                mine = fleet.digest(current.der) if current is not None else None
                if stored.get(chain.fingerprint) != mine:
                    got = await self.reconcile(chain, current)
                    if got is not None:
                        adopted[chain.fingerprint] = got
        except StapledError as e:
            log.debug("reconciling with the fleet store: %s", e)
        return adopted

    async def reconcile(self, chain: CertChain, current: Staple | None) -> Fetched | None:
        """For a certificate whose stored digest differs from this host's: the store's
        staple when it is valid and wins over ``current``; else ``current`` is offered to
        the store in place of what it holds (an empty, older or poisoned entry)."""
        seen, adopted = await self._look(chain, current)
        if adopted is None and current is not None and seen != fleet.digest(current.der):
            await self._offer(chain, seen, current)
        return adopted

    async def _look(
        self, chain: CertChain, current: Staple | None
    ) -> tuple[str | None, Fetched | None]:
        """(the digest stored, the stored staple when it is valid and wins over ``current``)."""
        fp = chain.fingerprint
        shared = await self.store.read(fp)
        if shared is None:
            return None, None
        seen = shared.digest
        if current is not None and shared.der == current.der:
            return seen, None
        try:
            staple = ocsp.validate(shared.der, chain, self.clock())
        except StapledError as e:
            self._reject(chain, seen, "invalid", str(e), shared.host)
            return seen, None
        fetched = Fetched(staple, f"the fleet store ({shared.host})", source="fleet")
        settled = plan.settle(current, fetched)
        if settled.current is not staple:
            reason = "unknown" if settled.unknown else "older"
            self._reject(chain, seen, reason, settled.error or reason, shared.host)
            return seen, None
        # Who serves what, for an operator looking at the store.
        await _quietly(self.store.heartbeat(fp, seen, _expiry(staple)))
        return seen, fetched

    async def _offer(self, chain: CertChain, seen: str | None, staple: Staple) -> None:
        """Put this host's valid ``staple`` in the store if it still holds ``seen``."""
        fp = chain.fingerprint
        outcome = await self.store.replace(fp, seen, Entry.of(staple))
        if outcome is Outcome.STORED:
            log.info("%s: shared this host's staple with the fleet", chain.path)
            await _quietly(self.store.heartbeat(fp, fleet.digest(staple.der), _expiry(staple)))

    def _reject(self, chain: CertChain, digest: str, reason: str, why: str, host: str) -> None:
        if self.on_rejected is not None:
            self.on_rejected(chain.fingerprint, reason)
        if reason == "older":
            return  # the normal race of two answers: not worth a line
        # Once per stored value: a poisoned entry is polled again and again.
        if (chain.fingerprint, digest) not in self._logged:
            self._logged.add((chain.fingerprint, digest))
            log.warning(
                "%s: refused the staple in the fleet store (stored by %s): %s",
                chain.path,
                host,
                why,
            )


async def _quietly(call: Awaitable[object]) -> None:
    """A store call whose failure changes nothing here (the store is marked down)."""
    try:
        await call
    except FleetError as e:
        log.debug("%s", e)


def _expiry(staple: Staple) -> int:
    return Entry.of(staple).expire_at_ms
