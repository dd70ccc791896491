"""HTTP against misbehaving peers: every fetch ends, bounded in time and size."""

from __future__ import annotations

import base64
import os
import selectors
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from stapled.demo import ca as testca
from stapled.errors import FetchError
from stapled.net.client import USER_AGENT, Transport

from .. import rawhttp

pytestmark = pytest.mark.hostile


def test_a_dripping_body_hits_the_whole_fetch_deadline() -> None:
    server = rawhttp.RawServer.until_stopped(rawhttp.drip)
    with server, pytest.raises(FetchError, match="not complete within 1 s"):
        Transport(timeout=1).get(server.url)


def test_dripping_headers_hit_the_whole_fetch_deadline() -> None:
    server = rawhttp.RawServer.until_stopped(rawhttp.drip_headers)
    with server, pytest.raises(FetchError, match="not complete within 1 s"):
        Transport(timeout=1).get(server.url)


def test_an_endless_chunked_stream_hits_the_size_cap() -> None:
    server = rawhttp.RawServer.until_stopped(rawhttp.endless_chunks)
    with server, pytest.raises(FetchError, match="larger than 65536 bytes"):
        Transport(timeout=5).get(server.url)


def test_a_declared_huge_body_is_refused_before_reading() -> None:
    huge = rawhttp.respond("200 OK", {"Content-Length": "10485760"})
    with rawhttp.RawServer(huge) as server, pytest.raises(FetchError, match="exceeds"):
        Transport(timeout=5).get(server.url)


def test_http_errors_carry_retry_after() -> None:
    busy = rawhttp.respond("503 Service Unavailable", {"Retry-After": "120"})
    with rawhttp.RawServer(busy) as server, pytest.raises(FetchError) as err:
        Transport(timeout=5).get(server.url)
    assert "HTTP 503" in str(err.value) and server.url in str(err.value)
    assert err.value.retry_after == 120


def test_redirect_loop_ends() -> None:
    server = rawhttp.RawServer(lambda c: None)
    server.behaviour = rawhttp.respond("302 Found", {"Location": server.url})
    with server, pytest.raises(FetchError, match="too many redirects"):
        Transport(timeout=5).get(server.url)


def test_redirect_to_another_scheme_is_refused() -> None:
    ftp = rawhttp.respond("302 Found", {"Location": "ftp://127.0.0.1/x"})
    with rawhttp.RawServer(ftp) as server, pytest.raises(FetchError, match="not http"):
        Transport(timeout=5).get(server.url)


def test_connection_refused_names_the_url() -> None:
    with pytest.raises(FetchError, match=r"http://127\.0\.0\.1:9/: connection refused"):
        Transport(timeout=2).get("http://127.0.0.1:9/")


def test_reply_carries_caching_hints() -> None:
    ok = rawhttp.respond(
        "200 OK",
        {"Content-Type": "application/ocsp-response", "Cache-Control": "public, max-age=3600"},
        b"body",
    )
    with rawhttp.RawServer(ok) as server:
        reply = Transport(timeout=5).get(server.url)
    assert reply.body == b"body"
    assert reply.max_age == 3600
    assert reply.content_type == "application/ocsp-response"


def test_user_agent_names_stapled() -> None:
    with rawhttp.RawServer(rawhttp.respond("200 OK", {}, b"x")) as server:
        Transport(timeout=5).request("POST", server.url, b"request")
    head = server.received[0].decode()
    assert f"\r\nUser-Agent: {USER_AGENT}\r\n" in head
    assert "\r\nContent-Type: application/ocsp-request\r\n" in head
    assert USER_AGENT.startswith("stapled/")


def test_a_post_redirected_by_303_goes_on_as_get() -> None:
    ok = rawhttp.respond("200 OK", {}, b"answer")
    with rawhttp.RawServer(ok) as target:
        moved = rawhttp.respond("303 See Other", {"Location": target.url + "there"})
        with rawhttp.RawServer(moved) as server:
            reply = Transport(timeout=5).request("POST", server.url, b"request")
    assert reply.body == b"answer"
    assert target.received[0].startswith(b"GET /there HTTP/1.1")


def test_a_redirect_with_a_body_does_not_spoil_the_next_request() -> None:
    """A redirect's unread body must not be left on a connection that is used again."""
    server = rawhttp.RawServer(lambda conn: None)

    def moved_then_answered(conn: socket.socket) -> None:
        request = server.received[-1]
        while request:
            if request.startswith(b"GET /there "):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
            else:
                conn.sendall(
                    b"HTTP/1.1 302 Found\r\nLocation: /there\r\n"
                    b"Content-Length: 14\r\n\r\nmoved, see /th"
                )
            request = conn.recv(65536)

    server.behaviour = moved_then_answered
    with server:
        assert Transport(timeout=5).get(server.url).body == b"final"


def test_http_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    ok = rawhttp.respond("200 OK", {}, b"via proxy")
    with rawhttp.RawServer(ok) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        reply = Transport(timeout=5).get("http://ocsp.example.invalid/abc")
    assert reply.body == b"via proxy"
    assert proxy.received[0].startswith(b"GET http://ocsp.example.invalid/abc HTTP/1.1")


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "localhost,127.0.0.0/24"])
def test_no_proxy_goes_direct(monkeypatch: pytest.MonkeyPatch, no_proxy: str) -> None:
    with (
        rawhttp.RawServer(rawhttp.respond("200 OK", {}, b"proxy")) as proxy,
        rawhttp.RawServer(rawhttp.respond("200 OK", {}, b"direct")) as server,
    ):
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("no_proxy", no_proxy)
        assert Transport(timeout=5).get(server.url).body == b"direct"
    assert proxy.received == []


