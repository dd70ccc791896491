"""Shared fixtures: a real CA, a real loopback responder, a directory per test."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from stapled.cli import main
from stapled.demo import ca as testca

from .daemonproc import DaemonProcess

if TYPE_CHECKING:
    from .redisproc import RedisServer

# CI sets this: a test that needs a real binary must then fail rather than skip.
REQUIRE_SERVERS = os.environ.get("STAPLED_REQUIRE_SERVERS") == "1"

# Property tests: bounded in the normal suite; STAPLED_FUZZ=1 (benchmarks/fuzz) runs long.
settings.register_profile("suite", max_examples=200, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile("fuzz" if os.environ.get("STAPLED_FUZZ") == "1" else "suite")

# The hostile-input catalogue (tests marked `hostile`): how many held, shown at the end.
_hostile = {"held": 0, "total": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "hostile" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _hostile["total"] += 1
        _hostile["held"] += int(report.passed)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _hostile["total"]:
        terminalreporter.write_line(
            f"hostile cases held: {_hostile['held']}/{_hostile['total']}", bold=True
        )


# Every WARNING and above in these suites names its subject (docs/operations.md: "one
# line naming the file, URL or key"): a certificate's name leading the line ("NAME: ..."),
# a path, a URL, HOST:PORT, a configuration key, a quoted command, or a domain name.
_SUBJECT_SUITES = (
    "tests/test_hostile.py",
    "tests/test_faults.py",
    "tests/webservers/test_probe.py",
    "tests/observe/test_probe_edges.py",
)
SUBJECT = re.compile(r"^[\w.@-]+: |/|\b[\w.-]+:\d+\b|key '|'[^']+'|\b[\w-]+\.[\w.-]*\w\b")


@pytest.fixture(autouse=True)
def _lines_name_their_subject(request: pytest.FixtureRequest) -> Iterator[None]:
    if not str(request.node.path).endswith(_SUBJECT_SUITES):
        yield
        return
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            seen.append(record)
        return True

    logger = logging.getLogger("stapled")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
    nameless = [r.getMessage() for r in seen if not SUBJECT.search(r.getMessage())]
    assert not nameless, f"log lines that name no subject: {nameless}"


def require_binary(name: str) -> str:
    """The path of ``name``; skips (fails in CI) with the reason when it is missing."""
    path = shutil.which(name)
    if path is None:
        reason = f"'{name}' is not installed"
        if REQUIRE_SERVERS:
            pytest.fail(reason + " and STAPLED_REQUIRE_SERVERS=1")
        pytest.skip(reason)
    return path


@pytest.fixture
def ca() -> testca.CA:
    return testca.CA()


@pytest.fixture
def responder(ca: testca.CA) -> Iterator[testca.ResponderServer]:
    with testca.ResponderServer(ca) as server:
        yield server


class Site:
    """A directory of certificates, a config for it, and the staples stapled writes."""

    def __init__(self, root: Path, ca: testca.CA, responder: testca.ResponderServer) -> None:
        self.root = root
        self.ca = ca
        self.responder = responder
        self.certs = root / "certs"
        self.certs.mkdir()
        self.out = root / "staples"
        self.config_path = root / "stapled.toml"

    def issue(self, name: str, **kw: object) -> testca.Issued:
        kw.setdefault("ocsp_urls", [self.responder.url])
        return self.ca.issue(name, **kw)  # type: ignore[arg-type]

    def bundle(self, name: str, issued: testca.Issued, *extra: bytes, chain: bool = True) -> Path:
        parts = [issued.cert_pem()] + ([self.ca.cert_pem()] if chain else []) + list(extra)
        return testca.write(self.certs / f"{name}.pem", *parts)

    def lineage(self, name: str, issued: testca.Issued, version: int = 1) -> Path:
        """A certbot lineage: live/NAME/*.pem symlinks into archive/NAME/*N.pem."""
        archive = self.certs / "letsencrypt" / "archive" / name
        live = self.certs / "letsencrypt" / "live" / name
        testca.write(archive / f"cert{version}.pem", issued.cert_pem())
        testca.write(archive / f"chain{version}.pem", self.ca.cert_pem())
        testca.write(archive / f"fullchain{version}.pem", issued.cert_pem(), self.ca.cert_pem())
        testca.write(archive / f"privkey{version}.pem", issued.key_pem())
        live.mkdir(parents=True, exist_ok=True)
        for kind in ("cert", "chain", "fullchain", "privkey"):
            link = live / f"{kind}.pem"
            if link.is_symlink():
                link.unlink()
            link.symlink_to(f"../../archive/{name}/{kind}{version}.pem")
        return live

    def config(self, extra: str = "", certificates: str | None = None, timeout: float = 5) -> Path:
        sources = certificates if certificates is not None else f'["{self.certs}"]'
        self.config_path.write_text(
            f'output_dir = "{self.out}"\ncertificates = {sources}\ntimeout = {timeout}\n{extra}\n'
        )
        return self.config_path

    def once(self, *args: str) -> int:
        if not self.config_path.exists():
            self.config()
        return main(["once", "--config", str(self.config_path), *args])

    def staple(self, name: str) -> bytes | None:
        path = self.out / f"{name}.der"
        return path.read_bytes() if path.exists() else None


@pytest.fixture
def site(tmp_path: Path, ca: testca.CA, responder: testca.ResponderServer) -> Site:
    return Site(tmp_path, ca, responder)


@pytest.fixture
def daemon(site: Site) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(env: dict[str, str] | None = None) -> DaemonProcess:
        d = DaemonProcess(site, env)
        started.append(d)
        d.wait_ready()
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        d.sock.close()  # closing twice is harmless; left open it warns in a later test


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    from .redisproc import RedisServer  # it needs require_binary from here

    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.client.close()
