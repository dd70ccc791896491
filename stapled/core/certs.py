"""Certificates in, a :class:`CertChain` out.  Pure: no file or network access.

Private key blocks in a bundle (HAProxy's combined PEM) are skipped by the PEM scanner
before any decoding: their text is never decoded, logged, copied or kept.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from ..errors import CertificateError
from . import foreign, urls
from .der import tlv

# RFC 7633: the TLS feature extension; value 5 is status_request ("must-staple").
_TLS_FEATURE_STATUS_REQUEST = 5

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


def is_key_name(name: str) -> bool:
    """A private key file by its name (privkey.pem, site.key, ...): never opened."""
    name = name.lower()
    return name.endswith((".key", "-key.pem", "_key.pem", ".key.pem")) or "privkey" in name


def _is_private_key_label(label: bytes) -> bool:
    return b"PRIVATE KEY" in label


def parse_certificates(
    data: bytes, path: str, shared: dict[bytes, x509.Certificate] | None = None
) -> list[x509.Certificate]:
    """Every certificate in ``data`` (PEM blocks in order, or a single DER certificate).

    Private key blocks and other non-certificate blocks (DH parameters, CSRs) are
    ignored.  Raises CertificateError when a CERTIFICATE block does not decode, or when
    there is no certificate at all.

    ``shared`` maps DER to certificates already parsed: the chain certificates after the
    leaf are taken from it and added to it, so that thousands of bundles ending in the
    same intermediate hold one object for it (parsed once, kept once in memory).
    """
    certs: list[x509.Certificate] = []
    saw_pem = False
    for match in _PEM_BLOCK.finditer(data):
        saw_pem = True
        label, body = match.group(1), match.group(2)
        if _is_private_key_label(label) or label not in (b"CERTIFICATE", b"X509 CERTIFICATE"):
            continue
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
            known = shared.get(der) if shared is not None and certs else None
            cert = known or x509.load_der_x509_certificate(der)
            if shared is not None and certs and known is None:
                shared[der] = cert
            certs.append(cert)
        except foreign.READ_ERRORS as e:  # binascii.Error is a ValueError
            raise CertificateError(
                path,
                f"certificate block {len(certs) + 1} is not a valid certificate "
                f"({foreign.plain(e)})",
            ) from e
    if not saw_pem and data[:1] == b"\x30":
        try:
            return [x509.load_der_x509_certificate(data)]
        except foreign.READ_ERRORS as e:
            raise CertificateError(
                path, f"neither PEM nor a DER certificate ({foreign.plain(e)})"
            ) from e
    if not certs:
        if b"-----BEGIN CERTIFICATE-----" in data:
            raise CertificateError(path, "truncated PEM: a CERTIFICATE block has no END line")
        raise CertificateError(path, "no certificate found (expected PEM or DER)")
    return certs


_BEGIN, _END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


def first_der(data: bytes) -> bytes | None:
    """The DER of the first certificate in ``data`` as :func:`parse_certificates` finds
    it, not parsed; None when there is none."""
    begin = data.find(_BEGIN)
    if begin != -1 and data.rfind(b"-----BEGIN ", 0, begin) == -1:
        # The common case, a file that starts with a certificate, without the regex.
        end = data.find(_END, begin)
        if end != -1:
            try:
                body = b"".join(data[begin + len(_BEGIN) : end].split())
                return base64.b64decode(body, validate=True)
            except ValueError:
                return None
    saw_pem = False
    for match in _PEM_BLOCK.finditer(data):
        saw_pem = True
        if match.group(1) in (b"CERTIFICATE", b"X509 CERTIFICATE"):
            try:
                return base64.b64decode(b"".join(match.group(2).split()), validate=True)
            except ValueError:
                return None
    return data if not saw_pem and data[:1] == b"\x30" else None


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def parse_issuer_bytes(data: bytes, source: str) -> x509.Certificate:
    """The first certificate in an issuer file or AIA caIssuers body: DER, PEM or PKCS#7."""
    try:
        return parse_certificates(data, source)[0]
    except CertificateError:
        pass
    for loader in (pkcs7.load_der_pkcs7_certificates, pkcs7.load_pem_pkcs7_certificates):
        try:
            found = loader(data)
        except foreign.READ_ERRORS:
            continue
        if found:
            return found[0]
    raise CertificateError(source, "not a certificate in DER, PEM or PKCS#7 form")


