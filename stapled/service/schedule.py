"""When the daemon next looks at a certificate.  Pure: ``now`` and the jitter are
parameters, so every rule has a value-level test."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..core import policy
from ..core.model import Record
from ..core.policy import Timing


@dataclass(frozen=True, slots=True)
class Next:
    """The next job for one certificate: when, and whether it is a retry."""

    when: datetime
    retry: bool
    # Failures in a row, counting this one (0 after a success).
    attempts: int


def next_run(rec: Record, attempts: int, timing: Timing, now: datetime, jitter: float) -> Next:
    """After a refresh whose result is ``rec`` (with ``attempts`` failures in a row before
    it): a retry after a failure or without a valid staple, else the jittered refresh.

    A revoked staple is valid too: it is refreshed on schedule like a good one.
    ``jitter`` is a random number in [-1, 1].
    """
    current = rec.current
    if rec.failed_now or current is None:
        attempts += 1
        valid_until = current.usable_until if current else None
        delay = policy.retry_delay(
            attempts,
            now=now,
            retry_min=timing.retry_min,
            retry_max=timing.retry_max,
            valid_until=valid_until,
            retry_after=rec.retry_after,
        )
        return Next(now + delay, retry=True, attempts=attempts)
    when = policy.scheduled_refresh(
        current,
        refresh_at=timing.refresh_at,
        now=now,
        jitter=jitter,
        margin=current.margin,
        min_interval=timedelta(seconds=timing.min_refresh_interval),
        max_age=rec.max_age,
    )
    return Next(when, retry=False, attempts=0)
