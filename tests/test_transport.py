"""HTTP against misbehaving peers: every fetch ends, bounded in time and size."""

from __future__ import annotations

import pytest

from stapled.errors import FetchError
from stapled.transport import USER_AGENT, Transport

from . import rawhttp

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
    assert Transport().session.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("stapled/")
