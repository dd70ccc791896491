"""Watching certificate sources: debounced batches of changed paths.  The only watchdog user.

Certbot renews by replacing each ``live/NAME/*.pem`` symlink (delete + create, never
modify) and editors and deploy tools write atomically (a ``moved`` event), so every
kind of change counts, not only modifications.  Reads do not: stapled reads the files
itself after each batch, and must not wake itself up by doing so.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

# Event types that mean something changed (watchdog 7 also reports opens and reads).
_CHANGES = {"created", "deleted", "modified", "moved", "closed"}
# ... and only those are asked of the kernel.  Left to itself, watchdog 7 asks inotify
# for opens and reads too, so a rescan opening ten thousand certificates overflows the
# kernel's queue, and watchdog's recovery (listing every directory again) makes more
# events than it reads: a loop that keeps a CPU busy.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
# However busy the directory, a batch is delivered at the latest this many debounce
# periods after its first event.
_MAX_DELAY_FACTOR = 5
# The logger watchdog warns on when the kernel's event queue overflowed.
_INOTIFY_LOG = logging.getLogger("watchdog.observers.inotify_c")


def roots_of(paths: Iterable[str]) -> list[tuple[Path, bool]]:
    """(directory to watch, recursively?) for each configured source path or glob.

    Directories are resolved first: a watch on a symlink to a directory sees nothing.
    In certbot's tree only live/ is watched below the top (one watch per lineage).
    """
    roots: dict[Path, bool] = {}
    for raw in paths:
        path = Path(raw)
        if glob.has_magic(raw):
            parts = []
            for part in path.parts:
                if glob.has_magic(part):
                    break
                parts.append(part)
            root, recursive = Path(*parts), True
        elif path.is_dir():
            root, recursive = path, True
        else:
            root, recursive = path.parent, False
        root = root.resolve()
        if recursive and (root / "live").is_dir() and (root / "archive").is_dir():
            # certbot's tree: a renewal replaces the links in live/NAME, and archive/
            # (skipped by the scan too) would double the kernel's watches.
            roots[root / "live"] = True
            recursive = False
        roots[root] = roots.get(root, False) or recursive
    return sorted(roots.items())


class Watcher:
    """Calls ``on_change(paths)`` once changes have settled for ``debounce`` seconds."""

    def __init__(
        self,
        roots: list[tuple[Path, bool]],
        on_change: Callable[[set[str]], None],
        *,
        debounce: float = 2.0,
        ignore_under: Path | None = None,
        ignore_names: tuple[str, ...] = (),
        ignore_suffixes: tuple[str, ...] = (),
    ) -> None:
        self.roots = roots
        self.on_change = on_change
        self.debounce = debounce
        # stapled's own output directory: writing staples must not look like a change.
        self._ignored = str(ignore_under.resolve()) if ignore_under is not None else None
        # ... nor its own files among the certificates (HAProxy's .ocsp, temporary files).
        self._ignore_names = ignore_names
        self._ignore_suffixes = ignore_suffixes
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._first: float | None = None
        self._timer: threading.Timer | None = None
        self._observer: BaseObserver | None = None
        self._threads: list[threading.Thread] = []  # the observer's, once started
        self.polling = False

    def start(self) -> None:
        """Watch with inotify; fall back to polling where inotify is not available."""
        before = set(threading.enumerate())
        try:
            self._observer = self._schedule(Observer())
            self._observer.start()
        except OSError as e:
            log.warning("inotify is not available (%s); polling for changes instead", e)
            self._observer = self._schedule(PollingObserver(timeout=max(self.debounce, 1.0)))
            self._observer.start()
            self.polling = True
        self._threads = [t for t in threading.enumerate() if t not in before]

    def _schedule(self, observer: BaseObserver) -> BaseObserver:
        handler = _Handler(self._event)
        for root, recursive in self.roots:
            if root.is_dir():
                observer.schedule(
                    handler, str(root), recursive=recursive, event_filter=_EVENT_FILTER
                )
            else:
                log.warning("%s: not a directory (yet); it is rescanned periodically", root)
        return observer

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        if self._observer is None:
            return
        closing = _Closing(self._threads)
        _INOTIFY_LOG.addFilter(closing)
        try:
            self._observer.stop()
            self._observer.join(timeout=5)
        finally:
            if not any(t.is_alive() for t in self._threads):
                _INOTIFY_LOG.removeFilter(closing)

    def _event(self, path: str) -> None:
        ignored = self._ignored
        if ignored is not None and (path == ignored or path.startswith(ignored + os.sep)):
            return
        name = path.rpartition(os.sep)[2]
        if name.startswith(self._ignore_names) or name.endswith(self._ignore_suffixes):
            return
        with self._lock:
            now = time.monotonic()
            self._pending.add(path)
            if self._first is None:
                self._first = now
            if self._timer is not None:
                self._timer.cancel()
            waited = now - self._first
            delay = max(0.0, min(self.debounce, self.debounce * _MAX_DELAY_FACTOR - waited))
            self._timer = threading.Timer(delay, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            batch, self._pending, self._first = self._pending, set(), None
        if batch:
            self.on_change(batch)


class _Closing(logging.Filter):
    """Drops watchdog's queue-overflow warning from the threads of an observer being
    stopped: it removes its watches one by one, each removal queues an event, and at
    tens of thousands of directories the kernel's queue overflows.  The events "lost"
    are those of the watches just removed; another watcher's warnings pass."""

    def __init__(self, threads: list[threading.Thread]) -> None:
        super().__init__()
        self._threads = threads

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.WARNING
            and "overflow" in record.getMessage()
            and any(t.ident == record.thread and t.is_alive() for t in self._threads)
        )


class _Handler(FileSystemEventHandler):
    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        self.notify(_text(event.src_path))
        if event.dest_path:
            self.notify(_text(event.dest_path))


def _text(path: str | bytes) -> str:
    return path.decode(errors="replace") if isinstance(path, bytes) else path


class Changes:
    """Paths seen changing, taken by one run of ``rescan`` at a time on the loop: those
    seen while it runs are taken by it next, so none is lost to a rescan under way."""

    def __init__(self, rescan: Callable[[set[str]], Awaitable[None]]) -> None:
        self._rescan = rescan
        self._paths: set[str] = set()
        self._task: asyncio.Future[None] | None = None
        self._stopped = False

    def add(self, paths: set[str]) -> None:
        """On the loop: rescan these paths soon."""
        if self._stopped:
            return
        self._paths |= paths
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._paths and not self._stopped:
            paths, self._paths = self._paths, set()
            await self._rescan(paths)

    def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
