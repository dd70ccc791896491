"""The probe against endpoints that misbehave: silent, not TLS, closing at once, or TLS
without a staple.  Every one gets a verdict and a reason, never an exception."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stapled.core import certs, ocsp
from stapled.core.verdicts import Verdict
from stapled.demo import ca as testca
from stapled.probes import Target, probe_target

Serve = Callable[[socket.socket], None]


@pytest.fixture
def endpoint() -> Iterator[Callable[[Serve], str]]:
    """A loopback listener whose connections ``serve`` handles, in a thread each."""
    listeners: list[socket.socket] = []

    def start(serve: Serve) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
        return f"127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for listener in listeners:
        listener.close()


def _silent(conn: socket.socket) -> None:
    conn.recv(65536)  # reads the ClientHello, answers nothing, until the client leaves
    conn.recv(65536)
    conn.close()


def _http(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    conn.close()


def _closing(conn: socket.socket) -> None:
    conn.close()


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("serve", "words"),
    [(_silent, "TLS handshake failed"), (_http, "TLS handshake failed"), (_closing, "")],
    ids=["silent", "plain-http", "closing"],
)
def test_an_endpoint_that_is_not_tls_is_unknown(
    endpoint: Callable[[Serve], str], serve: Serve, words: str
) -> None:
    target = endpoint(serve)
    probed = probe_target(
        Target(target, "x.example"), {}, datetime.now(UTC), timeout=0.5, connections=2
    )
    assert probed.judged.verdict is Verdict.UNKNOWN
    assert words in probed.judged.why and probed.line.startswith("UNKNOWN - ")


def test_tls_without_a_staple(endpoint: Callable[[Serve], str], tmp_path: Path) -> None:
    ca = testca.CA()
    leaf = ca.issue("t.example", ocsp_urls=["http://127.0.0.1:9/"])
    cert = testca.write(tmp_path / "cert.pem", leaf.cert_pem(), ca.cert_pem())
    key = testca.write(tmp_path / "key.pem", leaf.key_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def serve(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    target = endpoint(serve)
    chain = certs.build_chain([leaf.cert, ca.cert], "t.example")
    held = ocsp.validate(ca.sign_response(leaf.cert), chain, datetime.now(UTC))
    now = datetime.now(UTC)
    # stapled holds a valid staple the server does not send: the server was not told.
    warned = probe_target(
        Target(target, "t.example"), {chain.fingerprint: (chain, held)}, now, timeout=2
    )
    assert warned.judged.verdict is Verdict.WARNING and not warned.judged.present
    # Nothing held, nothing served: fine for a certificate without must-staple.
    fine = probe_target(
        Target(target, "t.example"), {chain.fingerprint: (chain, None)}, now, timeout=2
    )
    assert fine.judged.verdict is Verdict.OK, fine.judged
    # No configuration at all: nothing to compare with, and nothing served is fine too.
    alone = probe_target(Target(target, "t.example"), None, now, timeout=2)
    assert alone.judged.verdict is Verdict.OK, alone.judged
    # A certificate the configuration does not name: a renewal the server has not loaded.
    other = probe_target(Target(target, "t.example"), {}, now, timeout=2)
    assert other.judged.verdict is Verdict.WARNING and "does not manage" in other.judged.why
