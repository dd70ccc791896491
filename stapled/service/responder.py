"""The local caching OCSP responder: validated staples over HTTP, on loopback only.

Apache (``SSLStaplingForceURL``) and nginx (``ssl_stapling_responder``, the only way to
staple for an RSA and an ECDSA certificate in one server block) fetch staples lazily
from a URL.  Pointed here, they get the responses stapled has already fetched and
validated, at once, even when the CA's responder is down or the server just restarted.

It answers only from :class:`Index` and never forwards a request anywhere:

* a certificate with a valid staple: 200 and the CA's response, byte for byte;
* a certificate stapled manages but holds no valid staple for: 503 with Retry-After
  (Apache then staples nothing rather than an error);
* a certificate it does not know: an OCSP ``unauthorized`` response (RFC 6960 2.3);
* something that is not an OCSP request: ``malformedRequest``; broken HTTP: 400.

One asyncio loop in one thread serves every connection: a thousand idle or slow clients
cost a socket each, not a thread.  Requests are small and bounded, and every request must
arrive whole within a deadline.  At ``max_clients`` connections, a new one pushes out the
connection that has been waiting longest for its request: slow or idle clients cannot
lock out the web server, whose requests arrive at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from ..config import Config
from ..core.ocsp import CertID, Staple
from ..core.request import parse_request
from ..core.times import Clock
from ..errors import ConfigError, InvalidRequestError
from ..net.http11 import ProtocolError, ServerConnection

log = logging.getLogger("stapled.responder")

# An OCSP request for one certificate is about 100 bytes; anything near this is abuse.
MAX_BODY = 16 * 1024
# A request must arrive whole within this; an idle kept-alive connection is closed then.
REQUEST_TIMEOUT = 10.0
RETRY_AFTER = 60
# Connections the kernel queues before they are accepted; asyncio's default of 100
# dropped SYNs (second-long stalls) at a few hundred clients arriving at once.
BACKLOG = 1024
# Tails of a GET path tried as the request; a real one has a handful of '/'.
MAX_SEGMENTS = 32
# RFC 6960 section 4.2.1: unsigned OCSPResponse with only a responseStatus.
MALFORMED_REQUEST = bytes.fromhex("3003 0a01 01")
UNAUTHORIZED = bytes.fromhex("3003 0a01 06")
OCSP_RESPONSE = "application/ocsp-response"


class Index:
    """The responses the responder may hand out, by the CertIDs clients ask with.

    The daemon updates it after every refresh; requests read it from another thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # False until the daemon's first pass has filled it: until then every request is
        # told to try again, rather than "unauthorized" for a certificate not loaded yet.
        self.ready = False
        self._owner: dict[CertID, str] = {}
        self._ids: dict[str, frozenset[CertID]] = {}
        self._staples: dict[str, Staple] = {}

    def update(self, fingerprint: str, ids: frozenset[CertID], staple: Staple | None) -> None:
        """What stapled now holds for one certificate (``staple=None``: nothing valid)."""
        with self._lock:
            self._forget(fingerprint)
            self._ids[fingerprint] = ids
            for cert_id in ids:
                self._owner[cert_id] = fingerprint
            if staple is not None:
                self._staples[fingerprint] = staple

    def keep_only(self, fingerprints: set[str]) -> None:
        """Forget certificates stapled no longer manages."""
        with self._lock:
            for fingerprint in set(self._ids) - fingerprints:
                self._forget(fingerprint)

    def _forget(self, fingerprint: str) -> None:
        for cert_id in self._ids.pop(fingerprint, ()):
            self._owner.pop(cert_id, None)
        self._staples.pop(fingerprint, None)

    def lookup(self, cert_id: CertID, now: datetime) -> Staple | bool:
        """The staple to serve; else True for a known certificate, False for a stranger."""
        with self._lock:
            fingerprint = self._owner.get(cert_id)
            if fingerprint is None:
                return not self.ready
            staple = self._staples.get(fingerprint)
        # The response must answer the very CertID asked (a SHA-256 question is not
        # answered by a SHA-1 response) and still be fit to staple.
        if staple is None or staple.cert_id != cert_id or not staple.valid_at(now):
            return True
        return staple

    def __len__(self) -> int:
        with self._lock:
            return len(self._staples)


