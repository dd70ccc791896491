"""Counts of what happened (fetches, reloads, staple updates, probes), for the metrics.

Plain Python: the code that counts never sees prometheus_client.  Counting happens on the
event loop and reading on the metrics server's thread, so both take one lock, and a
reader gets copies.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from ..core.verdicts import Judged

# Seconds: OCSP responders answer in tens of milliseconds when well, in seconds when not.
FETCH_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Durations:
    """A histogram's raw material: counts per bucket (cumulative when read), sum, count."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(FETCH_BUCKETS))
    total: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        for i, bound in enumerate(FETCH_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                break
        self.total += seconds
        self.count += 1

    def copy(self) -> Durations:
        return Durations(list(self.buckets), self.total, self.count)


@dataclass
class Counts:
    """A copy of the tally at one moment."""

    # By result, then name; updates by source, then name: a (name, label) pair per
    # certificate as the key was megabytes at 100,000.
    fetches: dict[str, Counter[str]] = field(default_factory=dict)
    durations: dict[str, Durations] = field(default_factory=dict)
    last_success: dict[str, float] = field(default_factory=dict)
    reloads: Counter[str] = field(default_factory=Counter)
    updates: dict[str, Counter[str]] = field(default_factory=dict)
    probes: dict[tuple[str, str], Judged] = field(default_factory=dict)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    crl_fetches: Counter[str] = field(default_factory=Counter)
    crl_bytes: int = 0


class Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Counts()

    def fetched(self, names: list[str], ok: bool) -> None:
        """One fetch from the CA for a certificate known by ``names``."""
        with self._lock:
            counted = self._counts.fetches.setdefault("success" if ok else "failure", Counter())
            for name in names:
                counted[name] += 1

    def timed(self, responder: str, seconds: float) -> None:
        """One responder asked (a fetch may ask several in turn)."""
        with self._lock:
            self._counts.durations.setdefault(responder, Durations()).add(seconds)

    def refreshed(self, name: str, when: float) -> None:
        """A new staple was obtained for ``name`` (from the CA or the fleet)."""
        with self._lock:
            self._counts.last_success[name] = when

    def updated(self, name: str, source: str) -> None:
        with self._lock:
            self._counts.updates.setdefault(source, Counter())[name] += 1

    def reloaded(self, ok: bool) -> None:
        with self._lock:
            self._counts.reloads["success" if ok else "failure"] += 1

    def probed(self, target: str, servername: str, judged: Judged) -> None:
        with self._lock:
            self._counts.probes[target, servername] = judged

    def rejected(self, name: str, reason: str) -> None:
        with self._lock:
            self._counts.rejected[name, reason] += 1

    def crl_fetched(self, result: str, size: int) -> None:
        """One CRL fetch: "success", "not_modified" or "failure", and the bytes received."""
        with self._lock:
            self._counts.crl_fetches[result] += 1
            self._counts.crl_bytes += size

    def counts(self) -> Counts:
        with self._lock:
            c = self._counts
            return Counts(
                {result: Counter(names) for result, names in c.fetches.items()},
                {k: v.copy() for k, v in c.durations.items()},
                dict(c.last_success),
                Counter(c.reloads),
                {source: Counter(names) for source, names in c.updates.items()},
                dict(c.probes),
                Counter(c.rejected),
                Counter(c.crl_fetches),
                c.crl_bytes,
            )
