"""The units and the documented install paths under a real systemd, booted in a container
over this machine's own tree (tests/service/boot.sh): README's Debian package and nginx
recipe end to end, and docs/operations.md's install from a checkout, each block run as
written, under the shipped units and the unprivileged user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from stapled.demo import ca as testca

from ..conftest import REQUIRE_SERVERS, require_binary
from ..crltool import built
from ..docs.blocks import block, commands

TOP = Path(__file__).parents[2]
BOOT = Path(__file__).with_name("boot.sh")

pytestmark = pytest.mark.servers


def _facts(output: str) -> dict[str, str]:
    facts = {}
    for line in output.splitlines():
        if line.startswith("CHECK "):
            _, name, value = ([*line.split(maxsplit=2), ""])[:3]
            facts[name] = value
    return facts


def _boot(tmp_path: Path, files: Path, scenario: str) -> tuple[dict[str, str], str]:
    for binary in ("systemd-nspawn", "unshare", "nsenter", "pgrep", "setfacl"):
        require_binary(binary)
    if os.geteuid() != 0:
        reason = "booting a container needs root"
        if REQUIRE_SERVERS:
            pytest.fail(reason + " and STAPLED_REQUIRE_SERVERS=1")
        pytest.skip(reason)
    work = tmp_path / "boot"
    work.mkdir()
    script = Path(__file__).with_name(scenario)
    done = subprocess.run(
        [
            "unshare",
            "--pid",
            "--mount",
            "--mount-proc",
            "--fork",
            "bash",
            str(BOOT),
            str(TOP),
            str(files),
            str(work),
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    detail = done.stdout[-4000:] + done.stderr[-3000:]
    assert done.returncode == 0, detail
    return _facts(done.stdout), detail


def _write(files: Path, name: str, text: str) -> None:
    (files / name).write_text(text)


def test_the_package_and_readme_s_nginx_recipe_under_a_booted_systemd(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    ca = testca.CA("boot CA")
    with testca.ResponderServer(ca) as responder:
        for version in (1, 2):
            leaf = ca.issue("www.example.com", ocsp_urls=[responder.url])
            testca.write(files / f"cert{version}.pem", leaf.cert_pem())
            testca.write(files / f"chain{version}.pem", ca.cert_pem())
            testca.write(files / f"fullchain{version}.pem", leaf.cert_pem(), ca.cert_pem())
            testca.write(files / f"privkey{version}.pem", leaf.key_pem())
        _write(files, "readme-install.sh", block("readme-install"))
        _write(files, "readme-after-install.sh", block("readme-after-install"))
        _write(files, "readme-nginx-config.toml", block("readme-nginx-config"))
        _write(files, "readme-nginx-site.conf", block("readme-nginx-site"))
        # README: "grant read access as in docs/operations.md".
        acl = [c for c in commands("operations-install") if c.startswith("setfacl")]
        assert len(acl) == 3
        _write(files, "readacl.sh", "\n".join(acl) + "\n")
        _write(files, "monitoring-probe.sh", "\n".join(commands("monitoring-probe")) + "\n")
        _write(files, "monitoring-probe-config.toml", block("monitoring-probe-config"))
        _write(files, "monitoring-metrics.toml", block("monitoring-metrics"))
        _write(files, "operations-certbot-hook.sh", block("operations-certbot-hook"))
        _write(files, "web-haproxy.toml", block("web-haproxy"))
        # docs/revocation.md: a certificate without OCSP, revoked in its CRL (served by
        # the container's nginx), and revoked_command as written.
        crl_url = "http://127.0.0.1:8089/boot.crl"
        revoked = ca.issue("revoked.example", ocsp_urls=[], crl_urls=[crl_url])
        testca.write(files / "revoked-cert.pem", revoked.cert_pem())
        testca.write(files / "revoked-chain.pem", ca.cert_pem())
        (files / "www").mkdir()
        reason = {revoked.cert.serial_number: x509.ReasonFlags.key_compromise}
        (files / "www" / "boot.crl").write_bytes(built(ca, revoked=reason))
        _write(files, "crl-site.conf", "server { listen 127.0.0.1:8089; root /opt/test/www; }\n")
        _write(files, "revocation-config.toml", block("revocation-config"))
        facts, detail = _boot(tmp_path, files, "boot_package.sh")
    assert facts.get("booted") in ("running", "degraded"), detail
    assert facts.get("package") == "install ok installed", detail
    # The default configuration works as shipped: the service runs on it.
    assert facts.get("default_active") == "active", detail
    assert facts.get("default_path") == "active" and facts.get("user") == "yes", detail
    assert facts.get("after_install") == "0", detail
    assert facts.get("staple") == "yes" and facts.get("snippet") == "1", detail
    assert facts.get("served_v1", "").startswith("good"), detail
    assert facts.get("probe_one") == "0" and facts.get("check_monitoring") == "0", detail
    assert facts.get("metrics_http") == "1" and facts.get("probe_config") == "0", detail
    # certbot's renewal: stapled staples the new certificate and the root unit reloads nginx.
    assert facts.get("served_v2") == "yes", detail
    assert facts.get("reload_result") == "success", detail
    assert facts.get("probe_after_renewal") == "0", detail
    assert facts.get("hook") == "0" and facts.get("textfile") == "1", detail
    assert facts.get("state_owner") == "stapled" and facts.get("status") == "0", detail
    assert facts.get("haproxy_config") == "0", detail
    # docs/revocation.md: the CRL says revoked; the hook, run by the unprivileged service,
    # asks root, and stapled-renew.service runs certbot for that lineage.
    assert facts.get("renew_path") == "active", detail
    assert facts.get("certbot") == "renew --cert-name revoked.example --force-renewal", detail
    assert facts.get("renew_result") == "success", detail
    assert facts.get("status_revoked") == "2", detail


def test_the_install_from_a_checkout_and_the_units_under_a_booted_systemd(
    tmp_path: Path,
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    ca = testca.CA("boot CA")
    with testca.ResponderServer(ca) as responder:
        leaf = ca.issue("site.example", ocsp_urls=[responder.url])
        testca.write(files / "site.pem", leaf.cert_pem(), ca.cert_pem())
        _write(files, "operations-install.sh", block("operations-install"))
        (cron,) = commands("operations-cron")
        _write(files, "operations-cron.txt", cron + "\n")
        facts, detail = _boot(tmp_path, files, "boot_checkout.sh")
    assert facts.get("booted") in ("running", "degraded"), detail
    assert facts.get("installed") == "yes", detail
    # The ACL lines: stapled reads live/, never a key.
    assert facts.get("live_readable") == "yes" and facts.get("key_hidden") == "yes", detail
    assert facts.get("service") == "active", detail  # Type=notify: READY=1 was sent
    assert facts.get("staple") == "yes", detail
    # A new staple asks for a reload; with the web server not running, that succeeds.
    assert facts.get("reload_ran") == "yes" and facts.get("reload_result") == "success", detail
    # `stapled check` before the reload: a broken file is refused, the process stays.
    assert facts.get("broken_reload") == "refused" and facts.get("same_pid") == "yes", detail
    assert int(facts.get("broken_logged", "0")) >= 1, detail
    # A reload that adds the local responder: it answers, and the process is the same.
    assert facts.get("responder_reload") == "ok" and facts.get("responder_answers") == "yes", detail
    assert facts.get("responder_same_pid") == "yes", detail
    assert facts.get("timer_unit") == "stapled-once.service", detail
    assert facts.get("once_result") == "success", detail
    assert int(facts.get("journal", "0")) >= 1, detail  # lines under SyslogIdentifier=stapled
    assert facts.get("cron_exit") == "0", detail
    assert int(facts.get("stop_ms", "99999")) < 10_000, detail
    assert facts.get("stopped") == "inactive", detail
