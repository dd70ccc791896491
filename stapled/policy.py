"""When to refresh, and how serious each state is.  Pure: ``now`` is a parameter."""

from __future__ import annotations

import enum
from datetime import datetime

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


# A staple in the last quarter of its validity means refreshes have been failing.
AGING_FRACTION = 0.75


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


def is_aging(this_update: datetime, next_update: datetime, now: datetime) -> bool:
    """True in the last quarter of a response's validity window."""
    return now >= this_update + (next_update - this_update) * AGING_FRACTION


def state_of(current: Staple | None, *, unknown_answer: bool = False) -> State:
    """The state of a fetchable certificate from the valid staple on disk, if any."""
    if current is None:
        return State.UNKNOWN if unknown_answer else State.MISSING
    if current.cert_status is CertStatus.REVOKED:
        return State.REVOKED
    return State.GOOD


def severity(state: State, *, failing: bool, aging: bool, has_ocsp: bool = True) -> Severity:
    """How bad a certificate's situation is.

    Critical: no valid good staple where the certificate has an OCSP URL (missing,
    unknown, revoked, expired certificate) or an unusable certificate file.  Warning:
    refreshes are failing, or the staple is in the last quarter of its validity.
    """
    if state is State.ERROR:
        return Severity.CRITICAL
    if state is State.NO_OCSP or not has_ocsp:
        return Severity.OK
    if state is not State.GOOD:
        return Severity.CRITICAL
    if failing or aging:
        return Severity.WARNING
    return Severity.OK
