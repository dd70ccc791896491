"""A throwaway CA and a loopback OCSP responder, for ``stapled demo`` and the test suite.

Everything here is real: real keys, certificates the CA signs, OCSP responses signed by
the CA or a delegated responder, served over real HTTP on 127.0.0.1.  Nothing here is
used by stapled's own pipeline.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def new_key(kind: str = "ec") -> PrivateKey:
    """A fresh private key: 'ec' (P-256, fast), 'rsa' (2048) or 'ed25519'."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _sign_hash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Issued:
    """A certificate and its key (the key only for servers in tests; stapled never reads it)."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass
class CA:
    """A self-signed issuing CA that remembers which serials it revoked."""

    name: str = "stapled test CA"
    key_type: str = "ec"
    issued: Issued = field(init=False)
    revoked: dict[int, datetime] = field(default_factory=dict)
    unknown: set[int] = field(default_factory=set)
    # Every certificate this CA issued, so that its responder can answer for them.
    known: dict[int, x509.Certificate] = field(default_factory=dict)

    def __post_init__(self) -> None:
        key = new_key(self.key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, _sign_hash(key))
        )
        self.issued = Issued(cert, key)

    @property
    def cert(self) -> x509.Certificate:
        return self.issued.cert

    def cert_pem(self) -> bytes:
        return self.issued.cert_pem()

    def issue(
        self,
        common_name: str,
        *,
        ocsp_urls: Iterable[str] = (),
        ca_issuers_urls: Iterable[str] = (),
        crl_urls: Iterable[str] = (),
        must_staple: bool = False,
        key_type: str = "ec",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        extended_key_usage: Iterable[x509.ObjectIdentifier] | None = None,
        authority_key_id: bool = True,
    ) -> Issued:
        """A certificate signed by this CA (a server leaf unless told otherwise)."""
        key = new_key(key_type)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        )
        if authority_key_id:  # as every public CA sets it (RFC 5280 4.2.1.1)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issued.key.public_key()),
                critical=False,
            )
        access = [
            x509.AccessDescription(
                x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u)
            )
            for u in ocsp_urls
        ] + [
            x509.AccessDescription(
                x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(u),
            )
            for u in ca_issuers_urls
        ]
        if access:
            builder = builder.add_extension(x509.AuthorityInformationAccess(access), False)
        if points := [
            x509.DistributionPoint([x509.UniformResourceIdentifier(u)], None, None, None)
            for u in crl_urls
        ]:
            builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
        if must_staple:
            builder = builder.add_extension(
                x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False
            )
        eku = (
            list(extended_key_usage)
            if extended_key_usage is not None
            else [ExtendedKeyUsageOID.SERVER_AUTH]
        )
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        cert = builder.sign(self.issued.key, _sign_hash(self.issued.key))
        self.known[cert.serial_number] = cert
        return Issued(cert, key)

    def responder(self, *, eku: bool = True, not_after: datetime | None = None) -> Issued:
        """A delegated OCSP responder certificate (RFC 6960 section 4.2.2.2)."""
        return self.issue(
            "OCSP responder for " + self.name,
            extended_key_usage=[ExtendedKeyUsageOID.OCSP_SIGNING] if eku else [],
            not_after=not_after,
        )

    def revoke(self, cert: x509.Certificate, when: datetime | None = None) -> None:
        self.revoked[cert.serial_number] = when or _now() - timedelta(hours=1)

    def status_of(self, serial: int) -> ocsp.OCSPCertStatus:
        if serial in self.revoked:
            return ocsp.OCSPCertStatus.REVOKED
        if serial in self.unknown:
            return ocsp.OCSPCertStatus.UNKNOWN
        return ocsp.OCSPCertStatus.GOOD

    def sign_response(
        self,
        cert: x509.Certificate,
        *,
        status: ocsp.OCSPCertStatus | None = None,
        this_update: datetime | None = None,
        next_update: datetime | bool | None = True,
        validity: timedelta = timedelta(days=4),
        signer: Issued | None = None,
        issuer: x509.Certificate | None = None,
        by_name: bool = False,
        hash_algorithm: hashes.HashAlgorithm | None = None,
    ) -> bytes:
        """A DER OCSP response for ``cert``, signed by this CA or a given ``signer``.

        ``next_update=None`` omits nextUpdate; ``True`` (default) sets it ``validity``
        after thisUpdate.  ``issuer`` overrides which issuer the CertID names.
        """
        status = status if status is not None else self.status_of(cert.serial_number)
        this = this_update or _now() - timedelta(minutes=1)
        nxt: datetime | None
        nxt = this + validity if next_update is True else next_update or None
        revoked_at = self.revoked.get(cert.serial_number, this - timedelta(hours=1))
        signing = signer or self.issued
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=cert,
            issuer=issuer or self.cert,
            algorithm=hash_algorithm or hashes.SHA1(),
            cert_status=status,
            this_update=this,
            next_update=nxt,
            revocation_time=revoked_at if status == ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=(
                x509.ReasonFlags.key_compromise if status == ocsp.OCSPCertStatus.REVOKED else None
            ),
        )
        encoding = ocsp.OCSPResponderEncoding.NAME if by_name else ocsp.OCSPResponderEncoding.HASH
        builder = builder.responder_id(encoding, signing.cert)
        if signer is not None:
            builder = builder.certificates([signer.cert])
        response = builder.sign(signing.key, _sign_hash(signing.key))
        return response.public_bytes(serialization.Encoding.DER)

    def answer(
        self,
        request_der: bytes,
        validity: timedelta = timedelta(days=4),
        *,
        age: timedelta | None = None,
    ) -> bytes:
        """What this CA's responder says to a DER OCSP request (one certificate);
        ``age``: how long before now its thisUpdate lies (default a minute)."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        leaf = self.known.get(request.serial_number)
        if leaf is None:
            return unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        this_update = _now() - age if age is not None else None
        return self.sign_response(
            leaf, this_update=this_update, validity=validity, hash_algorithm=request.hash_algorithm
        )


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned error response such as tryLater (5 bytes of DER)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def write(path: Path, *parts: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(parts))
    return path


