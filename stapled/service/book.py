"""What the daemon knows of its certificates, kept in one place: every name's record and
when it is asked about next, the certificates with an OCSP URL by leaf fingerprint,
failures in a row, and what the web servers are owed.  No I/O and no clock: the daemon
schedules, writes and logs from what these methods answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime

from ..core.model import Due, Found, Owed, Record
from ..core.revocation import CrlView


@dataclass(frozen=True)
class Rescanned:
    """What a rescan changed, for the daemon to act on."""

    # Certificates no longer found (their jobs go) and new or moved ones (fetched now).
    gone: frozenset[str] = frozenset()
    arrived: tuple[str, ...] = ()
    # Names no longer found, and records of certificates without a fetch that changed.
    dropped: tuple[str, ...] = ()
    changed: tuple[Record, ...] = ()


class Schedule(MutableMapping[str, Due]):
    """When each name is asked about next, kept as its times: a Due object for each of
    100,000 names was 4.8 MB; one is made when asked for."""

    __slots__ = ("_refresh", "_retry")

    def __init__(self) -> None:
        self._refresh: dict[str, datetime | None] = {}
        self._retry: dict[str, datetime] = {}  # the few names waiting for a retry

    def __getitem__(self, name: str) -> Due:
        return Due(self._refresh[name], self._retry.get(name))

    def __setitem__(self, name: str, due: Due) -> None:
        self._refresh[name] = due.refresh
        if due.retry is None:
            self._retry.pop(name, None)
        else:
            self._retry[name] = due.retry

    def __delitem__(self, name: str) -> None:
        del self._refresh[name]
        self._retry.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._refresh)

    def __len__(self) -> int:
        return len(self._refresh)


@dataclass
class Book:
    records: dict[str, Record] = field(default_factory=dict)
    groups: dict[str, list[Found]] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    owed: Owed = field(default_factory=Owed)
    due: Schedule = field(default_factory=Schedule)
    # What each name's CRL says, for the names whose CRL is checked.
    crl: dict[str, CrlView] = field(default_factory=dict)

    def start(
        self,
        records: Iterable[Record],
        groups: dict[str, list[Found]],
        owed: Owed,
        crl: dict[str, CrlView],
    ) -> None:
        """The first pass's outcome."""
        self.crl = dict(crl)
        self.groups = groups  # replaced by a rescan, never changed in place
        self.records = {r.name: r for r in records}
        self.owed = owed

    def records_of(self, fingerprint: str) -> list[Record]:
        """The records of one certificate's names, in the order it was found under them."""
        # By the group's names, not by a walk over every record: the daemon's start asks
        # this for each of thousands of certificates.
        names = dict.fromkeys(f.name for f in self.groups.get(fingerprint, []))
        return [self.records[name] for name in names if name in self.records]

    def take(self, fingerprint: str, records: list[Record]) -> bool:
        """A refresh's records put in force; False when the certificate was removed
        meanwhile (nothing is kept).  Their HAProxy pushes become owed."""
        if fingerprint not in self.groups:
            return False
        for rec in records:
            self.records[rec.name] = rec
        self.owe(Owed(push=frozenset(r.name for r in records if r.haproxy_changed)))
        return True

    def rescan(self, records: list[Record], groups: dict[str, list[Found]]) -> Rescanned:
        """A new scan put in force: what it found replaces what was known."""
        names = {f.name for members in groups.values() for f in members}
        names |= {r.name for r in records}
        dropped = tuple(name for name in self.records if name not in names)
        for name in dropped:
            del self.records[name]
            self.due.pop(name, None)
            self.crl.pop(name, None)
        changed = tuple(r for r in records if self.records.get(r.name) != r)
        for rec in records:
            self.records[rec.name] = rec
        old, self.groups = self.groups, groups
        gone = frozenset(old.keys() - groups.keys())
        for fingerprint in gone:
            self.attempts.pop(fingerprint, None)
        arrived = tuple(
            fingerprint
            for fingerprint, members in groups.items()
            # New, renewed (a new fingerprint under an old name) or found elsewhere.
            if {f.name for f in old.get(fingerprint, [])} != {f.name for f in members}
        )
        return Rescanned(gone, arrived, dropped, changed)

    def plan(self, fingerprint: str, due: Due) -> None:
        """When one certificate's names are asked about next."""
        for member in self.groups.get(fingerprint, []):
            self.due[member.name] = due

    def owe(self, owed: Owed) -> None:
        self.owed |= owed

    def take_owed(self) -> Owed:
        """What is owed, now handed to a delivery (which gives back what failed)."""
        owed, self.owed = self.owed, Owed()
        return owed

    def still_owed(self, left: Owed) -> None:
        """What a delivery could not do; a push for a name removed meanwhile is owed to
        nobody."""
        self.owe(Owed(left.reload, left.push & self.records.keys()))
