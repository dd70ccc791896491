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
import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


# The deadline of the fetch running on this thread, and the timers armed for it.
_fetch = threading.local()


def _arm(sock: socket.socket | None) -> None:
    """Shut ``sock`` down when the current fetch's deadline passes."""
    deadline = getattr(_fetch, "deadline", None)
    if sock is None or deadline is None:
        return
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shutdown, (sock,))
    timer.daemon = True
    timer.start()
    _fetch.timers.append(timer)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


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

    def __init__(self, timeout: float = 10.0, max_size: int = MAX_RESPONSE_SIZE) -> None:
        self.timeout = timeout
        self.max_size = max_size
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.max_redirects = _MAX_REDIRECTS
        adapter = _Adapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def get(self, url: str) -> Reply:
        return self.request("GET", url, None)

    def request(self, method: str, url: str, body: bytes | None) -> Reply:
        """Send one request; the 200 reply or FetchError naming ``url`` and the reason."""
        deadline = time.monotonic() + self.timeout
        _fetch.deadline, _fetch.timers = deadline, []
        try:
            return self._request(method, url, body, deadline)
        except FetchError:
            raise
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as e:
            if time.monotonic() >= deadline:
                raise FetchError(url, f"response not complete within {self.timeout:g} s") from e
            raise FetchError(url, f"reading the response failed ({_first_line(e)})") from e
        finally:
            for timer in _fetch.timers:
                timer.cancel()
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
