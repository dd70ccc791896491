"""Certificate revocation lists, checked completely (RFC 5280 5 and 6.3): the other
revocation source, for certificates without an OCSP URL and as a cross-check.

Pure: the DER, the certificate's issuer, the serials asked about and ``now`` are
parameters.  Only what the verdicts need is kept (the CRL's times and the entries of the
serials asked about), so a CRL of any size is freed once it has been read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from ..errors import InvalidCrlError
from . import foreign
from .certs import raw_names
from .times import iso

DEFAULT_SKEW = timedelta(minutes=5)
# What a CRL may carry that stapled understands; a critical extension outside these
# makes the CRL unusable (RFC 5280 5.2).
_KNOWN = {
    ExtensionOID.CRL_NUMBER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.ISSUING_DISTRIBUTION_POINT,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.FRESHEST_CRL,
}
_KNOWN_ENTRY = {
    CRLEntryExtensionOID.CRL_REASON,
    CRLEntryExtensionOID.INVALIDITY_DATE,
}


@dataclass(frozen=True, slots=True)
class Revoked:
    """One serial the CRL lists: when, and the RFC 5280 reason ("unspecified" if none)."""

    revoked_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Crl:
    """What is kept of a validated CRL: its window and the serials asked about that it
    lists.  A serial asked about and not listed is good until ``next_update``."""

    url: str
    this_update: datetime
    next_update: datetime
    revoked: dict[int, Revoked] = field(default_factory=dict)

    def verdict(self, serial: int) -> Revoked | None:
        return self.revoked.get(serial)


def parse(data: bytes) -> x509.CertificateRevocationList:
    """A CRL in DER (what distribution points serve) or PEM; ValueError otherwise."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def check(
    data: bytes,
    url: str,
    issuer: x509.Certificate,
    serials: Iterable[int],
    now: datetime,
    *,
    skew: timedelta = DEFAULT_SKEW,
) -> Crl:
    """``data`` checked as the CRL at ``url`` for certificates of ``issuer``, at ``now``.

    Raises InvalidCrlError (naming ``url``) for anything that must not decide a
    certificate's revocation: not a CRL, another issuer's, a bad signature, not yet valid
    or expired, no nextUpdate, a delta or indirect CRL, a partition that does not cover
    ``url``, or an unrecognised critical extension.
    """
    try:
        return _check(data, url, issuer, frozenset(serials), now, skew)
    except foreign.READ_ERRORS as e:
        raise InvalidCrlError(url, f"cannot be read: {foreign.plain(e)}") from e


def _check(
    data: bytes,
    url: str,
    issuer: x509.Certificate,
    serials: frozenset[int],
    now: datetime,
    skew: timedelta,
) -> Crl:
    if not data:
        raise InvalidCrlError(url, "empty body")
    try:
        crl = parse(data)
    except ValueError as e:
        raise InvalidCrlError(url, f"not a CRL: {foreign.plain(e)}") from e
    # The issuer's subject as encoded, against the CRL's issuer as encoded.
    if crl.issuer.public_bytes() != raw_names(issuer)[1]:
        raise InvalidCrlError(url, "issued by another CA than the certificate's issuer")
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise InvalidCrlError(url, "the signature does not verify with the issuer's key")
    this_update, next_update = crl.last_update_utc, crl.next_update_utc
    if this_update > now + skew:
        raise InvalidCrlError(url, f"thisUpdate {iso(this_update)} is in the future")
    if next_update is None:
        raise InvalidCrlError(url, "no nextUpdate: nobody can tell when it goes stale")
    if next_update <= now:
        raise InvalidCrlError(url, f"expired: nextUpdate {iso(next_update)}")
    _check_extensions(crl, url)
    # One walk over the entries: a lookup by serial walks them all each time, which
    # for thousands of certificates sharing a long list costs minutes.
    revoked: dict[int, Revoked] = {}
    for entry in crl:
        serial = entry.serial_number
        if serial in serials:
            revoked[serial] = Revoked(entry.revocation_date_utc, _reason(entry, url))
    return Crl(url, this_update, next_update, revoked)


def _check_extensions(crl: x509.CertificateRevocationList, url: str) -> None:
    for ext in crl.extensions:
        oid = ext.oid
        if oid == ExtensionOID.DELTA_CRL_INDICATOR:
            raise InvalidCrlError(url, "a delta CRL, not a full list")
        if oid == ExtensionOID.ISSUING_DISTRIBUTION_POINT:
            _check_partition(ext.value, url)
        elif ext.critical and oid not in _KNOWN:
            raise InvalidCrlError(url, f"unrecognised critical extension {oid.dotted_string}")


def _check_partition(idp: x509.IssuingDistributionPoint, url: str) -> None:
    """A partitioned CRL covers only what its issuingDistributionPoint names."""
    if idp.indirect_crl:
        raise InvalidCrlError(url, "an indirect CRL (it lists other issuers' certificates)")
    if idp.only_contains_ca_certs or idp.only_contains_attribute_certs:
        raise InvalidCrlError(url, "covers CA or attribute certificates only")
    if idp.only_some_reasons:
        raise InvalidCrlError(url, "covers some revocation reasons only")
    names = idp.full_name
    if names is not None:
        urls = {n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)}
        if url not in urls:
            raise InvalidCrlError(url, "a partition for another distribution point")


def _reason(entry: x509.RevokedCertificate, url: str) -> str:
    try:
        extensions = list(entry.extensions)
    except foreign.READ_ERRORS:
        # An entry whose extensions cannot be read is still listed as revoked by the CA.
        return "unspecified"
    reason = "unspecified"
    for ext in extensions:
        if ext.oid == CRLEntryExtensionOID.CRL_REASON:
            reason = ext.value.reason.value
        elif ext.critical and ext.oid not in _KNOWN_ENTRY:
            raise InvalidCrlError(
                url, f"an entry with an unrecognised critical extension {ext.oid.dotted_string}"
            )
    return reason
