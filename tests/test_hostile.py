"""The hostile-input catalogue: a broken or lying responder, end to end.

For every case, against a real TCP server on loopback speaking (or not) HTTP, with real
signatures: the staple on disk stays byte-identical and valid, ``once`` ends within its
deadline with exit 1 and one line naming the URL and the reason, and never a traceback.
The daemon meets all of them in a row and keeps going (the last test).
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.x509 import ocsp as x509_ocsp

from stapled.core import certs, ocsp
from stapled.demo import ca as testca

from . import rawhttp
from .conftest import Site
from .daemonproc import DaemonProcess, wait_for
from .pki import CASES, World
from .rawhttp import Behaviour, RawServer

pytestmark = pytest.mark.hostile

TIMEOUT = 1.0
NOW = datetime.now(UTC)
OCSP = {"Content-Type": "application/ocsp-response"}


@dataclass(frozen=True)
class Case:
    behaviour: Callable[[World, Callable[[], bool], str], Behaviour]
    reason: str  # a fragment of the one-line error


def answer(make: Callable[[World], bytes], reason: str) -> Case:
    """A responder that answers HTTP 200 with the DER ``make`` builds."""
    return Case(lambda w, stop, url: rawhttp.respond("200 OK", OCSP, make(w)), reason)


def replay(w: World) -> bytes:
    # Still valid, but older than any staple on disk in these tests.
    return w.ca.sign_response(w.leaf.cert, this_update=NOW - timedelta(days=3, hours=1))


def reset(conn: socket.socket) -> None:
    # SO_LINGER 0: close() sends a TCP reset instead of an orderly FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def ten_megabytes(conn: socket.socket) -> None:
    size = 10 * 1024 * 1024
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
    chunk = b"\x00" * 65536
    for _ in range(size // len(chunk)):
        conn.sendall(chunk)


def undeclared_ten_megabytes(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n\r\n")
    chunk = b"\x30" * 65536
    for _ in range(160):
        conn.sendall(chunk)


# DER answers from the validation matrix that must never be published.
_REFUSED = {
    name: case
    for name, case in CASES.items()
    if case[1] not in ("good", "revoked") and name not in ("garbage", "empty", "html")
}

CATALOGUE: dict[str, Case] = {
    "garbage-bytes": answer(lambda w: b"\x13\x37" * 500, "not a DER OCSP response"),
    "empty-200": answer(lambda w: b"", "empty body"),
    "html-error-page": Case(
        lambda w, stop, url: rawhttp.respond(
            "200 OK", {"Content-Type": "text/html"}, b"<html><body>502 Bad Gateway</body></html>"
        ),
        "not a DER OCSP response",
    ),
    "http-404": Case(lambda w, stop, url: rawhttp.respond("404 Not Found", {}, b"no"), "HTTP 404"),
    "http-500": Case(lambda w, stop, url: rawhttp.respond("500 Oops", {}, b"oops"), "HTTP 500"),
    "connection-reset": Case(lambda w, stop, url: reset, "connection"),
    **{f"{name}": answer(case[0], case[1]) for name, case in _REFUSED.items()},
    "unknown-status": answer(
        lambda w: w.ca.sign_response(w.leaf.cert, status=x509_ocsp.OCSPCertStatus.UNKNOWN),
        "says the certificate is unknown",
    ),
    "replay-older-than-disk": answer(replay, "older than the staple on disk"),
    "ten-mb-declared": Case(lambda w, stop, url: ten_megabytes, "bytes exceeds 65536"),
    "ten-mb-undeclared": Case(lambda w, stop, url: undeclared_ten_megabytes, "larger than"),
    "drip-one-byte-a-second": Case(
        lambda w, stop, url: rawhttp.drip(stop, delay=1.0), f"within {TIMEOUT:g} s"
    ),
    "endless-chunked-stream": Case(
        lambda w, stop, url: rawhttp.endless_chunks(stop), "larger than"
    ),
    "redirect-loop": Case(
        lambda w, stop, url: rawhttp.respond("302 Found", {"Location": url}), "redirect"
    ),
    "redirect-to-another-scheme": Case(
        lambda w, stop, url: rawhttp.respond("302 Found", {"Location": "file:///etc/passwd"}),
        "redirect",
    ),
}


class TLSServer:
    """An https responder whose certificate no client should trust (self-signed)."""

    def __init__(self) -> None:
        self.ca = testca.CA("self-signed https responder")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def load(self, tmp: Path) -> None:
        issued = self.ca.issue("127.0.0.1")
        cert = testca.write(tmp / "https.pem", issued.cert_pem())
        key = testca.write(tmp / "https-key.pem", issued.key_pem())
        self.context.load_cert_chain(cert, key)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
            except (OSError, ssl.SSLError):
                pass  # the client refuses our certificate, as it must

    def close(self) -> None:
        self.sock.close()


def _configure(site: Site, url: str) -> None:
    site.config(certificates=f'[{{ path = "{site.certs}", ocsp_url = "{url}" }}]', timeout=TIMEOUT)


@pytest.fixture
def world(site: Site) -> World:
    """The validation matrix's world, its leaf issued by the site's CA and on disk."""
    w = World(ca=site.ca)
    testca.write(site.certs / "h.example.pem", w.leaf.cert_pem(), site.ca.cert_pem())
    return w


@pytest.fixture
def stapled_before(site: Site, world: World) -> bytes:
    """A valid staple fetched from the honest responder before the hostile one answers."""
    _configure(site, site.responder.url)
    assert site.once() == 0
    staple = site.staple("h.example")
    assert staple is not None
    return staple


def _check_kept(site: Site, world: World, before: bytes) -> None:
    assert site.staple("h.example") == before, "the valid staple on disk was replaced"
    chain = certs.build_chain([world.leaf.cert, site.ca.cert], "h.example")
    ocsp.validate(before, chain, datetime.now(UTC))  # still valid


def _check_reported(err: str, url: str, reason: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if url.rstrip("/") in line]
    assert lines, f"no line names {url}:\n{err}"
    assert any(reason in line for line in lines), f"no line says {reason!r}:\n{err}"


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_a_hostile_responder_never_costs_the_valid_staple(
    site: Site,
    world: World,
    stapled_before: bytes,
    name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = CATALOGUE[name]
    server = RawServer(lambda conn: None)
    server.behaviour = case.behaviour(world, server.stopped, server.url)
    with server:
        _configure(site, server.url)
        capsys.readouterr()
        started = time.monotonic()
        code = site.once("--force")
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1, err
    # Bounded by the fetch deadline, not by how long the server would go on.
    assert elapsed < TIMEOUT + 10, f"took {elapsed:.1f} s"
    _check_kept(site, world, stapled_before)
    _check_reported(err, server.url, case.reason)


def test_an_https_responder_with_an_untrusted_certificate(
    site: Site,
    world: World,
    stapled_before: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = TLSServer()
    server.load(tmp_path)
    try:
        _configure(site, server.url)
        capsys.readouterr()
        assert site.once("--force") == 1
    finally:
        server.close()
    _check_kept(site, world, stapled_before)
    _check_reported(capsys.readouterr().err, server.url, "certificate")


def test_the_daemon_meets_every_hostile_answer_in_a_row_and_keeps_going(
    site: Site, world: World, daemon: Callable[..., DaemonProcess]
) -> None:
    # A valid staple past its refresh point: the daemon wants a new one at once.
    site.out.mkdir()
    old = site.ca.sign_response(world.leaf.cert, this_update=NOW - timedelta(days=3))
    (site.out / "h.example.der").write_bytes(old)
    cases = sorted(CATALOGUE)
    seen: list[str] = []
    server = RawServer(lambda conn: None)
    behaviours = {
        name: CATALOGUE[name].behaviour(world, server.stopped, server.url) for name in cases
    }

    def cycle(conn: socket.socket) -> None:
        name = cases[len(seen) % len(cases)]
        seen.append(name)
        behaviours[name](conn)

    server.behaviour = cycle
    with server:
        site.config(
            "retry_min = 0.05\nretry_max = 0.1\nmin_refresh_interval = 1\n",
            certificates=f'[{{ path = "{site.certs}", ocsp_url = "{server.url}" }}]',
            timeout=TIMEOUT,
        )
        d = daemon()
        # Redirect loops come back for more on the same server: count distinct cases.
        wait_for("every hostile case", lambda: set(cases) <= set(seen), timeout=90)
        assert d.proc.poll() is None, d.output()
        assert site.staple("h.example") == old
        state = json.loads((site.out / ".stapled" / "state.json").read_text())
        entry = state["certificates"]["h.example"]
        assert entry["last_error"] and entry["next_retry"]
        assert d.stop() == 0
    assert "Traceback" not in d.output()
