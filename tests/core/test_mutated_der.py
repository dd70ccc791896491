"""Outside bytes never become an internal error, past the parser too.

cryptography parses lazily: a certificate or response that loads can still raise when an
extension, a key or a name is read.  These properties take real, signed structures, change
one inner field to arbitrary bytes, sign them again with the real key (so validation gets
as far as that field), and require that stapled answers with its own error or a verdict,
never anything else.
"""

from __future__ import annotations

import contextlib
import functools
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stapled.core import certs, ocsp, request
from stapled.errors import CertificateError, StapledError
from tests import dermutate
from tests.pki import World

# cryptography warns about some odd fields it can still read (names of an illegal length);
# stapled's command line logs those warnings at debug level.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
fields = st.integers(min_value=0, max_value=10_000)
values = st.one_of(
    st.binary(max_size=40),
    # Values that look like DER of the kind the field may hold, truncated or not.
    st.sampled_from(
        [b"\x30\x03\x06\x01", b"\x06\x03\x2a\x03\x04", b"\xff" * 8, b"\x0c\x02\xc3\x28"]
    ),
)


@functools.cache
def _world() -> World:
    return World()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _cert_with(cert: x509.Certificate, index: int, value: bytes, w: World) -> bytes:
    tbs = dermutate.part(_der(cert), (0,))
    return dermutate.resign(_der(cert), dermutate.mutated(tbs, index, value), w.ca.issued.key)


def _basic_path() -> tuple[int, ...]:
    # OCSPResponse { status, [0] { ResponseBytes { oid, OCTET STRING(BasicOCSPResponse) } } }
    return (1, 0, 1)


def _with_basic(response: bytes, basic: bytes) -> bytes:
    top = dermutate.parse(response)
    node = top
    for step in _basic_path():
        node = node.children[step]
    node.value = basic
    return dermutate.encode(top)


def _basic(response: bytes) -> bytes:
    node = dermutate.parse(response)
    for step in _basic_path():
        node = node.children[step]
    return node.value


def _judged(der: bytes) -> None:
    w = _world()
    with contextlib.suppress(StapledError):
        ocsp.validate(der, w.chain, datetime.now(UTC))


@EXAMPLES
@given(index=fields, value=values)
def test_a_changed_response_field_is_a_verdict_or_stapleds_error(index: int, value: bytes) -> None:
    w = _world()
    responder = w.ca.responder()
    response = w.ca.sign_response(w.leaf.cert, signer=responder, by_name=index % 2 == 0)
    basic = _basic(response)
    tbs = dermutate.part(basic, (0,))
    changed = dermutate.resign(basic, dermutate.mutated(tbs, index, value), responder.key)
    _judged(_with_basic(response, changed))


@EXAMPLES
@given(index=fields, value=values)
def test_a_changed_responder_certificate_is_a_verdict_or_stapleds_error(
    index: int, value: bytes
) -> None:
    w = _world()
    responder = w.ca.responder()
    response = w.ca.sign_response(w.leaf.cert, signer=responder, by_name=index % 2 == 0)
    basic = dermutate.parse(_basic(response))
    # BasicOCSPResponse { tbs, algorithm, signature, [0] { SEQUENCE OF Certificate } }
    certs_node = basic.children[3].children[0]
    certs_node.children[0] = dermutate.parse(_cert_with(responder.cert, index, value, w))
    _judged(_with_basic(response, dermutate.encode(basic)))


@EXAMPLES
@given(index=fields, value=values)
def test_a_changed_leaf_certificate_is_a_chain_or_a_certificate_error(
    index: int, value: bytes
) -> None:
    w = _world()
    der = _cert_with(w.leaf.cert, index, value, w)
    try:
        parsed = certs.parse_certificates(der, "leaf.der")
        chain = certs.build_chain([*parsed, w.ca.cert], "leaf.der")
    except CertificateError:
        return
    # What a pass, status and the probe read of a chain they accepted.
    assert chain.serial_hex
    assert chain.fingerprint
    _ = (chain.ocsp_urls, chain.must_staple, chain.ca_issuers_urls, chain.not_after)
    if chain.issuer is None:
        return  # the changed field was the issuer's name or key identifier
    try:
        request.build_request(chain)
        ocsp.validate(w.ca.sign_response(w.leaf.cert), chain, datetime.now(UTC))
    except StapledError:
        pass


def test_an_unknown_signature_algorithm_is_an_invalid_response() -> None:
    w = _world()
    basic = dermutate.parse(_basic(w.ca.sign_response(w.leaf.cert)))
    basic.children[1].children[0].value = b"\x2a\x03\x04\x05"  # OID 1.2.3.4.5
    try:
        ocsp.validate(
            _with_basic(w.ca.sign_response(w.leaf.cert), dermutate.encode(basic)),
            w.chain,
            datetime.now(UTC),
        )
    except StapledError as e:
        assert "signature algorithm" in str(e)
    else:
        raise AssertionError("a response with an unknown signature algorithm was accepted")


def test_a_duplicated_leaf_extension_is_a_certificate_error() -> None:
    w = _world()
    tbs = dermutate.parse(dermutate.part(_der(w.leaf.cert), (0,)))
    extensions = tbs.children[-1].children[0]  # [3] { SEQUENCE OF Extension }
    extensions.children.append(extensions.children[0])
    der = dermutate.resign(_der(w.leaf.cert), dermutate.encode(tbs), w.ca.issued.key)
    try:
        certs.build_chain([*certs.parse_certificates(der, "dup.der"), w.ca.cert], "dup.der")
    except CertificateError as e:
        assert "dup.der" in str(e)
        assert "ParseError" not in str(e)
    else:
        raise AssertionError("a certificate with a duplicated extension was accepted")
