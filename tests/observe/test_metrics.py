"""Metrics as a scraper and node_exporter read them: from a running daemon and from the
textfile, agreeing with `status --json` and with the staples' own times; checked by the
real promtool, and the alert rules tested with `promtool test rules`."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stapled.cli import main
from stapled.core import certs, ocsp

from ..conftest import Site, require_binary
from ..daemonproc import DaemonProcess, wait_for
from ..servers import free_port
from ..webservers.test_nginx import NginxSite

HERE = Path(__file__).parent
EXAMPLES = HERE.parent.parent / "examples"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # node_exporter refuses a whole textfile whose samples carry timestamps.
            assert s.timestamp is None, s
            found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def _status(site: Site, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    capsys.readouterr()
    main(["status", "--config", str(site.config_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    return {c["name"]: c for c in out["certificates"]}


def _agree(site: Site, found: Samples, status: dict[str, dict[str, object]]) -> None:
    """Every certificate's series say what status says and what its staple says."""
    for name, entry in status.items():
        if entry["ocsp_url"] is None:
            assert value(found, "stapled_staple_valid", cert=name) is None
            continue
        assert value(found, "stapled_staple_valid", cert=name) == 1.0
        assert value(found, "stapled_staple_cert_status", cert=name, status="good") == 1.0
        assert value(found, "stapled_staple_cert_status", cert=name, status="revoked") == 0.0
        der = site.staple(name)
        assert der is not None
        chain = certs.build_chain(
            certs.parse_certificates((site.certs / f"{name}.pem").read_bytes(), name), name
        )
        staple = ocsp.validate(der, chain, datetime.now(UTC))
        assert (
            value(found, "stapled_staple_this_update_timestamp_seconds", cert=name)
            == staple.this_update.timestamp()
        )
        assert (
            value(found, "stapled_staple_next_update_timestamp_seconds", cert=name)
            == staple.next_update.timestamp()
        )
        assert entry["this_update"] == staple.this_update.strftime("%Y-%m-%dT%H:%M:%SZ")


def _world(site: Site, extra: str) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.bundle("b.example", site.issue("b.example"))
    site.bundle("plain.example", site.issue("plain.example", ocsp_urls=[]))
    site.config(extra)


