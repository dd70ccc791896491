"""Atomic writes and stapled's own records."""

from __future__ import annotations

from pathlib import Path

import pytest

from stapled import store
from stapled.errors import StoreError


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
    (tmp_path / store.STATE_FILE).write_text("{not json")
    assert store.load_state(tmp_path) == {}
    store.save_state(tmp_path, {"version": 1})
    assert store.load_state(tmp_path) == {"version": 1}


def test_remove_temp_files_leaves_staples(tmp_path: Path) -> None:
    (tmp_path / (store.TEMP_PREFIX + "x")).write_bytes(b"half")
    (tmp_path / "a.der").write_bytes(b"whole")
    assert store.remove_temp_files(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.der"]
