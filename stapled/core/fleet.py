"""Fleet decisions as values: what a shared staple entry holds, which entry wins, when a
host that cannot reach the fleet store fetches by itself, how long the fleet backs off.

Pure: the time and the host's id are parameters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from .ocsp import Staple
from .policy import refresh_time

# A shared entry outlives its staple's nextUpdate by this much, so that a late reader
# still finds it (and refuses it as expired) rather than an empty key it would re-seed.
EXPIRY_SLACK = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Entry:
    """A staple as the fleet store holds it: the DER and what its ordering needs.

    ``rank`` orders entries the way :func:`stapled.core.plan.settle` orders staples:
    a revocation that is final beats everything, then the newer thisUpdate, then the
    newer producedAt.  The store compares ranks only to save work; every reader validates
    the DER itself.
    """

    der: bytes
    digest: str
    rank: tuple[int, int, int]
    expire_at_ms: int
    status: str

    @classmethod
    def of(cls, staple: Staple) -> Entry:
        final = staple.finally_revoked
        rank = (int(final), _ms(staple.this_update), _ms(staple.produced_at))
        return cls(
            der=staple.der,
            digest=digest(staple.der),
            rank=rank,
            expire_at_ms=_ms(staple.next_update + EXPIRY_SLACK),
            status=str(staple.cert_status),
        )


def digest(der: bytes) -> str:
    """How a staple's bytes are named in the store and the state file."""
    return hashlib.sha256(der).hexdigest()


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def alone_at(
    staple: Staple | None,
    *,
    refresh_at: float,
    grace: timedelta,
    spread: timedelta,
    host_id: str,
) -> datetime | None:
    """When a host that cannot reach the fleet store asks the CA by itself; None: now.

    ``grace`` after the staple's refresh time, plus a share of ``spread`` fixed by a hash
    of the host's id, so that hosts cut off together do not ask the CA together.  Both
    shrink on short windows: the moment always falls in the first half of what is left
    between the refresh time and the end of the staple's use.  Without a staple there is
    nothing to serve meanwhile: a host asks at once.
    """
    if staple is None:
        return None
    due = refresh_time(staple, refresh_at)
    room = max(timedelta(0), staple.usable_until - due)
    wait = min(grace, room / 4)
    share = host_share(host_id)
    return due + wait + min(spread, room / 4) * share


def host_share(host_id: str) -> float:
    """A number in [0, 1) fixed by ``host_id``: where in a spread this host falls."""
    value = int.from_bytes(hashlib.sha256(host_id.encode()).digest()[:8], "big")
    return value / 2**64
