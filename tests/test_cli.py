"""The command line, in-process, plus real runs of the installed entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.x509 import ocsp as x509_ocsp

from stapled import __version__
from stapled.cli import main
from stapled.demo import ca as testca
from stapled.errors import EX_DATAERR, EX_NOINPUT, EX_USAGE


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"stapled {__version__}"


@pytest.mark.parametrize("command", ["once", "status", "verify", "demo"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: stapled " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["once", "--config", "x", "--quiet", "--verbose"],
        ["probe", "127.0.0.1:443"],
        ["probe", "no-port", "--servername", "x"],
        ["probe", "127.0.0.1:443", "--servername", "x", "--connections", "0"],
    ],
    ids=["nothing", "unknown", "quiet-and-verbose", "probe-no-name", "probe-bad", "probe-0"],
)
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EX_USAGE
    err = capsys.readouterr().err
    assert err.startswith("stapled: ") and err.count("\n") == 1


@pytest.mark.parametrize("command", ["once", "status", "run", "probe"])
def test_without_config_the_default_path_is_read(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "nowhere" / "stapled.toml"
    monkeypatch.setenv("STAPLED_CONFIG", str(missing))
    assert main([command]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "--config" in err
    # The variable, when the file is there, is the file read.
    cfg = tmp_path / "stapled.toml"
    cfg.write_text(f'output_dir = "{tmp_path / "out"}"\ncertificates = ["{tmp_path}"]\n')
    monkeypatch.setenv("STAPLED_CONFIG", str(cfg))
    if command == "status":
        # Read, and found empty: a monitoring check that saw nothing is UNKNOWN.
        assert main(["status", "--json"]) == 3
        assert json.loads(capsys.readouterr().out) == {"certificates": []}


def _verify_files(tmp_path: Path, status: x509_ocsp.OCSPCertStatus | None = None) -> list[str]:
    ca = testca.CA()
    leaf = ca.issue("v.example", ocsp_urls=["http://127.0.0.1:9/"])
    staple = testca.write(tmp_path / "s.der", ca.sign_response(leaf.cert, status=status))
    cert = testca.write(tmp_path / "cert.pem", leaf.cert_pem())
    issuer = testca.write(tmp_path / "ca.pem", ca.cert_pem())
    return ["verify", str(staple), "--cert", str(cert), "--issuer", str(issuer)]


def test_verify_good(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_verify_files(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "status:       good" in out and "signed by:    issuer" in out


def test_verify_revoked_is_not_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_verify_files(tmp_path, x509_ocsp.OCSPCertStatus.REVOKED)) == 2
    assert "revoked at:" in capsys.readouterr().out


def test_verify_invalid_staple(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _verify_files(tmp_path)
    (tmp_path / "s.der").write_bytes(b"\x30\x00")
    assert main(argv) == 2
    assert "s.der" in capsys.readouterr().err


def test_verify_without_issuer_asks_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _verify_files(tmp_path)[:4]
    assert main(argv) == EX_DATAERR  # bad input, not a usage error
    err = capsys.readouterr().err
    assert "--issuer" in err and argv[3] in err and "[" not in err
    assert err.count("\n") == 1


def test_verify_missing_file(tmp_path: Path) -> None:
    argv = _verify_files(tmp_path)
    (tmp_path / "s.der").unlink()
    assert main(argv) == EX_NOINPUT


def test_once_unwritable_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "out").write_text("a file where the directory should be")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'output_dir = "{tmp_path / "out"}"\ncertificates = ["{tmp_path / "certs"}"]\n')
    assert main(["once", "--config", str(cfg)]) == 73
    assert str(tmp_path / "out") in capsys.readouterr().err


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "good.example" in out and "revoked" in out and "no-ocsp" in out
    assert "ssl_stapling_file" in out


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("http_proxy", "HTTP_PROXY")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_installed_console_script() -> None:
    script = Path(sys.executable).parent / "stapled"
    assert script.exists(), "the stapled console script is not installed next to python"
    done = _run(str(script), "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"stapled {__version__}"


def test_python_dash_m_demo_leaves_nothing_behind(tmp_path: Path) -> None:
    env_tmp = {"TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "stapled", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env_tmp},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "good staple written" in done.stderr
    assert list(tmp_path.iterdir()) == []  # the demo directory is gone


def test_service_logs_carry_journal_priorities_without_timestamps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util
    import logging

    from stapled.cli import setup_logging

    if importlib.util.find_spec("systemd.journal") is not None:
        pytest.skip("systemd-python is installed: lines go to the journal directly")
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    setup_logging(logging.INFO, service=True)
    log = logging.getLogger("stapled")
    log.error("a.example: refresh failed")
    log.info("a.example: good staple kept")
    assert capsys.readouterr().err.splitlines() == [
        "<3>a.example: refresh failed",
        "<6>a.example: good staple kept",
    ]