@dataclass(frozen=True, slots=True)
class LeafExtensions:
    """What stapled reads from a certificate's extensions, read in one pass over them."""

    ca: bool = False
    ocsp_urls: tuple[str, ...] = ()
    ca_issuers_urls: tuple[str, ...] = ()
    must_staple: bool = False
    authority_key_id: bytes | None = None
    # cRLDistributionPoints' full names that are URIs, in its order.
    crl_urls: tuple[str, ...] = ()


def leaf_extensions(cert: x509.Certificate) -> LeafExtensions:
    """The certificate's CA flag, AIA URLs (in its order), must-staple flag, AKI and CRL
    distribution point URLs.

    A malformed extension of these counts as absent; cryptography refuses a certificate
    whose extensions do not parse at all (CertificateError from the caller's parse).
    """
    ca, must_staple = False, False
    ocsp: list[str] = []
    issuers: list[str] = []
    authority: bytes | None = None
    crls: list[str] = []
    for extension in cert.extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints):
            ca = value.ca
        elif isinstance(value, x509.AuthorityInformationAccess):
            for description in value:
                location = description.access_location
                if not isinstance(location, x509.UniformResourceIdentifier):
                    continue
                if description.access_method == AuthorityInformationAccessOID.OCSP:
                    ocsp.append(location.value)
                elif description.access_method == AuthorityInformationAccessOID.CA_ISSUERS:
                    issuers.append(location.value)
        elif isinstance(value, x509.TLSFeature):
            must_staple = any(f.value == _TLS_FEATURE_STATUS_REQUEST for f in value)
        elif isinstance(value, x509.AuthorityKeyIdentifier):
            authority = value.key_identifier
        elif isinstance(value, x509.CRLDistributionPoints):
            crls += (
                name.value
                for point in value
                for name in point.full_name or ()
                if isinstance(name, x509.UniformResourceIdentifier)
            )
    return LeafExtensions(
        ca, shared(tuple(ocsp)), shared(tuple(issuers)), must_staple, authority, shared(tuple(crls))
    )


def is_ca(cert: x509.Certificate) -> bool:
    return leaf_extensions(cert).ca


# A CA's delegated responder signs every answer with the same certificate, embedded in
# each: its signature is checked once per (responder, issuer) pair, not once per answer.
# The verdict depends on the two certificates' bytes alone (equal certificates hash and
# compare by their DER).
@functools.lru_cache(maxsize=1024)
def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s name and key signed ``cert`` (the signature is checked)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def names_issuer(cert: x509.Certificate, candidate: x509.Certificate) -> bool:
    """True when ``candidate`` is the issuer ``cert`` names, by name and key identifier.

    RFC 5280 4.2.1.1: a certificate's authorityKeyIdentifier is its issuer's
    subjectKeyIdentifier, and every public CA sets both.  Matching them picks the right
    certificate out of a bundle as surely as a signature check, for a fraction of the CPU
    (docs/performance.md).  Without both identifiers the signature is checked.

    For certificates from the operator's own files only: an issuer fetched over plain
    HTTP (caIssuers) could be forged with copied identifiers, so it must pass
    :func:`issued_by`.
    """
    issuer_name = raw_names(cert)[0]
    return _names_issuer(cert, issuer_name, leaf_extensions(cert).authority_key_id, candidate)


def _names_issuer(
    cert: x509.Certificate,
    issuer_name: bytes,
    authority_key_id: bytes | None,
    candidate: x509.Certificate,
) -> bool:
    subject, subject_key_id = _issuer_facts(candidate)
    if issuer_name != subject:
        return False
    if authority_key_id is not None and subject_key_id is not None:
        return authority_key_id == subject_key_id
    return issued_by(cert, candidate)


