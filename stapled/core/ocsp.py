"""OCSP requests and response validation.  Pure: no I/O, ``now`` is a parameter.

The servers stapled feeds do not verify what they staple (nginx never checks an
``ssl_stapling_file``, mod_ssl and HAProxy never check signatures), so :func:`validate`
is the only signature check between a CA's responder and every client.  It follows
RFC 6960 section 3.2 and RFC 5019 in the order the checks appear there.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from ..errors import InvalidResponseError, OCSPStatusError
from . import certs, extensions, foreign
from .certs import CertChain
from .times import iso, shared

# Clocks disagree; a thisUpdate this far in the future is still accepted.
DEFAULT_SKEW = timedelta(minutes=5)
# HAProxy stops stapling 300 s before nextUpdate; a response closer than that to its end
# is of no use to any server.  A response valid for minutes only (private CAs, test
# responders) gets a tenth of its window instead, so that it can be stapled at all.
DEFAULT_MARGIN = timedelta(minutes=5)
MARGIN_FRACTION = 0.1


def margin_for(lifetime: timedelta) -> timedelta:
    """How long before its nextUpdate a response stops being worth handing out."""
    return min(DEFAULT_MARGIN, lifetime * MARGIN_FRACTION)


_PSS_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_SHA1 = hashes.SHA1()
CERT_ID_HASHES: dict[str, hashes.HashAlgorithm] = {"sha1": _SHA1, "sha256": hashes.SHA256()}


class CertStatus(enum.StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


# The one CRLReason a CA may lift (RFC 5280 5.3.1): revocation is final for the rest.
HOLD = "certificateHold"

_STATUS = {
    ocsp.OCSPCertStatus.GOOD: CertStatus.GOOD,
    ocsp.OCSPCertStatus.REVOKED: CertStatus.REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: CertStatus.UNKNOWN,
}
# Among SingleResponses that disagree about one certificate, the gravest answer counts.
_GRAVITY = {CertStatus.GOOD: 0, CertStatus.UNKNOWN: 1, CertStatus.REVOKED: 2}


class CertID(NamedTuple):
    """RFC 6960 section 4.1.1 CertID: what a request asks about and a response answers."""

    hash_name: str
    name_hash: bytes
    key_hash: bytes
    serial: int


def cert_ids(chain: CertChain) -> frozenset[CertID]:
    """Every CertID a client may use for the chain's leaf (SHA-1 and SHA-256)."""
    return frozenset(i for name in CERT_ID_HASHES if (i := cert_id(chain, name)) is not None)


def cert_id(chain: CertChain, hash_name: str) -> CertID | None:
    """The chain's CertID with ``hash_name`` (one of CERT_ID_HASHES); None without an
    issuer or for another hash."""
    algorithm = CERT_ID_HASHES.get(hash_name)
    if chain.issuer is None or algorithm is None:
        return None
    return CertID(
        hash_name,
        certs.name_hash(chain.issuer_name, algorithm),
        certs.key_hash(chain.issuer, algorithm),
        chain.serial,
    )


@dataclass(frozen=True, slots=True)
class Staple:
    """A validated OCSP response for one certificate: exactly the bytes received."""

    der: bytes = field(repr=False)
    cert_status: CertStatus
    serial: int
    this_update: datetime
    next_update: datetime
    produced_at: datetime
    signer: str
    revocation_time: datetime | None = None
    revocation_reason: str | None = None
    # The CertID of the SingleResponse that answers for this certificate, and how many
    # SingleResponses the response holds (HAProxy takes exactly one, with a SHA-1 CertID).
    cert_id: CertID | None = None
    single_count: int = 1
    # When the delegated responder certificate that signed it is valid (None: the issuer
    # signed it).
    signer_window: tuple[datetime, datetime] | None = None

    @property
    def haproxy_problem(self) -> str | None:
        """Why HAProxy would refuse this response, or None when it takes it."""
        if self.single_count != 1:
            return f"it holds {self.single_count} SingleResponses and HAProxy takes only one"
        if self.cert_id is not None and self.cert_id.hash_name != "sha1":
            return f"its CertID uses {self.cert_id.hash_name} and HAProxy matches only SHA-1"
        return None

    def valid_at(self, now: datetime) -> bool:
        """Still fit to hand to a server at ``now`` (not within its margin of nextUpdate)."""
        return now + self.margin < self.next_update

    @property
    def margin(self) -> timedelta:
        return margin_for(self.lifetime)

    @property
    def usable_until(self) -> datetime:
        """When it stops being fit to hand to a server."""
        return self.next_update - self.margin

    @property
    def finally_revoked(self) -> bool:
        """Revoked for good: every reason but certificateHold, which a CA may lift."""
        return self.cert_status is CertStatus.REVOKED and self.revocation_reason != HOLD

    @property
    def lifetime(self) -> timedelta:
        return self.next_update - self.this_update

    def is_older_than(self, other: Staple) -> bool:
        """True when this response predates ``other`` (a replay must never win)."""
        return self.this_update < other.this_update or self.produced_at < other.produced_at


