"""When to refresh, and how serious each state is.  Pure: ``now`` is a parameter."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from .ocsp import CertStatus, Staple


class State(enum.StrEnum):
    """What ``status`` reports for a certificate."""

    GOOD = "good"  # a valid good staple is on disk
    REVOKED = "revoked"  # the CA's signed word: the certificate is revoked
    UNKNOWN = "unknown"  # the responder does not know it, and no valid staple is on disk
    MISSING = "missing"  # no valid staple on disk (never fetched, or it expired)
    EXPIRED = "expired"  # the certificate itself has expired: nothing is fetched
    NO_OCSP = "no-ocsp"  # the certificate names no OCSP responder: normal since 2025
    ERROR = "error"  # the certificate file cannot be used


class Severity(enum.IntEnum):
    """Also the exit status of ``status``, like a monitoring check."""

    OK = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True, slots=True)
class Timing:
    """The settings that bear on when a staple or a CRL is asked for again."""

    refresh_at: float
    retry_min: float
    retry_max: float
    min_refresh_interval: float


# A staple in the last quarter of its validity means refreshes have been failing.
AGING_FRACTION = 0.75
# Must-staple certificates fail hard in browsers without a staple: warn sooner.
MUST_STAPLE_WARNING_FRACTION = 0.6


def refresh_time(staple: Staple, refresh_at: float) -> datetime:
    """The moment ``refresh_at`` of the staple's validity window has passed.

    CAs publish fresh responses by half the window (CA/B Forum BR 4.9.10), so the default
    0.5 asks just when something newer exists.
    """
    return staple.this_update + staple.lifetime * refresh_at


def needs_refresh(
    current: Staple | None, now: datetime, refresh_at: float, *, force: bool = False
) -> bool:
    return force or current is None or now >= refresh_time(current, refresh_at)


def is_aging(
    this_update: datetime, next_update: datetime, now: datetime, fraction: float = AGING_FRACTION
) -> bool:
    """True once ``fraction`` of a response's validity window has passed."""
    return now >= this_update + (next_update - this_update) * fraction


def state_of(current: Staple | None, *, unknown_answer: bool = False) -> State:
    """The state of a fetchable certificate from the valid staple on disk, if any."""
    if current is None:
        return State.UNKNOWN if unknown_answer else State.MISSING
    if current.cert_status is CertStatus.REVOKED:
        return State.REVOKED
    return State.GOOD


def severity(
    state: State,
    *,
    failing: bool,
    aging: bool,
    has_ocsp: bool = True,
    must_staple: bool = False,
    early_aging: bool = False,
) -> Severity:
    """How bad a certificate's situation is.

    Critical: no valid good staple where the certificate has an OCSP URL (missing,
    unknown, revoked, expired certificate) or an unusable certificate file.  Warning:
    refreshes are failing, or the staple is in the last quarter of its validity.  For a
    must-staple certificate (``early_aging``: past MUST_STAPLE_WARNING_FRACTION) the
    warning comes sooner, and the last quarter is already critical.
    """
    if state is State.ERROR:
        return Severity.CRITICAL
    if state is State.NO_OCSP or not has_ocsp:
        return Severity.OK
    if state is not State.GOOD:
        return Severity.CRITICAL
    if must_staple and aging:
        return Severity.CRITICAL
    if failing or aging or (must_staple and early_aging):
        return Severity.WARNING
    return Severity.OK


# Refreshes of certificates issued together are spread over this fraction of the window
# (either side of the refresh point), so that they do not reach the responder as a burst.
JITTER_FRACTION = 0.05
# Retries keep at least this many attempts inside what is left of a staple's validity,
# however short, but never come closer together than this.
ATTEMPTS_BEFORE_EXPIRY = 4
MIN_RETRY_SECONDS = 1.0


def scheduled_refresh(
    staple: Staple,
    *,
    refresh_at: float,
    now: datetime,
    jitter: float,
    margin: timedelta,
    min_interval: timedelta,
    max_age: float | None = None,
) -> datetime:
    """When the daemon refreshes ``staple``: ``refresh_at`` of its window, jittered.

    ``jitter`` is a random number in [-1, 1] (a parameter, so tests can pin it).  The
    result is never sooner than a responder's Cache-Control ``max-age`` allows, and never
    later than what leaves room for ATTEMPTS_BEFORE_EXPIRY retries before
    ``next_update - margin``.  ``min_interval`` spaces repeated fetches only: when that
    moment has already passed (a responder whose answers start in the past), the next
    ask comes ``min_interval`` from ``now``, never past the end of the staple's use.  It
    never delays the refresh of a response still ahead of its refresh point, however
    short its window.
    """
    lifetime = staple.lifetime
    due = refresh_time(staple, refresh_at) + lifetime * JITTER_FRACTION * jitter
    if max_age is not None:
        due = max(due, now + timedelta(seconds=max_age))
    usable_end = staple.next_update - margin
    latest = usable_end - (usable_end - staple.this_update) / (ATTEMPTS_BEFORE_EXPIRY + 1)
    due = min(due, latest)
    if due <= now:
        due = now + min_interval
    return min(due, max(now, usable_end))


def retry_delay(
    attempts: int,
    *,
    now: datetime,
    retry_min: float,
    retry_max: float,
    valid_until: datetime | None,
    retry_after: float | None = None,
) -> timedelta:
    """How long to wait after the ``attempts``-th failure in a row (1 for the first).

    Exponential from ``retry_min`` to ``retry_max``; a responder's Retry-After is
    honoured when longer.  While a valid staple exists (``valid_until``), the delay never
    exceeds a quarter of what is left (down to MIN_RETRY_SECONDS, below ``retry_min`` if
    need be), so several attempts remain before it expires.
    """
    delay = min(retry_min * 2 ** min(max(0, attempts - 1), 64), retry_max)  # no overflow
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_max))
    if valid_until is not None and valid_until > now:
        # Keeping a staple beats pacing: near its end, retry_min gives way too.
        left = (valid_until - now).total_seconds()
        delay = min(delay, max(MIN_RETRY_SECONDS, left / ATTEMPTS_BEFORE_EXPIRY))
    return timedelta(seconds=delay)
