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
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
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
