"""HTTP for OCSP responders and caIssuers URLs: connections, redirects, proxies, TLS.

OCSP over HTTP is a narrow use of the protocol: one small GET or POST, one small answer,
usually over plain http, to a handful of responder hosts.  Every fetch runs as a task
on the caller's event loop, over connections kept alive per responder host, so a pass
of thousands of certificates needs no thread per fetch (docs/performance.md).  The
framing is h11's (:mod:`.http11`); what is ours is the pool, at most three redirects
(http and https only), proxies (:mod:`.proxy`), https verified against the same CA
bundle as requests, a size cap, and a deadline over the WHOLE fetch, which a responder
dripping a byte a second cannot stretch.

A blocking caller uses :meth:`Transport.request`, which runs the same code on an event
loop of its own.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from .. import __version__
from ..errors import FetchError
from .connection import Connection, Progress, in_words, open_connection
from .http11 import ClientConnection, ProtocolError, max_age, retry_after
from .proxy import Proxy, ProxyError, ca_bundle, proxy_for

# Apache keeps at most 10,239 bytes of a response; a real OCSP response is 1-3 KiB.
MAX_RESPONSE_SIZE = 64 * 1024
USER_AGENT = f"stapled/{__version__}"
_MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Spaces and control characters would split or smuggle a request line or header.
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")

_T = TypeVar("_T")
_Key = tuple[str, str, int, str]


@dataclass(frozen=True)
class Validators:
    """What a server said identifies the body it sent (ETag, Last-Modified): asked again
    with these, it may answer 304 Not Modified instead of sending it again."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Reply:
    """A successful HTTP exchange: the body and the caching hints that came with it.

    ``status`` is 200, or 304 (an empty body) when the request carried validators and
    the server says nothing changed."""

    url: str
    body: bytes
    content_type: str
    max_age: float | None = None
    retry_after: float | None = None
    status: int = 200
    validators: Validators = Validators()


class _Failed(Exception):
    """A failure of one exchange, in words; ``fetch`` turns it into a FetchError naming the URL."""

    def __init__(
        self, reason: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True)
class _Target:
    """Where one request goes: the server, the request line's target, and how."""

    scheme: str
    host: str
    port: int
    path: str  # origin-form ("/x?y"), or absolute-form through an http proxy
    host_header: str
    proxy: Proxy | None

    @property
    def key(self) -> _Key:
        """Connections are shared by requests with the same key."""
        return (self.scheme, self.host, self.port, self.proxy.url.geturl() if self.proxy else "")


