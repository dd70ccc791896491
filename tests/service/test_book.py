"""The daemon's bookkeeping as values: what a refresh, a rescan and a delivery change."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from stapled.core.model import NOT_DUE, Due, Found, Owed, Record
from stapled.core.policy import State
from stapled.service.book import Book, Schedule


def _found(name: str) -> Found:
    return Found(name, f"/certs/{name}.pem")


def _record(name: str, state: State = State.GOOD, **kw: object) -> Record:
    return Record(name, f"/certs/{name}.pem", state, **kw)  # type: ignore[arg-type]


def _book() -> Book:
    book = Book()
    groups = {"fp-a": [_found("a"), _found("a2")], "fp-b": [_found("b")]}
    book.start(
        [_record("a"), _record("a2"), _record("b"), _record("x", State.NO_OCSP)], groups, Owed(), {}
    )
    return book


def test_records_of_a_certificate_follow_its_names() -> None:
    book = _book()
    assert [r.name for r in book.records_of("fp-a")] == ["a", "a2"]
    assert book.records_of("fp-gone") == []


def test_a_refresh_of_a_removed_certificate_is_not_kept() -> None:
    book = _book()
    assert not book.take("fp-gone", [_record("z")])
    assert "z" not in book.records


def test_a_refresh_owes_its_haproxy_pushes() -> None:
    book = _book()
    assert book.take("fp-b", [_record("b", haproxy_changed=True)])
    assert book.owed == Owed(push=frozenset({"b"}))


def test_a_rescan_says_what_went_and_what_arrived() -> None:
    book = _book()
    book.attempts["fp-b"] = 3
    found = book.rescan(
        [_record("x", State.NO_OCSP), _record("y", State.EXPIRED)],
        {"fp-a": [_found("a"), _found("a2")], "fp-c": [_found("c")]},
    )
    assert found.gone == {"fp-b"} and found.arrived == ("fp-c",)
    assert found.dropped == ("b",)
    assert [r.name for r in found.changed] == ["y"]  # x is as it was
    assert "fp-b" not in book.attempts and set(book.groups) == {"fp-a", "fp-c"}
    # A renewal: the same name under a new fingerprint arrives.
    again = book.rescan([], {"fp-a2": [_found("a"), _found("a2")], "fp-c": [_found("c")]})
    assert again.gone == {"fp-a"} and again.arrived == ("fp-a2",)


def test_a_certificate_is_due_under_each_of_its_names_until_a_name_goes() -> None:
    book = _book()
    due = Due(datetime(2026, 12, 1, tzinfo=UTC))
    book.plan("fp-a", due)
    book.plan("fp-b", due)
    assert book.due == {"a": due, "a2": due, "b": due}
    book.rescan([], {"fp-a": [_found("a"), _found("a2")]})
    assert book.due == {"a": due, "a2": due}


@given(
    owed=st.booleans(),
    pushes=st.frozensets(st.sampled_from(["a", "b", "gone"])),
    left_reload=st.booleans(),
    left=st.frozensets(st.sampled_from(["a", "b", "gone"])),
)
def test_what_a_delivery_leaves_stays_owed_for_names_still_known(
    owed: bool, pushes: frozenset[str], left_reload: bool, left: frozenset[str]
) -> None:
    book = _book()
    book.owe(Owed(owed, pushes))
    assert book.take_owed() == Owed(owed, pushes)
    assert book.owed == Owed()
    book.owe(Owed(push=frozenset({"a"})))  # a change while the delivery ran
    book.still_owed(Owed(left_reload, left))
    assert book.owed == Owed(left_reload, (left - {"gone"}) | {"a"})


_times = st.none() | st.datetimes(timezones=st.just(UTC))
_steps = st.lists(
    st.tuples(st.sampled_from("abcd"), st.none() | st.builds(Due, _times, _times)), max_size=30
)


@given(_steps)
def test_the_schedule_holds_what_a_dict_of_due_times_would(
    steps: list[tuple[str, Due | None]],
) -> None:
    schedule, reference = Schedule(), dict[str, Due]()
    for name, due in steps:
        if due is None:  # a name dropped
            assert schedule.pop(name, None) == reference.pop(name, None)
        else:
            schedule[name] = reference[name] = due
        assert schedule == reference and list(schedule) == list(reference)
        assert schedule.get(name, NOT_DUE) == reference.get(name, NOT_DUE)