@dataclass(frozen=True)
class Answer:
    """An answer of the responder's, before HTTP framing."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


class Responder:
    """An HTTP OCSP responder serving ``index`` on ``host:port``, in a thread of its own."""

    def __init__(
        self,
        host: str,
        port: int,
        index: Index,
        clock: Clock,
        *,
        max_clients: int = 256,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.index = index
        self.clock = clock
        self.max_clients = max_clients
        self.request_timeout = request_timeout
        self.served = 0
        self.evicted = 0
        # Connections waiting for their next request, and since when (loop time).
        self._waiting: dict[asyncio.StreamWriter, float] = {}
        # Connections served and not yet closed or pushed out: what max_clients bounds.
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def clients(self) -> int:
        return len(self._open)

    def start(self) -> None:
        """Serve in a thread of its own, listening before this returns.  Raises OSError
        when the address is unusable.  Safe to call from a running event loop (a reload):
        the listening socket is opened on the responder's own loop, in its thread."""
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="responder", daemon=True
        )
        self._thread.start()
        listening = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(
                self._connection, self.host, self.port, reuse_address=True, backlog=BACKLOG
            ),
            self._loop,
        )
        try:
            self._server = listening.result()
        except OSError:
            self.stop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("local OCSP responder listening on http://%s:%d/", self.host, self.port)

    def stop(self) -> None:
        if self._thread is None:
            self._loop.close()
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Connections still open are cut; their handlers then end by themselves.
            for writer in list(self._open):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:
                await asyncio.wait(tasks, timeout=2)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._thread = None

    # ---- HTTP -------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        http = ServerConnection()
        if self.clients >= self.max_clients and not self._evict_oldest_waiting():
            await self._send(writer, http, _busy(), close=True)
            await _close(writer)
            return
        self._open.add(writer)
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._waiting[writer] = loop.time()
                try:
                    request = await asyncio.wait_for(
                        http.request(reader, MAX_BODY), self.request_timeout
                    )
                except ProtocolError as e:
                    writer.write(http.error(e))
                    await self._drain(writer)
                    break
                except (TimeoutError, ConnectionError):
                    break
                finally:
                    self._waiting.pop(writer, None)
                if request is None:
                    break
                reply = self.answer(request.method, request.target, request.body)
                close = request.headers.get("connection", "").lower() == "close"
                if not await self._send(writer, http, reply, close=close):
                    break
                if not http.next_cycle():
                    break
        finally:
            self._open.discard(writer)
            await _close(writer)

    def _evict_oldest_waiting(self) -> bool:
        """Close the connection that has waited longest for a request; False if none waits."""
        if not self._waiting:
            return False
        oldest = min(self._waiting, key=self._waiting.__getitem__)
        del self._waiting[oldest]
        # Counted out now: its handler ends only on a later turn of the loop, and a burst
        # of new connections must not find the room still taken.
        self._open.discard(oldest)
        # Its handler sees the end of the stream and finishes as for any closed client.
        oldest.transport.abort()
        self.evicted += 1
        return True

    async def _send(
        self, writer: asyncio.StreamWriter, http: ServerConnection, answer: Answer, *, close: bool
    ) -> bool:
        headers = [*answer.headers.items(), ("Server", "stapled")]
        data = http.response(answer.status, headers, answer.body, close=close)
        if not data:
            return False
        writer.write(data)
        return await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> bool:
        try:
            await asyncio.wait_for(writer.drain(), self.request_timeout)
        except (TimeoutError, ConnectionError):
            return False
        return True

    def answer(self, method: str, target: str, body: bytes) -> Answer:
        """The reply to one HTTP request (no I/O: the protocol part is above)."""
        if method == "POST":
            candidates = [body]
        elif method == "GET":
            candidates = _from_path(target)
        else:
            return Answer(405, {"Allow": "GET, POST"})
        cert_id = _first_request(candidates)
        if cert_id is None:
            log.debug("%s %s: not an OCSP request", method, target[:80])
            return _ocsp(MALFORMED_REQUEST)
        now = self.clock()
        found = self.index.lookup(cert_id, now)
        if found is False:
            log.debug("asked about serial %X, which stapled does not manage", cert_id.serial)
            return _ocsp(UNAUTHORIZED)
        if found is True:
            log.info("asked about serial %X, for which no valid staple is held", cert_id.serial)
            return Answer(503, {"Retry-After": str(RETRY_AFTER), "Cache-Control": "no-store"})
        assert isinstance(found, Staple)
        self.served += 1
        return _ocsp(found.der, _caching(found, now))


def _from_path(target: str) -> list[bytes]:
    """What may be the DER request in a GET URL: base64 after the responder's own path.

    Clients differ in escaping the '/' that base64 may contain (RFC 6960 A.1), and a
    path such as "/ocsp" is valid base64 itself, so every tail of the path that decodes
    is a candidate, longest first.
    """
    path = target.split("?", 1)[0]
    segments = path.split("/")
    candidates = []
    for start in range(1, min(len(segments), MAX_SEGMENTS)):
        encoded = unquote("/".join(segments[start:]))
        try:
            der = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if der:
            candidates.append(der)
    return candidates


def _first_request(candidates: list[bytes]) -> CertID | None:
    for der in candidates:
        try:
            return parse_request(der)
        except InvalidRequestError:
            continue
    return None


def _caching(staple: Staple, now: datetime) -> dict[str, str]:
    """RFC 5019 section 6.2 headers: cacheable until nextUpdate, and no longer."""
    max_age = max(0, int((staple.next_update - now).total_seconds()))
    return {
        "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
        "Last-Modified": email.utils.format_datetime(staple.this_update, usegmt=True),
        "Expires": email.utils.format_datetime(staple.next_update, usegmt=True),
        "ETag": '"' + hashlib.sha256(staple.der).hexdigest()[:32] + '"',
    }


def _ocsp(body: bytes, headers: dict[str, str] | None = None) -> Answer:
    return Answer(200, {"Content-Type": OCSP_RESPONSE, **(headers or {})}, body)


def _busy() -> Answer:
    return Answer(503, {"Retry-After": "1"})


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


def start_responder(config: Config, index: Index, clock: Clock) -> Responder | None:
    """The local responder of ``config``, listening; ConfigError when it cannot."""
    settings = config.responder
    if settings is None:
        return None
    responder = Responder(
        settings.host, settings.port, index, clock, max_clients=settings.max_clients
    )
    try:
        responder.start()
    except OSError as e:
        responder.stop()
        raise ConfigError(
            str(config.path),
            f"cannot listen on {settings.host}:{settings.port} ({e.strerror or e})",
            "responder.listen",
        ) from e
    return responder


def next_responder(
    old: Config, new: Config, running: Responder | None, index: Index, clock: Clock
) -> Responder | None:
    """The responder for a re-read configuration: the running one when its address is
    unchanged (its settings are the caller's to apply once the whole configuration is
    taken), else a new one (ConfigError when it cannot listen)."""
    before, wanted = old.responder, new.responder
    if (
        running is not None
        and before is not None
        and wanted is not None
        and (before.host, before.port) == (wanted.host, wanted.port)
    ):
        return running
    return start_responder(new, index, clock)
