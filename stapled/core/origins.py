"""Where each staple held came from: asked of the CA ("ca"), or another host's read from
the fleet store and validated here ("fleet"); a staple not known here was found on disk.
Kept by the SHA-256 of its bytes, so that it survives in the state file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .fleet import digest
from .ocsp import Staple


class Origins:
    def __init__(self) -> None:
        self.by_digest: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.by_digest)

    def note(self, key: str, source: str) -> None:
        """The staple whose :func:`digest` is ``key`` came from ``source``."""
        self.by_digest[key] = source

    def update(self, known: Mapping[str, str]) -> None:
        """Add what is known elsewhere (the state file, the configuration before a reload)."""
        self.by_digest.update(known)

    def of(self, staple: Staple | None) -> str | None:
        """ "ca", "fleet" or "disk"; None for no staple."""
        if staple is None:
            return None
        return self.by_digest.get(digest(staple.der), "disk")

    def keep_only(self, held: Iterable[Staple | None]) -> None:
        """Forget the staples no longer held: a daemon runs for months, and every refresh
        adds one."""
        kept = {digest(s.der) for s in held if s is not None}
        if len(self.by_digest) > 2 * len(kept):
            self.by_digest = {d: s for d, s in self.by_digest.items() if d in kept}
