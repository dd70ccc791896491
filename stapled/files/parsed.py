"""Certificate files parsed before, kept in the state directory by the SHA-256 of their
bytes, so that a pass in a new process parses only files it has not met.

What a file's bytes parse to depends on those bytes alone (and on how the file was
found), so an entry is keyed by their digest: a changed file is simply not found and is
parsed anew.  Only what parsing derived is kept.  Each path is kept with the signature
its files had (device, inode, size, modification and change times, as a rescan
compares them): a file with the same signature is not read at all.  A leaf whose issuer
is not in its file is always read, since finding the issuer needs it; its DER must hash
to the fingerprint remembered, or the file is parsed anew.

Damage is never fatal: the file's first line is the SHA-256 of the rest, and a file
that does not match it, or an entry that does not read back, is parsed again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from ..core import certs, foreign
from ..core.certs import CertChain
from . import store

log = logging.getLogger(__name__)

PARSED_FILE = "certificates.json"
_VERSION = 1

# A file parsed to a chain (its path is the caller's), or the reason it is skipped.
Outcome = CertChain | str
# Why a scan skips a file met in a directory (not a certificate, or no leaf in it).
NOT_A_CERTIFICATE = "no certificate in it"
NO_LEAF = "CA certificates only, no leaf"
SKIPPED = frozenset({NOT_A_CERTIFICATE, NO_LEAF})


def key(data: bytes, lineage: bool, named: bool) -> bytes:
    """The entry of a file's bytes found this way (a directory scan skips what a file
    named directly must hold)."""
    return hashlib.sha256(bytes([lineage, named]) + data).digest()


def where(path: str, lineage: bool, named: bool) -> str:
    """How a path found this way is named in the file (its signature's key)."""
    return f"{int(lineage)}{int(named)}{path}"


class Parsed:
    """Entries read from the state directory, for the first scan of a process."""

    def __init__(self, raw: dict[str, Any] | None = None) -> None:
        raw = raw or {}
        files, issuers, names = raw.get("files"), raw.get("issuers"), raw.get("names")
        ok = isinstance(files, dict) and isinstance(issuers, list) and isinstance(names, list)
        self._files: dict[str, Any] = files if ok else {}  # type: ignore[assignment]
        self._issuers: list[Any] = issuers if ok else []  # type: ignore[assignment]
        self._names: list[Any] = names if ok else []  # type: ignore[assignment]
        seen = raw.get("seen")
        self._seen: dict[str, Any] = seen if ok and isinstance(seen, dict) else {}
        self._issuer_objects: dict[int, x509.Certificate] = {}
        self._name_values: dict[int, bytes] = {}
        self._taken: set[str] = set()

    @property
    def has_signatures(self) -> bool:
        """Whether any path is kept with its files' signature (else stat none of them)."""
        return bool(self._seen)

    @property
    def all_taken(self) -> bool:
        """Every entry was met again: nothing to forget."""
        return len(self._taken) == len(self._files)

    @classmethod
    def load(cls, state_dir: Path) -> Parsed:
        try:
            check, _, body = (state_dir / PARSED_FILE).read_bytes().partition(b"\n")
            if hashlib.sha256(body).hexdigest().encode() != check:
                return cls()
            raw = json.loads(body)
        except (OSError, ValueError, RecursionError):
            return cls()
        if not isinstance(raw, dict) or raw.get("version") != _VERSION:
            return cls()
        return cls(raw)

    def take(
        self, entry_key: bytes, data: bytes, path: str, shared: dict[bytes, x509.Certificate]
    ) -> Outcome | None:
        """What ``data`` parsed to before (the chain named by ``path``); None when it was
        not parsed before or its entry does not read back."""
        name = entry_key.hex()
        entry = self._files.get(name)
        if entry is None:
            return None
        try:
            outcome = self._outcome(entry, data, path, shared)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError):
            return None
        if outcome is not None:
            self._taken.add(name)
        return outcome

    def recall(
        self, place: str, signature: bytes, path: str, shared: dict[bytes, x509.Certificate]
    ) -> tuple[bytes, Outcome] | None:
        """What the files at ``place`` (:func:`where`) parsed to, and its entry's key,
        when they have the very signature they had then: nothing is read.  None when
        they had another, or the leaf is needed (its issuer is not in the file)."""
        held = self._seen.get(place)
        if type(held) is not list or len(held) != 2 or held[0] != signature.hex():
            return None
        name = held[1]
        entry = self._files.get(name) if type(name) is str else None
        if entry is None:
            return None
        try:
            entry_key, outcome = bytes.fromhex(name), self._outcome(entry, None, path, shared)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError):
            return None
        if outcome is None:
            return None
        self._taken.add(name)
        return entry_key, outcome

    def keeps(self, place: str, signature: bytes, entry_key: bytes) -> bool:
        """Whether ``place`` is kept with this signature and entry (nothing to update)."""
        return self._seen.get(place) == [signature.hex(), entry_key.hex()]

    def _outcome(
        self, entry: Any, data: bytes | None, path: str, shared: dict[bytes, x509.Certificate]
    ) -> Outcome | None:
        if isinstance(entry, str):
            return entry if entry in SKIPPED else None
        (fingerprint, serial, not_after, name, issuer, ocsp_urls, must_staple,
         ca_issuers_urls, crl_urls) = entry  # fmt: skip
        if not (
            type(fingerprint) is str
            and type(serial) is str
            and _index(not_after)
            and _index(name)
            and (issuer is None or _index(issuer))
            and must_staple in (0, 1)
            and type(must_staple) is int
        ):
            raise TypeError(entry)
        known = self._issuer(issuer, shared) if issuer is not None else None
        der = None
        if known is None:
            # Kept until its issuer is found: the DER of the bytes read now, no other.
            der = certs.first_der(data) if data is not None else None
            if der is None or hashlib.sha256(der).hexdigest() != fingerprint:
                return None
        return CertChain(
            leaf_der=der,
            issuer=known,
            path=path,
            serial=int(serial, 16),
            not_after=datetime.fromtimestamp(not_after, UTC),
            fingerprint=fingerprint,
            issuer_name=self._name(name),
            ocsp_urls=_strings(ocsp_urls),
            must_staple=bool(must_staple),
            ca_issuers_urls=_strings(ca_issuers_urls),
            crl_urls=_strings(crl_urls),
        )

    def _issuer(self, index: int, shared: dict[bytes, x509.Certificate]) -> x509.Certificate:
        if index not in self._issuer_objects:
            der = base64.b64decode(self._issuers[index], validate=True)
            try:
                cert = shared.get(der) or x509.load_der_x509_certificate(der)
            except foreign.READ_ERRORS as e:
                raise ValueError(index) from e
            shared.setdefault(der, cert)
            self._issuer_objects[index] = cert
        return self._issuer_objects[index]

    def _name(self, index: int) -> bytes:
        if index not in self._name_values:
            self._name_values[index] = certs.shared(base64.b64decode(self._names[index]))
        return self._name_values[index]