def test_without_proxy_variables_requests_is_not_imported() -> None:
    script = (
        "import sys\n"
        "from stapled.net.client import Transport\n"
        "from stapled.errors import FetchError\n"
        "try:\n"
        "    Transport(timeout=2).get('http://127.0.0.1:9/')\n"
        "except FetchError:\n"
        "    pass\n"
        "print('requests' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_a_chunked_body_is_put_together() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    with rawhttp.RawServer(lambda conn: conn.sendall(chunked)) as server:
        assert Transport(timeout=5).get(server.url).body == b"hello world"


def test_a_body_ended_by_closing_the_connection() -> None:
    old = b"HTTP/1.0 200 OK\nContent-Type: application/ocsp-response\n\nuntil the end"
    with rawhttp.RawServer(lambda conn: conn.sendall(old)) as server:
        reply = Transport(timeout=5).get(server.url)
    assert reply.body == b"until the end"
    assert reply.content_type == "application/ocsp-response"


def test_an_interim_answer_is_skipped() -> None:
    answers = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with rawhttp.RawServer(lambda conn: conn.sendall(answers)) as server:
        assert Transport(timeout=5).request("POST", server.url, b"x").body == b"ok"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not valid HTTP/1.1 \\(illegal status line: 'SSH-2.0"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            "conflicting Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "illegal chunk header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "before the response was complete"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "header lines"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20000 + b"\r\n\r\n", "header is longer"),
        (b"", "closed the connection without answering"),
    ],
)
def test_a_malformed_answer_is_refused_in_words(answer: bytes, reason: str) -> None:
    server = rawhttp.RawServer(lambda conn: conn.sendall(answer))
    with server, pytest.raises(FetchError, match=reason) as err:
        Transport(timeout=5).get(server.url)
    assert str(err.value).startswith(server.url)


def test_a_url_with_a_space_is_refused_before_sending() -> None:
    server = rawhttp.RawServer(rawhttp.respond("200 OK", {}, b"x"))
    with server, pytest.raises(FetchError, match="invalid URL"):
        Transport(timeout=5).get(server.url + "a b")
    assert server.received == []


def test_kept_alive_connections_are_used_again_and_a_stale_one_is_replaced() -> None:
    """A server may close an idle connection just as the next request goes out on it."""
    server = rawhttp.RawServer(lambda conn: None)
    connections = []

    def answer_once_then_hang_up(conn: socket.socket) -> None:
        connections.append(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.recv(65536)  # the next request on this connection: closed without an answer

    server.behaviour = answer_once_then_hang_up
    transport = Transport(timeout=5)

    async def three() -> list[bytes]:
        return [(await transport.fetch("GET", server.url, None)).body for _ in range(3)]

    with server:
        assert transport.run(three()) == [b"ok", b"ok", b"ok"]
    assert len(connections) == 3  # each later request retried once, on a fresh connection
    assert all(r.startswith(b"GET / HTTP/1.1") for r in server.received)


def test_a_proxy_url_with_credentials_sends_them(monkeypatch: pytest.MonkeyPatch) -> None:
    ok = rawhttp.respond("200 OK", {}, b"via proxy")
    with rawhttp.RawServer(ok) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url.replace("http://", "http://us%40er:pa%3Ass@"))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert Transport(timeout=5).get("http://ocsp.example.invalid/a").body == b"via proxy"
    expected = base64.b64encode(b"us@er:pa:ss").decode()
    assert f"\r\nProxy-Authorization: Basic {expected}\r\n" in proxy.received[0].decode()


def _tunnel(conn: socket.socket, request: bytes) -> None:
    """A CONNECT proxy: open the tunnel the request asks for, then relay both ways."""
    authority = request.split(b" ")[1].decode()
    host, port = authority.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as upstream:
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        selector = selectors.DefaultSelector()
        selector.register(conn, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, conn)
        while True:
            for key, _ in selector.select(timeout=5):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https server on loopback with a certificate from a CA of its own: (URL, CA file)."""
    ca = testca.CA("https test CA")
    issued = ca.issue("localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        testca.write(tmp_path / "tls.pem", issued.cert_pem()),
        testca.write(tmp_path / "tls-key.pem", issued.key_pem()),
    )
    httpd = HTTPServer(("127.0.0.1", 0), _Hello)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield (
            f"https://localhost:{httpd.server_address[1]}/",
            testca.write(tmp_path / "ca.pem", ca.cert_pem()),
        )
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_is_verified_against_the_default_bundle(https_url: tuple[str, Path]) -> None:
    url, _ = https_url
    with pytest.raises(FetchError, match=r"TLS error .*certificate verify failed"):
        Transport(timeout=5).get(url)


def test_https_through_a_proxy_tunnel(
    https_url: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file = https_url
    proxy = rawhttp.RawServer(lambda conn: None)
    proxy.behaviour = lambda conn: _tunnel(conn, proxy.received[-1])
    with proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert Transport(timeout=5).get(url).body == b"hello"
    port = url.rsplit(":", 1)[1].strip("/")
    assert proxy.received[0].startswith(f"CONNECT localhost:{port} HTTP/1.1".encode())


def test_a_proxy_refusing_the_tunnel_is_named(
    https_url: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = https_url
    refuse = rawhttp.respond("403 Forbidden", {})
    with rawhttp.RawServer(refuse) as proxy:
        monkeypatch.setenv("https_proxy", proxy.url.replace("http://", "http://user:secret@"))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        with pytest.raises(FetchError, match="refused the tunnel") as err:
            Transport(timeout=5).get(url)
    assert "secret" not in str(err.value)


def test_requests_ca_bundle_is_honoured(
    https_url: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file = https_url
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    assert Transport(timeout=5).get(url).body == b"hello"
