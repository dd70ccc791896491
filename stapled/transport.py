"""HTTP for OCSP responders and caIssuers URLs (urllib3), bounded in time and size.

The deadline covers the WHOLE fetch: connecting, waiting, headers and body.  urllib3's
own timeout applies to each socket operation, and it keeps reading until a chunk is
full, so a responder dripping one byte a second would hold a fetch for hours.  Here each
connection's socket is armed with a timer that shuts it down at the fetch's deadline,
which ends any read in progress, whatever phase it is in.
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import http.client
import itertools
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests.utils
import urllib3
import urllib3.connection
import urllib3.exceptions

from . import __version__
from .errors import FetchError

# Apache keeps at most 10,239 bytes of a response; a real OCSP response is 1-3 KiB.
MAX_RESPONSE_SIZE = 64 * 1024
USER_AGENT = f"stapled/{__version__}"
_MAX_REDIRECTS = 3


@dataclass(frozen=True)
class Reply:
    """A successful HTTP exchange: the body and the caching hints that came with it."""

    url: str
    body: bytes
    content_type: str
    max_age: float | None = None
    retry_after: float | None = None


# The deadline of the fetch running on this thread, and the sockets armed for it.
_fetch = threading.local()


class _Watchdog:
    """One thread that shuts sockets down when their fetch's deadline passes.

    urllib3 fills each read before returning, so a responder dripping a byte a second
    never trips a read timeout; only shutting the socket down ends such a fetch.  One
    thread and a heap serve every fetch (a timer thread per fetch cost more than the
    fetch itself at thousands of certificates).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._live: set[int] = set()
        self._count = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, deadline: float) -> int:
        with self._wake:
            token = next(self._count)
            heapq.heappush(self._heap, (deadline, token, sock))
            self._live.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-deadlines")
                self._thread.daemon = True
                self._thread.start()
            if self._heap[0][1] == token:
                self._wake.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._wake:
            self._live.discard(token)

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._wake.wait()
                    continue
                deadline, token, sock = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(token)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


def _arm(sock: socket.socket | None) -> None:
    """Shut ``sock`` down when the current fetch's deadline passes."""
    deadline = getattr(_fetch, "deadline", None)
    if sock is None or deadline is None:
        return
    _fetch.tokens.append(_watchdog.arm(sock, deadline))


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _arm(self.sock)  # armed after sending, before the first byte of the answer is read
        return super().getresponse(*args, **kwargs)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _arm(self.sock)
        return super().getresponse(*args, **kwargs)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_ARMED_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}
_REDIRECTS = (301, 302, 303, 307, 308)
# A failure of the connection itself, as urllib3 raises it with retries off.
_CONNECTION_ERRORS = (
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.NameResolutionError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ProxyError,
    ConnectionError,
)


