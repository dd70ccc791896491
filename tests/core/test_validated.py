"""Staples validated before: the same bytes for the same certificate are recalled with
only their times checked; any other bytes, another certificate, or time past what
validation would allow, and they are not."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stapled.core import certs, ocsp, validated
from stapled.core.fleet import digest
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
    entry = {"staple_sha256": digest(der), "validated": validated.facts(staple)}
    remembered = state.validated({"f.example": entry})
    assert validated.from_facts(remembered[0][1], der) == staple
    memory = Validated()
    memory.add(remembered)
    assert memory.recall(der, chain, NOW) == staple


@given(
    signer=st.text(),
    reason=st.none() | st.text(),
    at=st.datetimes(timezones=st.just(UTC)),
    serial=st.integers(min_value=0, max_value=2**160),
)
def test_facts_of_any_texts_times_and_serial_read_back(
    signer: str, reason: str | None, at: datetime, serial: int
) -> None:
    """Whatever a responder puts in the texts validation keeps (its name, a revocation
    reason), and whatever the times and serial, the facts read back as they were."""
    der = WORLD.ca.sign_response(WORLD.leaf.cert)
    staple = ocsp.validate(der, WORLD.chain, NOW)
    assert staple.cert_id is not None
    staple = replace(
        staple,
        cert_id=staple.cert_id._replace(serial=serial),
        signer=signer,
        revocation_reason=reason,
        revocation_time=at if reason is not None else None,
        this_update=at,
        serial=serial,
    )
    assert validated.from_facts(validated.facts(staple), der) == staple


def _facts() -> list[object]:
    staple = ocsp.validate(WORLD.ca.sign_response(WORLD.leaf.cert), WORLD.chain, NOW)
    return json.loads(validated.facts(staple))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, 2),  # another version
        (1, "fine"),
        (2, "zz"),
        (3, "2026-12-06T12:00:00"),  # no zone
        (4, 5),
        (6, None),
        (9, "x"),
        (9, ["sha1", "zz", "00"]),
        (10, "one"),
        (11, ["2026-12-06T12:00:00+00:00"]),
    ],
)
def test_facts_that_do_not_read_back_are_validated_anew(index: int, value: object) -> None:
    der = WORLD.ca.sign_response(WORLD.leaf.cert)
    damaged = _facts()
    damaged[index] = value
    memory = Validated()
    memory.add([(digest(der), json.dumps(damaged))])
    assert memory.recall(der, WORLD.chain, NOW) is None
    assert len(memory) == 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@given(st.lists(_json, max_size=14) | _json, st.booleans())
def test_any_json_reads_as_the_staple_or_nothing(damage: object, text: bool) -> None:
    der = WORLD.ca.sign_response(WORLD.leaf.cert)
    written = json.dumps(damage) if text else str(damage)
    found = validated.from_facts(written, der)
    assert found is None or isinstance(found, ocsp.Staple)


def test_a_staple_recalled_from_the_state_file_is_written_back_as_it_was_read() -> None:
    der = WORLD.ca.sign_response(WORLD.leaf.cert)
    staple = ocsp.validate(der, WORLD.chain, NOW)
    text = validated.facts(staple)
    memory = Validated()
    memory.add([(digest(der), text)])
    assert memory.recall(der, WORLD.chain, NOW) == staple
    assert memory.texts == {digest(der): text}
    memory.written()
    assert memory.texts == {}


def test_no_text_is_kept_for_a_staple_not_recalled_from_it() -> None:
    der = WORLD.ca.sign_response(WORLD.leaf.cert, validity=timedelta(hours=2))
    staple = ocsp.validate(der, WORLD.chain, NOW)

    def remembering(text: str) -> Validated:
        memory = Validated()
        memory.add([(digest(der), text)])
        return memory

    # Asked for another certificate: validated anew, its text unused.
    memory = remembering(validated.facts(staple))
    other = certs.build_chain([WORLD.other.cert, WORLD.ca.cert], "other.pem")
    assert memory.recall(der, other, NOW) is None
    assert memory.texts == {}
    # Past its time: refused.
    memory = remembering(validated.facts(staple))
    with pytest.raises(InvalidResponseError):
        memory.recall(der, WORLD.chain, staple.next_update)
    assert memory.texts == {}
    # A damaged text: validated in full, its facts made anew.
    memory = remembering("[2]")
    assert memory.recall(der, WORLD.chain, NOW) is None
    assert memory.texts == {}


def test_what_many_staples_hold_alike_is_held_once() -> None:
    # At 100,000 certificates a copy each of the issuer's hashes, the signer's text and
    # the CA's URLs was megabytes: equal values read back are one object.
    ca = CA("alike CA")
    chains, staples, fetched = [], [], []
    hour = NOW.replace(minute=0, second=0) - timedelta(hours=1)
    for name in ("a.example", "b.example"):
        leaf = ca.issue(name, ocsp_urls=["http://127.0.0.1:9/ocsp"])
        chain = certs.build_chain([leaf.cert, ca.cert], f"{name}.pem")
        # Signed in one batch, as a CA does: thisUpdate on the hour.
        der = ca.sign_response(leaf.cert, this_update=hour)
        fetched.append(ocsp.validate(der, chain, NOW))
        read_back = validated.from_facts(validated.facts(fetched[-1]), der)
        assert read_back is not None
        chains.append(chain)
        staples.append(read_back)
    for one, other in (fetched, staples):
        assert one.this_update == hour and one.this_update is other.this_update
        assert one.next_update is other.next_update
    first, second = staples
    assert first.cert_id is not None and second.cert_id is not None
    assert first.cert_id.name_hash is second.cert_id.name_hash
    assert first.cert_id.key_hash is second.cert_id.key_hash
    assert first.cert_id.hash_name is second.cert_id.hash_name
    assert first.signer is second.signer
    assert chains[0].ocsp_urls == ("http://127.0.0.1:9/ocsp",)
    assert chains[0].ocsp_urls is chains[1].ocsp_urls
