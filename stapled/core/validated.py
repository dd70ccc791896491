"""Staples validated before, by the SHA-256 of their bytes: the same bytes for the same
certificate need only their times checked again, not their signature.  The bytes decide:
anything not remembered, or remembered for another certificate, is validated in full."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from . import ocsp
from .certs import CertChain
from .fleet import digest
from .ocsp import Staple


class Validated:
    def __init__(self) -> None:
        # Digest -> the staple validated from those bytes (its bytes are the record's,
        # or empty for one read back from the state file).
        self._by_digest: dict[str, Staple] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def note(self, staple: Staple) -> None:
        self._by_digest[digest(staple.der)] = staple

    def remembered(self) -> Iterable[tuple[str, Staple]]:
        return self._by_digest.items()

    def recall(self, der: bytes, chain: CertChain, now: datetime) -> Staple | None:
        """The staple validated from exactly ``der`` for this certificate, its times
        checked at ``now``; None when these bytes were not validated for it.  Raises
        InvalidResponseError when they were, but time has made them unusable."""
        known = self._by_digest.get(digest(der))
        if known is None or known.serial != chain.serial or known.cert_id is None:
            return None
        # The CertID names the issuer's name and key: the same bytes answering for a
        # certificate of another issuer with the same serial are validated anew.
        if known.cert_id not in ocsp.cert_ids(chain):
            return None
        return ocsp.recheck(known if known.der == der else replace(known, der=der), now)

    def add(self, remembered: Iterable[tuple[str, Staple]]) -> None:
        """What is remembered elsewhere (the state file, the configuration before a reload)."""
        self._by_digest.update(remembered)

    def keep_only(self, held: Iterable[Staple | None]) -> None:
        """Forget the staples no longer held."""
        kept = {digest(s.der) for s in held if s is not None}
        if len(self._by_digest) > 2 * len(kept):
            self._by_digest = {d: s for d, s in self._by_digest.items() if d in kept}
