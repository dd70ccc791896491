"""The daemon's refreshes: one pending run per certificate on one timeline, each run at
its time (or at once when late), never two of one certificate at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stapled.service.jobs import Jobs, Timeline

Body = Callable[[Timeline, list[tuple[str, bool]], asyncio.Event], Awaitable[None]]


# When each key last ran.
TIMES: dict[str, datetime] = {}


def _run(body: Body, *, hold: asyncio.Event | None = None) -> list[tuple[str, bool]]:
    """Run ``body`` against a started timeline; what ran, in order (and TIMES)."""
    TIMES.clear()

    async def main() -> list[tuple[str, bool]]:
        jobs = Jobs(asyncio.get_running_loop())
        ran: list[tuple[str, bool]] = []
        changed = asyncio.Event()

        async def refresh(key: str, force: bool) -> None:
            TIMES[key] = datetime.now(UTC)
            ran.append((key, force))
            changed.set()
            if hold is not None and key == "held":
                await hold.wait()

        timeline = Timeline(jobs, refresh, id="refresh")
        jobs.start()
        try:
            await asyncio.wait_for(body(timeline, ran, changed), 20)
        finally:
            timeline.stop()
            jobs.stop()
        return ran

    return asyncio.run(main())


async def _until(condition: Callable[[], bool], changed: asyncio.Event) -> None:
    while not condition():
        changed.clear()
        await changed.wait()


def soon(ms: int) -> datetime:
    return datetime.now(UTC) + timedelta(milliseconds=ms)


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e"]),
            st.integers(-3_600_000, 300),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_each_key_runs_once_at_the_last_time_set_unless_cancelled(
    plan: list[tuple[str, int, bool, bool]],
) -> None:
    """Times set, replaced and cancelled in any order, some hours late: each key still
    pending runs exactly once, with the force it was last given."""
    expected: dict[str, bool] = {}
    for key, _, force, cancel in plan:
        if cancel:
            expected.pop(key, None)
        else:
            expected[key] = force
    last: dict[str, datetime] = {}

    async def body(timeline: Timeline, ran: list[tuple[str, bool]], changed: asyncio.Event) -> None:
        for key, ms, force, cancel in plan:
            if cancel:
                timeline.cancel(key)
            else:
                last[key] = soon(ms)
                timeline.at(last[key], key, force=force)
        await _until(lambda: len(ran) >= len(expected), changed)
        assert len(timeline) == 0, "nothing is left to run"

    ran = _run(body)
    assert sorted(ran) == sorted(expected.items())
    assert all(TIMES[key] >= last[key] for key in expected), "a run came before its time"


def test_runs_come_in_time_order() -> None:
    async def body(timeline: Timeline, ran: list[tuple[str, bool]], changed: asyncio.Event) -> None:
        for key, ms in (("late", 400), ("first", 100), ("middle", 250)):
            timeline.at(soon(ms), key, force=False)
        await _until(lambda: len(ran) == 3, changed)

    assert [key for key, _ in _run(body)] == ["first", "middle", "late"]


def test_a_key_is_never_run_twice_at_a_time() -> None:
    """Due again while its run is still going (a slow responder), it is not started a
    second time: the run going on schedules the next itself."""
    hold = asyncio.Event()

    async def body(timeline: Timeline, ran: list[tuple[str, bool]], changed: asyncio.Event) -> None:
        timeline.at(soon(0), "held", force=False)
        await _until(lambda: len(ran) == 1, changed)
        timeline.at(soon(0), "held", force=True)
        timeline.at(soon(50), "other", force=False)
        await _until(lambda: ("other", False) in ran, changed)
        hold.set()

    assert _run(body, hold=hold) == [("held", False), ("other", False)]


def test_a_thousand_keys_due_at_once_all_run_and_again_at_their_next_time() -> None:

    async def body(timeline: Timeline, ran: list[tuple[str, bool]], changed: asyncio.Event) -> None:
        for i in range(1000):
            timeline.at(soon(0), f"k{i}", force=False)
        await _until(lambda: len(ran) == 1000, changed)
        for i in range(1000):
            timeline.at(soon(20), f"k{i}", force=True)
        await _until(lambda: len(ran) == 2000, changed)

    ran = _run(body)
    assert sorted(ran[1000:]) == sorted((f"k{i}", True) for i in range(1000))
