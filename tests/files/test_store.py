"""Atomic writes and stapled's own records."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stapled.errors import StoreError
from stapled.files import state, store


def test_write_is_atomic_and_skips_unchanged(tmp_path: Path) -> None:
    target = tmp_path / "a.der"
    assert store.write_atomic(target, b"one") is True
    inode = target.stat().st_ino
    assert store.write_atomic(target, b"one") is False
    assert target.stat().st_ino == inode  # untouched
    assert store.write_atomic(target, b"two") is True
    assert target.read_bytes() == b"two"
    assert target.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert list(tmp_path.glob(store.TEMP_PREFIX + "*")) == []


def test_missing_directory_is_an_error_naming_the_path(tmp_path: Path) -> None:
    target = tmp_path / "absent" / "a.der"
    with pytest.raises(StoreError, match="absent"):
        store.write_atomic(target, b"x")


def test_output_dir_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("")
    with pytest.raises(StoreError, match="out"):
        store.prepare_dir(blocker)


def test_damaged_state_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / state.STATE_FILE).write_text("{not json")
    assert state.load(tmp_path) == {}
    state.write(tmp_path, {"version": 1})
    assert state.load(tmp_path) == {"version": 1, "certificates": {}}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    head=st.dictionaries(st.text().filter(lambda k: k != "certificates"), JSON, max_size=3),
    entries=st.dictionaries(st.text(), st.dictionaries(st.text(), JSON, max_size=3), max_size=2500),
)
def test_the_state_file_written_in_parts_reads_back_whole(
    tmp_path: Path, head: dict[str, object], entries: dict[str, dict[str, object]]
) -> None:
    """Written a thousand certificates at a time, whatever the names and values."""
    state.write(tmp_path, {**head, "certificates": entries})
    assert state.load(tmp_path) == {**head, "certificates": entries}


def test_a_write_in_parts_that_fails_midway_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def parts() -> Iterator[bytes]:
        yield b"new, half of it"
        raise ValueError("cannot encode")

    with pytest.raises(ValueError, match="cannot encode"):
        store.write_atomic_parts(target, parts())
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"], "no temporary file is left"


def test_remove_temp_files_leaves_staples(tmp_path: Path) -> None:
    (tmp_path / (store.TEMP_PREFIX + "x")).write_bytes(b"half")
    (tmp_path / "a.der").write_bytes(b"whole")
    assert store.remove_temp_files(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.der"]


def _temps(directory: Path) -> list[Path]:
    return list(directory.glob(store.TEMP_PREFIX + "*"))


def test_a_batch_renames_only_after_the_sync(tmp_path: Path) -> None:
    (tmp_path / "a.der").write_bytes(b"old")
    batch = store.Batch()
    assert batch.write(tmp_path / "a.der", b"new") is True
    assert batch.write(tmp_path / "b.der", b"fresh") is True
    assert batch.write(tmp_path / "c.der", b"") is True
    # Nothing is in place before the flush: a reader still sees the old file.
    assert (tmp_path / "a.der").read_bytes() == b"old"
    assert not (tmp_path / "b.der").exists()
    batch.flush()
    assert (tmp_path / "a.der").read_bytes() == b"new"
    assert (tmp_path / "b.der").read_bytes() == b"fresh"
    assert (tmp_path / "c.der").read_bytes() == b""
    assert _temps(tmp_path) == []


def test_a_batch_flushes_by_itself_at_its_limit(tmp_path: Path) -> None:
    batch = store.Batch(limit=3)
    for i in range(3):
        batch.write(tmp_path / f"{i}.der", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.der", "1.der", "2.der"]


def test_a_failed_sync_renames_nothing_and_says_so(tmp_path: Path) -> None:
    """A disk that fails write-back (EIO from syncfs) must not get the renames."""

    def broken(fd: int) -> bool:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    (tmp_path / "a.der").write_bytes(b"old")
    lost: list[StoreError] = []
    batch = store.Batch(sync=broken)
    batch.write(tmp_path / "a.der", b"new", lost=lost.append)
    batch.flush()
    assert (tmp_path / "a.der").read_bytes() == b"old"
    assert _temps(tmp_path) == []
    assert [str(e) for e in lost] == [
        f"{tmp_path / 'a.der'}: not written: cannot sync (Input/output error)"
    ]


def test_without_syncfs_each_file_is_fsynced(tmp_path: Path) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    # No syncfs (not Linux, or filtered out): each file is fsynced.
    batch = store.Batch(sync=lambda fd: False, fsync=counting)
    for i in range(4):
        batch.write(tmp_path / f"{i}.der", b"x")
    batch.flush()
    assert len(synced) == 4 + 1  # each file, then the directory once
    assert len(list(tmp_path.glob("*.der"))) == 4