@functools.lru_cache(maxsize=256)
def _issuer_facts(issuer: x509.Certificate) -> tuple[bytes, bytes | None]:
    """An issuer's subject name (DER) and key identifier, once per issuer, not per leaf."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        ski = None
    return raw_names(issuer)[1], ski


def raw_names(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """The issuer and subject names of ``cert`` in DER, as its TBSCertificate holds them.

    Read from the encoding rather than through Name objects: a CertID hashes the DER of
    the issuer name as it is in the certificate (RFC 6960 4.1.1), and building two Name
    objects per certificate was a fifth of the cost of reading one.
    """
    tbs = cert.tbs_certificate_bytes
    offset = tlv(tbs, 0, 0x30)[1]
    if tbs[offset] == 0xA0:  # version, when not v1
        offset = tlv(tbs, offset, 0xA0)[2]
    offset = tlv(tbs, offset, 0x02)[2]  # serialNumber
    offset = tlv(tbs, offset, 0x30)[2]  # signature AlgorithmIdentifier
    issuer_end = tlv(tbs, offset, 0x30)[2]
    validity_end = tlv(tbs, issuer_end, 0x30)[2]
    subject_end = tlv(tbs, validity_end, 0x30)[2]
    return tbs[offset:issuer_end], tbs[validity_end:subject_end]


def subject_public_key_bits(cert: x509.Certificate) -> bytes:
    """The contents of subjectPublicKey's BIT STRING, as RFC 6960 CertID hashes it.

    cryptography has no accessor for it, so the SubjectPublicKeyInfo DER is walked:
    SEQUENCE { AlgorithmIdentifier SEQUENCE, BIT STRING }.
    """
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    start = tlv(spki, 0, 0x30)[1]
    alg_end = tlv(spki, start, 0x30)[2]
    _, bits_start, bits_end = tlv(spki, alg_end, 0x03)
    # The first content octet of a BIT STRING counts unused bits; a key has none.
    return spki[bits_start + 1 : bits_end]


@dataclass(frozen=True, slots=True)
class CertChain:
    """A leaf certificate reduced to what OCSP needs, with its issuer and responder URLs.

    The leaf itself is needed only to find its issuer (among AIA caIssuers answers, or
    to check a configured one): its DER is kept while the issuer is unknown, and
    dropped once it is found, since at 100,000 certificates it was a tenth of the
    daemon's memory.  ``leaf`` parses it again for those uses.
    """

    leaf_der: bytes | None = field(repr=False)
    issuer: x509.Certificate | None
    path: str
    serial: int
    not_after: datetime
    # SHA-256 of the leaf's DER, in hex: identifies one certificate wherever it is found.
    fingerprint: str
    # The DER of the leaf's issuer name: a CertID hashes it (issuerNameHash).
    issuer_name: bytes = field(repr=False)
    ocsp_urls: tuple[str, ...] = ()
    must_staple: bool = False
    ca_issuers_urls: tuple[str, ...] = ()
    crl_urls: tuple[str, ...] = ()

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf, while its issuer is unknown (afterwards nothing needs it)."""
        if self.leaf_der is None:
            raise ValueError(f"{self.path}: the leaf is not kept once its issuer is known")
        return x509.load_der_x509_certificate(self.leaf_der)

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "X")

    @property
    def crl_url(self) -> str | None:
        """The first CRL distribution point stapled can fetch (http or https)."""
        return next((u for u in self.crl_urls if urls.problem(u) is None), None)

    def with_issuer(self, issuer: x509.Certificate) -> CertChain:
        return replace(self, issuer=issuer, leaf_der=None)

    def with_ocsp_urls(self, urls: tuple[str, ...]) -> CertChain:
        # Every certificate of a source with ocsp_url: spelled out, since replace() is
        # several times slower than the constructor.
        return CertChain(
            self.leaf_der,
            self.issuer,
            self.path,
            self.serial,
            self.not_after,
            self.fingerprint,
            self.issuer_name,
            urls,
            self.must_staple,
            self.ca_issuers_urls,
            self.crl_urls,
        )


