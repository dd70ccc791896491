"""Staples validated before, by the SHA-256 of their bytes: the same bytes for the same
certificate need only their times checked again, not their signature.  The bytes decide:
anything not remembered, or remembered for another certificate, is validated in full.

What validation found is kept in the state file as one compact string per staple, read
into a Staple only when its bytes are met again."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from . import ocsp, times
from .certs import CertChain, shared
from .fleet import digest
from .ocsp import CertID, CertStatus, Staple


class Validated:
    def __init__(self) -> None:
        # Digest -> the staple validated from those bytes, or what the state file says
        # of it (read when met).
        self._by_digest: dict[str, Staple | str] = {}
        # The state file's text of each staple recalled from it since the last
        # :meth:`written`: the state is written back with it, not made anew.
        self.texts: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def note(self, staple: Staple, key: str | None = None) -> None:
        """``staple`` validated; ``key`` is its :func:`digest` when the caller has it,
        so that the tables keeping it share one string."""
        self._by_digest[digest(staple.der) if key is None else key] = staple

    def remembered(self) -> Iterable[tuple[str, Staple | str]]:
        return self._by_digest.items()

    def recall(self, der: bytes, chain: CertChain, now: datetime) -> Staple | None:
        """The staple validated from exactly ``der`` for this certificate, its times
        checked at ``now``; None when these bytes were not validated for it.  Raises
        InvalidResponseError when they were, but time has made them unusable."""
        key = digest(der)
        held = self._by_digest.get(key)
        known = from_facts(held, der) if isinstance(held, str) else held
        if known is None:
            self._by_digest.pop(key, None)  # facts that do not read back: validate anew
            return None
        self._by_digest[key] = known
        if known.serial != chain.serial or known.cert_id is None:
            return None
        # The CertID names the issuer's name and key: the same bytes answering for a
        # certificate of another issuer with the same serial are validated anew.
        if ocsp.cert_id(chain, known.cert_id.hash_name) != known.cert_id:
            return None
        staple = ocsp.recheck(known if known.der == der else replace(known, der=der), now)
        if isinstance(held, str):
            self.texts[key] = held
        return staple

    def written(self) -> None:
        """The state is written: the texts recalled need not be kept."""
        self.texts = {}

    def add(self, remembered: Iterable[tuple[str, Staple | str]]) -> None:
        """What is remembered elsewhere (the state file, the configuration before a reload)."""
        self._by_digest.update(remembered)

    def keep_only(self, held: Iterable[Staple | None]) -> None:
        """Forget the staples no longer held."""
        kept = {digest(s.der) for s in held if s is not None}
        if len(self._by_digest) > 2 * len(kept):
            self._by_digest = {d: s for d, s in self._by_digest.items() if d in kept}


def facts(staple: Staple) -> str:
    """What validating ``staple`` found, as the state file keeps it (times to the
    microsecond): a JSON array, written out directly since a pass writes one for every
    certificate; only the responder's texts need escaping."""
    cert_id, window, revoked = staple.cert_id, staple.signer_window, staple.revocation_time
    ids = (
        f'["{cert_id.hash_name}","{cert_id.name_hash.hex()}","{cert_id.key_hash.hex()}"]'
        if cert_id
        else "null"
    )
    times = f'["{window[0].isoformat()}","{window[1].isoformat()}"]' if window else "null"
    revoked_at = f'"{revoked.isoformat()}"' if revoked else "null"
    reason = staple.revocation_reason
    return (
        f'[1,"{staple.cert_status}","{staple.serial:X}","{staple.this_update.isoformat()}",'
        f'"{staple.next_update.isoformat()}","{staple.produced_at.isoformat()}",'
        f"{_quoted(staple.signer)},{revoked_at},"
        f"{_quoted(reason) if reason is not None else 'null'},{ids},{staple.single_count},{times}]"
    )


# A JSON string literal (json's own C function; json.dumps costs more per call).
_quoted = json.encoder.encode_basestring_ascii
# Facts read back with the decoder's own call: json.loads costs twice as much for
# each, and status reads one for every certificate.
_DECODER = json.JSONDecoder()


def from_facts(text: str, der: bytes) -> Staple | None:
    """The staple ``facts`` wrote, with its bytes; None for anything else."""
    try:
        return _from_facts(text, der)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError):
        return None


def _from_facts(text: str, der: bytes) -> Staple:
    value, end = _DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError(text)
    (version, status, serial, this, nxt, produced, signer, revoked_at, reason, cert_id,
     count, window) = value  # fmt: skip
    if version != 1 or not isinstance(signer, str) or type(count) is not int:
        raise ValueError(text)
    number = int(serial, 16)
    hash_name, name_hash, key_hash = cert_id
    return Staple(
        der=der,
        cert_status=_STATUSES[status],
        serial=number,
        this_update=_when(this),
        next_update=_when(nxt),
        produced_at=_when(produced),
        signer=shared(signer),
        revocation_time=_when(revoked_at) if revoked_at is not None else None,
        revocation_reason=str(reason) if reason is not None else None,
        cert_id=CertID(
            shared(str(hash_name)),
            shared(bytes.fromhex(name_hash)),
            shared(bytes.fromhex(key_hash)),
            number,
        ),
        single_count=count,
        signer_window=(_when(window[0]), _when(window[1])) if window is not None else None,
    )


# A dict rather than CertStatus(value): an enum's call is several times slower.
_STATUSES = {status.value: status for status in CertStatus}


def _when(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError(value)
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValueError(value)
    return times.shared(at)
