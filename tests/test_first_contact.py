"""Mistakes a new operator makes get one line and an exit code that says so, never a
silent 0; messages name the file and read as plain words."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from stapled.cli import main
from stapled.errors import EX_CONFIG, EX_NOINPUT, EX_USAGE
from stapled.files import state

from .conftest import Site

STATUS_UNKNOWN = 3


def _one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    assert err.startswith("stapled: ") and not err.startswith("stapled: stapled"), err
    return err


@pytest.mark.parametrize("name", ["privkey.pem", "site.key", "site-key.pem", "privkey1.pem"])
def test_a_certificates_entry_naming_a_key_file_is_a_config_error(
    site: Site, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = site.certs / name
    key.write_bytes(site.issue("k.example").key_pem())
    site.config(certificates=f'["{key}"]')
    assert site.once() == EX_CONFIG
    err = _one_line(capsys.readouterr().err)
    assert str(key) in err and "certificates[0].path" in err and "key" in err


def test_once_only_a_path_that_matches_nothing_says_so(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a", site.issue("a.example"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert site.once("--only", str(elsewhere)) == EX_NOINPUT
    err = capsys.readouterr().err
    assert str(elsewhere) in err.splitlines()[-1]
    assert site.staple("a") is None  # nothing was fetched for anyone


def test_status_with_no_certificates_is_unknown(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.config()
    assert main(["status", "--config", str(site.config_path)]) == STATUS_UNKNOWN
    assert "no certificate" in capsys.readouterr().err


def _unreadable_state_status(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.bundle("a", site.issue("a.example"))
    assert site.once() == 0
    capsys.readouterr()
    path = site.out / ".stapled" / state.STATE_FILE
    if not path.exists():
        path = next(site.out.rglob(state.STATE_FILE))
    path.chmod(0)
    try:
        assert main(["status", "--config", str(site.config_path)]) == STATUS_UNKNOWN
    finally:
        path.chmod(0o600)
    err = _one_line(capsys.readouterr().err)
    assert str(path) in err and "Permission denied" in err


def test_status_as_another_user_is_unknown(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """The monitoring user's view: a state file of mode 0600 that is not its own."""
    if os.geteuid() != 0:
        _unreadable_state_status(site, capsys)
        return
    # As root, drop to nobody in a child: the state file stays stapled's (root's) 0600.
    site.bundle("a", site.issue("a.example"))
    assert site.once() == 0
    capsys.readouterr()
    for p in (site.root, *site.root.rglob("*")):
        if p.is_dir():
            p.chmod(0o755)
        elif p.name != state.STATE_FILE:
            p.chmod(0o644)
    # pytest's own directories above tmp_path are root's 0700: let nobody pass through.
    above = {p: p.stat().st_mode & 0o777 for p in site.root.parents if p != Path("/")}
    for p, mode in above.items():
        p.chmod(mode | 0o011)
    reader, writer = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child's coverage is not collected)
            code = 99
            try:
                os.close(reader)
                sys.stderr = os.fdopen(writer, "w")
                os.setgid(65534)
                os.setuid(65534)
                code = main(["status", "--config", str(site.config_path)])
                sys.stderr.flush()
            finally:
                os._exit(code)
        os.close(writer)
        with os.fdopen(reader) as child_err:
            err = child_err.read()
        _, status = os.waitpid(pid, 0)
    finally:
        for p, mode in above.items():
            p.chmod(mode)
    assert os.waitstatus_to_exitcode(status) == STATUS_UNKNOWN
    _one_line(err)
    assert "state.json" in err and "Permission denied" in err


def test_a_deeply_nested_state_file_is_rebuilt(site: Site) -> None:
    site.bundle("a", site.issue("a.example"))
    assert site.once() == 0
    path = next(site.out.rglob(state.STATE_FILE))
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["status", "--config", str(site.config_path)]) == 0
    assert site.once() == 0
    assert isinstance(json.loads(path.read_text()), dict)


@pytest.mark.parametrize("count", ["100000000000000000000", "257", "-1", "0"])
def test_probe_connections_are_bounded(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["probe", "127.0.0.1:9", "--servername", "x", "--connections", count]
    assert main(argv) == EX_USAGE
    err = _one_line(capsys.readouterr().err)
    assert "--connections" in err and "256" in err


def test_usage_errors_name_the_command_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "x.der"]) == EX_USAGE
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("stapled: verify: ")


def test_a_set_config_variable_that_names_nothing_is_not_told_to_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STAPLED_CONFIG", str(tmp_path / "nonexist.toml"))
    assert main(["status"]) == EX_CONFIG
    err = _one_line(capsys.readouterr().err)
    assert "$STAPLED_CONFIG names it" in err and "or set" not in err


def test_verify_finds_chain_pem_beside_cert_pem(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    leaf = site.issue("v.example")
    live = site.lineage("v.example", leaf)
    staple = site.root / "v.der"
    staple.write_bytes(site.ca.sign_response(leaf.cert))
    assert main(["verify", str(staple), "--cert", str(live / "cert.pem")]) == 0
    assert "status:       good" in capsys.readouterr().out


def test_a_truncated_staple_is_told_in_plain_words(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    leaf = site.issue("t.example")
    cert = site.bundle("t", leaf)
    staple = site.root / "t.der"
    staple.write_bytes(site.ca.sign_response(leaf.cert)[:-40])
    assert main(["verify", str(staple), "--cert", str(cert)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "ParseError" not in err and "{" not in err and str(staple) in err
    assert "truncated" in err


def test_probe_with_a_config_variable_naming_nothing_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STAPLED_CONFIG", str(tmp_path / "nonexist.toml"))
    assert main(["probe", "127.0.0.1:9", "--servername", "x.example"]) == EX_CONFIG
    err = _one_line(capsys.readouterr().err)
    assert "nonexist.toml" in err and "$STAPLED_CONFIG names it" in err
