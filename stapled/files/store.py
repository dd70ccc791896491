"""Staple files and stapled's own records on disk.

Every write is atomic: a temporary file in the same directory, fsync, rename over the
target, fsync of the directory.  A reader (nginx at reload, HAProxy at start) therefore
sees either the old complete file or the new complete file, whatever happens meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from errno import ENOSYS, EPERM
from pathlib import Path
from typing import cast

from ..errors import StoreError

TEMP_PREFIX = ".stapled-tmp-"
STAPLE_MODE = 0o644
# Told of a batched write that did not land (its target is untouched).
Lost = Callable[[StoreError], None]


def prepare_dir(path: Path) -> None:
    """Create ``path`` if needed and make sure stapled can write into it, and only it.

    Like sshd with loose permissions, a directory others can write into is refused:
    anyone who can create files there can plant a staple, or a symbolic link where a
    staple will be written, and the web server trusts whatever it finds.
    """
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(str(path), f"cannot create the directory ({e.strerror})") from e
    check_dir(path)


def check_dir(path: Path) -> None:
    """StoreError unless ``path`` is a directory this user may write into, and only it."""
    try:
        info = path.stat()
    except OSError as e:
        raise StoreError(str(path), f"cannot use the directory ({e.strerror})") from e
    if not stat.S_ISDIR(info.st_mode):
        raise StoreError(str(path), "is not a directory")
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IWOTH:
        raise StoreError(
            str(path), f"is writable by every user (mode {mode:04o}); refusing it: chmod o-w"
        )
    if mode & stat.S_IWGRP and info.st_gid != os.getegid():
        raise StoreError(
            str(path),
            f"is writable by group {info.st_gid}, not stapled's own (mode {mode:04o}); "
            "refusing it: chmod g-w",
        )
    if not os.access(path, os.W_OK | os.X_OK):
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            raise StoreError(str(path), "is on a read-only file system")
        raise StoreError(str(path), "the directory is not writable by this user")


def read(path: str | Path) -> bytes | None:
    """The file's bytes, or None when there is no such file.

    A symbolic link is not followed (StoreError): stapled's files are never links, so
    one found in their place was planted.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        if Path(path).is_symlink():
            raise StoreError(str(path), "is a symbolic link; stapled does not follow it") from e
        raise StoreError(str(path), f"cannot read ({e.strerror})") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(str(path), "is not a regular file")
        # The size it has, and one byte more: a short read is the end of the file.
        parts: list[bytes] = []
        ask = st.st_size + 1
        while True:
            parts.append(os.read(fd, ask))
            if len(parts[-1]) < ask:
                return b"".join(parts)
            ask = 1 << 16  # it grew while read
    except OSError as e:
        raise StoreError(str(path), f"cannot read ({e.strerror})") from e
    finally:
        os.close(fd)


# What the caller read of the target before: not known, so write_atomic reads it itself.
UNREAD = object()


def write_atomic(
    path: str | Path,
    data: bytes,
    mode: int = STAPLE_MODE,
    *,
    existing: bytes | object | None = UNREAD,
) -> bool:
    """Replace ``path`` with ``data`` atomically; False (and no write) when unchanged.

    Raises StoreError when the directory is not writable or the disk is full; the
    previous file is then untouched and the temporary file removed.  A symbolic link (or
    anything but a regular file) in the target's place is refused, not replaced: it was
    planted, and the operator should know.

    ``existing`` is the target's content when the caller has just read it (None: no
    file), which saves reading it again.
    """
    if _unchanged(path, data, existing):
        return False
    tmp = _write_temp(path, data, mode, sync=True)
    _rename(tmp, path)
    fsync_dir(_parent(path))
    return True


def write_atomic_parts(path: Path, parts: Iterable[bytes], mode: int = STAPLE_MODE) -> None:
    """:func:`write_atomic` of the bytes ``parts`` yields, each written as it comes, so
    that a large file (the state of 100,000 certificates) is never whole in memory.
    Always written."""
    tmp = _write_temp(path, parts, mode, sync=True)
    _rename(tmp, path)
    fsync_dir(_parent(path))


