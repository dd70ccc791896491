"""The test PKI: named OCSP response cases, each a real response with a real signature.

Built on :mod:`stapled.demo.ca` (which ``stapled demo`` also uses).  Each case is a
function of a :class:`World` returning the DER to validate and what validation must say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as x509_ocsp

from stapled.core import certs
from stapled.core.certs import CertChain
from stapled.demo.ca import CA, Issued, unsuccessful

from . import reshape

NOW = datetime.now(UTC).replace(microsecond=0)
URL = "http://127.0.0.1:9/"


@dataclass
class World:
    """A CA with a leaf, a second unrelated CA, and responder certificates."""

    ca: CA = field(default_factory=CA)
    stranger: CA = field(default_factory=lambda: CA("stranger CA"))
    leaf: Issued = field(init=False)
    other: Issued = field(init=False)

    def __post_init__(self) -> None:
        self.leaf = self.ca.issue("leaf.example", ocsp_urls=[URL])
        self.other = self.ca.issue("other.example", ocsp_urls=[URL])

    @property
    def chain(self) -> CertChain:
        return certs.build_chain([self.leaf.cert, self.ca.cert], "leaf.pem")


# expected: "good" | "revoked" | "unknown" for a valid Staple, or a fragment of the error.
Case = Callable[[World], bytes]


def _reshaped(change: reshape.Change) -> Case:
    return lambda w: reshape.reshape(w.ca.sign_response(w.leaf.cert), w.ca.issued, change)


def _sign(**kw: object) -> Case:
    return lambda w: w.ca.sign_response(w.leaf.cert, **kw)  # type: ignore[arg-type]


CASES: dict[str, tuple[Case, str]] = {
    "good-by-issuer": (_sign(), "good"),
    "good-by-name": (_sign(by_name=True), "good"),
    "good-sha256-certid": (_sign(hash_algorithm=hashes.SHA256()), "good"),
    "revoked": (_sign(status=x509_ocsp.OCSPCertStatus.REVOKED), "revoked"),
    "unknown": (_sign(status=x509_ocsp.OCSPCertStatus.UNKNOWN), "unknown"),
    "delegated-responder": (
        lambda w: w.ca.sign_response(w.leaf.cert, signer=w.ca.responder()),
        "good",
    ),
    "delegated-without-eku": (
        lambda w: w.ca.sign_response(w.leaf.cert, signer=w.ca.responder(eku=False)),
        "without the OCSPSigning",
    ),
    "delegated-expired": (
        lambda w: w.ca.sign_response(
            w.leaf.cert, signer=w.ca.responder(not_after=NOW - timedelta(minutes=1))
        ),
        "not valid now",
    ),
    "delegated-by-other-ca": (
        lambda w: w.ca.sign_response(w.leaf.cert, signer=w.stranger.responder()),
        "did not issue",
    ),
    "stranger-key": (
        # The stranger signs a response whose CertID names our issuer.
        lambda w: w.stranger.sign_response(w.leaf.cert, issuer=w.ca.cert),
        "neither the issuer",
    ),
    "other-serial": (lambda w: w.ca.sign_response(w.other.cert), "no SingleResponse"),
    "same-serial-other-issuer": (
        # Properly signed, but the CertID names another issuer for the same serial.
        lambda w: w.ca.sign_response(w.leaf.cert, issuer=w.stranger.cert),
        "no SingleResponse",
    ),
    "this-update-future": (_sign(this_update=NOW + timedelta(hours=1)), "in the future"),
    "this-update-within-skew": (_sign(this_update=NOW + timedelta(minutes=2)), "good"),
    "next-update-past": (
        _sign(this_update=NOW - timedelta(days=5), validity=timedelta(days=4)),
        "expired",
    ),
    "next-update-within-margin": (
        _sign(this_update=NOW - timedelta(days=4) + timedelta(minutes=2)),
        "expired or about to",
    ),
    "no-next-update": (_sign(next_update=None), "no nextUpdate"),
    # Extensions: a critical one stapled does not recognise makes the response unusable.
    "critical-single-extension": (
        _reshaped(reshape.single_extension("1.2.3.4", critical=True)),
        "unrecognised critical single extension 1.2.3.4",
    ),
    "critical-response-extension": (
        _reshaped(reshape.response_extension("1.2.3.4", critical=True)),
        "unrecognised critical response extension 1.2.3.4",
    ),
    "noncritical-single-extension": (
        _reshaped(reshape.single_extension("1.2.3.4", critical=False)),
        "good",
    ),
    "critical-nonce": (
        _reshaped(
            reshape.response_extension("1.3.6.1.5.5.7.48.1.2", critical=True, value=b"\x04\x04nnce")
        ),
        "good",
    ),
    "critical-invalidity-date": (
        _reshaped(
            reshape.single_extension("2.5.29.24", critical=True, value=b"\x18\x0f20260101000000Z")
        ),
        "good",
    ),
    "critical-certificate-issuer": (
        _reshaped(
            reshape.single_extension(
                "2.5.29.29", critical=True, value=b"\x30\x0b\x82\x09ca.example"
            )
        ),
        "unrecognised critical single extension 2.5.29.29",
    ),
    # Several SingleResponses for the leaf that disagree: the gravest answer counts.
    "good-and-revoked": (_reshaped(reshape.twin("revoked", "key_compromise")), "revoked"),
    "good-and-unknown": (_reshaped(reshape.twin("unknown")), "unknown"),
    "good-and-good": (_reshaped(reshape.twin("good")), "good"),
    # CRLReason numbers the parser does not name are still the CA's signed "revoked".
    "revoked-reason-7": (_reshaped(reshape.reason_code(7)), "revoked"),
    "revoked-reason-99": (_reshaped(reshape.reason_code(99)), "revoked"),
    # A window of minutes (private CAs, test responders): a tenth of it is the margin.
    "ten-minute-window": (
        _sign(this_update=NOW - timedelta(minutes=2), validity=timedelta(minutes=10)),
        "good",
    ),
    "ten-minute-window-last-minute": (
        _sign(this_update=NOW - timedelta(minutes=9, seconds=30), validity=timedelta(minutes=10)),
        "expired or about to",
    ),
    "garbage": (lambda w: b"\x30\x03garbage", "not a DER OCSP response"),
    "empty": (lambda w: b"", "empty body"),
    "html": (lambda w: b"<html><body>502 Bad Gateway</body></html>", "not a DER"),
    "tampered-signature": (
        lambda w: _flip_last_byte(w.ca.sign_response(w.leaf.cert)),
        "does not verify",
    ),
    **{
        f"status-{name}": ((lambda w, s=status: unsuccessful(s)), label)  # type: ignore[misc]
        for name, status, label in (
            ("malformed", x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformedRequest"),
            ("internal-error", x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR, "internalError"),
            ("try-later", x509_ocsp.OCSPResponseStatus.TRY_LATER, "tryLater"),
            ("sig-required", x509_ocsp.OCSPResponseStatus.SIG_REQUIRED, "sigRequired"),
            ("unauthorized", x509_ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized"),
        )
    },
}


def _flip_last_byte(der: bytes) -> bytes:
    # The signature BIT STRING ends the response, so this breaks only the signature.
    return der[:-1] + bytes([der[-1] ^ 0x01])
