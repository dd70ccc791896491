"""The files in systemd/ and examples/: verified by systemd's own tools, and run for real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import Site, require_binary

TOP = Path(__file__).parents[2]
UNITS = sorted(
    p for p in (TOP / "systemd").iterdir() if p.suffix in (".service", ".timer", ".path")
)


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    """The units, with their programs pointed at ones that exist on this machine."""
    stapled = Path(sys.executable).parent / "stapled"
    copies = []
    for unit in UNITS:
        text = unit.read_text().replace("/opt/stapled/bin/stapled", str(stapled))
        text = text.replace("/usr/sbin/nginx", shutil.which("true") or "/bin/true")
        text = text.replace("/usr/bin/systemctl", shutil.which("true") or "/bin/true")
        text = text.replace("/usr/share/stapled/renew-revoked", str(TOP / "examples/renew-revoked"))
        copy = tmp_path / unit.name
        copy.write_text(text)
        copies.append(copy)
    return copies


@pytest.mark.servers
def test_units_pass_systemd_analyze_verify(units: list[Path]) -> None:
    analyze = require_binary("systemd-analyze")
    done = subprocess.run(
        [analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "stapled" not in done.stderr, done.stderr  # no warnings about our units


@pytest.mark.servers
@pytest.mark.parametrize("name", ["stapled.service", "stapled-once.service"])
def test_services_are_rated_ok_or_better(units: list[Path], name: str) -> None:
    analyze = require_binary("systemd-analyze")
    unit = next(u for u in units if u.name == name)
    done = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", done.stdout)
    assert match, done.stdout[-500:] + done.stderr
    assert match.group(2) in ("PERFECT", "SAFE", "OK"), match.group(0)


def test_service_shape() -> None:
    text = (TOP / "systemd" / "stapled.service").read_text()
    for line in ("Type=notify", "User=stapled", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert line in text
    path_unit = (TOP / "systemd" / "stapled-reload.path").read_text()
    assert "PathChanged=/var/lib/stapled/reload-request" in path_unit


@pytest.mark.parametrize("name", ["stapled.service", "stapled-once.service"])
def test_passes_end_before_the_web_servers_start(name: str) -> None:
    """docs/web-servers.md: the first handshake after boot carries a staple."""
    unit = TOP / "systemd" / name
    before = " ".join(_setting(unit, "Before")).split()
    assert {"nginx.service", "apache2.service", "haproxy.service"} <= set(before)
    assert _setting(unit, "WantedBy") == ["multi-user.target"]


def test_the_service_checks_its_configuration_before_a_start_and_a_reload() -> None:
    unit = TOP / "systemd" / "stapled.service"
    (pre,) = _setting(unit, "ExecStartPre")
    reload = _setting(unit, "ExecReload")
    assert " check " in pre and " check " in reload[0] and "kill -HUP" in reload[-1]


def _setting(unit: Path, key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


@pytest.mark.parametrize("timer", [u for u in UNITS if u.suffix == ".timer"], ids=lambda u: u.name)
def test_a_timer_starts_a_one_shot_pass(timer: Path) -> None:
    """A timer without Unit= starts the service of its own name, which here is the daemon."""
    target = (_setting(timer, "Unit") or [timer.with_suffix(".service").name])[0]
    service = TOP / "systemd" / target
    assert service.exists(), f"{timer.name} starts {target}, which is not shipped"
    assert _setting(service, "Type") == ["oneshot"], f"{timer.name} starts {target}"


@pytest.mark.parametrize(
    "unit", [u for u in UNITS if _setting(u, "ExecStart")], ids=lambda u: u.name
)
def test_units_name_their_journal_and_never_fail_on_a_stopped_server(unit: Path) -> None:
    commands = _setting(unit, "ExecStart")
    # The stapled program's lines go under its name (a helper like renew-revoked keeps its unit's).
    if any(c.split()[0].endswith("/stapled") for c in commands):
        assert _setting(unit, "SyslogIdentifier") == ["stapled"]
    for command in commands:
        # "systemctl reload" fails while the server is not running (at boot, at install).
        assert " reload " not in f" {command} ", command


def test_certbot_deploy_hook_refreshes_only_the_renewed_lineage(site: Site) -> None:
    one, two = site.issue("one.example"), site.issue("two.example")
    live = site.lineage("one.example", one)
    site.lineage("two.example", two)
    site.config()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RENEWED_LINEAGE": str(live),
        "STAPLED_CONFIG": str(site.config_path),
    }
    done = subprocess.run(
        [str(TOP / "examples" / "certbot-deploy-hook")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == done.stderr == ""  # quiet when all is well
    assert site.staple("one.example") is not None
    assert site.staple("two.example") is None
