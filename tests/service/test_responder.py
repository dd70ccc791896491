"""The local caching OCSP responder, over real HTTP on loopback, with real staples."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as x509_ocsp

from stapled.core import certs, ocsp, request
from stapled.demo.ca import CA, Issued
from stapled.service.responder import MALFORMED_REQUEST, UNAUTHORIZED, Index, Responder

NOW = datetime.now(UTC).replace(microsecond=0)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class World:
    """Two certificates stapled manages (one with a staple, one without) and a stranger."""

    def __init__(self) -> None:
        self.ca = CA()
        self.served = self.ca.issue("served.example", ocsp_urls=["http://127.0.0.1:9/"])
        self.pending = self.ca.issue("pending.example", ocsp_urls=["http://127.0.0.1:9/"])
        self.stranger = self.ca.issue("stranger.example", ocsp_urls=["http://127.0.0.1:9/"])
        self.index = Index()
        chain = self.chain(self.served)
        self.staple = ocsp.validate(self.ca.sign_response(self.served.cert), chain, NOW)
        self.index.update("served", ocsp.cert_ids(chain), self.staple)
        self.index.update("pending", ocsp.cert_ids(self.chain(self.pending)), None)
        self.index.ready = True

    def chain(self, issued: Issued) -> certs.CertChain:
        return certs.build_chain([issued.cert, self.ca.cert], issued.cert.subject.rfc4514_string())

    def request(self, issued: Issued, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
        return request.build_request(self.chain(issued), algorithm)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(world: World, clock: Clock) -> Iterator[Responder]:
    responder = Responder("127.0.0.1", 0, world.index, clock, max_clients=8, request_timeout=1.0)
    responder.start()
    yield responder
    responder.stop()


def url(server: Responder) -> str:
    return f"http://127.0.0.1:{server.port}/"


def get(server: Responder, der: bytes) -> requests.Response:
    encoded = quote(base64.b64encode(der).decode(), safe="")
    return requests.get(url(server) + encoded, timeout=5)


def post(server: Responder, der: bytes) -> requests.Response:
    headers = {"Content-Type": "application/ocsp-request"}
    return requests.post(url(server), data=der, headers=headers, timeout=5)


def raw(server: Responder, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_get_and_post_serve_the_validated_response_byte_for_byte(
    server: Responder, world: World
) -> None:
    for reply in (
        get(server, world.request(world.served)),
        post(server, world.request(world.served)),
    ):
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/ocsp-response"
        assert reply.content == world.staple.der
        max_age = int(reply.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
        assert 0 < max_age <= (world.staple.next_update - NOW).total_seconds()


def test_a_base64_slash_is_found_whether_or_not_the_client_escaped_it(
    server: Responder, world: World
) -> None:
    # Issue certificates until one's request, in base64, holds a '/'.
    while True:
        issued = world.ca.issue("slash.example", ocsp_urls=["http://127.0.0.1:9/"])
        der = world.request(issued)
        encoded = base64.b64encode(der).decode()
        if "/" in encoded:
            break
    chain = world.chain(issued)
    staple = ocsp.validate(world.ca.sign_response(issued.cert), chain, NOW)
    world.index.update("slash", ocsp.cert_ids(chain), staple)
    for path in (encoded, quote(encoded, safe="")):
        reply = requests.get(url(server) + "ocsp/" + path, timeout=5)
        assert reply.content == staple.der


def test_apache_style_http10_post_with_connection_close(server: Responder, world: World) -> None:
    der = world.request(world.served)
    head = (
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\n"
        f"Content-Length: {len(der)}\r\nConnection: close\r\n\r\n"
    )
    response = raw(server, head.encode() + der)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in response
    assert response.endswith(world.staple.der)


def test_http11_keeps_the_connection_for_several_requests(server: Responder, world: World) -> None:
    der = world.request(world.served)
    one = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(der)}\r\n\r\n".encode() + der
    last = (
        f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(der)}\r\nConnection: close\r\n\r\n"
    ).encode() + der
    response = raw(server, one + one + last)
    assert response.count(b"HTTP/1.1 200 OK") == 3
    assert response.count(world.staple.der) == 3


def test_a_managed_certificate_without_a_valid_staple_gets_503(
    server: Responder, world: World
) -> None:
    reply = post(server, world.request(world.pending))
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "60"
    assert reply.content == b""


def test_a_staple_close_to_its_end_is_no_longer_served(
    server: Responder, world: World, clock: Clock
) -> None:
    clock.now = world.staple.next_update - timedelta(minutes=4)
    assert post(server, world.request(world.served)).status_code == 503


def test_a_sha256_question_is_not_answered_with_a_sha1_response(
    server: Responder, world: World
) -> None:
    reply = post(server, world.request(world.served, hashes.SHA256()))
    assert reply.status_code == 503


@pytest.mark.hostile
def test_a_stranger_is_unauthorized_and_never_forwarded(server: Responder, world: World) -> None:
    reply = post(server, world.request(world.stranger))
    assert reply.status_code == 200
    assert reply.content == UNAUTHORIZED
    status = x509_ocsp.load_der_ocsp_response(reply.content).response_status
    assert status is x509_ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_before_the_first_pass_everyone_is_told_to_try_again(
    server: Responder, world: World
) -> None:
    world.index.ready = False
    assert post(server, world.request(world.stranger)).status_code == 503


def test_a_forgotten_certificate_becomes_a_stranger(server: Responder, world: World) -> None:
    world.index.keep_only({"pending"})
    assert post(server, world.request(world.served)).content == UNAUTHORIZED
    assert len(world.index) == 0


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n", b"413"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),
    ],
    ids=[
        "method",
        "request-line",
        "body-too-large",
        "bad-length",
        "chunked",
        "huge-header",
        "header",
        "no-host",
    ],
)
def test_broken_http_gets_an_error_status(
    server: Responder, request_bytes: bytes, status: bytes
) -> None:
    response = raw(server, request_bytes)
    assert response.split(b" ")[1] == status


@pytest.mark.hostile
@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"\x30\x03\x0a\x01\x00"], ids=["empty", "garbage", "not-a-request"]
)
def test_not_an_ocsp_request_gets_malformed_request(server: Responder, body: bytes) -> None:
    reply = post(server, body)
    assert reply.status_code == 200
    assert reply.content == MALFORMED_REQUEST


@pytest.mark.hostile
def test_get_without_a_request_gets_malformed_request(server: Responder) -> None:
    assert requests.get(url(server), timeout=5).content == MALFORMED_REQUEST


@pytest.mark.hostile
def test_a_silent_client_is_dropped_and_others_are_still_served(
    server: Responder, world: World
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
        idle.sendall(b"POST / HTTP/1.1\r\n")  # and then nothing more
        assert post(server, world.request(world.served)).status_code == 200
        started = time.monotonic()
        assert idle.recv(100) == b""  # closed by the server after its request timeout
        assert time.monotonic() - started < 4


@pytest.mark.hostile
def test_at_max_clients_the_longest_waiting_connection_makes_room(
    world: World, clock: Clock
) -> None:
    responder = Responder("127.0.0.1", 0, world.index, clock, max_clients=2, request_timeout=5)
    responder.start()
    try:
        held = []
        for _ in range(2):
            held.append(socket.create_connection(("127.0.0.1", responder.port), timeout=5))
            deadline = time.monotonic() + 5
            while responder.clients < len(held) and time.monotonic() < deadline:
                time.sleep(0.01)
        reply = post(responder, world.request(world.served))
        assert reply.status_code == 200 and reply.content == world.staple.der
        assert held[0].recv(100) == b""  # the oldest idle connection was closed
        assert responder.evicted == 1
        for conn in held:
            conn.close()
    finally:
        responder.stop()


def test_stop_releases_the_port(world: World, clock: Clock) -> None:
    responder = Responder("127.0.0.1", 0, world.index, clock)
    responder.start()
    port = responder.port
    responder.stop()
    again = Responder("127.0.0.1", port, world.index, clock)
    again.start()
    again.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.hostile
def test_a_thousand_abusive_connections_leave_it_answering_with_bounded_resources(
    world: World, clock: Clock
) -> None:
    """Idle, half-sent, oversized and garbage connections, a thousand at once."""
    server = Responder("127.0.0.1", 0, world.index, clock)  # the default max_clients
    server.start()
    threads, rss = threading.active_count(), _rss_kib()
    abusers: list[socket.socket] = []
    try:
        for i in range(1000):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            kind = i % 4
            if kind == 1:
                conn.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n")  # body never sent
            elif kind == 2:
                conn.sendall(b"GET /" + b"A" * 2000)  # a request line that never ends
            elif kind == 3:
                conn.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
            abusers.append(conn)
        # The web server's own request still gets its answer (within the client timeout).
        reply = post(server, world.request(world.served))
        assert reply.status_code == 200 and reply.content == world.staple.der
        assert threading.active_count() == threads  # no thread per connection
        assert server.clients <= server.max_clients
        # A socket buffer and a task per connection at most: a few MiB, not more.
        assert _rss_kib() - rss < 64 * 1024
    finally:
        for conn in abusers:
            conn.close()
    try:
        assert post(server, world.request(world.served)).status_code == 200
    finally:
        server.stop()