class Transport:
    """Kept-alive connections per responder host; proxies from the environment.

    ``fetch`` is the coroutine a pass runs many of at once, inside :meth:`run`;
    ``request`` runs one for a blocking caller.
    """

    def __init__(
        self, timeout: float = 10.0, max_size: int = MAX_RESPONSE_SIZE, pool_size: int = 16
    ) -> None:
        self.timeout = timeout
        self.max_size = max_size
        self._pool_size = pool_size
        self._ca_bundle = ca_bundle()
        self._tls: ssl.SSLContext | None = None
        # Proxy settings are read once per responder scheme and host, not per request.
        self._proxies: dict[str, Proxy | None] = {}
        # Idle connections of each running event loop, closed when its run ends.
        self._idle: dict[asyncio.AbstractEventLoop, dict[_Key, list[Connection]]] = {}
        self._lock = threading.Lock()

    # ---- blocking callers -------------------------------------------------------------

    def get(self, url: str) -> Reply:
        return self.request("GET", url, None)

    def request(self, method: str, url: str, body: bytes | None) -> Reply:
        """Send one request; the 200 reply or FetchError naming ``url`` and the reason."""
        return self.run(self.fetch(method, url, body))

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` (fetches, and whatever else a pass does) on an event loop of its own.

        Connections are kept alive for the fetches of that run and closed at its end.
        """
        return run(self._scoped(coro))

    async def _scoped(self, coro: Coroutine[Any, Any, _T]) -> _T:
        try:
            return await coro
        finally:
            await self.close_idle()

    async def close_idle(self) -> None:
        """Close the kept-alive connections of the running event loop."""
        with self._lock:
            idle = self._idle.pop(asyncio.get_running_loop(), {})
        for conns in idle.values():
            for conn in conns:
                conn.abort()

    # ---- the exchange -----------------------------------------------------------------

    async def fetch(
        self,
        method: str,
        url: str,
        body: bytes | None,
        *,
        max_size: int | None = None,
        validators: Validators | None = None,
    ) -> Reply:
        """One request, redirects followed, within ``timeout`` from start to last byte.

        ``max_size`` replaces the transport's cap for this request (a CRL is larger than
        an OCSP response); with ``validators`` the request is conditional (If-None-Match,
        If-Modified-Since) and a 304 is a reply too.
        """
        progress = Progress()
        limit = max_size if max_size is not None else self.max_size
        try:
            async with asyncio.timeout(self.timeout):
                return await self._follow(method, url, body, progress, limit, validators)
        except TimeoutError:
            if not progress.connected:
                reason = f"cannot connect within {self.timeout:g} s"
            elif not progress.answered:
                reason = f"no answer within {self.timeout:g} s"
            else:
                reason = f"response not complete within {self.timeout:g} s"
            raise FetchError(url, reason) from None
        except _Failed as e:
            raise FetchError(url, e.reason, retry_after=e.retry_after, status=e.status) from None
        except ssl.SSLCertVerificationError as e:
            reason = f"TLS error (certificate verify failed: {e.verify_message})"
            raise FetchError(url, reason) from e
        except ssl.SSLError as e:
            raise FetchError(url, f"TLS error ({e.reason or e})") from e
        except OSError as e:
            raise FetchError(url, in_words(e, progress)) from e

    async def _follow(
        self,
        method: str,
        url: str,
        body: bytes | None,
        progress: Progress,
        limit: int,
        validators: Validators | None,
    ) -> Reply:
        target = url
        conditions = _conditions(validators)
        for _ in range(_MAX_REDIRECTS + 1):
            status, headers, data = await self._exchange(
                method, target, body, progress, limit, conditions
            )
            location = headers.get("location")
            if status in _REDIRECTS and location:
                try:
                    target = urljoin(target, location)
                    scheme = urlsplit(target).scheme.lower()
                except ValueError as e:
                    raise _Failed(f"redirected to an invalid URL ({e})") from None
                if scheme not in _DEFAULT_PORTS:
                    raise _Failed("redirected to a URL that is not http or https")
                # What browsers (and requests) do: 303, and 301/302 after a POST, go on
                # as a GET without the body.
                if status == 303 or (status in (301, 302) and body is not None):
                    method, body = "GET", None
                progress.answered = False
                continue
            wait = retry_after(headers.get("retry-after"))
            if status == 304 and validators is not None:
                # Nothing changed: what identified the body still does, unless renewed.
                data, kept = b"", validators
            elif status != 200:
                raise _Failed(f"HTTP {status}", retry_after=wait, status=status)
            else:
                kept = Validators()
            assert data is not None
            return Reply(
                url=url,
                body=data,
                content_type=headers.get("content-type", ""),
                max_age=max_age(headers.get("cache-control")),
                retry_after=wait,
                status=status,
                validators=Validators(
                    headers.get("etag") or kept.etag,
                    headers.get("last-modified") or kept.last_modified,
                ),
            )
        raise _Failed("too many redirects")

    async def _exchange(
        self,
        method: str,
        url: str,
        body: bytes | None,
        progress: Progress,
        limit: int,
        conditions: list[tuple[str, str]],
    ) -> tuple[int, dict[str, str], bytes | None]:
        """One request and its answer: status, headers, and the body of a 200."""
        target = self._target(url)
        loop = asyncio.get_running_loop()
        while True:
            conn = self._idle_connection(loop, target)
            if conn is None:
                conn = await self._connect(target)
            progress.connected = True
            answered = [False]
            try:
                headers = _headers(target, body) + conditions
                request = conn.http.request(method, target.path, headers, body)
                conn.writer.write(request)
                response = await conn.http.response(conn.reader, limit, answered=answered)
            except ProtocolError as e:
                conn.abort()  # whatever is left on it is not the next answer
                # A kept-alive connection the server has just closed: try a fresh one once.
                if conn.reused and not answered[0]:
                    continue
                raise _Failed(e.reason) from None
            except OSError:
                conn.abort()
                if conn.reused and not answered[0]:
                    continue
                raise
            except BaseException:
                conn.abort()
                raise
            finally:
                progress.answered = progress.answered or answered[0]
            if response.reusable:
                self._keep(loop, target, conn)
            else:
                conn.abort()
            return response.status, response.headers, response.body

    # ---- connections ------------------------------------------------------------------

    def _idle_connection(
        self, loop: asyncio.AbstractEventLoop, target: _Target
    ) -> Connection | None:
        with self._lock:
            idle = self._idle.get(loop, {}).get(target.key)
        while idle:
            conn = idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.abort()
        return None

    def _keep(self, loop: asyncio.AbstractEventLoop, target: _Target, conn: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(loop, {}).setdefault(target.key, [])
            if len(idle) < self._pool_size:
                idle.append(conn)
                return
        conn.abort()

    async def _connect(self, target: _Target) -> Connection:
        proxy = target.proxy
        if proxy is None:
            tls = self._context() if target.scheme == "https" else None
            return await open_connection(target.host, target.port, tls)
        host, port = proxy.url.hostname or "", proxy.url.port or _DEFAULT_PORTS[proxy.url.scheme]
        if proxy.url.scheme == "https" and target.scheme == "https":
            raise _Failed("https through an https proxy is not supported; use an http proxy")
        conn = await open_connection(
            host, port, self._context() if proxy.url.scheme == "https" else None
        )
        if target.scheme == "https":
            await self._tunnel(conn, target, proxy)
        return conn

    async def _tunnel(self, conn: Connection, target: _Target, proxy: Proxy) -> None:
        """CONNECT through the proxy, then TLS with the responder inside the tunnel."""
        authority = target.host_header if ":" in target.host_header else f"{target.host}:443"
        headers = [("Host", authority)]
        if proxy.authorization:
            headers.append(("Proxy-Authorization", proxy.authorization))
        try:
            conn.writer.write(conn.http.request("CONNECT", authority, headers, None))
            try:
                status = await conn.http.tunnel(conn.reader)
            except ProtocolError:
                status = 0
            if not 200 <= status < 300:
                shown = str(status) if status else "not HTTP"
                raise _Failed(f"the proxy {proxy.shown} refused the tunnel ({shown})")
            await conn.writer.start_tls(self._context(), server_hostname=target.host)
            conn.http = ClientConnection()  # HTTP starts afresh inside the tunnel
        except BaseException:
            conn.abort()
            raise

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            if Path(self._ca_bundle).is_dir():
                context = ssl.create_default_context(capath=self._ca_bundle)
            else:
                context = ssl.create_default_context(cafile=self._ca_bundle)
            context.set_alpn_protocols(["http/1.1"])
            self._tls = context
        return self._tls

    def _target(self, url: str) -> _Target:
        try:
            parts = urlsplit(url)
        except ValueError as e:
            raise _Failed(f"invalid URL ({e})") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise _Failed("not an http or https URL")
        try:
            host, port = parts.hostname or "", parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            raise _Failed("invalid port in the URL") from None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if not (host.isascii() and path.isascii()) or _UNSAFE.search(host + path):
            raise _Failed("invalid URL (spaces, control or non-ASCII characters)")
        if not host:
            raise _Failed("invalid URL (no host)")
        shown = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORTS[scheme]:
            shown += f":{port}"
        proxy = self._proxy(scheme, parts.netloc, url)
        if proxy is not None and scheme == "http":
            path = f"http://{shown}{path}"  # absolute-form, for the proxy to forward
        return _Target(scheme, host, port, path, shown, proxy)

    def _proxy(self, scheme: str, netloc: str, url: str) -> Proxy | None:
        key = f"{scheme}://{netloc}"
        with self._lock:
            if key in self._proxies:
                return self._proxies[key]
        try:
            proxy = proxy_for(url)
        except ProxyError as e:
            raise _Failed(e.reason) from None
        with self._lock:
            self._proxies[key] = proxy
        return proxy


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coro)``, with the result passed out through a box.

    asyncio.run's SIGINT handling may render the main task, result and all, with repr()
    as it ends; a pass's result holds every certificate, which made that a large, slow
    string.
    """
    box: list[_T] = []

    async def main() -> None:
        box.append(await coro)

    asyncio.run(main())
    return box[0]


def _headers(target: _Target, body: bytes | None) -> list[tuple[str, str]]:
    headers = [("Host", target.host_header), ("User-Agent", USER_AGENT), ("Accept", "*/*")]
    if target.proxy is not None and target.proxy.authorization and target.scheme == "http":
        headers.append(("Proxy-Authorization", target.proxy.authorization))
    if body is not None:
        headers.append(("Content-Type", "application/ocsp-request"))
    return headers


def _conditions(validators: Validators | None) -> list[tuple[str, str]]:
    """The headers of a conditional GET (RFC 9110 13.1); none without validators.

    Values that could not travel in a header (line breaks, control characters) are left
    out rather than sent: they came from a server, not from the operator.
    """
    if validators is None:
        return []
    found = [("If-None-Match", validators.etag), ("If-Modified-Since", validators.last_modified)]
    return [(k, v) for k, v in found if v and v.isprintable() and len(v) <= 1024]