class Transport:
    """Pooled keep-alive connections per responder host; proxies from the environment.

    Requests go through urllib3, the engine requests is built on, without requests'
    Session layer: that layer (settings merged, cookies, hooks, redirects and a Response
    per call) cost 0.4 ms of CPU per fetch, half of what a whole certificate may cost at
    ten thousand certificates.  What it did that matters here is done below: redirects
    (at most three, http and https only), proxies and NO_PROXY read the way requests
    reads them, and the same CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, or certifi's).
    """

    def __init__(
        self, timeout: float = 10.0, max_size: int = MAX_RESPONSE_SIZE, pool_size: int = 16
    ) -> None:
        self.timeout = timeout
        self.max_size = max_size
        self.headers = {"User-Agent": USER_AGENT}
        self._pool_size = pool_size
        self._ca_certs = (
            os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
            or requests.utils.DEFAULT_CA_BUNDLE_PATH
        )
        self._direct = self._manager(None)
        self._by_proxy: dict[str, urllib3.PoolManager] = {}
        # Proxy settings are read once per responder scheme and host, not per request.
        self._routes: dict[str, urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    def _manager(self, proxy: str | None) -> urllib3.PoolManager:
        kw: dict[str, Any] = {
            "num_pools": 64,
            "maxsize": self._pool_size,
            "headers": self.headers,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": self._ca_certs,
            "retries": False,
            "timeout": urllib3.Timeout(connect=self.timeout, read=self.timeout),
        }
        manager = urllib3.ProxyManager(proxy, **kw) if proxy else urllib3.PoolManager(**kw)
        # Every connection, direct or through a proxy, is armed for the fetch deadline.
        manager.pool_classes_by_scheme = _ARMED_POOLS
        return manager

    def close(self) -> None:
        with self._lock:
            managers = [self._direct, *self._by_proxy.values()]
        for manager in managers:
            manager.clear()

    def get(self, url: str) -> Reply:
        return self.request("GET", url, None)

    def request(self, method: str, url: str, body: bytes | None) -> Reply:
        """Send one request; the 200 reply or FetchError naming ``url`` and the reason."""
        deadline = time.monotonic() + self.timeout
        _fetch.deadline, _fetch.tokens = deadline, []
        try:
            return self._follow(method, url, body, deadline)
        except FetchError:
            raise
        except urllib3.exceptions.SSLError as e:
            raise FetchError(url, f"TLS error ({_first_line(e)})") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if time.monotonic() >= deadline:
                raise FetchError(url, f"response not complete within {self.timeout:g} s") from e
            # NewConnectionError is also a timeout error to urllib3, for old callers' sake.
            if isinstance(e, _CONNECTION_ERRORS):
                raise FetchError(url, _connection_failure(e)) from e
            if isinstance(e, urllib3.exceptions.TimeoutError):
                raise FetchError(url, f"no answer within {self.timeout:g} s") from e
            raise FetchError(url, f"request failed ({_first_line(e)})") from e
        finally:
            for token in _fetch.tokens:
                _watchdog.disarm(token)
            _fetch.deadline, _fetch.tokens = None, []

    def _follow(self, method: str, url: str, body: bytes | None, deadline: float) -> Reply:
        """The exchange with ``url``, following at most three redirects."""
        target = url
        for _ in range(_MAX_REDIRECTS + 1):
            scheme = urlsplit(target).scheme.lower()
            if scheme not in ("http", "https"):
                raise FetchError(url, "redirected to a URL that is not http or https")
            headers = dict(self.headers)  # given per request, urllib3 ignores the defaults
            if body is not None:
                headers["Content-Type"] = "application/ocsp-request"
            response = self._route(target).urlopen(
                method,
                target,
                body=body,
                headers=headers,
                redirect=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                location = response.headers.get("Location")
                if response.status in _REDIRECTS and location:
                    # Its body is not read: the connection is not used again.
                    response.close()
                    target = urljoin(target, location)
                    # What browsers (and requests) do: 303, and 301/302 after a POST, go
                    # on as a GET without the body.
                    if response.status == 303 or (response.status in (301, 302) and body):
                        method, body = "GET", None
                    continue
                return self._reply(response, url, deadline)
            except BaseException:
                response.close()  # whatever is left on it is not the next answer
                raise
            finally:
                response.release_conn()
        raise FetchError(url, "too many redirects")

    def _reply(self, response: urllib3.BaseHTTPResponse, url: str, deadline: float) -> Reply:
        """The 200 reply read whole, or FetchError (``_follow`` then closes the connection)."""
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if response.status != 200:
            raise FetchError(url, f"HTTP {response.status}", retry_after=retry_after)
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_size:
            raise FetchError(url, f"response of {declared} bytes exceeds {self.max_size}")
        data = response.read(self.max_size + 1)
        if len(data) > self.max_size:
            raise FetchError(url, f"response larger than {self.max_size} bytes")
        if time.monotonic() > deadline:
            raise FetchError(url, f"response not complete within {self.timeout:g} s")
        return Reply(
            url=url,
            body=data,
            content_type=response.headers.get("Content-Type", ""),
            max_age=_max_age(response.headers.get("Cache-Control")),
            retry_after=retry_after,
        )

    def _route(self, url: str) -> urllib3.PoolManager:
        """Direct, or through the proxy the environment names for this URL."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            if key not in self._routes:
                proxies = requests.utils.get_environ_proxies(url)
                proxy = requests.utils.select_proxy(url, proxies)
                if proxy and proxy not in self._by_proxy:
                    self._by_proxy[proxy] = self._manager(proxy)
                self._routes[key] = self._by_proxy[proxy] if proxy else self._direct
            return self._routes[key]


def _connection_failure(error: Exception) -> str:
    """What went wrong with the connection, in words, from the errors urllib3 wraps."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo and len(seen) < 20:
        current = todo.pop()
        seen.append(current)
        todo += [a for a in current.args if isinstance(a, BaseException)]
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    kinds = {type(e) for e in seen}
    if ConnectionRefusedError in kinds:
        return "connection refused"
    if ConnectionResetError in kinds:
        return "the connection was reset by the responder"
    if any(issubclass(k, socket.gaierror) for k in kinds):
        return "cannot resolve the host name"
    if http.client.RemoteDisconnected in kinds:
        return "the responder closed the connection without answering"
    return f"cannot connect ({_first_line(error)})"


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    # urllib3 wraps reasons in long reprs; the innermost message is the useful part.
    inner = re.findall(r"\] ([^'\]\)]+)", text) or re.findall(r": ([^:'()]+)'?\)+$", text)
    return (inner[-1] if inner else text.splitlines()[0])[:200]


def _max_age(value: str | None) -> float | None:
    if not value:
        return None
    match = re.search(r"(?:^|,)\s*max-age\s*=\s*(\d+)", value, re.IGNORECASE)
    return float(match.group(1)) if match else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
