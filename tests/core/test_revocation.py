"""Revocation from two sources as values: which verdict wins, what last_error says, the
exit status CRLs add, and when a CRL is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from stapled.core import revocation
from stapled.core.policy import State
from stapled.core.revocation import CrlView

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
URL = "http://crl.example/1.crl"

crl_views = st.one_of(
    st.none(),
    st.builds(
        CrlView,
        st.just(URL),
        st.sampled_from([None, "good", "revoked"]),
        last_error=st.sampled_from([None, f"{URL}: HTTP 503"]),
        reason=st.just("keyCompromise"),
        revoked_at=st.just(NOW),
    ),
)


@given(state=st.sampled_from(list(State)), has_ocsp=st.booleans(), crl=crl_views, url=st.booleans())
def test_revoked_from_any_source_wins_and_only_valid_answers_decide(
    state: State, has_ocsp: bool, crl: CrlView | None, url: bool
) -> None:
    staple = revocation.staple_verdict(state, has_ocsp)
    found = revocation.verdict(staple, crl, url or crl is not None)
    said = {staple, crl.status if crl else None}
    if "revoked" in said:
        assert found == "revoked"
    elif "good" in said:
        assert found == "good"
    elif has_ocsp or crl is not None or url:
        assert found == "unknown"
    else:
        assert found is None
    # A CRL's error never turns a verdict: the same view without it says the same.
    if crl is not None and crl.last_error:
        quiet = CrlView(crl.url, crl.status, reason=crl.reason, revoked_at=crl.revoked_at)
        assert revocation.verdict(staple, quiet, True) == found


def test_the_staple_verdict() -> None:
    assert revocation.staple_verdict(State.GOOD, True) == "good"
    assert revocation.staple_verdict(State.REVOKED, True) == "revoked"
    assert revocation.staple_verdict(State.MISSING, True) == "unknown"
    assert revocation.staple_verdict(State.NO_OCSP, False) is None


def test_what_last_error_gets_from_the_crl() -> None:
    revoked = CrlView(URL, "revoked", reason="keyCompromise", revoked_at=NOW)
    both = revocation.problem("good", revoked)
    assert both is not None and URL in both and "OCSP staple says good" in both
    assert "OCSP" not in (revocation.problem(None, revoked) or "")
    assert revocation.problem(None, CrlView(URL, "good")) is None
    assert revocation.problem(None, CrlView(URL, "good", last_error=f"{URL}: x")) == f"{URL}: x"
    assert URL in (revocation.problem(None, CrlView(URL)) or "")


@given(st.lists(crl_views.filter(lambda v: v is not None), max_size=5))
def test_the_exit_status_crls_add(views: list[CrlView]) -> None:
    code = revocation.exit_code(views)
    if any(v.revoked for v in views):
        assert code == 2
    elif any(v.status is None or v.last_error for v in views):
        assert code == 1
    else:
        assert code == 0


@given(
    window=st.integers(60, 90 * 86400),
    refresh_at=st.floats(0.05, 0.95),
    jitter=st.floats(-1, 1),
)
def test_a_crl_is_due_near_refresh_at_and_never_after_next_update(
    window: int, refresh_at: float, jitter: float
) -> None:
    this_update, next_update = NOW, NOW + timedelta(seconds=window)
    due = revocation.refresh_time(this_update, next_update, refresh_at, jitter)
    assert due <= next_update
    planned = this_update + (next_update - this_update) * refresh_at
    assert abs((due - planned).total_seconds()) <= window * 0.05 + 1e-3


@given(left=st.integers(0, 30 * 86400), floor=st.integers(1, 3600))
def test_after_not_modified_it_asks_again_halfway_never_after_next_update(
    left: int, floor: int
) -> None:
    next_update = NOW + timedelta(seconds=left)
    again = revocation.recheck_time(NOW, next_update, timedelta(seconds=floor))
    assert again <= next_update
    assert again == next_update or again >= NOW + timedelta(seconds=floor)


@given(st.text(), st.text())
def test_jitter_is_stable_and_in_range(a: str, b: str) -> None:
    j = revocation.jitter(a, b)
    assert -1.0 <= j < 1.0 and revocation.jitter(a, b) == j
