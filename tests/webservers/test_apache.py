"""Real Apache (mod_ssl) stapling from stapled's local responder, from examples/.

Servers mark: skipped when apache2 is not installed, failed instead in CI.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..conftest import Site
from ..daemonproc import DaemonProcess
from ..servers import Apache, example, free_port, s_client, wait_until

pytestmark = pytest.mark.servers


def test_apache_staples_from_stapled_even_after_a_restart_with_the_ca_down(
    site: Site, daemon: Callable[..., DaemonProcess]
) -> None:
    leaf = site.issue("www.example.com")
    site.lineage("www.example.com", leaf)
    apache, stapled, port = behind_stapled(site, daemon)
    try:
        apache.start(port)
        # mod_ssl fetches inside the handshake: the first one already carries the staple.
        first = s_client(port, "www.example.com")
        assert first.staple_status == "good", first.output + apache.error_log
        assert first.staple_serial == leaf.cert.serial_number
        # The CA's responder goes away, and Apache restarts: its staple cache is gone.
        site.responder.stop()
        apache.stop()
        apache.start(port)
        again = s_client(port, "www.example.com")
        assert again.staple_status == "good", again.output + apache.error_log
        assert again.this_update == first.this_update  # the same response, from stapled
    finally:
        apache.stop()
        assert stapled.stop() == 0


def test_apache_staples_nothing_rather_than_an_error_when_stapled_has_no_staple(
    site: Site, daemon: Callable[..., DaemonProcess]
) -> None:
    site.lineage("www.example.com", site.issue("www.example.com"))
    site.responder.answer = lambda der: (500, {}, b"")
    apache, stapled, port = behind_stapled(site, daemon, "retry_min = 600")
    try:
        apache.start(port)
        shake = s_client(port, "www.example.com")
        assert shake.cert_serial is not None
        # No fabricated tryLater, no error response: nothing at all.
        assert "no response sent" in shake.output, shake.output
        wait_until("Apache to log the responder's 503", lambda: "503" in apache.error_log)
    finally:
        apache.stop()
        assert stapled.stop() == 0


def behind_stapled(
    site: Site, daemon: Callable[..., DaemonProcess], extra: str = ""
) -> tuple[Apache, DaemonProcess, int]:
    """stapled's daemon with its local responder, running, and an Apache (not started)
    on a port of its own that asks it: (apache, stapled, port)."""
    responder_port, port = free_port(), free_port()
    site.config(f'{extra}\n[responder]\nlisten = "127.0.0.1:{responder_port}"')
    stapled = daemon()
    return _apache(site, port, responder_port), stapled, port


def _apache(site: Site, port: int, responder_port: int) -> Apache:
    """examples/apache-site.conf on this test's ports and paths."""
    conf = example(
        "apache-site.conf",
        {
            "<VirtualHost *:443>": f"<VirtualHost 127.0.0.1:{port}>",
            "/etc/letsencrypt/live/": f"{site.certs}/letsencrypt/live/",
            "/var/run/apache2/": f"{site.root}/apache2/",
            "http://127.0.0.1:8053/": f"http://127.0.0.1:{responder_port}/",
        },
    )
    return Apache(site.root / "apache2", port, conf)
