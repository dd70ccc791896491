"""A pass writes the state file only when it would say something new: whatever the
state before and the records now, the file afterwards says what a write would."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stapled.core import ocsp, validated
from stapled.core.fleet import digest
from stapled.core.model import Due, Owed, Record
from stapled.core.policy import State
from stapled.files import state

from ..pki import World

NOW = datetime.now(UTC).replace(microsecond=0)
WORLD = World()
STAPLES = [
    ocsp.validate(WORLD.ca.sign_response(WORLD.leaf.cert, this_update=NOW - timedelta(minutes=m)),
                  WORLD.chain, NOW)
    for m in (1, 2)
]  # fmt: skip

# One certificate's record: (staple index or None, error, source, retry in minutes).
_ONE = st.tuples(
    st.none() | st.integers(0, len(STAPLES) - 1),
    st.none() | st.sampled_from(["refused", "timed out"]),
    st.sampled_from(["ca", "fleet", "disk"]),
    st.none() | st.integers(1, 3),
)
_PASS = st.tuples(
    st.dictionaries(st.sampled_from("abcdef"), _ONE, max_size=6),
    st.booleans(),
    st.frozensets(st.sampled_from("abc"), max_size=2),
)


def _save(directory: Path, one_pass: tuple[object, ...], **kw: object) -> None:
    found, reload, push = one_pass
    assert isinstance(found, dict)
    records, due = [], {}
    for name, (index, error, source, retry) in sorted(found.items()):
        staple = STAPLES[index] if index is not None else None
        records.append(
            Record(
                name, f"/{name}.pem", State.GOOD, last_error=error, current=staple, source=source
            )
        )
        if retry is not None:
            due[name] = Due(retry=NOW + timedelta(minutes=retry))
    state.save(directory, records, owed=Owed(bool(reload), frozenset(push)), due=due, **kw)  # type: ignore[arg-type]


def _stamp(path: Path) -> tuple[int, int]:
    st_ = os.stat(path)
    return st_.st_ino, st_.st_mtime_ns


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=_PASS, now=_PASS, texts=st.booleans())
def test_the_state_file_says_what_a_write_would_and_is_left_alone_when_it_does(
    tmp_path: Path, before: tuple[object, ...], now: tuple[object, ...], texts: bool
) -> None:
    written, kept = tmp_path / "written", tmp_path / "kept"
    for directory in (written, kept):
        directory.mkdir(exist_ok=True)
        _save(directory, before)
    earlier = state.load(kept)
    stamp = _stamp(kept / state.STATE_FILE)
    known = {digest(s.der): validated.facts(s) for s in STAPLES} if texts else None
    _save(written, now)
    _save(kept, now, texts=known, earlier=earlier)
    assert state.load(kept) == state.load(written)
    assert (_stamp(kept / state.STATE_FILE) == stamp) == (earlier == state.load(written))


def test_a_state_file_never_written_is_written(tmp_path: Path) -> None:
    _save(tmp_path, ({}, False, frozenset()), earlier={})
    assert state.load(tmp_path) == {
        "version": 1, "reload_pending": False, "haproxy_pending": [], "certificates": {}
    }  # fmt: skip
