"""What stapled hands each server besides the staple: nginx snippets, HAProxy files and
pushes, and the configuration test before a reload.  Real certificates and responder."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stapled import config
from stapled.core import certs, ocsp
from stapled.demo import ca as testca
from stapled.net.client import Transport
from stapled.passes import Stapler
from stapled.servers import HAPROXY_UPDATED

from ..conftest import Site
from ..servers import FakeHAProxySocket


def _staple(site: Site, name: str, issued: testca.Issued) -> ocsp.Staple:
    chain = certs.build_chain([issued.cert, site.ca.cert], name)
    return ocsp.validate(site.staple(name) or b"", chain, datetime.now(UTC))


def snippet(site: Site, name: str) -> str:
    return (site.out / f"{name}.nginx.conf").read_text()


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def counter(tmp: Path) -> tuple[str, Path]:
    """A real reload command that counts its runs in a file."""
    marks = tmp / "reloads"
    code = f"open({str(marks)!r}, 'a').write('x')"
    return json.dumps([sys.executable, "-c", code]), marks


def runs(marks: Path) -> int:
    return len(marks.read_text()) if marks.exists() else 0


def test_snippets_turn_stapling_on_only_with_a_valid_staple(site: Site) -> None:
    site.bundle("good.example", site.issue("good.example"))
    site.bundle("plain.example", site.issue("plain.example", ocsp_urls=[]))
    revoked = site.issue("revoked.example")
    site.ca.revoke(revoked.cert)
    site.bundle("revoked.example", revoked)
    (site.certs / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    site.config("nginx_snippets = true")
    site.once()
    good = directives(snippet(site, "good.example"))
    assert good == ["ssl_stapling on;", f'ssl_stapling_file "{site.out}/good.example.der";']
    # A revoked answer is the CA's signed truth and is stapled like a good one.
    assert directives(snippet(site, "revoked.example"))[0] == "ssl_stapling on;"
    for name in ("plain.example", "broken"):
        assert directives(snippet(site, name)) == ["ssl_stapling off;"], name
    assert "names no OCSP responder" in snippet(site, "plain.example")


def test_a_snippet_changes_only_with_the_state_so_a_quiet_pass_reloads_nothing(
    site: Site,
) -> None:
    site.bundle("a.example", site.issue("a.example"))
    command, marks = counter(site.root)
    site.config(f"nginx_snippets = true\nreload_command = {command}")
    assert site.once() == 0
    assert runs(marks) == 1
    before = snippet(site, "a.example")
    assert site.once() == 0
    assert site.once("--force") == 0  # a new staple, the same snippet
    assert snippet(site, "a.example") == before
    assert runs(marks) == 2


def test_a_staple_expiring_in_an_outage_switches_its_snippet_off_and_reloads(
    site: Site,
) -> None:
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    command, marks = counter(site.root)
    cfg_path = site.config(f"nginx_snippets = true\nreload_command = {command}")
    assert site.once() == 0
    staple = _staple(site, "a.example", leaf)
    site.responder.answer = lambda der: (503, {}, b"")
    later = staple.next_update - timedelta(minutes=1)
    cfg = config.load(cfg_path)
    result = Stapler(cfg, transport=Transport(timeout=5), clock=lambda: later).once()
    assert directives(snippet(site, "a.example")) == ["ssl_stapling off;"]
    assert runs(marks) == 2
    assert result.exit_code() == 2  # no valid staple: critical


def test_a_failing_configuration_test_stops_the_reload_and_keeps_it_owed(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a.example", site.issue("a.example"))
    command, marks = counter(site.root)
    verdict = site.root / "verdict"
    verdict.write_text('nginx: [emerg] unknown directive "ssl_stapplin" in /x.conf:3\n')
    test = json.dumps(
        [
            sys.executable,
            "-c",
            f"import sys; t = open({str(verdict)!r}).read(); print(t, file=sys.stderr); "
            "sys.exit(1 if 'emerg' in t else 0)",
        ]
    )
    site.config(f"reload_command = {command}\nconfig_test_command = {test}")
    assert site.once() == 1
    err = capsys.readouterr().err
    assert 'unknown directive "ssl_stapplin"' in err and "configuration test" in err
    assert runs(marks) == 0
    assert site.staple("a.example") is not None  # the staple is kept all the same
    state = json.loads((site.out / ".stapled" / "state.json").read_text())
    assert state["reload_pending"] is True
    verdict.write_text("nginx: configuration file /x.conf test is successful\n")
    assert site.once() == 0  # nothing new, but the owed reload is run now
    assert runs(marks) == 1


@pytest.fixture
def haproxy_socket(tmp_path: Path) -> Iterator[FakeHAProxySocket]:
    fake = FakeHAProxySocket(tmp_path / "admin.sock")
    yield fake
    fake.close()


def haproxy_config(site: Site, socket_path: Path, extra: str = "") -> Path:
    return site.config(
        f'{extra}\n[haproxy]\nadmin_socket = "{socket_path}"',
        certificates=f'[{{ path = "{site.certs}", haproxy = true }}]',
    )


def test_haproxy_files_are_written_beside_the_certificate_and_pushed(
    site: Site, haproxy_socket: FakeHAProxySocket
) -> None:
    pem = site.bundle("h.example", site.issue("h.example"))
    haproxy_config(site, haproxy_socket.path)
    assert site.once() == 0
    ocsp_file = Path(str(pem) + ".ocsp")
    assert ocsp_file.read_bytes() == site.staple("h.example")
    assert haproxy_socket.pushed() == [ocsp_file.read_bytes()]
    assert site.once() == 0  # unchanged: nothing pushed again
    assert len(haproxy_socket.commands) == 1


def test_a_refused_push_is_reported_and_owed(
    site: Site, haproxy_socket: FakeHAProxySocket, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("h.example", site.issue("h.example"))
    haproxy_config(site, haproxy_socket.path)
    haproxy_socket.answer = "OCSP single response: Certificate ID does not match any certificate\n"
    assert site.once() == 1
    assert "Certificate ID does not match" in capsys.readouterr().err
    haproxy_socket.answer = HAPROXY_UPDATED + "\n"
    assert site.once() == 0  # nothing changed, but the push was owed
    assert len(haproxy_socket.pushed()) == 2
    state = json.loads((site.out / ".stapled" / "state.json").read_text())
    assert state["haproxy_pending"] == []


def test_haproxy_not_running_yet_is_a_warning_not_a_failure(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = site.bundle("h.example", site.issue("h.example"))
    haproxy_config(site, site.root / "absent.sock")
    assert site.once() == 0  # HAProxy reads the .ocsp file when it starts
    assert Path(str(pem) + ".ocsp").exists()
    err = capsys.readouterr().err
    assert "WARNING" in err and "absent.sock" in err and "not running" in err


def test_an_admin_socket_that_does_not_answer_is_reported(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("h.example", site.issue("h.example"))
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(site.root / "silent.sock"))
    silent.listen()  # accepts (in the backlog) and never answers
    try:
        haproxy_config(site, site.root / "silent.sock", "reload_timeout = 0.5")
        assert site.once() == 1
    finally:
        silent.close()
    err = capsys.readouterr().err
    assert "silent.sock" in err and "no answer within 0.5 s" in err


def test_a_response_haproxy_would_refuse_is_not_written_for_it(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = site.bundle("h.example", site.issue("h.example"))
    site.config(
        'cert_id_hash = "sha256"', certificates=f'[{{ path = "{site.certs}", haproxy = true }}]'
    )
    assert site.once() == 1
    assert not Path(str(pem) + ".ocsp").exists()
    assert site.staple("h.example") is not None  # nginx and the responder can still use it
    assert "HAProxy matches only SHA-1" in capsys.readouterr().err


def test_haproxy_problem_names_what_haproxy_refuses(site: Site) -> None:
    leaf = site.issue("h.example")
    site.bundle("h.example", leaf)
    site.once()
    staple = _staple(site, "h.example", leaf)
    assert staple.haproxy_problem is None
    assert "3 SingleResponses" in (replace(staple, single_count=3).haproxy_problem or "")


def test_a_certificate_whose_issuer_cannot_be_fetched_still_gets_a_safe_snippet(
    site: Site,
) -> None:
    # No issuer in the file, and its caIssuers URL answers nothing useful.
    leaf = site.issue("aia.example", ca_issuers_urls=["http://127.0.0.1:9/ca.der"])
    site.bundle("aia.example", leaf, chain=False)
    site.config("nginx_snippets = true")
    assert site.once() == 2
    assert directives(snippet(site, "aia.example")) == ["ssl_stapling off;"]
