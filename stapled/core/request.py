"""OCSP requests: built for a certificate (one CertID, no nonce) and sent by GET or POST
as RFC 5019 says; read when the local responder is asked."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ..errors import CertificateError, InvalidRequestError
from . import certs, foreign
from .certs import CertChain
from .ocsp import CERT_ID_HASHES, CertID

# RFC 5019 section 5: GET is used when the whole URL fits in 255 bytes, so that
# responses can be cached by HTTP proxies; larger requests are POSTed.
MAX_GET_URL = 255


def parse_request(der: bytes) -> CertID:
    """The CertID of a DER OCSPRequest for one certificate.

    Raises InvalidRequestError for anything else (garbage, several certificates, a
    hash algorithm stapled does not use).
    """
    try:
        request = ocsp.load_der_ocsp_request(der)
        hash_name = request.hash_algorithm.name
    except (ValueError, UnsupportedAlgorithm) as e:
        raise InvalidRequestError(f"not a DER OCSP request for one certificate ({e})") from e
    if hash_name not in CERT_ID_HASHES:
        raise InvalidRequestError(f"unsupported CertID hash {hash_name}")
    return CertID(
        hash_name, request.issuer_name_hash, request.issuer_key_hash, request.serial_number
    )


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """The CertID hash for a configured name ('sha1', the default everywhere, or 'sha256')."""
    return CERT_ID_HASHES[name]


def build_request(chain: CertChain, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    """A DER OCSPRequest for one certificate, without nonce.

    One certificate per request and no nonce (RFC 5019 section 2.1): responders
    pre-produce responses and ignore nonces.  SHA-1 CertIDs are the default because
    HAProxy only matches those.
    """
    if chain.issuer is None:
        raise ValueError("an OCSP request needs the issuer certificate")
    algorithm = algorithm or hashes.SHA1()
    try:
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            certs.name_hash(chain.issuer_name, algorithm),
            certs.key_hash(chain.issuer, algorithm),
            chain.serial,
            algorithm,
        )
    except foreign.READ_ERRORS as e:
        # The issuer's key, from a bundle or a caIssuers URL, cannot be read.
        raise CertificateError(
            chain.path, f"cannot name it in a request: {foreign.plain(e)}"
        ) from e
    return builder.build().public_bytes(serialization.Encoding.DER)


# What percent-encoding changes in standard base64 (urllib's quote, safe=""), in one
# pass instead of quote's Python loop over every character.
_PERCENT = str.maketrans({"+": "%2B", "/": "%2F", "=": "%3D"})


@dataclass(frozen=True)
class HTTPRequest:
    method: str
    url: str
    body: bytes | None


def http_request(url: str, der: bytes) -> HTTPRequest:
    """GET when the URL fits in 255 bytes, else POST (RFC 5019 section 5).

    GET carries the percent-encoded *standard* base64 of the request; responders
    reject base64url.
    """
    encoded = base64.b64encode(der).decode("ascii").translate(_PERCENT)
    get_url = (url if url.endswith("/") else url + "/") + encoded
    if len(get_url.encode()) <= MAX_GET_URL:
        return HTTPRequest("GET", get_url, None)
    return HTTPRequest("POST", url, der)