# A handler returns (HTTP status, headers, body) for the raw DER request it was sent.
Answer = Callable[[bytes], tuple[int, dict[str, str], bytes]]


class ResponderServer:
    """An HTTP OCSP responder on 127.0.0.1 that signs with a :class:`CA`, in a thread.

    ``answer`` can be replaced to make it misbehave; ``requests`` counts the OCSP
    requests it answered, ``connections`` the connections they came on.  ``files``
    maps URL paths to bodies served as they are (an AIA caIssuers certificate, say).
    """

    def __init__(self, ca: CA, validity: timedelta = timedelta(days=4)) -> None:
        self.ca = ca
        self.validity = validity
        self.requests = 0
        self.connections = 0
        self.paths: list[str] = []
        self.files: dict[str, bytes] = {}
        # Answer every OCSP GET with HTTP 400, as some responder software does.
        self.refuse_get = False
        self._lock = threading.Lock()
        self.answer: Answer = self._default_answer
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: without this, Nagle and the
            # client's delayed ACK hold every response back.
            disable_nagle_algorithm = True
            server_version = "stapled-testca"

            def setup(self) -> None:
                with server._lock:
                    server.connections += 1
                super().setup()

            def do_GET(self) -> None:
                if self.path in server.files:
                    body = server.files[self.path]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/pkix-cert")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if server.refuse_get:
                    with server._lock:
                        server.paths.append(f"GET {self.path}")
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                encoded = unquote(self.path.rsplit("/", 1)[-1])
                try:
                    body = base64.b64decode(encoded, validate=True)
                except ValueError:
                    body = b""
                self._reply(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._reply(self.rfile.read(min(length, 65536)))

            def _reply(self, request_der: bytes) -> None:
                with server._lock:
                    server.requests += 1
                    server.paths.append(f"{self.command} {self.path}")
                code, headers, body = server.answer(request_der)
                self.send_response(code)
                headers = {"Content-Type": "application/ocsp-response", **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a demo and a test suite want quiet responders

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _default_answer(self, request_der: bytes) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, self.ca.answer(request_der, self.validity)

    def answer_aged(self, age: timedelta, validity: timedelta | None = None) -> None:
        """From now on, answers whose thisUpdate lies ``age`` in the past."""
        lasting = validity or self.validity
        self.answer = lambda der: (200, {}, self.ca.answer(der, lasting, age=age))

    def answer_fresh(self) -> None:
        """Back to the usual answers."""
        self.answer = self._default_answer

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> ResponderServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ResponderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
