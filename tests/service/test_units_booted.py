"""The units under a real systemd: booted in a container over this machine's own tree,
installed as docs/operations.md says, and checked for start, READY, the reload through
the path unit, the timer's one-shot pass, the journal name and a quick stop."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stapled.demo import ca as testca

from ..conftest import REQUIRE_SERVERS, require_binary

TOP = Path(__file__).parents[2]
SCRIPT = Path(__file__).with_name("boot_units.sh")

pytestmark = pytest.mark.servers


def _facts(output: str) -> dict[str, str]:
    facts = {}
    for line in output.splitlines():
        if line.startswith("CHECK "):
            _, name, value = ([*line.split(maxsplit=2), ""])[:3]
            facts[name] = value
    return facts


def test_the_units_work_under_a_booted_systemd(tmp_path: Path) -> None:
    for binary in ("systemd-nspawn", "unshare", "nsenter", "pgrep"):
        require_binary(binary)
    if os.geteuid() != 0:
        reason = "booting a container needs root"
        if REQUIRE_SERVERS:
            pytest.fail(reason + " and STAPLED_REQUIRE_SERVERS=1")
        pytest.skip(reason)
    ca = testca.CA("boot CA")
    with testca.ResponderServer(ca) as responder:
        leaf = ca.issue("site.example", ocsp_urls=[responder.url])
        pem = testca.write(tmp_path / "site.pem", leaf.cert_pem(), ca.cert_pem())
        work = tmp_path / "boot"
        work.mkdir()
        done = subprocess.run(
            [
                "unshare",
                "--pid",
                "--mount",
                "--mount-proc",
                "--fork",
                "bash",
                str(SCRIPT),
                str(TOP),
                str(pem),
                responder.url,
                str(work),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    facts = _facts(done.stdout)
    detail = done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode == 0, detail
    assert facts.get("booted") in ("running", "degraded"), detail
    assert facts.get("service") == "active", detail  # Type=notify: READY=1 was sent
    assert facts.get("staple") == "yes", detail
    # A new staple asks for a reload; with the web server not running, that succeeds.
    assert facts.get("reload_ran") == "yes" and facts.get("reload_result") == "success", detail
    assert facts.get("timer_unit") == "stapled-once.service", detail
    assert facts.get("once_result") == "success", detail
    assert int(facts.get("journal", "0")) >= 1, detail  # lines under SyslogIdentifier=stapled
    assert int(facts.get("stop_ms", "99999")) < 10_000, detail
    assert facts.get("stopped") == "inactive", detail
