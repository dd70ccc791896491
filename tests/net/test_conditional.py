"""Conditional GETs and a larger cap per request, for CRLs: a real loopback HTTP server
that sends ETag and Last-Modified and answers 304 when nothing changed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stapled.errors import FetchError
from stapled.net.client import MAX_RESPONSE_SIZE, Reply, Transport, Validators

BODY = bytes(range(256)) * 8192  # 2 MiB: far past an OCSP response's cap
ETAG = '"v1"'
MODIFIED = "Sun, 06 Dec 2026 12:00:00 GMT"


class _Server:
    def __init__(self, *, etag: bool = True) -> None:
        seen: list[dict[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                if self.path.endswith("?always-304"):
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if etag and self.headers.get("If-None-Match") == ETAG:
                    self.send_response(304)
                    self.send_header("ETag", ETAG)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if not etag and self.headers.get("If-Modified-Since") == MODIFIED:
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if etag:
                    self.send_header("ETag", ETAG)
                self.send_header("Last-Modified", MODIFIED)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/shard.crl"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.stop()


def _get(transport: Transport, url: str, **kw: object) -> Reply:
    return transport.run(transport.fetch("GET", url, None, **kw))  # type: ignore[arg-type]


def test_a_larger_cap_for_one_request_and_the_default_for_the_rest(server: _Server) -> None:
    transport = Transport(timeout=10)
    reply = _get(transport, server.url, max_size=32 * 1024 * 1024)
    assert reply.status == 200 and reply.body == BODY
    assert reply.validators == Validators(ETAG, MODIFIED)
    with pytest.raises(FetchError, match=str(MAX_RESPONSE_SIZE)):
        _get(transport, server.url)


def test_asked_again_with_its_validators_nothing_is_sent_again(server: _Server) -> None:
    transport = Transport(timeout=10)
    first = _get(transport, server.url, max_size=32 * 1024 * 1024)
    again = _get(transport, server.url, max_size=32 * 1024 * 1024, validators=first.validators)
    assert again.status == 304 and again.body == b""
    assert again.validators == Validators(ETAG, MODIFIED)
    assert server.seen[1]["if-none-match"] == ETAG
    assert server.seen[1]["if-modified-since"] == MODIFIED
    assert "if-none-match" not in server.seen[0]


def test_last_modified_alone_is_enough() -> None:
    server = _Server(etag=False)
    try:
        transport = Transport(timeout=10)
        first = _get(transport, server.url, max_size=32 * 1024 * 1024)
        assert first.validators == Validators(None, MODIFIED)
        again = _get(transport, server.url, max_size=32 * 1024 * 1024, validators=first.validators)
        assert again.status == 304
    finally:
        server.stop()


def test_a_304_without_asking_is_an_error(server: _Server) -> None:
    """A server answering 304 to an unconditional request sent nothing usable."""
    with pytest.raises(FetchError, match="HTTP 304"):
        _get(Transport(timeout=10), server.url + "?always-304")


def test_a_validator_that_cannot_travel_in_a_header_is_not_sent(server: _Server) -> None:
    sent = Validators('"other"\r\nX-Injected: 1', None)
    reply = _get(Transport(timeout=10), server.url, max_size=32 * 1024 * 1024, validators=sent)
    assert reply.status == 200 and reply.body == BODY
    assert "x-injected" not in server.seen[-1] and "if-none-match" not in server.seen[-1]