def build_chain(
    certs: list[x509.Certificate], path: str, issuer: x509.Certificate | None = None
) -> CertChain:
    """The leaf (first certificate) and its issuer, from a bundle or an explicit issuer.

    The issuer is the bundle certificate that issued the leaf; a configured ``issuer`` is
    used when the bundle holds none.  ``CertChain.issuer`` is None when neither has it
    (the caller may then try AIA caIssuers).

    Raises CertificateError for a bundle that starts with a CA certificate, a
    self-signed leaf, a configured issuer that did not sign the leaf, or a field of any of
    them that cannot be read.
    """
    try:
        return _build_chain(certs, path, issuer)
    except foreign.READ_ERRORS as e:
        raise CertificateError(path, f"cannot be read: {foreign.plain(e)}") from e


def _build_chain(
    certs: list[x509.Certificate], path: str, issuer: x509.Certificate | None
) -> CertChain:
    leaf = certs[0]
    extensions = leaf_extensions(leaf)
    if extensions.ca and len(certs) > 1:
        raise CertificateError(path, "bundle starts with a CA certificate; put the leaf first")
    try:
        issuer_name, subject_name = raw_names(leaf)
    except (ValueError, IndexError) as e:
        raise CertificateError(path, f"cannot read the certificate's names ({e})") from e
    if leaf.serial_number < 0:
        # RFC 5280 4.1.2.2; no CertID can name it either.
        raise CertificateError(path, "the serial number is negative, which RFC 5280 forbids")
    issuer_name = shared(issuer_name)
    if issuer_name == subject_name and issued_by(leaf, leaf):
        raise CertificateError(path, "self-signed certificate: there is no CA to ask for OCSP")
    aki = extensions.authority_key_id
    der = leaf.public_bytes(serialization.Encoding.DER)
    found = next((c for c in certs[1:] if _names_issuer(leaf, issuer_name, aki, c)), None)
    chain = CertChain(
        leaf_der=der if found is None else None,
        issuer=found,
        path=path,
        serial=leaf.serial_number,
        not_after=leaf.not_valid_after_utc,
        fingerprint=hashlib.sha256(der).hexdigest(),
        issuer_name=issuer_name,
        ocsp_urls=extensions.ocsp_urls,
        must_staple=extensions.must_staple,
        ca_issuers_urls=extensions.ca_issuers_urls,
        crl_urls=extensions.crl_urls,
    )
    if chain.issuer is None and issuer is not None:
        return with_configured_issuer(chain, issuer, leaf)
    return chain


def with_configured_issuer(
    chain: CertChain, issuer: x509.Certificate, leaf: x509.Certificate | None = None
) -> CertChain:
    """``chain`` with the issuer the operator configured; CertificateError if it is not."""
    if not names_issuer(leaf or chain.leaf, issuer):
        raise CertificateError(chain.path, "the configured issuer did not sign this certificate")
    return chain.with_issuer(issuer)


def name_hash(issuer_name: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    """CertID issuerNameHash: hash of the DER of the leaf's issuer name."""
    return _name_hash(issuer_name, algorithm.name)


# Thousands of leaves name the same few issuers: one hash (and one bytes object) each.
@functools.lru_cache(maxsize=1024)
def _name_hash(issuer_name: bytes, algorithm: str) -> bytes:
    return hashlib.new(algorithm, issuer_name).digest()


# What thousands of certificates hold alike: an issuer's name, its CA's URLs, a CertID's
# hashes.
_Alike = TypeVar("_Alike", bytes, str, tuple[str, ...])


def shared(value: _Alike) -> _Alike:
    """One object for equal values: at 100,000 certificates a copy each is megabytes."""
    return cast(_Alike, _one(value))


@functools.lru_cache(maxsize=4096)
def _one(value: Hashable) -> Hashable:
    return value


def key_hash(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """CertID issuerKeyHash: hash of the issuer's subjectPublicKey bits."""
    return _key_hash(issuer, algorithm.name)


# Thousands of certificates share a handful of issuers: each issuer's key is hashed once.
@functools.lru_cache(maxsize=256)
def _key_hash(issuer: x509.Certificate, algorithm: str) -> bytes:
    return hashlib.new(algorithm, subject_public_key_bits(issuer)).digest()
