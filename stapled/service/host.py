"""What the daemon offers the parts that run inside it (fleet jobs, monitoring): a narrow
view, so that a part depends on this protocol and never on the daemon's module, and
touches nothing the daemon keeps to itself."""

from __future__ import annotations

from typing import Protocol

from ..config import Config
from ..core.model import Record
from ..core.times import Clock
from ..passes import Stapler
from .book import Book
from .jobs import Jobs


class Host(Protocol):
    """The running daemon, as its parts see it."""

    config: Config
    stapler: Stapler
    clock: Clock
    scheduler: Jobs
    # What it knows of its certificates: records, groups, what is owed.
    book: Book

    @property
    def stopping(self) -> bool:
        """SIGTERM or SIGINT came: start nothing new."""
        ...

    def monotonic(self) -> float:
        """The event loop's clock (seconds)."""
        ...

    def took(self, fingerprint: str, records: list[Record]) -> None:
        """Put a certificate's new records in force: schedule, index, deliver, save."""
        ...

    def deliver_soon(self, *, reload: bool) -> None:
        """Tell the servers soon (coalesced): a reload when ``reload``, owed pushes."""
        ...

    def save_state_soon(self) -> None:
        """Write the state file soon (coalesced)."""
        ...
