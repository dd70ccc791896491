"""`stapled check`: every problem at once, exit 0 or 78, nothing written."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stapled.cli import main
from stapled.errors import EX_CONFIG

from .conftest import Site

# One bad line per key, each independent of the others: (key named in the error, line).
BREAKERS = {
    "refresh_at": "refresh_at = 2",
    "timeout": "timeout_x = 1",
    "concurrency": "concurrency = 0",
    "nginx_snippets": 'nginx_snippets = "yes"',
    "cert_id_hash": 'cert_id_hash = "md5"',
    "probe_interval": 'probe_interval = "soon"',
    "reload_command": "reload_command = []",
    "retry_min": "retry_min = -1",
    "per_host": "per_host = 1.5",
    "responder": 'responder = "127.0.0.1:1"',
}


def _config(site: Site, lines: list[str]) -> None:
    # timeout is written by Site.config; the breaker for it is an unknown key beside it.
    site.config("\n".join(lines))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chosen=st.sets(st.sampled_from(sorted(BREAKERS)), min_size=1))
def test_every_bad_key_is_listed_at_once(
    site: Site, chosen: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _config(site, [BREAKERS[k] for k in sorted(chosen)])
    capsys.readouterr()
    assert main(["check", "--config", str(site.config_path)]) == EX_CONFIG
    err = [e for e in capsys.readouterr().err.splitlines() if "warning: " not in e]
    assert len(err) == len(chosen), err
    for key in chosen:
        named = "timeout_x" if key == "timeout" else key
        assert sum(f"key '{named}'" in line for line in err) == 1, (key, err)
    assert not site.out.exists()  # nothing written


def test_a_good_configuration_is_ok_with_counts(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a", site.issue("a.example"))
    site.bundle("b", site.issue("b.example", ocsp_urls=[]))
    broken = site.root / "broken.pem"
    broken.write_text("not a certificate")
    site.config(certificates=f'["{site.certs}", "{broken}"]')
    assert main(["check", "--config", str(site.config_path)]) == 0
    out, err = capsys.readouterr()
    assert "ok, 2 certificate(s), 1 without an OCSP URL, 1 warning(s)" in out
    assert "broken.pem" in err and err.startswith("stapled: warning: ")
    assert not site.out.exists()


def test_a_config_test_that_fails_for_this_user_is_an_error_with_the_way_out(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit('open() \"/run/nginx.pid\" failed')"]
    site.config(
        f"config_test_command = {json.dumps(failing)}\n"
        f'reload_request_file = "{site.root}/reload-request"\n'
    )
    assert main(["check", "--config", str(site.config_path)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "config_test_command" in err and "nginx.pid" in err
    assert "stapled-reload.service" in err


@pytest.mark.parametrize("key", ["reload_command", "revoked_command"])
def test_a_command_that_is_no_program_is_an_error(
    site: Site, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    site.config(f'{key} = "/nonexistent/run-it now"\n')
    assert main(["check", "--config", str(site.config_path)]) == EX_CONFIG
    assert f"key '{key}'" in capsys.readouterr().err


def test_an_output_dir_others_can_write_is_an_error(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.out.mkdir()
    site.out.chmod(0o777)
    site.config()
    assert main(["check", "--config", str(site.config_path)]) == EX_CONFIG
    assert "key 'output_dir'" in capsys.readouterr().err


def test_a_file_that_is_not_toml_is_one_error(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.config_path.write_text("output_dir = \n")
    assert main(["check", "--config", str(site.config_path)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TOML" in err


def test_both_commands_are_checked(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.config(
        'reload_command = "/nonexistent/reload"\nconfig_test_command = "/nonexistent/test"\n'
    )
    assert main(["check", "--config", str(site.config_path)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "key 'reload_command'" in err and "key 'config_test_command'" in err
