"""`stapled status` fits 100 columns whatever it shows; --wide hides nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from stapled import report
from stapled.core.model import Due, PassResult, Record
from stapled.core.policy import State
from stapled.core.revocation import CrlView

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
_records = st.builds(
    lambda name, state, error, must, source: Record(
        name or "x",
        f"/etc/letsencrypt/live/{name}/cert.pem",
        state,
        serial_number=int("0A" * 20, 16),
        ocsp_url="http://r3.o.lencr.org/" + "a" * 40,
        output="/var/lib/stapled",
        next_update=NOW + timedelta(days=3),
        last_error=error or None,
        must_staple=must,
        source=source,
    ),
    st.text(
        st.characters(whitelist_categories=("Ll", "Nd"), whitelist_characters=".-"), max_size=120
    ),
    st.sampled_from(list(State)),
    _text,
    st.booleans(),
    st.sampled_from([None, "ca", "fleet", "disk"]),
)
_due = st.builds(
    Due,
    st.just(NOW + timedelta(days=1)),
    st.none() | st.just(NOW + timedelta(minutes=5)),
)


_crl = st.one_of(
    st.none(),
    st.builds(
        CrlView,
        st.just("http://crl.example/" + "s" * 60 + ".crl"),
        st.sampled_from([None, "good", "revoked"]),
        last_error=st.one_of(st.none(), _text),
        reason=st.just("keyCompromise"),
        revoked_at=st.just(NOW),
    ),
)


def _result(
    records: list[Record], due: list[Due], crl: list[CrlView | None] | None = None
) -> PassResult:
    result = PassResult(records, NOW)
    result.due = {r.name: d for r, d in zip(records, due, strict=False)}
    result.crl = {r.name: c for r, c in zip(records, crl or [], strict=False) if c is not None}
    return result


@given(
    st.lists(_records, max_size=8),
    st.lists(_due, max_size=8),
    st.lists(_crl, max_size=8),
    st.booleans(),
)
def test_the_table_fits_100_columns(
    records: list[Record], due: list[Due], crl: list[CrlView | None], fleet: bool
) -> None:
    result = _result(records, due, crl)
    if fleet:
        result.fleet = {
            "redis": "redis://***@10.0.0.5:6379/0",
            "host_id": "web-1",
            "connected": False,
        }
    for line in report.table(result).splitlines():
        assert len(line) <= report.WIDTH, line


@given(st.lists(_records, min_size=1, max_size=4), st.lists(_crl, max_size=4))
def test_wide_shows_every_path_url_and_whole_error(
    records: list[Record], crl: list[CrlView | None]
) -> None:
    result = _result(records, [], crl)
    text = report.table(result, wide=True)
    for r in records:
        assert r.path in text and r.ocsp_url in text and (r.serial or "") in text
        if r.last_error:
            assert r.last_error in text
        view = result.crl.get(r.name)
        if view is not None and view.last_error:
            assert view.last_error.strip() in text


def test_a_certificate_revoked_by_its_crl_says_so_in_both_tables() -> None:
    rec = Record("a.example", "/c/a.pem", State.NO_OCSP, crl_url="http://c.example/1.crl")
    view = CrlView("http://c.example/1.crl", "revoked", reason="keyCompromise", revoked_at=NOW)
    result = _result([rec], [], [view])
    for wide in (False, True):
        (row,) = report.table(result, wide=wide).splitlines()[1:]
        assert "REVOKED" in row and "revoked according to its CRL" in row


def test_the_next_attempt_is_the_retry_when_one_is_due() -> None:
    rec = Record("a.example", "/c/a.pem", State.GOOD)
    result = _result([rec], [Due(NOW + timedelta(days=1), NOW + timedelta(minutes=5))])
    assert "11-30 12:05Z retry" in report.table(result)
    assert "2026-11-30 12:05Z (retry)" in report.table(result, wide=True)
    result.due = {"a.example": Due(NOW + timedelta(days=1))}
    assert "12-01 12:00Z" in report.table(result) and "retry" not in report.table(result)
