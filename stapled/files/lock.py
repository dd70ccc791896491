"""One writer at a time per output directory, across processes.

A cron `once`, certbot's deploy hook and `stapled run` may all write the same staples
during a renewal.  Each takes this lock while it reads what is on disk and writes: a
whole pass holds it, the daemon only around each certificate's write.  The wait is
bounded, and the message names the process that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ..errors import BusyError, StoreError
from . import store

LOCK_FILE = "lock"
# Longer than a cold pass of thousands of certificates takes, and bounded all the same.
WAIT_SECONDS = 300.0
_POLL_SECONDS = 0.05


class DirectoryLock:
    def __init__(
        self,
        state_dir: Path,
        wait: float = WAIT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = state_dir / LOCK_FILE
        self.wait = wait
        self.monotonic = monotonic

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the lock; waits (without blocking the event loop) at most ``wait`` seconds.

        Raises BusyError when another process keeps it longer, StoreError when the state
        directory is unusable.
        """
        deadline = self.monotonic() + self.wait
        store.prepare_dir(self.path.parent)
        while (fd := self._try()) is None:
            if self.monotonic() >= deadline:
                raise BusyError(
                    str(self.path.parent),
                    f"another stapled ({self._holder()}) is writing here and did not finish "
                    f"within {self.wait:g} s; try again later",
                )
            await asyncio.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _try(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise StoreError(str(self.path), f"cannot open the lock ({e.strerror})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return "pid unknown"
        return f"pid {pid}" if pid.isdigit() else "pid unknown"
