"""Whether a certificate is revoked, from whichever sources it has: its staple (OCSP)
and its CRL.  Pure: values in, verdicts and words out.

A source that fails never decides: only a valid answer says "good" or "revoked", and
"revoked" from either source wins (a CRL cannot be outvoted by a staple that predates
the revocation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .policy import JITTER_FRACTION, State
from .times import iso

GOOD, REVOKED, UNKNOWN = "good", "revoked", "unknown"


@dataclass(frozen=True, slots=True)
class CrlView:
    """What is known of one certificate from its CRL at one moment (``status``'s "crl")."""

    url: str
    # "good" or "revoked" while a valid CRL that covers the certificate is held; None
    # when none is (never fetched, failing past its nextUpdate).
    status: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    revoked_at: datetime | None = None
    reason: str | None = None
    last_error: str | None = None
    # The CRL's bytes as received, kept when it lists the certificate.
    evidence: str | None = None

    @property
    def revoked(self) -> bool:
        return self.status == REVOKED


def staple_verdict(state: State, has_ocsp: bool) -> str | None:
    """What the staple says: "good", "revoked", "unknown" (an OCSP URL but no valid
    answer held), or None for a certificate without an OCSP URL."""
    if state is State.GOOD:
        return GOOD
    if state is State.REVOKED:
        return REVOKED
    return UNKNOWN if has_ocsp else None


def verdict(staple: str | None, crl: CrlView | None, has_crl_url: bool) -> str | None:
    """A certificate's revocation: "revoked" when any valid source says so, else "good"
    when one says good, else "unknown" when it has an OCSP or CRL URL, else None."""
    crl_status = crl.status if crl is not None else None
    said = {staple, crl_status}
    if REVOKED in said:
        return REVOKED
    if GOOD in said:
        return GOOD
    if staple is not None or crl is not None or has_crl_url:
        return UNKNOWN
    return None


def problem(staple: str | None, crl: CrlView | None) -> str | None:
    """What to add to a certificate's last_error about its CRL, naming the URL: that it
    revokes the certificate (and that the staple disagrees), and why it is failing."""
    if crl is None:
        return None
    parts = []
    if crl.revoked:
        said = f"revoked according to its CRL {crl.url} ({crl.reason}, {iso(crl.revoked_at)})"
        parts.append(said + (" while its OCSP staple says good" if staple == GOOD else ""))
    if crl.last_error is not None:
        parts.append(crl.last_error)
    elif crl.status is None:
        parts.append(f"{crl.url}: no valid CRL held")
    return "; ".join(parts) or None


def exit_code(views: Iterable[CrlView]) -> int:
    """What CRLs add to an exit status: 2 for a certificate revoked by its CRL, 1 while
    a CRL in use is failing or gives no verdict, else 0."""
    code = 0
    for crl in views:
        if crl.revoked:
            return 2
        if crl.last_error is not None or crl.status is None:
            code = 1
    return code


def refresh_time(
    this_update: datetime, next_update: datetime, refresh_at: float, jitter: float
) -> datetime:
    """When a CRL is fetched again: ``refresh_at`` of its window, moved by ``jitter``
    (-1..1) times JITTER_FRACTION of the window, and never after its nextUpdate."""
    window = next_update - this_update
    due = this_update + window * refresh_at + window * JITTER_FRACTION * jitter
    return min(due, next_update)


def jitter(*words: str) -> float:
    """A stable number in [-1, 1) from ``words``: the same CRL on one host is due at the
    same point of each window, and other hosts (other words) at other points."""
    seed = hashlib.sha256("\0".join(words).encode()).digest()[:4]
    return int.from_bytes(seed) / 2**31 - 1.0


def recheck_time(now: datetime, next_update: datetime, floor: timedelta) -> datetime:
    """After an answer that brought nothing newer (a 304, or the same CRL): half of
    what is left of its window, at least ``floor`` away, never after its nextUpdate."""
    return min(next_update, now + max(floor, (next_update - now) / 2))
