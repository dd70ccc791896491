"""Real nginx in file mode, with stapled's snippets, checked with ``openssl s_client -status``.

Servers mark: skipped when nginx is not installed, failed instead in CI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from stapled import config
from stapled.core import certs, ocsp, snippet
from stapled.demo import ca as testca
from stapled.net.client import Transport
from stapled.passes import Stapler

from ..conftest import Site
from ..daemonproc import DaemonProcess
from ..servers import Handshake, Nginx, example, free_port, s_client, wait_until

pytestmark = pytest.mark.servers


class NginxSite:
    """Two certbot lineages (one without an OCSP URL) behind a real nginx, from examples/."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.port = free_port()
        self.leaf = site.issue("www.example.com")
        self.live = site.lineage("www.example.com", self.leaf)
        plain = site.issue("plain.example.com", ocsp_urls=[])
        site.lineage("plain.example.com", plain)
        letsencrypt = f"{site.certs}/letsencrypt/live/"
        block = {
            "listen 443 ssl;": f"listen 127.0.0.1:{self.port} ssl;",
            "/etc/letsencrypt/live/": letsencrypt,
            "/var/lib/stapled/": f"{site.out}/",
        }
        main = example("nginx-site.conf", block)
        # The same example again for the site without an OCSP URL.
        other = example("nginx-site.conf", block).replace("www.example.com", "plain.example.com")
        self.nginx = Nginx(site.root / "nginx", main + other)
        site.config(
            "nginx_snippets = true\n"
            f"config_test_command = {json.dumps(self.nginx.command('-t', '-q'))}\n"
        )

    def with_reload(self) -> None:
        """Once nginx runs, stapled's passes reload it (after its configuration test)."""
        self.site.config(
            "nginx_snippets = true\n"
            f"config_test_command = {json.dumps(self.nginx.command('-t', '-q'))}\n"
            f"reload_command = {json.dumps(self.nginx.command('-s', 'reload'))}\n"
        )

    def handshake(self, name: str = "www.example.com") -> Handshake:
        return s_client(self.port, name)


@pytest.fixture
def web(site: Site) -> Iterator[NginxSite]:
    web = NginxSite(site)
    yield web
    web.nginx.stop()


def test_the_first_handshake_after_start_carries_the_staple(web: NginxSite) -> None:
    assert web.site.once() == 0
    web.nginx.start(web.port)
    first = s_client(web.port, "www.example.com")
    assert first.staple_status == "good", first.output
    assert first.staple_serial == first.cert_serial == web.leaf.cert.serial_number
    # The site without an OCSP URL: its snippet keeps stapling off, and nginx still starts.
    plain = s_client(web.port, "plain.example.com")
    assert plain.cert_serial is not None and plain.staple_status is None
    assert "no response sent" in plain.output


def test_nginx_starts_before_anything_was_fetched(web: NginxSite) -> None:
    web.site.responder.answer = lambda der: (500, {}, b"")
    assert web.site.once() == 2  # no staple: critical, but every snippet is safe
    web.nginx.start(web.port)
    assert s_client(web.port, "www.example.com").staple_status is None


def test_a_renewed_certificate_is_stapled_after_stapleds_reload(web: NginxSite) -> None:
    web.site.once()
    web.nginx.start(web.port)
    web.with_reload()
    renewed = web.site.issue("www.example.com")
    web.site.lineage("www.example.com", renewed, version=2)
    assert web.site.once() == 0

    def new_serial() -> bool:
        shake = s_client(web.port, "www.example.com")
        return shake.cert_serial == shake.staple_serial == renewed.cert.serial_number

    wait_until("nginx to serve the renewed certificate with its staple", new_serial)


def test_a_failing_configuration_test_is_reported_and_nginx_keeps_serving(
    web: NginxSite, capsys: pytest.CaptureFixture[str]
) -> None:
    web.site.once()
    web.nginx.start(web.port)
    web.with_reload()
    before = s_client(web.port, "www.example.com")
    site_conf = web.nginx.root / "site.conf"
    site_conf.write_text(site_conf.read_text() + "\nssl_stapplin on;\n")
    capsys.readouterr()
    assert web.site.once("--force") == 1
    err = capsys.readouterr().err
    assert "[emerg]" in err and 'unknown directive "ssl_stapplin"' in err
    # Not reloaded: the old workers serve the old staple.
    assert s_client(web.port, "www.example.com").this_update == before.this_update
    state = json.loads((web.site.out / ".stapled" / "state.json").read_text())
    assert state["reload_pending"] is True