def validate(
    der: bytes,
    chain: CertChain,
    now: datetime,
    *,
    skew: timedelta = DEFAULT_SKEW,
    margin: timedelta | None = None,
) -> Staple:
    """Check ``der`` completely as the OCSP response for the chain's leaf at time ``now``.

    Returns the Staple for good, revoked and unknown answers alike; what to do with each
    is policy.  Raises OCSPStatusError for an unsuccessful responseStatus and
    InvalidResponseError for anything else that must not be published; the caller adds
    the URL with ``.at(url)``.
    """
    try:
        return _validate(der, chain, now, skew, margin)
    except foreign.READ_ERRORS as e:
        # A field of the response or of a certificate it carries that cannot be read.
        raise InvalidResponseError(f"cannot be read: {foreign.plain(e)}") from e


def _validate(
    der: bytes, chain: CertChain, now: datetime, skew: timedelta, margin: timedelta | None
) -> Staple:
    issuer = chain.issuer
    if issuer is None:
        raise InvalidResponseError("the issuer certificate is not known, so nothing can be checked")
    resp = _parse(der)
    signer, signer_desc, signer_window = _find_signer(resp, issuer, now)
    _verify_signature(resp, signer)
    facts = extensions.checked(resp.tbs_response_bytes)
    single, index, cert_id = _matching_single(resp, chain, issuer)
    this_update = shared(single.this_update_utc)
    next_update = single.next_update_utc
    produced_at = shared(resp.produced_at_utc)
    if next_update is None:
        raise InvalidResponseError(
            "no nextUpdate: nginx would serve it forever and HAProxy refuses it"
        )
    next_update = shared(next_update)
    _check_times(this_update, next_update, produced_at, now, skew, margin)
    status = _STATUS[single.certificate_status]
    reason = None
    if status is CertStatus.REVOKED:
        code = facts.singles[index].reason_code
        reason = None if code is None else extensions.reason_name(code)
    return Staple(
        der=der,
        cert_status=status,
        serial=chain.serial,
        this_update=this_update,
        next_update=next_update,
        produced_at=produced_at,
        signer=signer_desc,
        revocation_time=single.revocation_time_utc,
        revocation_reason=reason,
        cert_id=cert_id,
        single_count=len(facts.singles),
        signer_window=signer_window,
    )


def recheck(known: Staple, now: datetime, *, skew: timedelta = DEFAULT_SKEW) -> Staple:
    """``known`` again at ``now``, for the very bytes it was validated from in full: what
    the passing of time changes is checked (the bytes, and so their signature and
    CertID, are the same).  Raises InvalidResponseError as :func:`validate` would."""
    _check_times(known.this_update, known.next_update, known.produced_at, now, skew, None)
    if known.signer_window is not None:
        _check_signer(known.signer_window, now)
    return known


def _check_signer(window: tuple[datetime, datetime], now: datetime) -> None:
    if not window[0] <= now <= window[1]:
        raise InvalidResponseError("signed by a delegated responder certificate not valid now")


def _check_times(
    this_update: datetime,
    next_update: datetime,
    produced_at: datetime,
    now: datetime,
    skew: timedelta,
    margin: timedelta | None,
) -> None:
    if this_update > now + skew:
        raise InvalidResponseError(f"thisUpdate {iso(this_update)} is in the future")
    if produced_at > now + skew:
        raise InvalidResponseError(f"producedAt {iso(produced_at)} is in the future")
    if next_update <= this_update:
        raise InvalidResponseError("nextUpdate is not after thisUpdate")
    if margin is None:
        margin = margin_for(next_update - this_update)
    if next_update <= now + margin:
        raise InvalidResponseError(f"expired or about to: nextUpdate {iso(next_update)}")


def _parse(der: bytes) -> ocsp.OCSPResponse:
    if not der:
        raise InvalidResponseError("empty body")
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        raise InvalidResponseError(f"not a DER OCSP response: {foreign.plain(e)}") from e
    if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        # Unsigned and forgeable (RFC 6960 section 2.3): a failed fetch, never a staple.
        name = resp.response_status.name.lower().replace("_", "")
        raise OCSPStatusError(_STATUS_NAMES.get(name, name))
    return resp


_STATUS_NAMES = {
    "malformedrequest": "malformedRequest",
    "internalerror": "internalError",
    "trylater": "tryLater",
    "sigrequired": "sigRequired",
    "unauthorized": "unauthorized",
}


