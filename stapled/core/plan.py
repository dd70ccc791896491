"""A pass's decisions as pure functions of values: which certificates need a fetch, which
answer wins, and what is recorded of the result.  ``now`` is always a parameter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from . import policy, urls
from .certs import CertChain
from .model import Due, Fetched, Found, Record, Settled
from .ocsp import CertStatus, Staple
from .policy import State
from .times import iso

NO_ISSUER = (
    "the issuer certificate is not in the file, no issuer is configured, "
    "and the certificate has no caIssuers URL"
)


def classify(found: Iterable[Found], now: datetime) -> tuple[list[Record], dict[str, list[Found]]]:
    """Records for what needs no fetch; the rest grouped by certificate fingerprint.

    A certificate found in several places is one group: one request, every staple file
    written from it.  An OCSP URL that is not http or https is left out of the group's
    chain; a certificate with none left is an error naming the first.
    """
    records: list[Record] = []
    groups: dict[str, list[Found]] = defaultdict(list)
    for item in found:
        chain = item.chain
        if chain is None:
            records.append(
                Record(
                    item.name,
                    item.path,
                    State.ERROR,
                    last_error=item.error,
                    files=not item.directory,
                )
            )
            continue
        problems = [urls.problem(u) for u in chain.ocsp_urls]
        usable = tuple(u for u, p in zip(chain.ocsp_urls, problems, strict=True) if p is None)
        if usable and (chain.issuer is not None or chain.ca_issuers_urls) and now < chain.not_after:
            if usable != chain.ocsp_urls:
                item = replace(item, chain=chain.with_ocsp_urls(usable))
            members = groups.get(chain.fingerprint)
            if members is None:
                # A list made with its one member holds one slot; append() would reserve four.
                groups[chain.fingerprint] = [item]
            else:
                members.append(item)
            continue
        base = Record(
            item.name,
            item.path,
            State.NO_OCSP,
            serial_number=chain.serial,
            must_staple=chain.must_staple,
            ocsp_url=chain.ocsp_urls[0] if chain.ocsp_urls else None,
            fingerprint=chain.fingerprint,
            crl_url=chain.crl_url,
        )
        if not chain.ocsp_urls:
            pass
        elif not usable:
            base.state = State.ERROR
            base.last_error = (
                f"the certificate's OCSP URL {problems[0]}; "
                "set ocsp_url for this source to use another responder"
            )
        elif chain.issuer is None and not chain.ca_issuers_urls:
            base.state, base.last_error = State.ERROR, NO_ISSUER
        else:
            base.state = State.EXPIRED
            base.last_error = f"the certificate expired on {iso(chain.not_after)}"
        records.append(base)
    return records, groups


def best_chain(members: list[Found]) -> CertChain:
    """The same certificate may be found with and without its issuer: prefer with."""
    chains = [m.chain for m in members if m.chain is not None]
    return next((c for c in chains if c.issuer is not None), chains[0])


def newest(staples: Iterable[Staple]) -> Staple | None:
    """The newest of the valid staples found on disk (an unknown answer is never kept)."""
    best: Staple | None = None
    for staple in staples:
        if staple.cert_status is CertStatus.UNKNOWN:
            continue
        if best is None or best.is_older_than(staple):
            best = staple
    return best


def settle(current: Staple | None, fetched: Fetched | None) -> Settled:
    """What to publish: the fetched answer, unless it says unknown or is older than what
    is held (a replay never wins), except that a valid "revoked" replaces a "good" however
    old it is.  ``fetched=None``: nothing was due."""
    if fetched is None:
        return Settled(current)
    answer, origin = fetched.staple, fetched.origin
    if answer is None:
        return Settled(current, fetched.error)
    if answer.cert_status is CertStatus.UNKNOWN:
        return Settled(current, f"{origin}: the responder says the certificate is unknown", True)
    revokes = answer.cert_status is CertStatus.REVOKED
    if current is not None and current.finally_revoked and not revokes:
        error = (
            f"{origin}: says {answer.cert_status} after the CA said revoked on "
            f"{iso(current.revocation_time)}; refused (revocation is final, RFC 5280 3.3)"
        )
        return Settled(current, error)
    if current is not None and answer.is_older_than(current):
        # Replay protection keeps an old "good" from coming back; an old "revoked" cannot
        # un-revoke anything, so the CA's signed word that it is revoked always wins.
        if revokes and current.cert_status is not CertStatus.REVOKED:
            return Settled(answer)
        error = f"{origin}: response of {iso(answer.this_update)} is older than the staple on disk"
        return Settled(current, error + "; refused")
    return Settled(answer)


def keep_theirs(
    before: Staple | None, now: Staple | None, now_due: bool, answer: Staple | None
) -> bool:
    """Whether an answer fetched unlocked gives way to what another writer put on disk
    meanwhile: it does when the disk holds another staple than when the fetch began, one
    not yet due, unless the answer revokes (the CA's signed "revoked" always wins)."""
    revokes = answer is not None and answer.cert_status is CertStatus.REVOKED
    other = now is not None and (before is None or now.der != before.der)
    return other and not now_due and not revokes


def record(
    item: Found,
    current: Staple | None,
    *,
    output: str,
    unknown: bool = False,
) -> Record:
    """The record of one name of a fetchable certificate, holding ``current``."""
    chain = item.chain
    assert chain is not None
    rec = Record(
        item.name,
        item.path,
        policy.state_of(current, unknown_answer=unknown),
        haproxy_staple_path=item.haproxy_staple_path,
        fingerprint=chain.fingerprint,
        current=current,
        serial_number=chain.serial,
        ocsp_url=chain.ocsp_urls[0],
        must_staple=chain.must_staple,
        output=output,
        crl_url=chain.crl_url,
    )
    if current is not None:
        rec.this_update, rec.next_update = current.this_update, current.next_update
    return rec


def due(records: Iterable[Record], refresh_at: float) -> dict[str, Due]:
    """When each record's staple is refreshed without a scheduler's jitter or retries:
    at ``refresh_at`` of its window; nothing for a name without one."""
    return {
        r.name: Due(refresh=policy.refresh_time(r.current, refresh_at))
        for r in records
        if r.current is not None
    }


def internal_error(members: list[Found], error: Exception) -> list[Record]:
    """The records of a certificate whose refresh met a bug: an error; the rest goes on."""
    reason = f"internal error ({type(error).__name__}: {error})"
    return [
        Record(m.name, m.path, State.ERROR, last_error=reason, failed_now=True) for m in members
    ]
