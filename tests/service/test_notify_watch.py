"""sd_notify on real AF_UNIX datagram sockets, and the watcher on a real directory."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from stapled.service.sdnotify import Notifier
from stapled.service.watcher import Changes, Watcher, roots_of


def _receive(sock: socket.socket) -> str:
    sock.settimeout(2)
    return sock.recv(4096).decode()


def test_notify_to_a_socket_path() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # short: AF_UNIX paths are limited
        path = os.path.join(d, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            notifier = Notifier({"NOTIFY_SOCKET": path}, use_library=False)
            notifier.ready("3 good")
            assert _receive(sock) == "READY=1\nSTATUS=3 good"
            notifier.stopping()
            assert _receive(sock) == "STOPPING=1"


def test_notify_to_an_abstract_socket() -> None:
    name = f"stapled-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        Notifier({"NOTIFY_SOCKET": "@" + name}, use_library=False).status("all good")
        assert _receive(sock) == "STATUS=all good"


def test_no_socket_means_silence() -> None:
    notifier = Notifier({}, use_library=False)
    assert not notifier.enabled
    notifier.ready("x")  # nothing to send to, nothing raised


def test_watchdog_interval_is_half_of_watchdog_sec() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env, use_library=False).watchdog_interval == 10
    other = {**env, "WATCHDOG_PID": "1"}
    assert Notifier(other, use_library=False).watchdog_interval is None


def test_roots_of_sources(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.pem").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    roots = dict(
        roots_of(
            [
                str(tmp_path / "dir"),
                str(tmp_path / "file.pem"),
                str(tmp_path / "g" / "**" / "*.pem"),
                str(tmp_path / "link"),
            ]
        )
    )
    assert roots[tmp_path / "dir"] is True  # the symlink resolves to the same directory
    assert roots[tmp_path] is False
    assert roots[tmp_path / "g"] is True


def test_only_live_is_watched_below_certbots_tree(tmp_path: Path) -> None:
    """A watch per directory: archive/ would double them, and a renewal replaces the
    links in live/NAME, where the watch is."""
    for part in ("live/a.example", "archive/a.example", "renewal"):
        (tmp_path / "le" / part).mkdir(parents=True)
    roots = dict(roots_of([str(tmp_path / "le")]))
    assert roots == {tmp_path / "le": False, tmp_path / "le" / "live": True}


def test_watcher_batches_changes_and_ignores_reads(tmp_path: Path) -> None:
    batches: list[set[str]] = []
    got = threading.Event()

    def on_change(paths: set[str]) -> None:
        batches.append(paths)
        got.set()

    existing = tmp_path / "old.pem"
    existing.write_text("x")
    watcher = Watcher([(tmp_path, True)], on_change, debounce=0.3)
    watcher.start()
    try:
        existing.read_text()  # a read is not a change
        assert not got.wait(1.0)
        for i in range(5):
            (tmp_path / f"new{i}.pem").write_text("x")
        (tmp_path / "tmp").write_text("y")
        os.replace(tmp_path / "tmp", tmp_path / "moved.pem")  # an atomic write
        assert got.wait(5)
        threading.Event().wait(0.6)
    finally:
        watcher.stop()
    assert len(batches) == 1, batches
    assert str(tmp_path / "moved.pem") in batches[0]
    assert {str(tmp_path / f"new{i}.pem") for i in range(5)} <= batches[0]


def test_reading_many_files_does_not_flood_the_kernel_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rescan opens every certificate: the kernel must not even queue those opens.

    With opens and reads watched, 10,000 certificates overflowed the inotify queue at
    every rescan, and rebuilding the watches opened every directory again: a busy loop.
    """
    files = []
    for i in range(50):
        sub = tmp_path / f"d{i}"
        sub.mkdir()
        files.append(sub / "cert.pem")
        files[-1].write_text("x")
    watcher = Watcher([(tmp_path, True)], lambda paths: None, debounce=0.3)
    watcher.start()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(2000):  # 100,000 opens: more than the default queue of 16,384
                for path in files:
                    with path.open("rb"):
                        pass
            threading.Event().wait(0.5)
    finally:
        watcher.stop()
    assert "overflow" not in caplog.text


def test_own_writes_are_ignored_but_a_sibling_directory_is_not(tmp_path: Path) -> None:
    out, sibling = tmp_path / "stapled", tmp_path / "stapled-certs"
    out.mkdir()
    sibling.mkdir()
    batches: list[set[str]] = []
    got = threading.Event()

    def on_change(paths: set[str]) -> None:
        batches.append(paths)
        got.set()

    watcher = Watcher([(tmp_path, True)], on_change, debounce=0.2, ignore_under=out)
    watcher.start()
    try:
        (out / "a.der").write_bytes(b"staple")
        (sibling / "a.pem").write_text("certificate")
        assert got.wait(5)
        threading.Event().wait(0.4)
    finally:
        watcher.stop()
    changed = set().union(*batches)
    assert str(sibling / "a.pem") in changed
    assert not any(p.startswith(str(out) + os.sep) or p == str(out) for p in changed)


def test_changes_seen_while_a_rescan_runs_are_rescanned_next() -> None:
    """One rescan at a time; what arrives meanwhile is taken by the next, none lost."""

    async def main() -> list[set[str]]:
        seen: list[set[str]] = []
        started, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def rescan(paths: set[str]) -> None:
            seen.append(paths)
            if len(seen) == 1:
                started.set()
                await release.wait()
            if set().union(*seen) >= {"a", "b", "c"}:
                done.set()

        changes = Changes(rescan)
        changes.add({"a"})
        await started.wait()  # the first rescan is under way
        changes.add({"b"})
        changes.add({"c"})
        release.set()
        await asyncio.wait_for(done.wait(), 5)
        changes.stop()
        return seen

    assert asyncio.run(main()) == [{"a"}, {"b", "c"}]


_OVERFLOW = "Inotify queue overflowed; filesystem events were lost"


def _record(
    thread: int | None, message: str = _OVERFLOW, level: int = logging.WARNING
) -> logging.LogRecord:
    record = logging.LogRecord(
        "watchdog.observers.inotify_c", level, __file__, 1, message, (), None
    )
    record.thread = thread
    return record


def test_only_a_stopping_watchers_overflow_warning_is_dropped() -> None:
    """Stopping a watcher removes each watch, and each removal queues an event: at
    100,000 directories the kernel's queue overflows (2 stops in 2 here) and watchdog
    warns that events were lost, which a stop makes meaningless.  That warning, from
    that watcher's threads while they run, is dropped; anything else is kept."""
    from stapled.service.watcher import _Closing

    done = threading.Event()
    stopping = threading.Thread(target=done.wait)
    stopping.start()
    closing = _Closing([stopping])
    try:
        assert not closing.filter(_record(stopping.ident))
        assert closing.filter(_record(threading.get_ident()))
        assert closing.filter(_record(stopping.ident, "another warning"))
        assert closing.filter(_record(stopping.ident, level=logging.ERROR))
    finally:
        done.set()
        stopping.join()
    # Ended, its identifier may be another thread's: that one's warning is kept.
    assert closing.filter(_record(stopping.ident))


def test_a_stopped_watcher_leaves_no_filter_and_others_still_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(200):
        (tmp_path / f"d{i}").mkdir()
    first = Watcher([(tmp_path, True)], lambda paths: None, debounce=0.3)
    first.start()
    first.stop()
    inotify_log = logging.getLogger("watchdog.observers.inotify_c")
    assert inotify_log.filters == []
    with caplog.at_level(logging.WARNING):
        inotify_log.warning(_OVERFLOW)
    assert _OVERFLOW in caplog.text