def _index(value: object) -> bool:
    """An index into the file's tables, or a time: an int, not negative (a negative
    index would name another table entry)."""
    return type(value) is int and value >= 0


def _strings(value: object) -> tuple[str, ...]:
    # Spelled out, not all() over a generator: three lists for every certificate.
    if type(value) is not list:
        raise TypeError(value)
    for text in value:
        if type(text) is not str:
            raise TypeError(value)
    return certs.shared(tuple(value))


# Where files were found (:func:`where`), their signature, their entry's key, and what
# they parsed to.
Kept = tuple[str, bytes, bytes, Outcome]


def save(state_dir: Path, outcomes: Iterable[Kept]) -> None:
    """Keep ``outcomes`` (and only those) for the next process.  Raises StoreError."""
    issuers: dict[bytes, int] = {}
    # Thousands of chains hold the same few issuer objects: each is encoded once.
    encoded: dict[int, tuple[x509.Certificate, int]] = {}
    names: dict[bytes, int] = {}
    files: dict[str, Any] = {}
    seen: dict[str, list[str]] = {}
    for place, signature, entry_key, outcome in outcomes:
        seen[place] = [signature.hex(), entry_key.hex()]
        if isinstance(outcome, str):
            files[entry_key.hex()] = outcome
            continue
        issuer = None
        if outcome.issuer is not None:
            held = encoded.get(id(outcome.issuer))
            if held is None:
                der = certs.der_of(outcome.issuer)
                held = encoded[id(outcome.issuer)] = (
                    outcome.issuer,
                    issuers.setdefault(der, len(issuers)),
                )
            issuer = held[1]
        files[entry_key.hex()] = [
            outcome.fingerprint,
            format(outcome.serial, "x"),
            int(outcome.not_after.timestamp()),
            names.setdefault(outcome.issuer_name, len(names)),
            issuer,
            outcome.ocsp_urls,
            int(outcome.must_staple),
            outcome.ca_issuers_urls,
            outcome.crl_urls,
        ]
    body = json.dumps(
        {
            "version": _VERSION,
            "issuers": [base64.b64encode(d).decode() for d in issuers],
            "names": [base64.b64encode(n).decode() for n in names],
            "files": files,
            "seen": seen,
        },
        separators=(",", ":"),
    ).encode()
    text = hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    store.prepare_dir(state_dir)
    store.write_atomic(state_dir / PARSED_FILE, text, mode=0o600)
