"""What a live server staples, judged: a value per handshake, Nagios codes.

Pure: the handshake's result, the chain to validate against, stapled's own staple and the
time are parameters.  The worst of several handshakes counts (nginx workers hold staples
apart).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from ..errors import StapledError
from . import ocsp
from .certs import CertChain
from .ocsp import CertStatus
from .times import iso

# nginx workers each hold their own staple: several handshakes see more of them.
CONNECTIONS = 3
# A bound for --connections: enough to reach every worker of a large nginx.
MAX_CONNECTIONS = 256


class Verdict(enum.IntEnum):
    """Nagios plugin exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True, slots=True)
class Served:
    """One handshake: the leaf served (None if none) and the stapled bytes (None if none)."""

    chain: CertChain | None
    staple: bytes | None


@dataclass(frozen=True, slots=True)
class Judged:
    verdict: Verdict
    why: str
    present: bool = False
    valid: bool = False
    matches_disk: bool = False
    this_update: datetime | None = None
    # The server serves an older staple than stapled wrote: it was not reloaded.
    stale: bool = False
    # The served leaf's fingerprint, when it sent one.
    fingerprint: str | None = None


class Known(enum.Enum):
    """What stapled knows of the certificate a server sent."""

    # No configuration was read: the staple is judged on its own.
    NOTHING = "nothing"
    # The configuration's certificates do not include it: a renewal the server has not
    # loaded yet, or a certificate stapled is not told about.
    UNMANAGED = "unmanaged"
    MANAGED = "managed"


def judge(
    served: Served, disk: ocsp.Staple | None, now: datetime, known: Known = Known.MANAGED
) -> Judged:
    """One handshake's staple against its certificate and against what stapled wrote.

    ``served.chain`` must carry the issuer (from the served chain or from disk);
    ``disk`` is stapled's valid staple for the same certificate, if any.  The rule the
    metrics share: a valid good staple is OK only when byte-identical to stapled's (or
    when there is no configuration to compare with); no staple is OK only when stapled
    holds none to serve.
    """
    if served.chain is None:
        return Judged(Verdict.UNKNOWN, "the server sent no certificate")
    return replace(
        _judge(served.chain, served.staple, disk, now, known), fingerprint=served.chain.fingerprint
    )


def _judge(
    chain: CertChain, served: bytes | None, disk: ocsp.Staple | None, now: datetime, known: Known
) -> Judged:
    if not served:
        if chain.must_staple:
            return Judged(Verdict.CRITICAL, "no staple for a must-staple certificate")
        if known is Known.UNMANAGED:
            return Judged(Verdict.WARNING, f"no staple, {_unmanaged(chain)}")
        if disk is not None and disk.valid_at(now):
            return Judged(
                Verdict.WARNING,
                f"no staple, while stapled holds a valid one (until {iso(disk.next_update)})",
            )
        return Judged(Verdict.OK, "no staple, and stapled holds none to serve")
    if chain.issuer is None:
        return Judged(Verdict.UNKNOWN, "the issuer of the served certificate is unknown", True)
    try:
        staple = ocsp.validate(served, chain, now)
    except StapledError as e:
        return Judged(Verdict.CRITICAL, f"the staple served is not valid: {e}", True)
    matches = disk is not None and staple.der == disk.der

    def served_valid(verdict: Verdict, why: str, *, stale: bool = False) -> Judged:
        return Judged(verdict, why, True, True, matches, staple.this_update, stale)

    if staple.cert_status is CertStatus.REVOKED:
        return served_valid(Verdict.CRITICAL, "the staple served says REVOKED")
    if staple.cert_status is not CertStatus.GOOD:
        why = f"the staple served says {staple.cert_status}"
        return served_valid(Verdict.CRITICAL, why)
    if disk is not None and not matches and staple.is_older_than(disk):
        return served_valid(
            Verdict.WARNING,
            f"serves a staple of {iso(staple.this_update)}, older than stapled's of "
            f"{iso(disk.this_update)} (not reloaded?)",
            stale=True,
        )
    good = f"good staple, valid until {iso(staple.next_update)}"
    if matches:
        return served_valid(Verdict.OK, f"{good}, identical to stapled's")
    if known is Known.NOTHING:
        why = f"{good} (no configuration to compare it with)"
        return served_valid(Verdict.OK, why)
    if known is Known.UNMANAGED:
        why = f"{good}, but {_unmanaged(chain)}"
    elif disk is None:
        why = f"{good}, but stapled holds no staple for this certificate"
    else:
        why = f"{good}, but not the one stapled wrote (of {iso(disk.this_update)})"
    return served_valid(Verdict.WARNING, why)


def _unmanaged(chain: CertChain) -> str:
    return (
        f"for a certificate stapled does not manage (serial {chain.serial_hex}; "
        "renewed on disk but the server not reloaded?)"
    )


def worst(results: list[Judged]) -> Judged:
    """The one to report of several handshakes: the gravest (UNKNOWN ranks below the rest
    when at least one handshake got through)."""

    def rank(j: Judged) -> int:
        return -1 if j.verdict is Verdict.UNKNOWN else int(j.verdict)

    reached = [j for j in results if j.verdict is not Verdict.UNKNOWN]
    return max(reached or results, key=rank)