def _find_signer(
    resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime
) -> tuple[x509.Certificate, str, tuple[datetime, datetime] | None]:
    """The certificate named by the ResponderID, authorised per RFC 6960 section 4.2.2.2,
    how to name it, and a delegated responder certificate's validity."""
    key_hash = resp.responder_key_hash
    name = resp.responder_name

    def named(cert: x509.Certificate) -> bool:
        if key_hash is not None:
            # byKey is the SHA-1 of the key bits, as in a CertID (RFC 6960 4.2.1).
            try:
                return certs.key_hash(cert, _SHA1) == key_hash
            except (ValueError, TypeError, UnsupportedAlgorithm):
                return False
        return cert.subject == name

    if named(issuer):
        return issuer, "issuer", None
    for cert in resp.certificates:
        if not named(cert):
            continue
        if not certs.issued_by(cert, issuer):
            raise InvalidResponseError(
                "signed by a responder certificate that the issuer did not issue"
            )
        facts = _responder(cert)
        if not facts.ocsp_signing:
            raise InvalidResponseError(
                "signed by a delegated responder without the OCSPSigning extended key usage"
            )
        window = facts.not_before, facts.not_after
        _check_signer(window, now)
        return cert, f"delegated responder {facts.name}", window
    raise InvalidResponseError(
        "signed by a key that is neither the issuer nor a responder it authorised"
    )


class _Responder(NamedTuple):
    ocsp_signing: bool
    not_before: datetime
    not_after: datetime
    name: str


# The same delegated responder certificate comes embedded in every answer of a CA: what
# is read of it is read once (the cache holds it by its DER).
@functools.lru_cache(maxsize=256)
def _responder(cert: x509.Certificate) -> _Responder:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        signing = ExtendedKeyUsageOID.OCSP_SIGNING in eku
    except x509.ExtensionNotFound:
        signing = False
    return _Responder(
        signing, cert.not_valid_before_utc, cert.not_valid_after_utc, cert.subject.rfc4514_string()
    )


def _verify_signature(resp: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    key = _public_key(signer)
    sig, data = resp.signature, resp.tbs_response_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if resp.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                _verify_pss(key, sig, data)
            else:
                key.verify(sig, data, padding.PKCS1v15(), _signature_hash(resp))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, data, ec.ECDSA(_signature_hash(resp)))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(sig, data)
        else:
            raise InvalidResponseError(f"unsupported signer key type {type(key).__name__}")
    except InvalidSignature as e:
        raise InvalidResponseError("the signature does not verify") from e


# Thousands of responses are signed by the same few issuers: one key object each.
@functools.lru_cache(maxsize=64)
def _public_key(signer: x509.Certificate) -> CertificatePublicKeyTypes:
    return signer.public_key()


def _signature_hash(resp: ocsp.OCSPResponse) -> hashes.HashAlgorithm:
    try:
        algorithm = resp.signature_hash_algorithm
    except UnsupportedAlgorithm as e:
        oid = resp.signature_algorithm_oid.dotted_string
        raise InvalidResponseError(f"unsupported signature algorithm {oid}") from e
    if algorithm is None or isinstance(algorithm, hashes.MD5):
        raise InvalidResponseError("signature algorithm without an acceptable hash")
    return algorithm


def _verify_pss(key: rsa.RSAPublicKey, sig: bytes, data: bytes) -> None:
    # cryptography cannot name the hash of an RSA-PSS signature, so try the ones CAs use.
    for h in _PSS_HASHES:
        try:
            key.verify(sig, data, padding.PSS(padding.MGF1(h()), padding.PSS.AUTO), h())
        except InvalidSignature:
            continue
        return
    raise InvalidSignature


def _matching_single(
    resp: ocsp.OCSPResponse, chain: CertChain, issuer: x509.Certificate
) -> tuple[ocsp.OCSPSingleResponse, int, CertID]:
    """The SingleResponse that answers for the leaf, its index, and its CertID.

    Every SingleResponse whose CertID names the leaf is considered (RFC 6960 4.2.2.3).
    When they disagree, the answer is the gravest: revoked over unknown over good.  A
    response that says both good and revoked is broken or hostile, and a CA's signed
    "revoked" is never to be hidden behind a "good" (mozilla::pkix reads it the same way).
    """
    expected: dict[str, tuple[bytes, bytes]] = {}
    matches: list[tuple[int, int, ocsp.OCSPSingleResponse, CertID]] = []
    for index, single in enumerate(resp.responses):
        algorithm = single.hash_algorithm
        if algorithm.name not in CERT_ID_HASHES:
            continue
        if algorithm.name not in expected:
            expected[algorithm.name] = (
                certs.name_hash(chain.issuer_name, algorithm),
                certs.key_hash(issuer, algorithm),
            )
        name_hash, key_hash = expected[algorithm.name]
        if (
            single.serial_number == chain.serial
            and single.issuer_name_hash == name_hash
            and single.issuer_key_hash == key_hash
        ):
            gravity = _GRAVITY[_STATUS[single.certificate_status]]
            matches.append(
                (gravity, -index, single, CertID(algorithm.name, name_hash, key_hash, chain.serial))
            )
    if not matches:
        raise InvalidResponseError(
            f"no SingleResponse for serial {chain.serial:X} from this issuer"
        )
    _, negative_index, single, cert_id = max(matches, key=lambda m: (m[0], m[1]))
    return single, -negative_index, cert_id