def test_a_staple_that_expires_in_an_outage_is_switched_off_not_served(web: NginxSite) -> None:
    web.site.once()
    web.nginx.start(web.port)
    web.with_reload()
    assert s_client(web.port, "www.example.com").staple_status == "good"
    web.site.responder.answer = lambda der: (503, {}, b"")
    # Days later, the CA still down: the staple is about to expire.
    chain = certs.build_chain([web.leaf.cert, web.site.ca.cert], "www")
    staple = ocsp.validate(web.site.staple("www.example.com") or b"", chain, datetime.now(UTC))
    later = staple.next_update - timedelta(minutes=1)
    result = Stapler(
        config.load(web.site.config_path), transport=Transport(timeout=5), clock=lambda: later
    ).once()
    assert result.reload_error is None, result.reload_error
    wait_until(
        "nginx to stop stapling",
        lambda: s_client(web.port, "www.example.com").staple_status is None,
    )
    assert "ssl_stapling off;" in (web.site.out / "www.example.com.nginx.conf").read_text()


def test_rsa_and_ecdsa_in_one_server_block_each_get_their_own_staple(
    site: Site, daemon: Callable[..., DaemonProcess]
) -> None:
    """Responder mode, from examples/nginx-dual.conf, against `stapled run`."""
    dual = site.certs / "dual"
    issued = {}
    for kind, key_type in (("rsa", "rsa"), ("ecdsa", "ec")):
        issued[kind] = site.issue("www.example.com", key_type=key_type)
        testca.write(dual / f"{kind}-fullchain.pem", issued[kind].cert_pem(), site.ca.cert_pem())
        testca.write(dual / f"{kind}-privkey.pem", issued[kind].key_pem())
    testca.write(dual / "ca-chain.pem", site.ca.cert_pem())
    responder_port, port = free_port(), free_port()
    site.config(f'[responder]\nlisten = "127.0.0.1:{responder_port}"')
    stapled = daemon()
    conf = example(
        "nginx-dual.conf",
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            "/etc/ssl/www.example.com/": f"{dual}/",
            "http://127.0.0.1:8053/": f"http://127.0.0.1:{responder_port}/",
        },
    )
    nginx = Nginx(site.root / "nginx", conf)
    try:
        nginx.start(port)
        for kind, sigalg in (("rsa", "rsa_pss_rsae_sha256"), ("ecdsa", "ecdsa_secp256r1_sha256")):
            serial = issued[kind].cert.serial_number

            def stapled_right(sigalg: str = sigalg, serial: int = serial) -> bool:
                # nginx asks the responder at the first handshake and staples from then on.
                shake = s_client(port, "www.example.com", "-sigalgs", sigalg)
                assert shake.cert_serial == serial, shake.output
                return shake.staple_status == "good" and shake.staple_serial == serial

            wait_until(f"nginx to staple the {kind} certificate's own response", stapled_right)
    finally:
        nginx.stop()
        assert stapled.stop() == 0
    # nginx asked stapled only: the CA saw one request per certificate, stapled's.
    assert site.responder.requests == 2
    assert not [
        line for line in nginx.error_log.splitlines() if "[error]" in line and "OCSP" in line
    ]


def test_a_staple_path_with_spaces_quotes_and_semicolons_is_read_by_nginx(site: Site) -> None:
    leaf = site.issue("www.example.com")
    site.lineage("www.example.com", leaf)
    out = site.root / 'staples; with "odd" \\ names'
    port = free_port()
    conf = example(
        "nginx-site.conf",
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            "/etc/letsencrypt/live/": f"{site.certs}/letsencrypt/live/",
            "include /var/lib/stapled/www.example.com.nginx.conf;": "include "
            + snippet.quote(f"{out}/www.example.com.nginx.conf")
            + ";",
        },
    )
    nginx = Nginx(site.root / "nginx", conf)
    site.config_path.write_text(
        f"output_dir = {json.dumps(str(out))}\n"
        f'certificates = ["{site.certs}"]\nnginx_snippets = true\n'
    )
    assert site.once() == 0
    try:
        nginx.start(port)
        shake = s_client(port, "www.example.com")
        assert shake.staple_status == "good" and shake.staple_serial == leaf.cert.serial_number
    finally:
        nginx.stop()
