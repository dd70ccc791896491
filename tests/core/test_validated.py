"""Staples validated before: the same bytes for the same certificate are recalled with
only their times checked; any other bytes, another certificate, or time past what
validation would allow, and they are not."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stapled.core import certs, ocsp
from stapled.core.validated import Validated
from stapled.demo.ca import CA
from stapled.errors import InvalidResponseError
from stapled.files import state

from ..pki import World

NOW = datetime.now(UTC).replace(microsecond=0)
WORLD = World()


def _validated(der: bytes) -> tuple[Validated, ocsp.Staple]:
    memory = Validated()
    staple = ocsp.validate(der, WORLD.chain, NOW)
    memory.note(staple)
    return memory, staple


def test_the_same_bytes_for_the_same_certificate_are_recalled() -> None:
    der = WORLD.ca.sign_response(WORLD.leaf.cert)
    memory, staple = _validated(der)
    assert memory.recall(der, WORLD.chain, NOW + timedelta(hours=1)) == staple


@given(index=st.integers(0, 10_000), value=st.integers(0, 255))
def test_other_bytes_are_never_recalled(index: int, value: int) -> None:
    der = WORLD.ca.sign_response(WORLD.leaf.cert)
    memory, _ = _validated(der)
    changed = bytearray(der)
    changed[index % len(der)] ^= value or 1
    assert memory.recall(bytes(changed), WORLD.chain, NOW) is None


def test_another_certificate_does_not_recall_them() -> None:
    der = WORLD.ca.sign_response(WORLD.leaf.cert)
    memory, _ = _validated(der)
    other = certs.build_chain([WORLD.other.cert, WORLD.ca.cert], "other.pem")
    assert memory.recall(der, other, NOW) is None
    # The same serial under another issuer: the CertID names the issuer's key.
    stranger = WORLD.stranger
    twin = certs.build_chain([WORLD.leaf.cert, stranger.cert], "twin.pem")
    assert memory.recall(der, twin, NOW) is None


def test_time_past_their_window_makes_them_unusable() -> None:
    der = WORLD.ca.sign_response(WORLD.leaf.cert, validity=timedelta(hours=2))
    memory, staple = _validated(der)
    with pytest.raises(InvalidResponseError, match="expired or about to"):
        memory.recall(der, WORLD.chain, staple.next_update)


def test_a_delegated_responder_certificate_past_its_validity_makes_them_unusable() -> None:
    responder = WORLD.ca.responder(not_after=NOW + timedelta(hours=1))
    der = WORLD.ca.sign_response(WORLD.leaf.cert, signer=responder)
    memory, staple = _validated(der)
    assert staple.signer_window is not None
    assert memory.recall(der, WORLD.chain, NOW + timedelta(minutes=30)) == staple
    with pytest.raises(InvalidResponseError, match="delegated responder"):
        memory.recall(der, WORLD.chain, NOW + timedelta(hours=2))


@pytest.mark.parametrize("signer", [None, "delegated"])
def test_what_the_state_file_keeps_reads_back_the_same(signer: str | None) -> None:
    ca = CA("facts CA")
    leaf = ca.issue("f.example", ocsp_urls=["http://127.0.0.1:9/"])
    ca.revoke(leaf.cert)
    responder = ca.responder() if signer else None
    der = ca.sign_response(leaf.cert, signer=responder)
    chain = certs.build_chain([leaf.cert, ca.cert], "f.pem")
    staple = ocsp.validate(der, chain, NOW)
    entry = {"validated": state._facts(staple)}  # what save() writes for a record
    ((digest, back),) = state.validated({"f.example": entry})
    assert back == replace(staple, der=b"")
    memory = Validated()
    memory.add([(digest, back)])
    assert memory.recall(der, chain, NOW) == staple


def _facts() -> dict[str, object]:
    return state._facts(ocsp.validate(WORLD.ca.sign_response(WORLD.leaf.cert), WORLD.chain, NOW))


@pytest.mark.parametrize("key", sorted(_facts()))
def test_facts_missing_a_key_are_left_out(key: str) -> None:
    facts = {k: v for k, v in _facts().items() if k != key}
    assert state.validated({"x": {"validated": facts}}) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("status", "fine"),
        ("serial", "zz"),
        ("this_update", "2026-12-06T12:00:00"),  # no zone
        ("next_update", 5),
        ("cert_id", "x"),
        ("cert_id", ["sha1", "zz", "00", "1"]),
        ("signer_window", ["2026-12-06T12:00:00+00:00"]),
        ("single_count", "one"),
    ],
)
def test_facts_that_do_not_read_back_are_left_out(key: str, value: object) -> None:
    facts = _facts() | {key: value}
    assert state.validated({"x": {"validated": facts}, "y": {"validated": "text"}}) == []


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(sorted(_facts())), _json), st.booleans())
def test_any_json_in_the_state_file_reads_as_facts_or_nothing(
    damage: dict[str, object], whole: bool
) -> None:
    facts = (_facts() if whole else {}) | damage
    for _, staple in state.validated({"x": {"validated": facts}}):
        assert isinstance(staple, ocsp.Staple)
