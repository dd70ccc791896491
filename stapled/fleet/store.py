"""The fleet store as stapled needs it, whatever engine is behind it.

Every call may raise FleetError (the store is unreachable, slow or refusing); none may
block for longer than the store's short timeout.  Nothing read through this interface is
trusted: callers validate every staple against their own certificate before any use.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..core.fleet import Entry

# What :meth:`Store.digests` gives for a key that holds something other than an entry.
UNREADABLE = "!unreadable"


class Outcome(enum.StrEnum):
    """What the store did with an offered entry."""

    STORED = "stored"
    LEASE_LOST = "lease lost"  # the lease expired (the holder stalled) or was never held
    FENCED = "fenced"  # a later holder took the lease meanwhile
    NOT_NEWER = "not newer"  # the store holds something that ranks at least as high
    CHANGED = "changed"  # a compare-and-set saw another entry than expected


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to ask the CA for one certificate, for a while (measured by the store)."""

    token: str
    fence: int
    # The CA failures in a row before this lease, for the next back-off's length.
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Held:
    """Another host holds the lease: who, and for how much longer."""

    host: str
    remaining: float


@dataclass(frozen=True, slots=True)
class Backoff:
    """The CA failed for this certificate: no host asks it again before ``remaining``."""

    host: str
    error: str
    remaining: float
    failures: int


@dataclass(frozen=True, slots=True)
class Shared:
    """An entry as read back: bytes to validate, who says they fetched them, and the
    digest to name this entry by in a compare-and-set (UNREADABLE for garbage)."""

    der: bytes
    host: str
    digest: str


class Store(Protocol):
    """The shared store of a fleet, keyed by the leaf certificate's SHA-256."""

    url: str  # for messages: never with a password

    @property
    def connected(self) -> bool: ...

    async def ping(self) -> None: ...

    async def generation(self) -> int | None:
        """A number that changes whenever an entry is stored (None: the store is empty)."""
        ...

    async def digests(self, fingerprints: Iterable[str]) -> dict[str, str | None]:
        """The digest stored for each certificate (None: nothing, UNREADABLE: garbage)."""
        ...

    async def read(self, fingerprint: str) -> Shared | None: ...

    async def acquire(self, fingerprint: str, ttl: float) -> Lease | Held | Backoff: ...

    async def publish(self, fingerprint: str, lease: Lease, entry: Entry) -> Outcome: ...

    async def replace(self, fingerprint: str, expected: str | None, entry: Entry) -> Outcome:
        """Store ``entry`` if the digest stored is still ``expected`` (None: nothing)."""
        ...

    async def release(self, fingerprint: str, lease: Lease) -> None: ...

    async def back_off(self, fingerprint: str, lease: Lease, error: str, delay: float) -> bool:
        """Tell the fleet the CA failed; ``delay`` seconds from now (the store's clock).
        False when the lease was no longer held (nothing is changed then)."""
        ...

    async def heartbeat(self, fingerprint: str, staple_digest: str, expire_at_ms: int) -> None: ...

    def announcements(self) -> AsyncIterator[str]:
        """Fingerprints whose entry was just stored; lossy, a speed-up only."""
        ...

    async def close(self) -> None: ...
