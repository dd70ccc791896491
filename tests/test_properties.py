"""Invariants over arbitrary input: parsers only ever raise stapled's own errors."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stapled import certs, ocsp, policy
from stapled.errors import CertificateError, InvalidResponseError, OCSPStatusError

from .pki import World

WORLD = World()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_validate(data: bytes) -> None:
    try:
        ocsp.validate(data, WORLD.chain, datetime.now(UTC))
    except (InvalidResponseError, OCSPStatusError):
        return
    raise AssertionError("random bytes validated as an OCSP response")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=8))
def test_mutated_response_never_validates(position: int, noise: bytes) -> None:
    der = bytearray(WORLD.ca.sign_response(WORLD.leaf.cert))
    i = position % len(der)
    mutated = bytes(der[:i]) + bytes(b ^ der[i] for b in noise[:1]) + bytes(der[i + 1 :])
    if mutated == bytes(der):
        return
    try:
        staple = ocsp.validate(mutated, WORLD.chain, datetime.now(UTC))
    except (InvalidResponseError, OCSPStatusError):
        return
    # A change that still validates can only be outside the signed data and the CertID:
    # never in what a server would trust.
    assert staple.serial == WORLD.leaf.cert.serial_number


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_certificate_parser_raises_only_certificate_error(data: bytes) -> None:
    with contextlib.suppress(CertificateError):
        certs.parse_certificates(data, "fuzz.pem")


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=0.01, max_value=0.99),
    st.integers(min_value=60, max_value=30 * 86400),
)
def test_refresh_time_is_inside_the_window(refresh_at: float, lifetime: int) -> None:
    this = datetime(2026, 1, 1, tzinfo=UTC)
    staple = ocsp.Staple(
        der=b"",
        cert_status=ocsp.CertStatus.GOOD,
        serial=1,
        this_update=this,
        next_update=this + timedelta(seconds=lifetime),
        produced_at=this,
        signer="issuer",
    )
    at = policy.refresh_time(staple, refresh_at)
    assert staple.this_update < at < staple.next_update
    assert not policy.needs_refresh(staple, at - timedelta(seconds=1), refresh_at)
    assert policy.needs_refresh(staple, at, refresh_at)
