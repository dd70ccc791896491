"""`stapled once` end to end: real certificates, a real HTTP responder on loopback."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp

from stapled.cli import main
from stapled.core import certs, ocsp
from stapled.demo import ca as testca

from .conftest import Site


def _validate(site: Site, name: str, issued: testca.Issued) -> ocsp.Staple:
    der = site.staple(name)
    assert der is not None, f"no staple for {name}"
    chain = certs.build_chain([issued.cert, site.ca.cert], name)
    return ocsp.validate(der, chain, datetime.now(UTC))


def test_fresh_staple_written_then_kept(site: Site) -> None:
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    assert site.once() == 0
    assert _validate(site, "a.example", leaf).cert_status == "good"
    assert site.responder.requests == 1
    before = (site.out / "a.example.der").stat()
    assert site.once() == 0
    # Still fresh: no request, and the file was not even rewritten.
    assert site.responder.requests == 1
    assert (site.out / "a.example.der").stat().st_mtime_ns == before.st_mtime_ns


def test_staple_past_refresh_point_is_replaced(site: Site) -> None:
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    site.out.mkdir()
    old = site.ca.sign_response(leaf.cert, this_update=datetime.now(UTC) - timedelta(days=3))
    (site.out / "a.example.der").write_bytes(old)
    assert site.once() == 0
    assert site.responder.requests == 1
    assert site.staple("a.example") != old
    staple = _validate(site, "a.example", leaf)
    assert staple.this_update > datetime.now(UTC) - timedelta(hours=1)


def test_force_refreshes_a_fresh_staple(site: Site) -> None:
    site.bundle("a.example", site.issue("a.example"))
    assert site.once() == 0
    assert site.once("--force") == 0
    assert site.responder.requests == 2


def test_revoked_is_written_and_exits_2(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    leaf = site.issue("r.example")
    site.ca.revoke(leaf.cert)
    site.bundle("r.example", leaf)
    assert site.once() == 2
    assert _validate(site, "r.example", leaf).cert_status == "revoked"
    assert "CRITICAL r.example: certificate serial" in capsys.readouterr().err


def test_revoked_replaces_a_good_staple(site: Site) -> None:
    leaf = site.issue("r.example")
    site.bundle("r.example", leaf)
    assert site.once() == 0
    site.ca.revoke(leaf.cert)
    assert site.once("--force") == 2
    assert _validate(site, "r.example", leaf).cert_status == "revoked"


def test_responder_down_keeps_staple_byte_identical(site: Site) -> None:
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    assert site.once() == 0
    before = site.staple("a.example")
    site.responder.stop()
    assert site.once("--force") == 1
    assert site.staple("a.example") == before
    status = _status_json(site)
    assert status["a.example"]["status"] == "good"
    assert "connection refused" in status["a.example"]["last_error"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda der: (200, {}, b"not ocsp at all"), "not a DER OCSP response"),
        (lambda der: (500, {}, b"oops"), "HTTP 500"),
        (
            lambda der: (200, {}, testca.unsuccessful(x509_ocsp.OCSPResponseStatus.TRY_LATER)),
            "tryLater",
        ),
    ],
    ids=["garbage", "http-500", "try-later"],
)
def test_bad_answers_keep_the_staple(site: Site, answer, message: str) -> None:  # type: ignore[no-untyped-def]
    site.bundle("a.example", site.issue("a.example"))
    assert site.once() == 0
    before = site.staple("a.example")
    site.responder.answer = answer
    assert site.once("--force") == 1
    assert site.staple("a.example") == before
    assert message in _status_json(site)["a.example"]["last_error"]


def test_older_response_is_refused(site: Site) -> None:
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    assert site.once() == 0
    before = site.staple("a.example")
    stale = site.ca.sign_response(leaf.cert, this_update=datetime.now(UTC) - timedelta(hours=5))
    site.responder.answer = lambda der: (200, {}, stale)
    assert site.once("--force") == 1
    assert site.staple("a.example") == before
    assert "older than the staple on disk" in _status_json(site)["a.example"]["last_error"]


def test_an_older_revoked_answer_replaces_a_good_staple(site: Site) -> None:
    """Revocation is final: replay protection must not keep a good staple serving."""
    leaf = site.issue("r.example")
    site.bundle("r.example", leaf)
    assert site.once() == 0
    site.ca.revoke(leaf.cert, datetime.now(UTC) - timedelta(hours=6))
    old = site.ca.sign_response(leaf.cert, this_update=datetime.now(UTC) - timedelta(hours=5))
    site.responder.answer = lambda der: (200, {}, old)
    assert site.once("--force") == 2
    assert site.staple("r.example") == old
    assert _status_json(site)["r.example"]["status"] == "revoked"
    # And a good answer after that, however new, is refused.
    site.ca.revoked.clear()
    site.responder.answer = lambda der: (200, {}, site.ca.sign_response(leaf.cert))
    assert site.once("--force") == 2
    assert site.staple("r.example") == old
    assert "revocation is final" in _status_json(site)["r.example"]["last_error"]


def test_a_responder_refusing_get_is_asked_with_post(site: Site) -> None:
    leaf = site.issue("post.example")
    site.bundle("post.example", leaf)
    site.responder.refuse_get = True
    assert site.once() == 0
    assert site.staple("post.example") is not None
    assert [p.split()[0] for p in site.responder.paths] == ["GET", "POST"]


def test_responses_valid_for_minutes_are_stapled(site: Site) -> None:
    """A private CA's five-minute responses: the margin is a tenth of the window."""
    site.responder.validity = timedelta(minutes=5)
    leaf = site.issue("short.example")
    site.bundle("short.example", leaf)
    assert site.once() == 0
    assert site.staple("short.example") is not None
    entry = _status_json(site)["short.example"]
    assert entry["status"] == "good" and entry["last_error"] is None


