"""`stapled probe` against the real nginx, Apache (through the local responder) and
HAProxy of the suite: each exit code where the issue asks for it.

Servers mark: skipped when a server is not installed, failed instead in CI.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from stapled.cli import main
from stapled.demo import ca as testca

from ..conftest import Site
from ..daemonproc import DaemonProcess
from ..servers import free_port
from .test_apache import behind_stapled
from .test_haproxy import haproxy_for
from .test_nginx import NginxSite

pytestmark = pytest.mark.servers


def probe(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = main(["probe", *argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    (only,) = out["probes"]
    return code, only


@pytest.fixture
def web(site: Site) -> Iterator[NginxSite]:
    web = NginxSite(site)
    yield web
    web.nginx.stop()


def test_nginx_ok_then_not_reloaded_then_expired_then_another_certificate(
    web: NginxSite, capsys: pytest.CaptureFixture[str]
) -> None:
    site = web.site
    site.responder.answer_aged(timedelta(hours=2))  # so that the next answer is newer
    assert site.once() == 0
    web.nginx.start(web.port)
    target = f"127.0.0.1:{web.port}"
    cfg = ("--config", str(site.config_path))
    with_config = (target, "--servername", "www.example.com", *cfg)

    # 0: a pass, and nginx serves exactly what stapled wrote.
    code, seen = probe(capsys, *with_config)
    assert code == 0, seen
    assert seen["staple_matches_disk"] is True and seen["status"] == "OK"

    # 1: stapled wrote a newer staple and nginx was not reloaded.
    site.responder.answer_fresh()
    assert site.once("--force") == 0
    code, seen = probe(capsys, *with_config)
    assert code == 1, seen
    assert "older than stapled's" in str(seen["reason"])

    # 2: nginx staples an expired response (its stapling file, never checked by nginx).
    expired = site.ca.sign_response(
        web.leaf.cert, this_update=datetime.now(UTC) - timedelta(days=10)
    )
    (site.out / "www.example.com.der").write_bytes(expired)
    subprocess.run(web.nginx.command("-s", "reload"), check=True)
    code, seen = _until(capsys, with_config, want=2)
    assert code == 2, seen
    assert seen["staple_present"] is True and seen["staple_valid"] is False

    # 2: another certificate's staple.
    other = site.issue("other.example")
    (site.out / "www.example.com.der").write_bytes(site.ca.sign_response(other.cert))
    subprocess.run(web.nginx.command("-s", "reload"), check=True)
    code, seen = _until(capsys, with_config, want=2)
    assert code == 2 and "not valid" in str(seen["reason"]), seen

    # Without a configuration: the served staple is still judged (nothing to compare).
    # Workers of the configuration before the last reload may still answer a moment.
    code, seen = _until(capsys, (target, "--servername", "www.example.com"), want=2)
    assert code == 2 and seen["staple_matches_disk"] is False


def test_a_renewal_the_server_has_not_loaded_is_a_warning_with_or_without_config(
    web: NginxSite, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """certbot renewed the certificate and stapled fetched its staple, but nginx still
    serves the old certificate with the old staple: the metrics say matches_disk 0, and so
    must the verdict."""
    site = web.site
    assert site.once() == 0
    web.nginx.start(web.port)
    target = (f"127.0.0.1:{web.port}", "--servername", "www.example.com")
    code, seen = probe(capsys, *target, "--config", str(site.config_path))
    assert code == 0, seen
    site.lineage("www.example.com", site.issue("www.example.com"), version=2)
    assert site.once() == 0
    code, seen = probe(capsys, *target, "--config", str(site.config_path))
    assert code == 1 and seen["staple_matches_disk"] is False, seen
    assert "does not manage" in str(seen["reason"]) and "not reloaded" in str(seen["reason"])
    # A certificate without an OCSP URL is one stapled manages: nothing to staple is OK.
    code, seen = probe(
        capsys,
        f"127.0.0.1:{web.port}",
        "--servername",
        "plain.example.com",
        "--config",
        str(site.config_path),
    )
    assert code == 0 and seen["staple_present"] is False, seen
    # Without --config, the configuration every other command reads.
    monkeypatch.setenv("STAPLED_CONFIG", str(site.config_path))
    code, seen = probe(capsys, *target)
    assert code == 1 and "does not manage" in str(seen["reason"]), seen


def _until(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], want: int
) -> tuple[int, dict[str, object]]:
    """nginx reloads gracefully: old workers, and new ones still loading, may answer the
    first handshakes."""
    import time

    deadline = time.monotonic() + 10
    while True:
        code, seen = probe(capsys, *argv)
        if code == want or time.monotonic() > deadline:
            return code, seen


def test_a_closed_port_is_unknown(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    code, seen = probe(capsys, f"127.0.0.1:{free_port()}", "--servername", "x.example")
    assert code == 3 and seen["status"] == "UNKNOWN" and "cannot connect" in str(seen["reason"])


def test_a_config_probes_each_target_one_line_each(
    web: NginxSite, capsys: pytest.CaptureFixture[str]
) -> None:
    site = web.site
    assert site.once() == 0
    web.nginx.start(web.port)
    closed = free_port()
    site.config_path.write_text(
        site.config_path.read_text()
        + f'\n[[probe]]\ntarget = "127.0.0.1:{web.port}"\nservername = "www.example.com"\n'
        + f'\n[[probe]]\ntarget = "127.0.0.1:{closed}"\nservername = "www.example.com"\n'
    )
    capsys.readouterr()
    assert main(["probe", "--config", str(site.config_path)]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"OK - 127.0.0.1:{web.port} (www.example.com): good staple")
    assert lines[1].startswith(f"UNKNOWN - 127.0.0.1:{closed}")


def test_apache_through_the_local_responder(
    site: Site, daemon: Callable[..., DaemonProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    site.lineage("www.example.com", site.issue("www.example.com"))
    apache, stapled, port = behind_stapled(site, daemon)
    try:
        apache.start(port)
        code, seen = probe(
            capsys,
            f"127.0.0.1:{port}",
            "--servername",
            "www.example.com",
            "--config",
            str(site.config_path),
        )
        assert code == 0, seen
        assert seen["staple_matches_disk"] is True
    finally:
        apache.stop()
        assert stapled.stop() == 0


def test_haproxy_from_its_ocsp_file(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    certs = site.root / "haproxy-certs"
    leaf = site.issue("www.example.com")
    testca.write(certs / "www.example.com.pem", leaf.cert_pem(), site.ca.cert_pem(), leaf.key_pem())
    site.config(certificates=f'[{{ path = "{certs}", haproxy = true }}]')
    assert site.once() == 0
    port = free_port()
    haproxy = haproxy_for(site, certs, port)
    try:
        haproxy.start(port)
        argv = (f"127.0.0.1:{port}", "--servername", "www.example.com")
        code, seen = probe(capsys, *argv, "--config", str(site.config_path))
        assert code == 0 and seen["staple_matches_disk"] is True, seen
    finally:
        haproxy.stop()
