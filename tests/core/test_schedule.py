"""Scheduling with an injected clock: refresh and retry times, jitter, late jobs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stapled.core import ocsp, policy
from stapled.service.jobs import Jobs

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=5)


def _staple(this_update: datetime, lifetime: timedelta) -> ocsp.Staple:
    return ocsp.Staple(
        der=b"",
        cert_status=ocsp.CertStatus.GOOD,
        serial=1,
        this_update=this_update,
        next_update=this_update + lifetime,
        produced_at=this_update,
        signer="issuer",
    )


def _refresh(staple: ocsp.Staple, jitter: float, **kw: object) -> datetime:
    args: dict[str, object] = {
        "refresh_at": 0.5,
        "now": NOW,
        "jitter": jitter,
        "margin": MARGIN,
        "min_interval": timedelta(seconds=60),
    }
    args.update(kw)
    return policy.scheduled_refresh(staple, **args)  # type: ignore[arg-type]


def test_refresh_at_half_the_window_with_jitter_bounds() -> None:
    staple = _staple(NOW, timedelta(days=4))
    middle = NOW + timedelta(days=2)
    spread = timedelta(days=4) * policy.JITTER_FRACTION
    assert _refresh(staple, 0.0) == middle
    assert _refresh(staple, -1.0) == middle - spread
    assert _refresh(staple, 1.0) == middle + spread


def test_never_sooner_than_the_minimum_interval() -> None:
    # A responder whose answers start long ago: refresh_at is already behind us.
    staple = _staple(NOW - timedelta(days=3), timedelta(days=4))
    assert _refresh(staple, 0.0) == NOW + timedelta(seconds=60)


@given(
    window=st.integers(min_value=60, max_value=14 * 86400),
    jitter=st.floats(min_value=-1.0, max_value=1.0),
    age=st.floats(min_value=0.0, max_value=0.4),
)
def test_a_fresh_response_is_replaced_at_its_refresh_point_whatever_its_window(
    window: int, jitter: float, age: float
) -> None:
    """Default settings (refresh_at 0.5, min_refresh_interval 60 s): a response of any
    window W >= 60 s, fetched before its refresh point, is refreshed at half of W plus
    the jitter, and before 3/4 of W in any case; the minimum interval never delays it."""
    lifetime = timedelta(seconds=window)
    staple = _staple(NOW - lifetime * age, lifetime)
    margin = ocsp.margin_for(lifetime)
    at = _refresh(staple, jitter, margin=margin)
    elapsed = (at - staple.this_update) / lifetime
    point = 0.5 + policy.JITTER_FRACTION * jitter
    assert at >= NOW and elapsed <= 0.75
    if point > age:  # still ahead of its refresh point when fetched
        assert elapsed == pytest.approx(point, abs=1e-6)


def test_a_sixty_second_response_is_refreshed_at_half_not_at_its_end() -> None:
    lifetime = timedelta(seconds=60)
    staple = _staple(NOW, lifetime)
    at = _refresh(staple, 0.0, margin=ocsp.margin_for(lifetime))
    assert at == NOW + timedelta(seconds=30)


def test_max_age_is_honoured() -> None:
    staple = _staple(NOW, timedelta(days=4))
    at = _refresh(staple, 0.0, max_age=3 * 86400.0)
    assert at > NOW + timedelta(days=2)
    assert at <= staple.next_update - MARGIN


@given(
    st.floats(min_value=0.01, max_value=0.99),
    st.floats(min_value=-1.0, max_value=1.0),
    st.integers(min_value=20 * 60, max_value=14 * 86400),
    st.integers(min_value=0, max_value=14 * 86400),
)
def test_refresh_leaves_room_for_retries_before_expiry(
    refresh_at: float, jitter: float, lifetime: int, age: int
) -> None:
    staple = _staple(NOW - timedelta(seconds=min(age, lifetime - 600)), timedelta(seconds=lifetime))
    min_interval = timedelta(seconds=60)
    at = _refresh(staple, jitter, refresh_at=refresh_at, min_interval=min_interval)
    usable_end = staple.next_update - MARGIN
    assert NOW <= at <= usable_end
    latest = usable_end - (usable_end - staple.this_update) / (policy.ATTEMPTS_BEFORE_EXPIRY + 1)
    if latest >= NOW + min_interval:
        # Not late yet: a fifth of the usable window stays free for retries.
        assert at <= latest


def test_retry_backs_off_exponentially_to_the_cap() -> None:
    delays = [
        policy.retry_delay(n, now=NOW, retry_min=60, retry_max=3600, valid_until=None)
        for n in range(1, 10)
    ]
    assert [d.total_seconds() for d in delays[:4]] == [60, 120, 240, 480]
    assert delays[-1].total_seconds() == 3600
    assert delays == sorted(delays)


def test_retry_keeps_several_attempts_before_the_staple_expires() -> None:
    valid_until = NOW + timedelta(hours=1)
    delay = policy.retry_delay(20, now=NOW, retry_min=60, retry_max=86400, valid_until=valid_until)
    assert delay <= timedelta(hours=1) / policy.ATTEMPTS_BEFORE_EXPIRY


def test_retry_after_is_honoured_within_the_cap() -> None:
    def delay(retry_after: float) -> float:
        return policy.retry_delay(
            1, now=NOW, retry_min=60, retry_max=3600, valid_until=None, retry_after=retry_after
        ).total_seconds()

    assert delay(900) == 900
    assert delay(10) == 60
    assert delay(86400) == 3600


def test_a_late_job_still_runs() -> None:
    # APScheduler's default misfire_grace_time (1 s) would silently drop this job.
    async def main() -> None:
        scheduler = Jobs(asyncio.get_running_loop())
        ran = asyncio.Event()

        async def job() -> None:
            ran.set()

        scheduler.at(datetime.now(UTC) - timedelta(hours=2), job, id="late")
        scheduler.start()
        try:
            await asyncio.wait_for(ran.wait(), 5)
        except TimeoutError:
            raise AssertionError("a job due two hours ago was dropped") from None
        finally:
            scheduler.stop()

    asyncio.run(main())


@pytest.mark.parametrize("attempts", [1, 3, 8])
def test_without_a_staple_a_retry_is_never_below_the_minimum(attempts: int) -> None:
    delay = policy.retry_delay(attempts, now=NOW, retry_min=60, retry_max=3600, valid_until=None)
    assert delay >= timedelta(seconds=60)


@given(
    st.integers(min_value=1, max_value=100_000),  # a responder failing for years
    st.floats(min_value=1, max_value=7 * 86400),
    st.floats(min_value=1, max_value=3600),
    st.none() | st.floats(min_value=0, max_value=10**6),
)
def test_retries_leave_attempts_before_the_staple_ends(
    attempts: int, left: float, retry_min: float, retry_after: float | None
) -> None:
    """With a valid staple, the next try comes within a quarter of the time it has left."""
    delay = policy.retry_delay(
        attempts,
        now=NOW,
        retry_min=retry_min,
        retry_max=max(retry_min, 3600),
        valid_until=NOW + timedelta(seconds=left),
        retry_after=retry_after,
    )
    tick = timedelta(microseconds=1)  # timedelta rounds to whole microseconds
    assert delay <= timedelta(seconds=max(policy.MIN_RETRY_SECONDS, left / 4)) + tick
    assert delay >= timedelta(seconds=min(policy.MIN_RETRY_SECONDS, retry_min))
