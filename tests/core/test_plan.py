"""The pass's decisions as values: no files, no network, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stapled.core import ocsp, plan
from stapled.core.model import Due, Fetched, Found, Record
from stapled.core.policy import State, Timing
from stapled.service.schedule import next_run

from ..pki import World

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WORLD = World()
TIMING = Timing(refresh_at=0.5, retry_min=60, retry_max=3600, min_refresh_interval=60)


def _staple(
    this_update: datetime = NOW - timedelta(hours=1),
    lifetime: timedelta = timedelta(days=4),
    status: ocsp.CertStatus = ocsp.CertStatus.GOOD,
    produced_at: datetime | None = None,
) -> ocsp.Staple:
    return ocsp.Staple(
        der=b"\x30",
        cert_status=status,
        serial=1,
        this_update=this_update,
        next_update=this_update + lifetime,
        produced_at=produced_at or this_update,
        signer="issuer",
    )


def _found(name: str = "a", **chain_changes: object) -> Found:
    return Found(name, f"/certs/{name}.pem", chain=replace(WORLD.chain, **chain_changes))


# ---- classify ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("found", "state", "fragment"),
    [
        (Found("x", "/x.pem", error="cannot read"), State.ERROR, "cannot read"),
        (_found(ocsp_urls=()), State.NO_OCSP, None),
        (_found(ocsp_urls=("ldap://dir/",)), State.ERROR, "ldap://dir/ is not http or https"),
        (_found(issuer=None, ca_issuers_urls=()), State.ERROR, "no caIssuers URL"),
        (_found(not_after=NOW - timedelta(days=1)), State.EXPIRED, "expired on 2026-05-31"),
    ],
    ids=["unreadable", "no-ocsp", "not-http", "no-issuer", "expired"],
)
def test_what_needs_no_fetch_is_a_record(found: Found, state: State, fragment: str | None) -> None:
    records, groups = plan.classify([found], NOW)
    assert groups == {}
    (record,) = records
    assert record.state is state
    assert (record.last_error is None) if fragment is None else (fragment in record.last_error)


def test_one_certificate_found_twice_is_one_group_and_bad_urls_are_left_out() -> None:
    urls = ("ldap://dir/", "http://ocsp.example/")
    records, groups = plan.classify([_found("a", ocsp_urls=urls), _found("b")], NOW)
    assert records == []
    (members,) = groups.values()
    assert [m.name for m in members] == ["a", "b"]
    assert members[0].chain is not None and members[0].chain.ocsp_urls == ("http://ocsp.example/",)


def test_the_chain_with_its_issuer_is_preferred() -> None:
    bare, full = _found("a", issuer=None), _found("b")
    assert plan.best_chain([bare, full]).issuer is not None
    assert plan.best_chain([bare]).issuer is None


# ---- which staple wins --------------------------------------------------------------------


def test_the_newest_valid_staple_on_disk_wins_and_unknown_never_does() -> None:
    old, new = _staple(NOW - timedelta(days=2)), _staple(NOW - timedelta(hours=1))
    unknown = _staple(NOW, status=ocsp.CertStatus.UNKNOWN)
    assert plan.newest([old, new, unknown]) is new
    assert plan.newest([new, old]) is new
    assert plan.newest([unknown]) is None
    assert plan.newest([]) is None


HELD = _staple(NOW - timedelta(hours=30))


@pytest.mark.parametrize(
    ("current", "fetched", "published", "error", "unknown"),
    [
        (HELD, None, HELD, None, False),
        (None, None, None, None, False),
        (HELD, Fetched(error="http://r/: HTTP 503"), HELD, "HTTP 503", False),
        (None, Fetched(error="http://r/: timeout"), None, "timeout", False),
        (HELD, Fetched(_staple(NOW), "http://r/"), "fetched", None, False),
        (None, Fetched(_staple(NOW), "http://r/"), "fetched", None, False),
        (
            HELD,
            Fetched(_staple(NOW, status=ocsp.CertStatus.UNKNOWN), "http://r/"),
            HELD,
            "http://r/: the responder says the certificate is unknown",
            True,
        ),
        (
            HELD,
            Fetched(_staple(NOW - timedelta(days=3)), "http://r/"),
            HELD,
            "http://r/: response of 2026-05-29T12:00:00Z is older than the staple on disk",
            False,
        ),
    ],
    ids=["not-due", "nothing", "fetch-failed", "fetch-failed-none-held", "newer", "first",
         "unknown", "replay"],
)  # fmt: skip
def test_settle(
    current: ocsp.Staple | None,
    fetched: Fetched | None,
    published: object,
    error: str | None,
    unknown: bool,
) -> None:
    settled = plan.settle(current, fetched)
    expected = fetched.staple if published == "fetched" and fetched else published
    assert settled.current is expected
    assert (settled.error is None) if error is None else (error in (settled.error or ""))
    assert settled.unknown is unknown


@given(
    st.integers(min_value=-5000, max_value=5000),
    st.integers(min_value=-5000, max_value=5000),
)
def test_an_older_answer_never_replaces_a_newer_staple(held_min: int, fetched_min: int) -> None:
    held = _staple(NOW + timedelta(minutes=held_min))
    answer = _staple(NOW + timedelta(minutes=fetched_min))
    settled = plan.settle(held, Fetched(answer, "http://r/"))
    kept = settled.current
    assert kept is not None
    assert kept.this_update == max(held.this_update, answer.this_update)


STATUSES = st.sampled_from(list(ocsp.CertStatus))


@given(
    st.integers(min_value=-5000, max_value=5000),
    st.integers(min_value=-5000, max_value=5000),
    STATUSES,
    STATUSES,
)
def test_revocation_is_final(held_min: int, fetched_min: int, held_status, answer_status) -> None:  # type: ignore[no-untyped-def]
    """Whatever the times, a revoked answer or staple is never followed by a good one."""
    held = _staple(NOW + timedelta(minutes=held_min), status=held_status)
    answer = _staple(NOW + timedelta(minutes=fetched_min), status=answer_status)
    kept = plan.settle(held, Fetched(answer, "http://r/")).current
    assert kept is not None
    if ocsp.CertStatus.REVOKED in (held_status, answer_status) and held_status is not (
        ocsp.CertStatus.UNKNOWN
    ):
        assert kept.cert_status is ocsp.CertStatus.REVOKED


def test_a_lifted_certificate_hold_may_be_followed_by_good() -> None:
    hold = replace(
        _staple(NOW - timedelta(hours=2), status=ocsp.CertStatus.REVOKED),
        revocation_reason="certificateHold",
    )
    good = _staple(NOW - timedelta(hours=1))
    assert plan.settle(hold, Fetched(good, "http://r/")).current is good
    final = replace(hold, revocation_reason="keyCompromise")
    settled = plan.settle(final, Fetched(good, "http://r/"))
    assert settled.current is final
    assert settled.error is not None and "revocation is final" in settled.error


def test_an_older_revoked_answer_replaces_a_good_staple() -> None:
    good = _staple(NOW - timedelta(hours=1))
    revoked = _staple(NOW - timedelta(days=2), status=ocsp.CertStatus.REVOKED)
    settled = plan.settle(good, Fetched(revoked, "http://r/"))
    assert settled.current is revoked and settled.error is None


# ---- the record ----------------------------------------------------------------------------


def test_the_record_carries_the_staple_and_plan_due_its_refresh_time() -> None:
    staple = _staple()
    rec = plan.record(_found("a"), staple, output="/out")
    assert rec.state is State.GOOD and rec.staple_path == "/out/a.der"
    revoked = _staple(status=ocsp.CertStatus.REVOKED)
    assert plan.record(_found(), revoked, output="x").state is State.REVOKED
    missing = plan.record(_found("m"), None, output="x")
    assert missing.state is State.MISSING
    unknown = plan.record(_found(), None, output="x", unknown=True)
    assert unknown.state is State.UNKNOWN
    due = plan.due([rec, missing], refresh_at=0.5)
    assert due == {"a": Due(refresh=staple.this_update + staple.lifetime / 2)}


# ---- the daemon's schedule -----------------------------------------------------------------


def _record(current: ocsp.Staple | None, *, failed: bool = False, **kw: object) -> Record:
    rec = Record("a", "/a.pem", State.GOOD, current=current, failed_now=failed)
    for key, value in kw.items():
        setattr(rec, key, value)
    return rec


def test_after_a_success_the_refresh_is_scheduled_and_attempts_reset() -> None:
    staple = _staple(NOW - timedelta(hours=1))
    step = next_run(_record(staple), 3, TIMING, NOW, jitter=0.0)
    assert not step.retry and step.attempts == 0
    assert step.when == staple.this_update + staple.lifetime / 2


def test_retries_back_off_and_count_attempts() -> None:
    delays = []
    attempts = 0
    for _ in range(8):
        step = next_run(_record(None, failed=True), attempts, TIMING, NOW, jitter=0.0)
        assert step.retry
        attempts = step.attempts
        delays.append((step.when - NOW).total_seconds())
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_a_retry_honours_retry_after_but_stays_within_the_valid_staple() -> None:
    staple = _staple(NOW - timedelta(hours=90), timedelta(days=4))  # 6 h left
    step = next_run(_record(staple, failed=True, retry_after=3000.0), 0, TIMING, NOW, jitter=0.0)
    assert (step.when - NOW).total_seconds() == 3000
    step = next_run(_record(staple, failed=True, retry_after=90000.0), 0, TIMING, NOW, jitter=0.0)
    assert step.when < staple.usable_until


@given(st.floats(min_value=-1, max_value=1), st.integers(min_value=1, max_value=7 * 24 * 60))
def test_a_scheduled_refresh_is_ahead_and_before_the_staple_ends(
    jitter: float, lifetime_min: int
) -> None:
    staple = _staple(NOW - timedelta(minutes=lifetime_min // 3), timedelta(minutes=lifetime_min))
    step = next_run(_record(staple), 0, TIMING, NOW, jitter)
    assert step.when >= NOW
    assert step.when <= max(NOW, staple.usable_until)


OLD = replace(_staple(NOW - timedelta(days=3)), der=b"old")
THEIRS = replace(_staple(NOW - timedelta(minutes=5)), der=b"theirs")
MINE_GOOD = replace(_staple(NOW - timedelta(minutes=1)), der=b"mine")
MINE_REVOKED = replace(_staple(NOW, status=ocsp.CertStatus.REVOKED), der=b"revoked")


@pytest.mark.parametrize(
    ("before", "now", "now_due", "answer", "theirs_kept"),
    [
        (OLD, THEIRS, False, MINE_GOOD, True),  # another writer refreshed it meanwhile
        (None, THEIRS, False, MINE_GOOD, True),  # nothing was there, now theirs is
        (OLD, OLD, True, MINE_GOOD, False),  # nobody else wrote
        (OLD, THEIRS, True, MINE_GOOD, False),  # theirs is due already: not a refresh
        (OLD, None, True, MINE_GOOD, False),  # the disk lost it: publish the answer
        (OLD, THEIRS, False, MINE_REVOKED, False),  # the CA's revoked always wins
        (OLD, THEIRS, False, None, True),  # a failed fetch keeps theirs too
    ],
    ids=["refreshed", "appeared", "untouched", "theirs-due", "gone", "revokes", "failed"],
)
def test_the_race_rule(
    before: ocsp.Staple | None,
    now: ocsp.Staple | None,
    now_due: bool,
    answer: ocsp.Staple | None,
    theirs_kept: bool,
) -> None:
    assert plan.keep_theirs(before, now, now_due, answer) is theirs_kept


def test_only_certificate_hold_is_not_final() -> None:
    revoked = _staple(status=ocsp.CertStatus.REVOKED)
    for reason in (None, "keyCompromise", "superseded", "reason 7"):
        assert replace(revoked, revocation_reason=reason).finally_revoked
    assert not replace(revoked, revocation_reason="certificateHold").finally_revoked
    assert not _staple().finally_revoked
