"""The validation matrix: every case is a real response with a real signature."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import quote, unquote

import pytest
from cryptography.x509 import ocsp as x509_ocsp
from hypothesis import given
from hypothesis import strategies as st

from stapled.core import certs, ocsp, request
from stapled.demo.ca import CA
from stapled.errors import InvalidResponseError, OCSPStatusError

from ..pki import CASES, NOW, World


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.mark.parametrize("case", sorted(CASES))
def test_validation_matrix(world: World, case: str) -> None:
    make, expected = CASES[case]
    der = make(world)
    if expected in ("good", "revoked", "unknown"):
        staple = ocsp.validate(der, world.chain, NOW)
        assert staple.cert_status == expected
        assert staple.der == der  # the exact bytes, never re-encoded
        assert staple.serial == world.leaf.cert.serial_number
    else:
        with pytest.raises((InvalidResponseError, OCSPStatusError), match=expected):
            ocsp.validate(der, world.chain, NOW)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("revoked-reason-7", "reason 7"),
        ("revoked-reason-99", "reason 99"),
        ("revoked", "keyCompromise"),
    ],
)
def test_every_crl_reason_is_reported(world: World, case: str, reason: str) -> None:
    staple = ocsp.validate(CASES[case][0](world), world.chain, NOW)
    assert staple.cert_status is ocsp.CertStatus.REVOKED
    assert staple.revocation_reason == reason


def test_disagreeing_single_responses_are_one_staple_with_two_answers(world: World) -> None:
    staple = ocsp.validate(CASES["good-and-revoked"][0](world), world.chain, NOW)
    assert staple.single_count == 2
    assert staple.haproxy_problem is not None  # HAProxy takes one SingleResponse only


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_other_signature_algorithms(key_type: str) -> None:
    ca = CA("other key CA", key_type=key_type)
    leaf = ca.issue("leaf.example", ocsp_urls=["http://127.0.0.1:9/"])
    chain = certs.build_chain([leaf.cert, ca.cert], "leaf.pem")
    staple = ocsp.validate(ca.sign_response(leaf.cert), chain, NOW)
    assert staple.cert_status == "good"
    assert staple.signer == "issuer"


def test_revoked_carries_time_and_reason(world: World) -> None:
    der = world.ca.sign_response(world.leaf.cert, status=x509_ocsp.OCSPCertStatus.REVOKED)
    staple = ocsp.validate(der, world.chain, NOW)
    assert staple.revocation_time is not None
    assert staple.revocation_reason == "keyCompromise"


def test_unknown_issuer_cannot_validate(world: World) -> None:
    chain = certs.build_chain([world.leaf.cert], "leaf.pem")
    with pytest.raises(InvalidResponseError, match="issuer certificate is not known"):
        ocsp.validate(world.ca.sign_response(world.leaf.cert), chain, NOW)


def test_replay_ordering(world: World) -> None:
    old = ocsp.validate(
        world.ca.sign_response(world.leaf.cert, this_update=NOW - timedelta(hours=2)),
        world.chain,
        NOW,
    )
    new = ocsp.validate(world.ca.sign_response(world.leaf.cert), world.chain, NOW)
    assert old.is_older_than(new)
    assert not new.is_older_than(old)


def test_request_is_one_sha1_certid_without_nonce(world: World) -> None:
    der = request.build_request(world.chain)
    sent = x509_ocsp.load_der_ocsp_request(der)
    assert sent.serial_number == world.leaf.cert.serial_number
    assert sent.hash_algorithm.name == "sha1"
    assert sent.issuer_key_hash == certs.key_hash(world.ca.cert, sent.hash_algorithm)
    assert len(sent.extensions) == 0  # no nonce


def test_get_uses_percent_encoded_standard_base64(world: World) -> None:
    der = request.build_request(world.chain)
    http = request.http_request("http://ocsp.example.com", der)
    assert http.method == "GET" and http.body is None
    assert http.url.startswith("http://ocsp.example.com/")
    encoded = unquote(http.url.rsplit("/", 1)[1])
    assert base64.b64decode(encoded, validate=True) == der  # standard, not urlsafe
    assert "+" not in http.url.rsplit("/", 1)[1] and "/" not in http.url.rsplit("/", 1)[1]


@given(st.binary(max_size=120))
def test_get_encodes_any_request_as_percent_encoding_does(der: bytes) -> None:
    http = request.http_request("http://o.example/", der)
    if http.method == "GET":
        assert http.url == "http://o.example/" + quote(base64.b64encode(der).decode(), safe="")


def test_long_urls_are_posted(world: World) -> None:
    der = request.build_request(world.chain)
    long_url = "http://ocsp.example.com/" + "p" * 200
    http = request.http_request(long_url, der)
    assert http == request.HTTPRequest("POST", long_url, der)


def test_a_remembered_delegation_is_the_pair_s_own() -> None:
    """issued_by is remembered per (certificate, issuer): the same responder certificate
    against another issuer is checked anew, in either order."""
    from stapled.core import certs
    from stapled.demo.ca import CA

    ca, stranger = CA("one"), CA("two")
    responder = ca.responder().cert
    for _ in range(2):
        assert certs.issued_by(responder, ca.cert)
        assert not certs.issued_by(responder, stranger.cert)
