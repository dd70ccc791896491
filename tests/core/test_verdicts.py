"""A served staple judged: every Nagios code from values, with real signatures."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.x509 import ocsp as x509_ocsp

from stapled.core import certs, ocsp
from stapled.core.verdicts import Judged, Known, Served, Verdict, judge, worst
from stapled.demo import ca as testca

NOW = datetime.now(UTC)
CA = testca.CA()
LEAF = CA.issue("p.example", ocsp_urls=["http://127.0.0.1:9/"])
OTHER = CA.issue("q.example", ocsp_urls=["http://127.0.0.1:9/"])
CHAIN = certs.build_chain([LEAF.cert, CA.cert], "p.example")
MUST = certs.build_chain(
    [CA.issue("m.example", ocsp_urls=["http://127.0.0.1:9/"], must_staple=True).cert, CA.cert],
    "m.example",
)


def signed(age: timedelta = timedelta(minutes=1), **kw: object) -> bytes:
    return CA.sign_response(LEAF.cert, this_update=NOW - age, **kw)  # type: ignore[arg-type]


DISK = ocsp.validate(signed(), CHAIN, NOW)
OLDER = signed(timedelta(hours=5))


@pytest.mark.parametrize(
    ("served", "disk", "verdict", "words"),
    [
        (Served(CHAIN, DISK.der), DISK, Verdict.OK, "identical to stapled's"),
        (Served(CHAIN, signed(timedelta(seconds=5))), DISK, Verdict.WARNING, "not the one"),
        (Served(CHAIN, DISK.der), None, Verdict.WARNING, "holds no staple"),
        (Served(CHAIN, OLDER), DISK, Verdict.WARNING, "older than stapled's"),
        (Served(CHAIN, None), DISK, Verdict.WARNING, "while stapled holds a valid one"),
        (Served(CHAIN, None), None, Verdict.OK, "stapled holds none"),
        (Served(MUST, None), None, Verdict.CRITICAL, "must-staple"),
        (Served(CHAIN, signed(timedelta(days=10))), DISK, Verdict.CRITICAL, "not valid"),
        (Served(CHAIN, CA.sign_response(OTHER.cert)), DISK, Verdict.CRITICAL, "not valid"),
        (Served(CHAIN, b"\x30\x00"), DISK, Verdict.CRITICAL, "not valid"),
        (
            Served(CHAIN, signed(status=x509_ocsp.OCSPCertStatus.REVOKED)),
            DISK,
            Verdict.CRITICAL,
            "REVOKED",
        ),
        (
            Served(CHAIN, signed(status=x509_ocsp.OCSPCertStatus.UNKNOWN)),
            None,
            Verdict.CRITICAL,
            "unknown",
        ),
        (Served(None, None), None, Verdict.UNKNOWN, "no certificate"),
        (Served(replace(CHAIN, issuer=None), DISK.der), DISK, Verdict.UNKNOWN, "issuer"),
    ],
    ids=[
        "identical",
        "newer-than-disk",
        "good-while-none-held",
        "older-not-reloaded",
        "none-while-held",
        "none-none-held",
        "none-must-staple",
        "expired",
        "another-certificate",
        "garbage",
        "revoked",
        "unknown",
        "no-certificate",
        "no-issuer",
    ],
)
def test_judge(served: Served, disk: ocsp.Staple | None, verdict: Verdict, words: str) -> None:
    judged = judge(served, disk, NOW)
    assert judged.verdict is verdict and words in judged.why, judged
    assert judged.stale == (words == "older than stapled's")
    assert judged.matches_disk == (words == "identical to stapled's")


def test_the_worst_handshake_counts_and_unknown_only_when_none_got_through() -> None:
    ok, warn = Judged(Verdict.OK, "ok"), Judged(Verdict.WARNING, "w")
    unknown, critical = Judged(Verdict.UNKNOWN, "u"), Judged(Verdict.CRITICAL, "c")
    assert worst([ok, warn, ok]) is warn
    assert worst([ok, critical, warn]) is critical
    assert worst([ok, unknown]) is ok  # one worker refused a connection: the others count
    assert worst([unknown, unknown]).verdict is Verdict.UNKNOWN


@pytest.mark.parametrize(
    ("known", "served", "verdict", "words"),
    [
        (Known.UNMANAGED, Served(CHAIN, DISK.der), Verdict.WARNING, "does not manage"),
        (Known.UNMANAGED, Served(CHAIN, None), Verdict.WARNING, "does not manage"),
        (Known.NOTHING, Served(CHAIN, DISK.der), Verdict.OK, "no configuration"),
        (Known.NOTHING, Served(CHAIN, None), Verdict.OK, "stapled holds none"),
        (Known.NOTHING, Served(CHAIN, OLDER), Verdict.OK, "no configuration"),
    ],
    ids=["unmanaged", "unmanaged-no-staple", "nothing-known", "nothing-no-staple", "nothing-old"],
)
def test_judge_what_stapled_does_not_know(
    known: Known, served: Served, verdict: Verdict, words: str
) -> None:
    judged = judge(served, None, NOW, known)
    assert judged.verdict is verdict and words in judged.why, judged
    assert not judged.matches_disk and not judged.stale


SERVED = [
    None,
    DISK.der,
    OLDER,
    signed(timedelta(seconds=5)),
    signed(timedelta(days=10)),
    CA.sign_response(OTHER.cert),
    signed(status=x509_ocsp.OCSPCertStatus.REVOKED),
    b"\x30\x00",
]


@pytest.mark.parametrize("known", [Known.MANAGED, Known.UNMANAGED])
@pytest.mark.parametrize("disk", [DISK, None], ids=["held", "none-held"])
@pytest.mark.parametrize("served", range(len(SERVED)))
@pytest.mark.parametrize("chain", [CHAIN, MUST], ids=["plain", "must-staple"])
def test_ok_agrees_with_the_metrics(
    known: Known, disk: ocsp.Staple | None, served: int, chain: certs.CertChain
) -> None:
    """Where stapled has a configuration (the daemon's metrics always do), OK means what
    the alert rules read: the staple served is stapled's, or none is served and stapled
    holds none to serve."""
    judged = judge(
        Served(chain, SERVED[served]), disk if known is Known.MANAGED else None, NOW, known
    )
    nothing_either_side = SERVED[served] is None and (disk is None or known is Known.UNMANAGED)
    if judged.verdict is Verdict.OK:
        assert judged.matches_disk or (nothing_either_side and known is Known.MANAGED), judged
    if judged.matches_disk and judged.valid:
        assert judged.verdict in (Verdict.OK, Verdict.CRITICAL), judged
