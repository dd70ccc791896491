"""The values a pass passes around: what was found, what was decided, what is reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from . import policy, revocation
from .certs import CertChain
from .ocsp import Staple
from .policy import Severity, State
from .revocation import CrlView


@dataclass(frozen=True, slots=True)
class Found:
    """One certificate stapled should look after, or the reason it cannot."""

    name: str
    path: str
    chain: CertChain | None = None
    error: str | None = None
    # HAProxy reads the staple from <path>.ocsp, beside the certificate file it loads.
    haproxy: bool = False
    # A directory of a source that could not be listed, not a certificate: it gets no
    # staple and no snippet, only its error.
    directory: bool = False

    @property
    def haproxy_staple_path(self) -> str | None:
        return self.path + ".ocsp" if self.haproxy else None


@dataclass(frozen=True, slots=True)
class Fetched:
    """What asking a certificate's responders gave: a staple and where from, or why not."""

    staple: Staple | None = None
    # Where the answer came from, for messages: the responder's URL, or "the fleet store
    # (HOST)" for one another host fetched.
    origin: str = ""
    error: str | None = None
    retry_after: float | None = None
    max_age: float | None = None
    # "ca": asked of the responders; "fleet": read from the fleet store and validated.
    source: str = "ca"


@dataclass(frozen=True, slots=True)
class Settled:
    """What to publish for one certificate after a fetch, and what to report of it."""

    current: Staple | None
    error: str | None = None
    # The responder answered "unknown" (and nothing valid is held).
    unknown: bool = False


@dataclass(frozen=True, slots=True)
class Due:
    """When a name is asked about next: its refresh, or a retry after a failure.  Kept
    apart from its Record: a pass finds out what is, the scheduler decides when."""

    refresh: datetime | None = None
    retry: datetime | None = None

    @property
    def next(self) -> datetime | None:
        return self.retry or self.refresh


NOT_DUE = Due()


def staple_file(output: str, name: str) -> str:
    """Where the staple of the certificate named ``name`` is written in ``output`` (a
    directory's path as text, without a trailing "/")."""
    return f"{output}/{name}.der"


@dataclass(slots=True)
class Record:
    """What one pass found out about one certificate name: ``status`` shows it."""

    name: str
    path: str
    state: State
    # Kept as the number: its hex text (``serial``) is made when shown.
    serial_number: int | None = None
    ocsp_url: str | None = None
    # The output directory its staple is written in (one string for every record).
    output: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    last_error: str | None = None
    must_staple: bool = False
    changed: bool = False
    # True when this pass (not an earlier one) failed to refresh it.
    failed_now: bool = False
    # The valid staple on disk, and what the responder said about caching, for scheduling.
    current: Staple | None = field(default=None, repr=False)
    fingerprint: str | None = None
    retry_after: float | None = None
    max_age: float | None = None
    # Where HAProxy reads this certificate's staple, and whether this pass rewrote it.
    haproxy_staple_path: str | None = None
    haproxy_changed: bool = False
    # False for what is not a certificate (a directory that cannot be listed): no
    # staple or snippet is ever written under its name.
    files: bool = True
    # Where the staple held came from: "ca", "fleet" (another host's, validated here) or
    # "disk" (found there).
    source: str | None = None
    # The certificate's first http CRL distribution point.
    crl_url: str | None = None

    @property
    def staple_path(self) -> str | None:
        """Where its staple is written."""
        return None if self.output is None else staple_file(self.output, self.name)

    @property
    def serial(self) -> str | None:
        """The certificate's serial number in hex, as status and the hooks show it."""
        return None if self.serial_number is None else format(self.serial_number, "X")

    @property
    def servable(self) -> Staple | None:
        """The staple a server may be handed for this name: a valid good or revoked one."""
        if self.current is not None and self.state in (State.GOOD, State.REVOKED):
            return self.current
        return None

    def failed(self, error: str) -> None:
        """Note that this pass could not do what it should have for this name."""
        self.last_error, self.failed_now = error, True

    def severity(self, now: datetime, *, aging: bool = True) -> Severity:
        def past(fraction: float) -> bool:
            return (
                aging
                and self.this_update is not None
                and self.next_update is not None
                and policy.is_aging(self.this_update, self.next_update, now, fraction)
            )

        return policy.severity(
            self.state,
            failing=self.last_error is not None,
            aging=past(policy.AGING_FRACTION),
            has_ocsp=self.ocsp_url is not None,
            must_staple=self.must_staple,
            early_aging=past(policy.MUST_STAPLE_WARNING_FRACTION),
        )


@dataclass(frozen=True, slots=True)
class Owed:
    """What the web servers have not been told yet, or telling them failed: a reload,
    and the names whose new staple HAProxy still has to be handed over its admin socket.
    It stays owed (across passes and restarts, in the state file) until it works."""

    reload: bool = False
    push: frozenset[str] = frozenset()

    def __or__(self, other: Owed) -> Owed:
        return Owed(self.reload or other.reload, self.push | other.push)


@dataclass
class PassResult:
    records: list[Record]
    now: datetime
    reload_error: str | None = None
    changed: list[str] = field(default_factory=list)
    # The certificates that have an OCSP URL, by fingerprint (for the daemon's schedule).
    groups: dict[str, list[Found]] = field(default_factory=dict)
    # What the servers were not told after this pass (the reload or a push failed).
    owed: Owed = field(default_factory=lambda: Owed())
    # ``status`` in fleet mode: {"redis": URL without password, "host_id", "connected"}.
    fleet: dict[str, object] | None = None
    # When each name is asked about next, by name.
    due: dict[str, Due] = field(default_factory=dict)
    # What each name's CRL says, for the names whose CRL is checked.
    crl: dict[str, CrlView] = field(default_factory=dict)

    def exit_code(self) -> int:
        """0 all good; 1 some refresh, CRL or the reload failed, staples still valid;
        2 worse (revoked by either source, or no valid staple)."""
        worst = max((r.severity(self.now, aging=False) for r in self.records), default=Severity.OK)
        crl = revocation.exit_code(self.crl.values())
        if worst is Severity.CRITICAL or crl == 2:
            return 2
        if self.reload_error or crl or any(r.failed_now for r in self.records):
            return 1
        return 0

    def severity(self) -> Severity:
        """``status``'s verdict: the worst of each certificate's and each CRL's."""
        worst = max((r.severity(self.now) for r in self.records), default=Severity.OK)
        return max(worst, Severity(revocation.exit_code(self.crl.values())))
