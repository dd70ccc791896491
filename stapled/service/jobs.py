"""APScheduler 3 behind the few calls the daemon makes: the only apscheduler import.

APScheduler 3 drops a one-shot job that runs more than ``misfire_grace_time`` late
(default 1 s: any suspend/resume or stall).  Here late jobs always run, once, one at a
time per job; and a job cancelled by a stop ends quietly (APScheduler would log the
cancellation as a failure, with a traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("stapled")

Job = Callable[..., Awaitable[None]]
JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}


def quiet(job: Job) -> Job:
    """``job``, ending quietly when stopping cancels it mid-await."""

    @functools.wraps(job)
    async def run(*args: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await job(*args)

    return run


class Jobs:
    """Coroutine jobs on one event loop, each under an id (a new one replaces it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduler = AsyncIOScheduler(
            event_loop=loop, timezone="UTC", job_defaults=JOB_DEFAULTS
        )

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        """Drop every job not started yet; the running ones are cancelled with the loop."""
        if self._scheduler.running:
            self._scheduler.remove_all_jobs()
            self._scheduler.shutdown(wait=False)

    def at(self, when: datetime, job: Job, *, id: str, args: Sequence[object] = ()) -> None:
        trigger = DateTrigger(run_date=when)
        self._scheduler.add_job(quiet(job), trigger, args=args, id=id, replace_existing=True)

    def now(self, job: Job, *, id: str) -> None:
        self._scheduler.add_job(quiet(job), id=id, replace_existing=True)

    def every(self, seconds: float, job: Job, *, id: str, args: Sequence[object] = ()) -> None:
        trigger = IntervalTrigger(seconds=seconds)
        self._scheduler.add_job(quiet(job), trigger, args=args, id=id, replace_existing=True)

    def cancel(self, id: str) -> None:
        if not self._scheduler.running:
            return  # stopped: every job is gone already
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(id)

    def pending(self, id: str) -> bool:
        return self._scheduler.get_job(id) is not None


class Timeline:
    """One-shot runs of one coroutine, at most one pending per key, behind one job.

    A job per certificate cost about a kilobyte each (APScheduler's job, its trigger, a
    wrapper); here a key costs a heap entry, and one job is armed for the earliest.
    Jobs' rules hold: a late run runs, once; a key is never run twice at a time (a run
    due while the key's last one is still going is dropped, as APScheduler drops it:
    that run schedules the key's next one itself).
    """

    def __init__(self, jobs: Jobs, run: Callable[[str, bool], Awaitable[None]], *, id: str) -> None:
        self._jobs, self._run = jobs, run
        # Two job ids taken in turn: a firing arms the next under the other, so the
        # next is never refused as a second instance of the one still running.
        self._ids, self._turn = (f"{id}-a", f"{id}-b"), 0
        # Each key's heap entry (time, key, forced); entries no longer in this map were
        # replaced or cancelled.  Equal times compare keys, never anything else.
        self._due: dict[str, tuple[datetime, str, bool]] = {}
        self._heap: list[tuple[datetime, str, bool]] = []
        self._armed: datetime | None = None
        self._running: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._due)

    def at(self, when: datetime, key: str, *, force: bool) -> None:
        """Run ``key`` at ``when`` (replacing the time it had)."""
        entry = self._due[key] = (when, key, force)
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._due) + 64:
            # Replaced and cancelled entries, dropped now and then rather than searched.
            self._heap = [e for e in self._heap if self._due.get(e[1]) is e]
            heapq.heapify(self._heap)
        if self._armed is None or when < self._armed:
            self._arm(when)

    def cancel(self, key: str) -> None:
        self._due.pop(key, None)  # its heap entry is skipped when met

    def stop(self) -> None:
        """Forget every pending run and cancel the running ones."""
        self._due.clear()
        self._heap.clear()
        self._armed = None
        for task in list(self._running.values()):
            task.cancel()

    def _arm(self, when: datetime) -> None:
        self._armed = when
        self._jobs.at(when, self._fire, id=self._ids[self._turn])

    async def _fire(self) -> None:
        """Start every run due by now, and arm the job for the next."""
        # Never earlier than the time it was armed for, should the timer come early.
        now = max(datetime.now(UTC), self._armed or datetime.now(UTC))
        heap, due = self._heap, self._due
        while heap:
            entry = heap[0]
            when, key, force = entry
            if due.get(key) is entry:  # else cancelled or replaced
                if when > now:
                    break
                del due[key]
                if key not in self._running:
                    self._running[key] = asyncio.ensure_future(self._one(key, force))
            heapq.heappop(heap)
        self._armed = None
        self._turn ^= 1
        if heap:
            self._arm(heap[0][0])

    async def _one(self, key: str, force: bool) -> None:
        try:
            await self._run(key, force)
        except asyncio.CancelledError:
            pass
        except Exception:  # one key's failure must not stop the others
            log.exception("the scheduled run for %s failed", key)
        finally:
            self._running.pop(key, None)