class Batch:
    """Atomic writes made durable together, for a pass that writes thousands of files.

    Each file goes to a temporary file as with :func:`write_atomic`, but instead of an
    fsync per file (a flush of the disk's cache each time), the batch is made durable by
    one syncfs(2) per filesystem.  Only then is each temporary file renamed over its
    target, and each directory fsynced once.  So, as with write_atomic, a reader sees
    the old or the new file whole, and no rename is ever durable before its data.

    A write whose rename cannot be made (the sync or the rename failed) calls its
    ``lost`` with the error, at :meth:`flush`; its target is untouched.
    """

    def __init__(
        self,
        limit: int = 512,
        *,
        sync: Callable[[int], bool] | None = None,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        """``sync(fd)`` makes the filesystem of ``fd`` durable (False: not available, so
        ``fsync`` each file instead); syncfs(2) by default.  Both are seams for tests."""
        # Bounds the temporary files waiting at once, and how long a write waits.
        self.limit = limit
        self._sync = sync or syncfs
        self._fsync = fsync
        # Targets as text: a Path interns each part of its name, and the interpreter's
        # table of interned strings keeps its size once grown by 100,000 staple names.
        self._pending: list[tuple[str, str, Lost | None]] = []

    def write(
        self,
        path: str | Path,
        data: bytes,
        mode: int = STAPLE_MODE,
        *,
        existing: bytes | object | None = UNREAD,
        lost: Lost | None = None,
    ) -> bool:
        """As :func:`write_atomic`, the rename deferred to the next :meth:`flush`."""
        if _unchanged(path, data, existing):
            return False
        target = os.fspath(path)
        self._pending.append((_write_temp(target, data, mode, sync=False), target, lost))
        if len(self._pending) >= self.limit:
            self.flush()
        return True

    def flush(self) -> None:
        """Make the waiting writes durable, then rename them into place."""
        pending, self._pending = self._pending, []
        failures: dict[str, StoreError] = {}
        for directory in sorted({_parent(path) for _, path, _ in pending}):
            try:
                self._sync_filesystem_of(
                    directory, [t for t, p, _ in pending if _parent(p) == directory]
                )
            except OSError as e:
                failures[directory] = StoreError(directory, f"cannot sync ({e.strerror})")
        renamed: set[str] = set()
        for tmp, path, lost in pending:
            error = failures.get(_parent(path))
            if error is None:
                try:
                    _rename(tmp, path)
                except StoreError as e:
                    error = e
                else:
                    renamed.add(_parent(path))
                    continue
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if lost is not None:
                lost(StoreError(path, f"not written: {error.reason}"))
        for directory in sorted(renamed):
            fsync_dir(directory, self._fsync)

    def _sync_filesystem_of(self, directory: str, files: list[str]) -> None:
        """Make ``files`` (in ``directory``) durable: syncfs(2) once, else fsync each."""
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if self._sync(fd):
                return
        finally:
            os.close(fd)
        for name in files:  # no syncfs here (not Linux, or filtered out): one fsync each
            file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                self._fsync(file_fd)
            finally:
                os.close(file_fd)

    def discard(self) -> None:
        """Drop the waiting writes (their targets stay as they were)."""
        pending, self._pending = self._pending, []
        for tmp, _, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _unchanged(path: str | Path, data: bytes, existing: bytes | object | None) -> bool:
    """Whether ``path`` already holds ``data``; StoreError if it must not be replaced."""
    try:
        return (read(path) if existing is UNREAD else existing) == data
    except StoreError as e:
        target = Path(path)
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise StoreError(
                str(path), "is a symbolic link or not a regular file; refusing to replace it"
            ) from e
        return False  # unreadable: write it


def _write_temp(path: str | Path, data: bytes | Iterable[bytes], mode: int, *, sync: bool) -> str:
    """``data`` in a new temporary file beside ``path``, fsynced if ``sync``; its path."""
    try:
        fd, tmp = _create_temp(_parent(path))
    except OSError as e:
        raise StoreError(str(path), f"cannot create a temporary file ({e.strerror})") from e
    try:
        try:
            for part in [data] if isinstance(data, bytes) else data:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # explicit: a umask of 077 must not hide staples from nginx
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # whatever stopped the writing, the half-written file goes
        if isinstance(e, OSError):
            raise StoreError(str(path), f"cannot write ({e.strerror})") from e
        raise
    return tmp


def _parent(path: str | Path) -> str:
    """The directory of ``path``, as text."""
    return os.path.dirname(path) or "."  # noqa: PTH120 (text in, text out)


def _rename(tmp: str, path: str | Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StoreError(str(path), f"cannot write ({e.strerror})") from e


# Temporary names: a counter makes them unique within this process, the pid and a random
# tag drawn at start across processes; O_EXCL refuses a clash all the same.  (tempfile's
# mkstemp draws a random name and wraps the file in Python objects, a tenth of the cost
# of a write at thousands of staples a pass.)
_temp_counter = itertools.count()
_TEMP_TAG = secrets.token_hex(4)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create_temp(directory: str | Path) -> tuple[int, str]:
    """A new file of mode 0600 in ``directory``, opened for writing: (fd, path)."""
    while True:
        tmp = f"{directory}/{TEMP_PREFIX}{os.getpid()}-{_TEMP_TAG}-{next(_temp_counter)}"
        with contextlib.suppress(FileExistsError):
            return os.open(tmp, _TEMP_FLAGS, 0o600), tmp


def syncfs(fd: int) -> bool:
    """syncfs(2) on the filesystem of ``fd``; False where the call is not available.

    Raises OSError when it fails: since Linux 5.8 it reports write-back errors.
    """
    function = _libc_syncfs()
    if function is None:
        return False
    if function(fd) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (ENOSYS, EPERM):  # a seccomp filter may refuse it
        return False
    raise OSError(errno, os.strerror(errno))


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


def fsync_dir(directory: str | Path, fsync: Callable[[int], None] = os.fsync) -> None:
    """Make a rename in ``directory`` durable (POSIX needs the directory synced too)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself is atomic
    finally:
        os.close(fd)


def remove_temp_files(directory: Path) -> int:
    """Remove temporary files an interrupted run left in ``directory``; how many."""
    removed = 0
    try:
        leftovers = list(directory.glob(TEMP_PREFIX + "*"))
    except OSError:
        return 0
    for tmp in leftovers:
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed
