"""HTTP/1.1 framing for both ends stapled speaks: the client asking OCSP responders, and
the local responder answering web servers.  The only module that imports h11.

h11 parses and frames (status and request lines, header syntax, Content-Length,
chunked and close-delimited bodies, keep-alive); what it leaves to the caller is here:
reading from an asyncio stream, bounds on the head and the body, and one error type per
end whose words name what was wrong.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus

import h11

# A response or request head larger than this is refused (h11's own bound, and ours).
MAX_HEAD = 16 * 1024
MAX_HEADER_FIELDS = 100
_READ = 64 * 1024


class ProtocolError(Exception):
    """The peer broke HTTP/1.1; ``status`` is the HTTP status a server answers with."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class SizeError(ProtocolError):
    """A body larger than the caller's bound."""


def _fields(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header fields by lower-case name, repeats joined with ", " (RFC 9110 5.3)."""
    fields: dict[str, str] = {}
    size = 0
    for count, (raw_name, raw_value) in enumerate(headers, 1):
        if count > MAX_HEADER_FIELDS:
            raise ProtocolError(f"more than {MAX_HEADER_FIELDS} header lines", 431)
        size += len(raw_name) + len(raw_value) + 4
        # latin-1 maps every byte: a value is text to look at, never an exception.
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    if size > MAX_HEAD:
        raise ProtocolError(f"the header is longer than {MAX_HEAD} bytes", 431)
    return fields


def _words(error: h11.RemoteProtocolError) -> str:
    text = re.sub(r"bytearray\(b(['\"])(.*?)\1\)", r"\1\2\1", str(error))
    return text if len(text) <= 100 else text[:97] + "..."


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    # The body of a 200; None for any other status (its connection is not used again).
    body: bytes | None
    # The connection may carry the next request.
    reusable: bool


class ClientConnection:
    """One client connection's HTTP state: requests out, responses in, then the next."""

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)

    def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> bytes:
        """The bytes of one request.  Raises ProtocolError for what HTTP cannot carry."""
        if body is not None:
            headers = [*headers, ("Content-Length", str(len(body)))]
        try:
            data = self._h11.send(h11.Request(method=method, target=target, headers=headers))
            if body:
                data = (data or b"") + (self._h11.send(h11.Data(data=body)) or b"")
            end = self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as e:
            raise ProtocolError(f"cannot send this request ({e})") from None
        return (data or b"") + (end or b"")

    async def response(
        self, reader: asyncio.StreamReader, max_size: int, *, answered: list[bool]
    ) -> Response:
        """Read one response (after interim 1xx ones).  Only a 200's body is read.

        ``answered[0]`` is set once any byte has arrived (for the words of a timeout).
        Raises ProtocolError (SizeError past ``max_size``) and OSError.
        """
        while True:
            event = await self._next(reader, answered)
            if isinstance(event, h11.Response):
                break
        headers = _fields(event.headers)
        if event.status_code != 200:
            return Response(event.status_code, headers, None, reusable=False)
        length = headers.get("content-length")
        if length is not None and int(length.split(",")[0]) > max_size:
            raise SizeError(f"response of {length} bytes exceeds {max_size}")
        body = bytearray()
        while True:
            event = await self._next(reader, answered)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_size:
                    raise SizeError(f"response larger than {max_size} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
        reusable = self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
        if reusable:
            self._h11.start_next_cycle()
        return Response(200, headers, bytes(body), reusable=reusable)

    async def tunnel(self, reader: asyncio.StreamReader) -> int:
        """The status of the answer to a CONNECT request (2xx: the tunnel is open)."""
        answered = [False]
        while not isinstance(event := await self._next(reader, answered), h11.Response):
            pass
        if self._h11.trailing_data[0]:
            raise ProtocolError("the proxy sent bytes before the tunnel was set up")
        return event.status_code

    async def _next(self, reader: asyncio.StreamReader, answered: list[bool]) -> h11.Event:
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as e:
                if not answered[0]:
                    reason = "the responder closed the connection without answering"
                    raise ProtocolError(reason) from None
                if "without sending complete message body" in str(e):
                    raise ProtocolError(
                        "the connection closed before the response was complete"
                    ) from None
                raise ProtocolError(f"the answer is not valid HTTP/1.1 ({_words(e)})") from None
            if event is h11.NEED_DATA:
                data = await reader.read(_READ)
                answered[0] = answered[0] or bool(data)
                self._h11.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise ProtocolError("the connection closed before the response was complete")
            assert isinstance(event, h11.Event)
            return event


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class ServerConnection:
    """One server connection's HTTP state: requests in, responses out, then the next."""

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        # Bytes received towards the current request's head.
        self._head = 0

    async def request(self, reader: asyncio.StreamReader, max_body: int) -> Request | None:
        """The next request; None when the client closed the connection cleanly.

        Raises ProtocolError with the status to answer (400, 411, 413, 431).
        """
        head = await self._next(reader)
        if isinstance(head, h11.ConnectionClosed):
            return None
        if not isinstance(head, h11.Request):
            raise ProtocolError("Bad Request")
        headers = _fields(head.headers)
        if "transfer-encoding" in headers:
            raise ProtocolError("Length Required", 411)
        if int(headers.get("content-length", "0").split(",")[0]) > max_body:
            raise ProtocolError("Content Too Large", 413)
        body = bytearray()
        while not isinstance(event := await self._next(reader), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                body += event.data
            else:
                raise ProtocolError("Bad Request")
        return Request(_text(head.method), _text(head.target), headers, bytes(body))

    def response(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool
    ) -> bytes:
        """The bytes of one response (with Content-Length; ``Connection: close`` if ``close``).

        Empty when HTTP allows no response now (the connection then just closes).
        """
        fields = [*headers, ("Content-Length", str(len(body)))]
        if close:
            fields.append(("Connection", "close"))
        reason = HTTPStatus(status).phrase.encode()
        try:
            data = self._h11.send(h11.Response(status_code=status, headers=fields, reason=reason))
            if body:
                data = (data or b"") + (self._h11.send(h11.Data(data=body)) or b"")
            return (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return b""

    def error(self, error: ProtocolError) -> bytes:
        """The plain-text answer to a broken request; the connection then closes."""
        body = f"{error.reason}\n".encode()
        return self.response(error.status, [("Content-Type", "text/plain")], body, close=True)

    def next_cycle(self) -> bool:
        """Ready for the connection's next request; False when it must close."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._head = 0
            return True
        return False

    async def _next(self, reader: asyncio.StreamReader) -> h11.Event:
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint
                reason = {431: "Request Header Fields Too Large"}.get(status, "Bad Request")
                raise ProtocolError(reason, status) from None
            if event is h11.NEED_DATA:
                data = await reader.read(_READ)
                if self._h11.their_state is h11.IDLE:
                    self._head += len(data)
                    if self._head > MAX_HEAD:
                        raise ProtocolError("Request Header Fields Too Large", 431)
                self._h11.receive_data(data)
                continue
            assert isinstance(event, h11.Event)
            return event


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def max_age(value: str | None) -> float | None:
    """Seconds from a Cache-Control value's max-age (RFC 9111 5.2.2.1); None without one."""
    if not value:
        return None
    match = re.search(r"(?:^|,)\s*max-age\s*=\s*([0-9]{1,10})\s*(?:,|$)", value, re.IGNORECASE)
    return float(match.group(1)) if match else None


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After value (RFC 9110 10.2.3); None for anything else."""
    if not value:
        return None
    if re.fullmatch(r"\s*[0-9]{1,10}\s*", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
