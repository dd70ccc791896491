"""HTTP for OCSP responders and caIssuers URLs (requests), bounded in time and size.

The deadline covers the WHOLE fetch: connecting, waiting, headers and body.  requests'
own timeout applies to each socket operation, and urllib3 keeps reading until a chunk is
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
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection

from . import __version__
from .errors import FetchError

# Apache keeps at most 10,239 bytes of a response; a real OCSP response is 1-3 KiB.
MAX_RESPONSE_SIZE = 64 * 1024
USER_AGENT = f"stapled/{__version__}"
_CHUNK = 4096
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


class _Adapter(requests.adapters.HTTPAdapter):
    """Makes every connection (direct or through a proxy) one of the armed kind."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


class Transport:
    """One ``requests.Session`` (connection reuse), proxies taken from the environment."""

    def __init__(
        self, timeout: float = 10.0, max_size: int = MAX_RESPONSE_SIZE, pool_size: int = 16
    ) -> None:
        self.timeout = timeout
        self.max_size = max_size
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.max_redirects = _MAX_REDIRECTS
        # requests reads the proxy variables (and netrc) again for every request; at
        # thousands of requests that is a good part of the CPU a pass costs.  They are
        # read once per responder host instead, with the same rules.
        self.session.trust_env = False
        self.session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._proxies: dict[str, dict[str, str]] = {}
        adapter = _Adapter(pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def get(self, url: str) -> Reply:
        return self.request("GET", url, None)

    def request(self, method: str, url: str, body: bytes | None) -> Reply:
        """Send one request; the 200 reply or FetchError naming ``url`` and the reason."""
        deadline = time.monotonic() + self.timeout
        _fetch.deadline, _fetch.tokens = deadline, []
        try:
            return self._request(method, url, body, deadline)
        except FetchError:
            raise
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as e:
            if time.monotonic() >= deadline:
                raise FetchError(url, f"response not complete within {self.timeout:g} s") from e
            raise FetchError(url, f"reading the response failed ({_first_line(e)})") from e
        finally:
            for token in _fetch.tokens:
                _watchdog.disarm(token)
            _fetch.deadline, _fetch.timers = None, []

    def _request(self, method: str, url: str, body: bytes | None, deadline: float) -> Reply:
        headers = {"Content-Type": "application/ocsp-request"} if body is not None else {}
        try:
            response = self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                stream=True,
                timeout=(self.timeout, self.timeout),
                proxies=self._proxies_for(url),
            )
        except requests.exceptions.TooManyRedirects as e:
            raise FetchError(url, "too many redirects") from e
        except requests.exceptions.SSLError as e:
            raise FetchError(url, f"TLS error ({_first_line(e)})") from e
        except requests.exceptions.InvalidSchema as e:
            raise FetchError(url, "redirected to a URL that is not http or https") from e
        except requests.exceptions.Timeout as e:
            raise FetchError(url, f"no answer within {self.timeout:g} s") from e
        except requests.exceptions.ConnectionError as e:
            if time.monotonic() >= deadline:
                raise FetchError(url, f"response not complete within {self.timeout:g} s") from e
            raise FetchError(url, _connection_failure(e)) from e
        except requests.exceptions.RequestException as e:
            raise FetchError(url, f"request failed ({_first_line(e)})") from e
        with response:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            if response.status_code != 200:
                raise FetchError(url, f"HTTP {response.status_code}", retry_after=retry_after)
            data = self._read(response, url, deadline)
            return Reply(
                url=url,
                body=data,
                content_type=response.headers.get("Content-Type", ""),
                max_age=_max_age(response.headers.get("Cache-Control")),
                retry_after=retry_after,
            )

    def _proxies_for(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._proxies:
            self._proxies[key] = requests.utils.get_environ_proxies(url)
        return self._proxies[key]

    def _read(self, response: requests.Response, url: str, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_size:
            raise FetchError(url, f"response of {declared} bytes exceeds {self.max_size}")
        parts: list[bytes] = []
        size = 0
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > self.max_size:
                raise FetchError(url, f"response larger than {self.max_size} bytes")
            parts.append(chunk)
        if time.monotonic() > deadline:
            raise FetchError(url, f"response not complete within {self.timeout:g} s")
        return b"".join(parts)


def _connection_failure(error: Exception) -> str:
    """What went wrong with the connection, in words, from the errors requests wraps."""
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
