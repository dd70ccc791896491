"""Must-staple certificates (TLS feature status_request): browsers refuse the site without
a valid staple, so stapled is louder and earlier about them, and never drops their staple."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.x509 import ocsp as x509_ocsp

from stapled.cli import main
from stapled.core import policy
from stapled.core.policy import Severity, State

from .conftest import Site

pytestmark = pytest.mark.hostile


@pytest.mark.parametrize(
    ("must_staple", "early", "aging", "failing", "expected"),
    [
        (False, True, False, False, Severity.OK),
        (True, True, False, False, Severity.WARNING),
        (False, True, True, False, Severity.WARNING),
        (True, True, True, False, Severity.CRITICAL),
        (True, False, False, True, Severity.WARNING),
        (False, False, False, False, Severity.OK),
    ],
)
def test_must_staple_warns_sooner_and_goes_critical_in_the_last_quarter(
    must_staple: bool, early: bool, aging: bool, failing: bool, expected: Severity
) -> None:
    got = policy.severity(
        State.GOOD, failing=failing, aging=aging, must_staple=must_staple, early_aging=early
    )
    assert got is expected


@pytest.mark.parametrize(
    ("fraction", "ordinary", "must_staple"),
    [(0.3, 0, 0), (0.65, 0, 1), (0.8, 1, 2)],
    ids=["fresh", "past-sixty-percent", "last-quarter"],
)
def test_status_exit_codes_by_age(
    site: Site, fraction: float, ordinary: int, must_staple: int
) -> None:
    validity = timedelta(days=4)
    this_update = datetime.now(UTC) - validity * fraction
    for name, flag in (("plain.example", False), ("strict.example", True)):
        leaf = site.issue(name, must_staple=flag)
        site.bundle(name, leaf)
        site.out.mkdir(exist_ok=True)
        der = site.ca.sign_response(leaf.cert, this_update=this_update, validity=validity)
        (site.out / f"{name}.der").write_bytes(der)
    for name, expected in (("plain.example", ordinary), ("strict.example", must_staple)):
        site.config(certificates=f'["{site.certs / name}.pem"]')
        assert main(["status", "--config", str(site.config_path)]) == expected, name


def test_a_failing_refresh_is_an_error_for_must_staple_and_the_staple_is_kept(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("strict.example", site.issue("strict.example", must_staple=True))
    assert site.once() == 0
    before = site.staple("strict.example")
    site.responder.answer = lambda der: (500, {}, b"")
    capsys.readouterr()
    assert site.once("--force") == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR strict.example: refresh failed") and "must-staple" in err
    assert site.staple("strict.example") == before


def test_an_unknown_answer_never_drops_a_must_staple_staple(site: Site) -> None:
    leaf = site.issue("strict.example", must_staple=True)
    site.bundle("strict.example", leaf)
    assert site.once() == 0
    before = site.staple("strict.example")
    site.responder.answer = lambda der: (
        200,
        {},
        site.ca.sign_response(leaf.cert, status=x509_ocsp.OCSPCertStatus.UNKNOWN),
    )
    assert site.once("--force") == 1
    assert site.staple("strict.example") == before


def test_no_staple_for_must_staple_is_critical(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("strict.example", site.issue("strict.example", must_staple=True))
    site.responder.answer = lambda der: (503, {}, b"")
    assert site.once() == 2
    err = capsys.readouterr().err
    assert "CRITICAL strict.example: no valid staple for a must-staple certificate" in err
