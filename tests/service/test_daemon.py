"""`stapled run` as a real subprocess, against a real loopback responder.

sd_notify goes to an abstract AF_UNIX datagram socket the test owns.  Waits are bounded
polls of real outcomes (files, messages), never fixed sleeps standing in for them.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from stapled.core import certs, ocsp, request
from stapled.demo import ca as testca

from .. import rawhttp
from ..conftest import Site
from ..daemonproc import DaemonProcess, wait_for
from ..servers import FakeHAProxySocket, free_port

FAST = "debounce = 0.3\nretry_min = 1\nretry_max = 2\nmin_refresh_interval = 1\n"


def _serial_on_disk(site: Site, name: str, issued: testca.Issued) -> int | None:
    der = site.staple(name)
    if der is None:
        return None
    chain = certs.build_chain([issued.cert, site.ca.cert], name)
    try:
        return ocsp.validate(der, chain, datetime.now(UTC)).serial
    except ocsp.InvalidResponseError:
        return None


def _reload_counter(site: Site) -> Path:
    counter = site.root / "reloads"
    script = (
        f"import pathlib; p = pathlib.Path({str(counter)!r}); "
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')"
    )
    site.config(extra=FAST + f"reload_command = {json.dumps([sys.executable, '-c', script])}")
    return counter


def test_certbot_renewal_gives_a_new_staple_and_one_reload(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    counter = _reload_counter(site)
    first = site.issue("le.example")
    site.lineage("le.example", first)
    d = daemon()
    assert _serial_on_disk(site, "le.example", first) == first.cert.serial_number
    assert d.notified("STATUS=1 good")
    wait_for("the first reload", lambda: counter.exists())
    assert counter.read_text() == "x"

    renewed = site.issue("le.example")
    site.lineage("le.example", renewed, version=2)  # unlink + symlink, as certbot does
    wait_for(
        "the staple for the renewed serial",
        lambda: _serial_on_disk(site, "le.example", renewed) == renewed.cert.serial_number,
    )
    wait_for("the reload after renewal", lambda: counter.read_text() == "xx")
    time.sleep(2)  # room for a duplicate reload to show up, if there were one
    assert counter.read_text() == "xx"
    assert d.stop() == 0


def test_new_certificate_is_picked_up(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    site.config(extra=FAST)
    site.bundle("a.example", site.issue("a.example"))
    d = daemon()
    late = site.issue("late.example")
    site.bundle("late.example", late)
    wait_for(
        "a staple for the new certificate",
        lambda: _serial_on_disk(site, "late.example", late) == late.cert.serial_number,
    )
    assert d.stop() == 0


def test_responder_down_then_up(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    site.config(extra=FAST)
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    # A valid staple past its refresh point: the daemon wants a new one at once.
    site.out.mkdir()
    old = site.ca.sign_response(leaf.cert, this_update=datetime.now(UTC) - timedelta(days=3))
    (site.out / "a.example.der").write_bytes(old)
    site.responder.answer = lambda der: (503, {"Retry-After": "1"}, b"down for maintenance")
    d = daemon()
    assert d.notified("READY=1")

    def status() -> dict[str, object]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "stapled",
                "status",
                "--json",
                "--config",
                str(site.config_path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        return dict(json.loads(out)["certificates"][0])

    wait_for("several failed attempts", lambda: site.responder.requests >= 3)
    entry = status()
    assert entry["status"] == "good"
    assert "HTTP 503" in str(entry["last_error"])
    assert entry["next_retry"] is not None
    assert site.staple("a.example") == old  # kept byte for byte

    site.responder.answer = site.responder._default_answer
    wait_for("a fresh staple", lambda: site.staple("a.example") != old)
    assert _serial_on_disk(site, "a.example", leaf) == leaf.cert.serial_number
    wait_for("the error to clear", lambda: status()["last_error"] is None)
    assert d.stop() == 0


def test_sighup_adds_a_source_and_survives_a_broken_config(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    site.config(extra=FAST)
    site.bundle("a.example", site.issue("a.example"))
    d = daemon()
    other_dir = site.root / "more"
    extra = site.issue("b.example")
    testca.write(other_dir / "b.example.pem", extra.cert_pem(), site.ca.cert_pem())

    site.config_path.write_text("output_dir = [broken")
    d.signal(signal.SIGHUP)
    wait_for("the broken config to be reported", lambda: "keeping the configuration" in d.output())
    assert d.proc.poll() is None

    site.config(extra=FAST, certificates=f'["{site.certs}", "{other_dir}"]')
    d.signal(signal.SIGHUP)
    wait_for(
        "a staple from the new source",
        lambda: _serial_on_disk(site, "b.example", extra) == extra.cert.serial_number,
    )
    assert d.notified("RELOADING=1")
    assert sum("READY=1" in m for m in d.messages) >= 3  # start and after each SIGHUP
    assert d.stop() == 0


def test_sigterm_stops_cleanly(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    site.config(extra=FAST)
    site.bundle("a.example", site.issue("a.example"))
    d = daemon()
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 10
    assert any("STOPPING=1" in m for m in d.messages)
    assert list(site.out.glob(".stapled-tmp-*")) == []
    assert "Traceback" not in d.output()
    state = json.loads((site.out / ".stapled" / "state.json").read_text())
    assert state["daemon"]["stopped"] is True


def test_removed_certificate_is_unscheduled(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    site.config(extra=FAST)
    site.bundle("a.example", site.issue("a.example"))
    gone = site.bundle("gone.example", site.issue("gone.example"))
    d = daemon()
    gone.unlink()
    wait_for("the removal to be noticed", lambda: "gone.example: no longer found" in d.output())
    assert d.stop() == 0


def test_watchdog_pings_when_systemd_asks(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    site.config(extra=FAST)
    site.bundle("a.example", site.issue("a.example"))
    d = daemon({"WATCHDOG_USEC": "2000000"})  # WatchdogSec=2: a ping every second
    wait_for("two WATCHDOG=1 pings", lambda: d.count("WATCHDOG=1") >= 2, timeout=10)
    assert d.stop() == 0


def test_a_staple_fetched_on_retry_is_pushed_to_haproxy(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    fake = FakeHAProxySocket(site.root / "admin.sock")
    try:
        pem = site.bundle("h.example", site.issue("h.example"))
        site.config(
            extra=FAST + f'[haproxy]\nadmin_socket = "{fake.path}"',
            certificates=f'[{{ path = "{site.certs}", haproxy = true }}]',
        )
        good = site.responder.answer
        site.responder.answer = lambda der: (500, {}, b"")
        d = daemon()
        assert fake.commands == []
        site.responder.answer = good
        wait_for("the retry's staple to reach HAProxy", lambda: bool(fake.commands))
        assert fake.pushed() == [Path(str(pem) + ".ocsp").read_bytes()]
        assert d.stop() == 0
    finally:
        fake.close()


def test_the_local_responder_serves_what_the_daemon_fetched(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    leaf = site.issue("a.example")
    site.bundle("a.example", leaf)
    port = free_port()
    site.config(extra=FAST + f'[responder]\nlisten = "127.0.0.1:{port}"')
    d = daemon()
    chain = certs.build_chain([leaf.cert, site.ca.cert], "a")
    reply = requests.post(f"http://127.0.0.1:{port}/", data=request.build_request(chain), timeout=5)
    assert reply.status_code == 200 and reply.content == site.staple("a.example")
    assert site.responder.requests == 1  # answered from what stapled holds, not forwarded
    assert d.stop() == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_responder_port_in_use_fails_the_start_naming_the_key(site: Site) -> None:
    site.bundle("a.example", site.issue("a.example"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        site.config(extra=f'[responder]\nlisten = "127.0.0.1:{port}"')
        done = subprocess.run(
            [sys.executable, "-m", "stapled", "run", "--config", str(site.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 78
    assert "responder.listen" in done.stderr and "cannot listen" in done.stderr
    assert done.stderr.count("\n") == 1


def test_the_first_pass_logs_the_refresh_time_it_scheduled(site: Site, daemon) -> None:  # type: ignore[no-untyped-def]
    site.bundle("first.example", site.issue("first.example"))
    site.config()
    d = daemon()
    state = json.loads((site.out / ".stapled" / "state.json").read_text())
    scheduled = state["certificates"]["first.example"]["next_refresh"]
    assert "first.example: good staple written, valid until" in d.output()
    assert f"refresh after {scheduled}" in d.output(), (scheduled, d.output())


def test_a_slow_first_pass_keeps_systemd_informed_and_stops_at_once(site: Site) -> None:
    """A responder that never answers: the start timeout is extended while the first pass
    runs, and SIGTERM ends it within seconds, not when the fetch times out."""
    hung = rawhttp.RawServer.until_stopped(rawhttp.silent)
    with hung:
        site.bundle("slow.example", site.issue("slow.example", ocsp_urls=[hung.url]))
        site.config(timeout=60)
        d = DaemonProcess(site)
        try:
            wait_for("EXTEND_TIMEOUT_USEC", lambda: d.notified("EXTEND_TIMEOUT_USEC=60000000"))
            assert d.notified("STATUS=first pass")
            assert not d.notified("READY=1")
            started = time.monotonic()
            assert d.stop() == 0
            assert time.monotonic() - started < 5
        finally:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
            d.sock.close()
    assert "stopped during the first pass" in d.output()
    assert "Traceback" not in d.output()
