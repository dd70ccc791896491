"""Faults on this machine, bad certificate files, and planted files: nothing invalid is
published, nothing valid is lost, every problem is one line naming what it is about."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from stapled import config
from stapled.cli import main
from stapled.core import certs, ocsp
from stapled.core.model import Found
from stapled.demo import ca as testca
from stapled.errors import EX_CANTCREAT
from stapled.files import discovery, state, store
from stapled.net.client import Transport
from stapled.passes import Stapler

from .conftest import REQUIRE_SERVERS, Site

pytestmark = pytest.mark.hostile


def _status(site: Site) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "stapled", "status", "--json", "--config", str(site.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return {c["name"]: c for c in json.loads(out)["certificates"]}


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "64k") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``path`` (needs root, as in CI)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = f"cannot mount a small filesystem here: {done.stderr.strip()}"
        if REQUIRE_SERVERS:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


def test_a_full_disk_keeps_the_old_staples_and_is_retried(site: Site) -> None:
    with small_filesystem(site.out):
        site.bundle("a.example", site.issue("a.example"))
        site.config()
        assert site.once() == 0
        before = site.staple("a.example")
        filler = _fill(site.out)
        assert site.once("--force") == 1
        assert site.staple("a.example") == before
        assert list(site.out.glob(".stapled-tmp-*")) == []
        filler.unlink()
        assert site.once("--force") == 0  # retried once there is room
        assert site.staple("a.example") != before


def test_a_disk_failing_write_back_keeps_the_old_staples(site: Site) -> None:
    """syncfs reporting EIO: no staple of the batch is renamed into place."""
    site.bundle("a.example", site.issue("a.example"))
    site.config()
    assert site.once() == 0
    before = site.staple("a.example")
    assert before is not None

    def failing(fd: int) -> bool:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    result = Stapler(
        config.load(site.config_path),
        transport=Transport(timeout=5),
        new_batch=lambda: store.Batch(sync=failing),
    ).once(force=True)
    assert result.exit_code() == 1
    (record,) = [r for r in result.records if r.name == "a.example"]
    assert record.last_error is not None
    assert "a.example.der: not written: cannot sync (Input/output error)" in record.last_error
    assert record.current is not None and record.current.der == before  # what is on disk
    assert site.staple("a.example") == before
    assert list(site.out.glob(".stapled-tmp-*")) == []


def test_a_read_only_output_directory_is_one_clear_error(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_filesystem(site.out):
        site.bundle("a.example", site.issue("a.example"))
        site.config()
        assert site.once() == 0
        before = site.staple("a.example")
        subprocess.run(["mount", "-o", "remount,ro", str(site.out)], check=True)
        capsys.readouterr()
        assert site.once("--force") == EX_CANTCREAT
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(site.out) in err and "read-only" in err
        assert site.staple("a.example") == before


def test_a_missing_output_directory_is_created(site: Site) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.config()
    assert site.once() == 0
    for child in site.out.rglob("*"):
        if child.is_file():
            child.unlink()
    for child in sorted(site.out.rglob("*"), reverse=True):
        child.rmdir()
    site.out.rmdir()
    assert site.once() == 0
    assert site.staple("a.example") is not None
    assert oct(site.out.stat().st_mode & 0o777) == oct(0o755)


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_an_output_directory_others_can_write_is_refused(
    site: Site, mode: int, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.config()
    site.out.mkdir()
    site.out.chmod(mode)
    assert site.once() == EX_CANTCREAT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(site.out) in err and "every user" in err
    assert site.staple("a.example") is None


def test_a_group_writable_output_directory_is_refused_unless_the_group_is_stapleds(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.config()
    site.out.mkdir()
    site.out.chmod(0o775)
    os.chown(site.out, -1, os.getegid())
    assert site.once() == 0
    if os.geteuid() != 0:
        return  # only root can hand the directory to another group
    os.chown(site.out, -1, 65534)
    assert site.once("--force") == EX_CANTCREAT
    assert "writable by group 65534" in capsys.readouterr().err


def test_a_planted_symlink_is_refused_not_written_through(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.bundle("b.example", site.issue("b.example"))
    site.config()
    site.out.mkdir()
    victim = testca.write(tmp_path / "victim", b"precious")
    (site.out / "a.example.der").symlink_to(victim)
    assert site.once() == 2  # a.example has no staple: critical
    assert victim.read_bytes() == b"precious"
    assert (site.out / "a.example.der").is_symlink()
    assert site.staple("b.example") is not None  # the others are served
    err = capsys.readouterr().err
    assert "a.example.der" in err and "symbolic link" in err
    assert "symbolic link" in str(_status(site)["a.example"]["last_error"])


@pytest.mark.parametrize("command", ["false", "sleep 30"], ids=["failing", "hanging"])
def test_a_reload_that_fails_or_hangs_is_bounded_and_keeps_the_staples(
    site: Site, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a.example", site.issue("a.example"))
    site.config(f'reload_command = "{command}"\nreload_timeout = 0.5')
    started = time.monotonic()
    assert site.once() == 1
    assert time.monotonic() - started < 10
    assert site.staple("a.example") is not None
    err = capsys.readouterr().err
    assert f"reload command '{command}'" in err
    assert ("did not finish within 0.5 s" in err) == (command == "sleep 30")


# ---- SIGKILL at random moments ---------------------------------------------------------

TRIALS = int(os.environ.get("STAPLED_KILL_TRIALS", "200"))


def test_sigkill_at_random_moments_never_leaves_a_broken_staple(site: Site) -> None:
    """Hundreds of passes killed at random points; every file is always whole and valid."""
    issued = {f"k{i}.example": site.issue(f"k{i}.example") for i in range(6)}
    for name, leaf in issued.items():
        site.bundle(name, leaf)
    site.config("nginx_snippets = true")
    assert site.once() == 0
    cfg = config.load(site.config_path)
    chains = {n: certs.build_chain([i.cert, site.ca.cert], n) for n, i in issued.items()}
    rng = random.Random(20261121)  # noqa: S311 (the kill moments, not secrets)
    leftovers = 0
    for _ in range(TRIALS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
            pid = os.fork()
        if pid == 0:  # the child: one forced pass, killed somewhere inside it
            try:
                transport = Transport(timeout=5)
                Stapler(cfg, transport=transport).once(force=True)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0, 0.04))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        now = datetime.now(UTC)
        for name, chain in chains.items():
            ocsp.validate(site.staple(name) or b"", chain, now)  # whole and valid, always
            snippet = (site.out / f"{name}.nginx.conf").read_text()
            assert snippet.endswith('.der";\n'), snippet
        assert isinstance(state.load(cfg.state_path), dict)
        leftovers += len(list(site.out.glob(".stapled-tmp-*")))
    # The next start clears what the killed passes left, and carries on.
    assert site.once() == 0
    assert list(site.out.glob(".stapled-tmp-*")) == []
    assert json.loads((cfg.state_path / "state.json").read_text())["version"] == 1
    print(f"{TRIALS} kills, {leftovers} temporary files left behind and then cleared")


# ---- bad certificate files -------------------------------------------------------------


def _pem_junk(site: Site) -> dict[str, bytes | None]:
    leaf = site.issue("x.example")
    good_pem = leaf.cert_pem() + site.ca.cert_pem()
    expired = site.issue(
        "expired.example",
        not_before=datetime.now(UTC) - timedelta(days=90),
        not_after=datetime.now(UTC) - timedelta(days=1),
    )
    return {
        "not-pem": b"hello, this is not a certificate\n",
        "truncated-pem": good_pem[: len(good_pem) // 3],
        "der-without-issuer": leaf.cert.public_bytes(Encoding.DER),
        "wrong-order": site.ca.cert_pem() + leaf.cert_pem(),
        "no-issuer-no-aia": site.issue("lonely.example").cert_pem(),
        "self-signed": testca.CA("self.example").cert_pem(),
        "expired-leaf": expired.cert_pem() + site.ca.cert_pem(),
        "ldap-ocsp-url": site.issue("ldap.example", ocsp_urls=["ldap://ocsp.example/"]).cert_pem()
        + site.ca.cert_pem(),
        **{
            name: site.issue(f"{name}.example", ocsp_urls=[url]).cert_pem() + site.ca.cert_pem()
            for name, url in MALFORMED_URLS.items()
        },
        "ten-megabytes": b"-----BEGIN CERTIFICATE-----\n" + b"A" * (10 * 1024 * 1024),
        "binary-junk": bytes((i * 131 + 7) % 256 for i in range(4096)),
    }


# AIA OCSP URLs that cannot be parsed or asked: each is that certificate's own error.
MALFORMED_URLS = {
    "bracket-url": "http://[::1/",
    "port-url": "http://ocsp.example:99999/",
    "bad-ipv6-url": "http://[zz]/",
    "space-url": "http://ocsp example/",
    "no-host-url": "http:///ocsp",
}

EXPECTED = {
    "not-pem": ("error", "no certificate found"),
    "truncated-pem": ("error", "truncated PEM"),
    "der-without-issuer": ("error", "no caIssuers URL"),
    "wrong-order": ("error", "put the leaf first"),
    "no-issuer-no-aia": ("error", "no caIssuers URL"),
    "self-signed": ("error", "self-signed"),
    "expired-leaf": ("expired", "the certificate expired on"),
    "ldap-ocsp-url": ("error", "not http or https"),
    "bracket-url": ("error", "http://[::1/ is not a valid URL (Invalid IPv6 URL)"),
    "port-url": ("error", "is not a valid URL (Port out of range"),
    "bad-ipv6-url": ("error", "is not a valid URL"),
    "space-url": ("error", "holds spaces, control or non-ASCII characters"),
    "no-host-url": ("error", "names no host"),
    "ten-megabytes": ("error", "larger than"),
    "binary-junk": ("error", "no certificate found"),
    "symlink-loop": ("error", "Too many levels of symbolic links"),
    "fifo": ("error", "not a regular file"),
}


def test_each_bad_certificate_file_is_its_own_state_and_the_rest_is_served(site: Site) -> None:
    good = site.issue("good.example")
    site.bundle("good.example", good)
    bad = site.root / "bad"
    bad.mkdir()
    for name, data in _pem_junk(site).items():
        testca.write(bad / f"{name}.pem", data or b"")
    (bad / "symlink-loop.pem").symlink_to(bad / "symlink-loop.pem")
    os.mkfifo(bad / "fifo.pem")  # opening it for reading would block a naive reader
    sources = [str(site.certs)] + [str(bad / f"{name}.pem") for name in EXPECTED]
    site.config(certificates=json.dumps(sources).replace("symlink-loop.pem", "*loop.pem"))
    code = site.once()
    assert code == 2
    status = _status(site)
    assert status["good.example"]["status"] == "good"
    for name, (expected_state, fragment) in EXPECTED.items():
        entry = status.get(name)
        assert entry is not None, f"{name} missing from status: {sorted(status)}"
        assert entry["status"] == expected_state, (name, entry)
        message = str(entry["last_error"])
        assert fragment in message and "\n" not in message, (name, message)


def test_an_unreadable_certificate_file_is_its_own_error(site: Site) -> None:
    top = Path(tempfile.mkdtemp(prefix="stapled-unreadable-"))
    try:
        top.chmod(0o755)
        leaf = site.issue("secret.example")
        secret = testca.write(top / "secret.pem", leaf.cert_pem(), site.ca.cert_pem())
        secret.chmod(0)
        readable = testca.write(
            top / "open.pem", site.issue("open.example").cert_pem(), site.ca.cert_pem()
        )
        readable.chmod(0o644)
        source = config.Source(path=str(top))
        root = os.geteuid() == 0
        found = _discover_as_nobody(source) if root else discovery.discover((source,))
        errors = {f.name: f.error for f in found}
        assert errors["open"] is None
        assert errors["secret"] is not None and "Permission denied" in errors["secret"]
    finally:
        for p in top.iterdir():
            p.chmod(0o644)
        for p in top.iterdir():
            p.unlink()
        top.rmdir()


def _discover_as_nobody(source: config.Source) -> list[Found]:
    """Root reads everything: look through the eyes of an unprivileged user instead."""
    data = _as_nobody(lambda: [[f.name, f.path, f.error] for f in discovery.discover((source,))])
    return [Found(name, path, error=error) for name, path, error in data]  # type: ignore[union-attr]


def _as_nobody(run: Callable[[], object]) -> object:
    """``run()`` in a child that is user nobody when we are root (root reads everything)."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            os.write(write, json.dumps(run()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_a_directory_that_cannot_be_listed_is_an_error_not_nothing(site: Site) -> None:
    """Permissions hide a directory of certificates: `once` and `status` say so."""
    top = Path(tempfile.mkdtemp(prefix="stapled-unlisted-"))
    locked = top / "certs" / "locked"
    try:
        top.chmod(0o755)
        locked.mkdir(parents=True)
        (top / "certs").chmod(0o755)
        testca.write(
            top / "certs" / "open.pem", site.issue("open.example").cert_pem(), site.ca.cert_pem()
        )
        testca.write(
            locked / "hidden.pem", site.issue("hidden.example").cert_pem(), site.ca.cert_pem()
        )
        locked.chmod(0)
        out = top / "out"
        out.mkdir(mode=0o755)
        if os.geteuid() == 0:
            os.chown(out, 65534, 65534)
        cfg = top / "stapled.toml"
        cfg.write_text(
            f'output_dir = "{out}"\ncertificates = ["{top / "certs"}"]\nnginx_snippets = true\n'
        )

        def run() -> object:
            import contextlib as _c
            import io

            err = io.StringIO()
            with _c.redirect_stderr(err), _c.redirect_stdout(io.StringIO()) as status:
                code = main(["once", "--config", str(cfg)])
                main(["status", "--json", "--config", str(cfg)])
            return [code, err.getvalue(), status.getvalue()]

        code, err, status_text = _as_nobody(run)  # type: ignore[misc]
        assert code == 2, err
        assert f"{locked}: cannot list the directory (Permission denied)" in err, err
        entries = {e["name"]: e for e in json.loads(status_text)["certificates"]}
        assert entries["open"]["status"] == "good"
        assert entries[str(locked)]["status"] == "error"
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
            "open.der",
            "open.nginx.conf",
        ]
    finally:
        locked.chmod(0o755)
        for p in sorted(top.rglob("*"), reverse=True):
            p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
        top.rmdir()