def test_the_textfile_of_a_pass_agrees_with_status(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    textfile = site.root / "node" / "stapled.prom"
    textfile.parent.mkdir()
    _world(site, f'[metrics]\ntextfile = "{textfile}"')
    assert site.once() == 0
    text = textfile.read_text()
    found = samples(text)
    _agree(site, found, _status(site, capsys))
    assert value(found, "stapled_ocsp_fetch_total", cert="a.example", result="success") == 1.0
    assert value(found, "stapled_staple_updates_total", cert="a.example", source="ca") == 1.0
    info = value(found, "stapled_build_info", version=__import__("stapled").__version__)
    assert info == 1.0
    # The serial is on the info series only.
    assert any(k[0] == "stapled_certificate_info" and ("cert", "a.example") in k[1] for k in found)
    histogram = value(
        found,
        "stapled_ocsp_fetch_duration_seconds_count",
        responder=site.responder.url.split("/")[2],
    )
    assert histogram == 2.0
    # What node_exporter and Prometheus would say of it.
    promtool = require_binary("promtool")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_a_textfile_that_cannot_be_written_is_one_error_line(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    (site.root / "a-file").write_text("where a directory should be")
    _world(site, f'[metrics]\ntextfile = "{site.root / "a-file" / "stapled.prom"}"')
    capsys.readouterr()
    assert site.once() == 0  # the staples are fine: only the metrics are not
    err = capsys.readouterr().err
    assert "a-file/stapled.prom: cannot write the metrics file" in err


def test_a_textfile_directory_that_is_missing_is_made(site: Site) -> None:
    path = site.root / "metrics" / "stapled.prom"
    _world(site, f'[metrics]\ntextfile = "{path}"')
    assert site.once() == 0
    assert "stapled_build_info" in path.read_text()


def test_a_running_daemon_serves_what_status_says(
    site: Site, daemon: Callable[..., DaemonProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    textfile = site.root / "stapled.prom"
    _world(site, f'[metrics]\nlisten = "127.0.0.1:{port}"\ntextfile = "{textfile}"')
    stapled = daemon()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            scraped = samples(reply.read().decode())
        status = _status(site, capsys)
        _agree(site, scraped, status)
        wait_for("the textfile", textfile.exists)
        _agree(site, samples(textfile.read_text()), status)
        assert value(scraped, "stapled_reload_total", result="failure") == 0.0
    finally:
        assert stapled.stop() == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_the_alert_rules_are_valid_and_fire_where_they_should() -> None:
    promtool = require_binary("promtool")
    rules = EXAMPLES / "prometheus-alerts.yml"
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool, "test", "rules", "alerts-test.yml"],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_after_a_reload_that_did_nothing_it_reloads_once_more_then_says_so(
    site: Site, daemon: Callable[..., DaemonProcess]
) -> None:
    """nginx keeps an old staple when its reload does nothing: the daemon's probe sees it,
    reloads once more, then logs an error; the metric says the staple served is not
    stapled's."""
    web = NginxSite(site)
    # Due already: two hours into a three-hour window.
    site.responder.answer_aged(timedelta(hours=2), timedelta(hours=3))
    assert site.once() == 0
    try:
        web.nginx.start(web.port)
        site.responder.answer_fresh()
        port = free_port()
        site.config_path.write_text(
            site.config_path.read_text()
            + 'reload_command = "true"\nmin_refresh_interval = 1\n'
            + f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
            + f'[[probe]]\ntarget = "127.0.0.1:{web.port}"\nservername = "www.example.com"\n'
        )
        stapled = daemon()
        wait_for(
            "the error after the second reload",
            lambda: "even after 2 reloads" in stapled.output(),
            timeout=30,
        )
        out = stapled.output()
        assert "asking for a reload (1 of 2)" in out and "asking for a reload (2 of 2)" in out
        (error,) = [line for line in out.splitlines() if "even after 2 reloads" in line]
        for subject in (f"127.0.0.1:{web.port}", "(www.example.com)", "serves www.example.com"):
            assert subject in error, error
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            scraped = samples(reply.read().decode())
        labels = {"target": f"127.0.0.1:{web.port}", "servername": "www.example.com"}
        assert value(scraped, "stapled_probe_success", **labels) == 1.0
        assert value(scraped, "stapled_probe_staple_valid", **labels) == 1.0
        assert value(scraped, "stapled_probe_staple_matches_disk", **labels) == 0.0
        # The first pass's reload, then the two the probe asked for.
        assert value(scraped, "stapled_reload_total", result="success") == 3.0
        assert stapled.stop() == 0
    finally:
        web.nginx.stop()


def test_a_server_serving_an_older_staple_at_the_start_is_reloaded_until_it_serves_stapled_s(
    site: Site, daemon: Callable[..., DaemonProcess]
) -> None:
    """Nothing changes in the first pass, but nginx serves an older staple than the file:
    the probe asks for a reload, and the loop closes."""
    web = NginxSite(site)
    site.responder.answer_aged(timedelta(hours=2))
    assert site.once() == 0
    try:
        web.nginx.start(web.port)
        site.responder.answer_fresh()
        assert site.once("--force") == 0  # a newer file; nginx is not told
        web.with_reload()
        port = free_port()
        site.config_path.write_text(
            site.config_path.read_text()
            + f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
            + f'[[probe]]\ntarget = "127.0.0.1:{web.port}"\nservername = "www.example.com"\n'
        )
        stapled = daemon()
        labels = {"target": f"127.0.0.1:{web.port}", "servername": "www.example.com"}

        def matches() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                scraped = samples(reply.read().decode())
            return value(scraped, "stapled_probe_staple_matches_disk", **labels) == 1.0

        wait_for("the server serving stapled's staple", matches, timeout=30)
        out = stapled.output()
        assert "asking for a reload (1 of 2)" in out and "even after" not in out
        assert stapled.stop() == 0
    finally:
        web.nginx.stop()


def test_prometheus_multiprocess_mode_in_the_environment_changes_nothing(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry of stapled's own, read by a collector: the library's multiprocess mode
    (which breaks custom collectors in the default registry) does not apply."""
    multi = tmp_path / "multiproc"
    multi.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multi))
    textfile = site.root / "stapled.prom"
    _world(site, f'[metrics]\ntextfile = "{textfile}"')
    assert site.once() == 0
    found = samples(textfile.read_text())
    assert value(found, "stapled_staple_valid", cert="a.example") == 1.0
    assert list(multi.iterdir()) == []
