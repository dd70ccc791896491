"""Real HAProxy: .ocsp files present at start, new staples pushed over the admin socket.

Servers mark: skipped when haproxy is not installed, failed instead in CI.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stapled.demo import ca as testca

from ..conftest import Site
from ..servers import HAProxy, example, free_port, s_client

pytestmark = pytest.mark.servers


def test_haproxy_staples_from_the_first_handshake_and_takes_new_staples_without_reload(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = site.root / "haproxy-certs"
    leaf = site.issue("www.example.com")
    # HAProxy's own layout: certificate, chain and key in one file.
    pem = testca.write(
        certs / "www.example.com.pem", leaf.cert_pem(), site.ca.cert_pem(), leaf.key_pem()
    )
    admin = site.root / "haproxy" / "admin.sock"
    site.config(
        f'[haproxy]\nadmin_socket = "{admin}"',
        certificates=f'[{{ path = "{certs}", haproxy = true }}]',
    )
    # Before HAProxy starts: the .ocsp file must be there when it does.
    assert site.once() == 0
    assert Path(str(pem) + ".ocsp").read_bytes() == site.staple("www.example.com")
    port = free_port()
    haproxy = haproxy_for(site, certs, port)
    try:
        haproxy.start(port)
        assert haproxy.proc is not None
        pid = haproxy.proc.pid
        first = s_client(port, "www.example.com")
        assert first.staple_status == "good", first.output + haproxy.output()
        assert first.staple_serial == leaf.cert.serial_number
        # A newer response (thisUpdate has one-second resolution).
        time.sleep(1.1)
        capsys.readouterr()
        assert site.once("--force") == 0
        assert "HAProxy took the new staple" in capsys.readouterr().err
        second = s_client(port, "www.example.com")
        assert second.staple_status == "good"
        assert second.this_update != first.this_update, second.output
        # The same HAProxy process, never reloaded or restarted.
        assert haproxy.proc.pid == pid and haproxy.proc.poll() is None
        assert "reload" not in haproxy.output().lower()
    finally:
        haproxy.stop()


def haproxy_for(site: Site, certs: Path, port: int) -> HAProxy:
    """examples/haproxy.cfg on this test's port, certificates and admin socket."""
    conf = example(
        "haproxy.cfg",
        {
            "/run/haproxy/admin.sock": str(site.root / "haproxy" / "admin.sock"),
            "bind :443": f"bind 127.0.0.1:{port}",
            "/etc/haproxy/certs/": f"{certs}/",
        },
    )
    return HAProxy(site.root / "haproxy", conf)