def test_unknown_without_staple_exits_2(site: Site) -> None:
    leaf = site.issue("u.example")
    site.ca.unknown.add(leaf.cert.serial_number)
    site.bundle("u.example", leaf)
    assert site.once() == 2
    assert site.staple("u.example") is None
    assert _status_json(site)["u.example"]["status"] == "missing"


def test_certbot_lineage(site: Site) -> None:
    leaf = site.issue("le.example")
    site.lineage("le.example", leaf)
    assert site.once() == 0
    assert _validate(site, "le.example", leaf).cert_status == "good"
    # archive/ holds old certificates too: only the live one is stapled.
    assert sorted(p.name for p in site.out.glob("*.der")) == ["le.example.der"]


def test_renewed_lineage_gets_a_staple_for_the_new_serial(site: Site) -> None:
    first = site.issue("le.example")
    site.lineage("le.example", first)
    assert site.once() == 0
    renewed = site.issue("le.example")
    site.lineage("le.example", renewed, version=2)
    assert site.once() == 0
    assert _validate(site, "le.example", renewed).serial == renewed.cert.serial_number


def test_bundle_with_private_key_never_copies_it(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    leaf = site.issue("hap.example")
    site.bundle("hap.example", leaf, leaf.key_pem())
    assert site.once("--verbose") == 0
    assert _validate(site, "hap.example", leaf).cert_status == "good"
    key_body = leaf.key_pem().split(b"\n")[1]
    for path in site.out.rglob("*"):
        if path.is_file():
            assert key_body not in path.read_bytes(), path
    assert key_body.decode() not in "".join(capsys.readouterr())


def test_key_files_are_never_opened(site: Site) -> None:
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    # Anything named like a key is skipped by name: if it were parsed it would be an error.
    testca.write(site.certs / "privkey.pem", b"-----BEGIN CERTIFICATE-----\nbroken\n")
    testca.write(site.certs / "site.key", b"junk")
    assert site.once() == 0
    assert set(_status_json(site)) == {"a.example"}


def test_certificate_without_ocsp_url_is_quiet_and_ok(site: Site) -> None:
    site.bundle("plain.example", site.issue("plain.example", ocsp_urls=[]))
    assert site.once("--quiet") == 0
    assert site.responder.requests == 0
    assert _status_json(site)["plain.example"]["status"] == "no-ocsp"
    assert site.staple("plain.example") is None


def test_duplicate_certificate_is_fetched_once(site: Site) -> None:
    leaf = site.issue("dup.example")
    site.bundle("one", leaf)
    site.bundle("two", leaf)
    assert site.once() == 0
    assert site.responder.requests == 1
    assert site.staple("one") == site.staple("two") is not None


def test_same_name_in_two_directories_gets_distinct_names(site: Site) -> None:
    a, b = site.issue("a.example"), site.issue("b.example")
    testca.write(site.certs / "x" / "site.pem", a.cert_pem(), site.ca.cert_pem())
    testca.write(site.certs / "y" / "site.pem", b.cert_pem(), site.ca.cert_pem())
    assert site.once() == 0
    names = sorted(_status_json(site))
    assert len(names) == 2 and all(n.startswith("site-") for n in names)
    assert names == sorted(_status_json(site))  # deterministic
    assert all(site.staple(n) for n in names)


def test_every_ocsp_url_is_tried_in_order(site: Site) -> None:
    dead = "http://127.0.0.1:9/"  # discard port: nothing listens
    leaf = site.issue("a.example", ocsp_urls=[dead, site.responder.url])
    site.bundle("a.example", leaf)
    assert site.once() == 0
    assert _validate(site, "a.example", leaf).cert_status == "good"


def test_ocsp_url_override_and_issuer_file(site: Site) -> None:
    leaf = site.issue("private.example", ocsp_urls=["http://127.0.0.1:9/"])
    site.bundle("private.example", leaf, chain=False)
    issuer = testca.write(site.root / "ca.pem", site.ca.cert_pem())
    site.config(
        certificates=(
            f'[{{ path = "{site.certs}", issuer = "{issuer}", ocsp_url = "{site.responder.url}" }}]'
        )
    )
    assert site.once() == 0
    assert _validate(site, "private.example", leaf).cert_status == "good"


def test_issuer_from_aia_ca_issuers_is_fetched_once(site: Site) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    site.responder.files["/ca.der"] = site.ca.cert.public_bytes(Encoding.DER)
    aia = site.responder.url + "ca.der"
    one = site.issue("one.example", ca_issuers_urls=[aia])
    two = site.issue("two.example", ca_issuers_urls=[aia])
    site.bundle("one", one, chain=False)
    site.bundle("two", two, chain=False)
    assert site.once() == 0
    assert _validate(site, "one", one).cert_status == "good"
    assert _validate(site, "two", two).cert_status == "good"
    # status works offline from the cached issuer.
    site.responder.stop()
    assert {v["status"] for v in _status_json(site).values()} == {"good"}


def test_fetched_issuer_must_have_signed_the_certificate(site: Site) -> None:
    """caIssuers comes over plain HTTP: copied name and key identifier are not enough."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    real = site.ca.cert
    key = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            real.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value, False
        )
        .sign(key, hashes.SHA256())
    )
    site.responder.files["/ca.der"] = forged.public_bytes(Encoding.DER)
    leaf = site.issue("aia.example", ca_issuers_urls=[site.responder.url + "ca.der"])
    site.bundle("aia", leaf, chain=False)
    assert site.once() == 2
    assert site.staple("aia") is None
    assert "did not sign this one" in str(_status_json(site)["aia"]["last_error"])


def test_requests_to_one_responder_host_are_bounded(site: Site) -> None:
    """``per_host`` is politeness: never more requests in flight to one host."""
    lock = threading.Lock()
    inflight: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}

    def slow(host: str, honest: testca.Answer) -> testca.Answer:
        def answer(request: bytes) -> tuple[int, dict[str, str], bytes]:
            with lock:
                inflight[host] += 1
                peak[host] = max(peak[host], inflight[host])
            try:
                time.sleep(0.2)
                return honest(request)
            finally:
                with lock:
                    inflight[host] -= 1

        return answer

    with testca.ResponderServer(site.ca) as other:
        site.responder.answer = slow("a", site.responder.answer)
        other.answer = slow("b", other.answer)
        for host, responder in (("a", site.responder), ("b", other)):
            for i in range(6):
                name = f"{host}{i}.example"
                site.bundle(name, site.issue(name, ocsp_urls=[responder.url]))
        site.config(extra="concurrency = 16\nper_host = 3")
        assert site.once() == 0
        assert site.responder.requests == other.requests == 6
    assert peak == {"a": 3, "b": 3}


def test_a_pass_keeps_its_connections_to_a_responder_alive(site: Site) -> None:
    for i in range(24):
        site.bundle(f"k{i}.example", site.issue(f"k{i}.example"))
    site.config(extra="concurrency = 8\nper_host = 2")
    assert site.once() == 0
    assert site.responder.requests == 24
    # One connection per fetch in flight, each used again for the next certificate.
    assert 1 <= site.responder.connections <= 2


def test_expired_certificate_is_not_fetched(site: Site) -> None:
    now = datetime.now(UTC)
    leaf = site.issue(
        "old.example", not_before=now - timedelta(days=100), not_after=now - timedelta(days=1)
    )
    site.bundle("old.example", leaf)
    assert site.once() == 2
    assert site.responder.requests == 0
    assert _status_json(site)["old.example"]["status"] == "expired"


def test_must_staple_is_flagged(site: Site) -> None:
    site.bundle("ms.example", site.issue("ms.example", must_staple=True))
    assert site.once() == 0
    assert _status_json(site)["ms.example"]["must_staple"] is True


def test_broken_file_does_not_stop_the_others(site: Site) -> None:
    site.bundle("a.example", site.issue("a.example"))
    testca.write(
        site.certs / "broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    assert site.once() == 2
    status = _status_json(site)
    assert status["a.example"]["status"] == "good"
    assert status["broken"]["status"] == "error"
    assert "broken.pem" in status["broken"]["path"]


def test_reload_runs_once_when_something_changed(site: Site) -> None:
    counter = site.root / "reloads"
    script = f"import pathlib; p = pathlib.Path({str(counter)!r}); p.write_text(p.read_text() + 'x' if p.exists() else 'x')"
    site.config(extra=f"reload_command = {json.dumps([sys.executable, '-c', script])}")
    site.bundle("a.example", site.issue("a.example"))
    site.bundle("b.example", site.issue("b.example"))
    assert site.once() == 0
    assert counter.read_text() == "x"  # two staples changed, one reload
    assert site.once() == 0
    assert counter.read_text() == "x"  # nothing changed, no reload


def test_failing_reload_exits_1_and_keeps_staples(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit('config test failed')"]
    site.config(extra=f"reload_command = {json.dumps(failing)}")
    site.bundle("a.example", site.issue("a.example"))
    assert site.once() == 1
    assert site.staple("a.example") is not None
    assert "config test failed" in capsys.readouterr().err


def test_status_makes_no_request_and_exit_codes(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.config()
    assert main(["status", "--config", str(site.config_path)]) == 2  # missing
    assert site.responder.requests == 0
    assert site.once() == 0
    capsys.readouterr()
    assert main(["status", "--config", str(site.config_path)]) == 0
    table = capsys.readouterr().out
    assert "a.example" in table and "good" in table
    assert site.responder.requests == 1


def test_status_json_shape(site: Site) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.once()
    entry = _status_json(site)["a.example"]
    assert set(entry) >= {
        "name",
        "path",
        "serial",
        "ocsp_url",
        "staple",
        "status",
        "this_update",
        "next_update",
        "next_refresh",
        "last_error",
    }
    for key in ("this_update", "next_update", "next_refresh"):
        assert datetime.strptime(entry[key], "%Y-%m-%dT%H:%M:%SZ")


def test_status_warns_in_the_last_quarter(site: Site) -> None:
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    site.out.mkdir()
    aging = site.ca.sign_response(
        leaf.cert, this_update=datetime.now(UTC) - timedelta(days=3, hours=12)
    )
    (site.out / "a.example.der").write_bytes(aging)
    site.config()
    assert main(["status", "--config", str(site.config_path)]) == 1


def test_interrupted_pass_leftovers_are_removed(site: Site) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.out.mkdir()
    leftover = site.out / ".stapled-tmp-abc123"
    leftover.write_bytes(b"half a staple")
    assert site.once() == 0
    assert not leftover.exists()


def test_written_staples_are_world_readable(site: Site) -> None:
    site.bundle("a.example", site.issue("a.example"))
    assert site.once() == 0
    assert (site.out / "a.example.der").stat().st_mode & 0o777 == 0o644


def _status_json(site: Site) -> dict[str, dict[str, object]]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(["status", "--config", str(site.config_path), "--json"])
    return {c["name"]: c for c in json.loads(buf.getvalue())["certificates"]}


def test_path_helper_is_not_stale(tmp_path: Path) -> None:
    # Guard for the helpers above: a status of an empty directory is an empty list.
    (tmp_path / "certs").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'output_dir = "{tmp_path / "out"}"\ncertificates = ["{tmp_path / "certs"}"]\n')
    assert main(["status", "--config", str(cfg)]) == 3  # nothing found: UNKNOWN


def test_failed_reload_is_retried_by_the_next_pass(site: Site) -> None:
    counter = site.root / "reloads"
    flag = site.root / "fail"
    script = (
        "import pathlib, sys\n"
        f"c = pathlib.Path({str(counter)!r}); c.write_text(c.read_text() + 'x' if c.exists() else 'x')\n"
        f"sys.exit('nginx: [emerg] broken' if pathlib.Path({str(flag)!r}).exists() else 0)\n"
    )
    site.config(extra=f"reload_command = {json.dumps([sys.executable, '-c', script])}")
    site.bundle("a.example", site.issue("a.example"))
    flag.touch()
    assert site.once() == 1
    flag.unlink()
    # Nothing changed, but the server has not picked the staple up yet: reload again.
    assert site.once() == 0
    assert counter.read_text() == "xx"
    assert site.once() == 0
    assert counter.read_text() == "xx"  # owed no longer


def test_quiet_prints_nothing_when_all_is_well(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.bundle("plain.example", site.issue("plain.example", ocsp_urls=[]))
    assert site.once("--quiet") == 0
    assert capsys.readouterr() == ("", "")


def test_unwritable_staple_path_is_reported_and_others_written(site: Site) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.bundle("b.example", site.issue("b.example"))
    (site.out / "a.example.der").mkdir(parents=True)  # something in the way
    assert site.once() == 2
    status = _status_json(site)
    assert status["b.example"]["status"] == "good"
    assert status["a.example"]["status"] == "missing"
    assert "a.example.der" in status["a.example"]["last_error"]
    assert list(site.out.glob(".stapled-tmp-*")) == []


def test_only_refreshes_the_renewed_lineage(site: Site) -> None:
    one, two = site.issue("one.example"), site.issue("two.example")
    site.lineage("one.example", one)
    site.lineage("two.example", two)
    site.config()
    live = site.certs / "letsencrypt" / "live"
    assert site.once("--only", str(live / "one.example")) == 0
    assert site.staple("one.example") is not None
    assert site.staple("two.example") is None
    assert site.responder.requests == 1
    # A later pass over everything keeps what the partial one recorded.
    assert site.once() == 0
    assert site.responder.requests == 2


def test_reload_request_file_is_rewritten_when_staples_change(site: Site) -> None:
    request = site.root / "run" / "reload-request"
    request.parent.mkdir()
    site.config(extra=f'reload_request_file = "{request}"')
    site.bundle("a.example", site.issue("a.example"))
    assert site.once() == 0
    first = request.read_text()
    assert datetime.fromisoformat(first.strip()) <= datetime.now(UTC)
    inode = request.stat().st_ino
    assert site.once() == 0  # nothing changed: no new request
    assert request.stat().st_ino == inode
    assert site.once("--force") == 0
    assert request.stat().st_ino != inode  # replaced by rename: a path unit sees MOVED_TO


@pytest.mark.parametrize(
    "damage",
    ['{"certificates": ["not", "a", "table"]}', '{"certificates": {"a.example": "junk"}}'],
    ids=["list", "entry"],
)
def test_a_damaged_state_file_is_rebuilt_not_fatal(site: Site, damage: str) -> None:
    site.bundle("a.example", site.issue("a.example"))
    assert site.once() == 0
    (site.out / ".stapled" / "state.json").write_text(damage)
    assert _status_json(site)["a.example"]["status"] == "good"
    assert site.once("--only", str(site.certs)) == 0
    assert _status_json(site)["a.example"]["last_error"] is None
