"""Asking a certificate's OCSP responders: each URL in turn, the first valid answer wins.

Every fetch runs on the caller's event loop (a pass's, or the daemon's one loop), so
kept-alive connections and the per-host limit are shared by all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from .core import ocsp, request, urls
from .core.certs import CertChain
from .core.model import Fetched
from .core.times import Clock
from .errors import CertificateError, FetchError, InvalidResponseError, OCSPStatusError
from .net.client import Reply

log = logging.getLogger("stapled")

_T = TypeVar("_T")
_R = TypeVar("_R")


class Exchange(Protocol):
    """One HTTP exchange: what :class:`Fetcher` needs of a client (a test may pass a fake)."""

    async def fetch(self, method: str, url: str, body: bytes | None) -> Reply: ...


class Fetcher:
    """``client=None`` means no network: every fetch says so."""

    def __init__(
        self,
        client: Exchange | None,
        *,
        hash_name: str,
        per_host: int,
        clock: Clock,
        timed: Callable[[str, float], None] | None = None,
    ) -> None:
        self.client = client
        # Told of every responder asked: (its host, seconds).
        self.timed = timed
        self.hash = request.hash_algorithm(hash_name)
        self.per_host = per_host
        self.clock = clock
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def fetch(self, chain: CertChain) -> Fetched:
        """Ask each responder in turn; the first valid answer, else all the errors.

        At most ``per_host`` requests are in flight to one responder host at a time.
        """
        if self.client is None:
            return Fetched(error="no network in this mode")
        try:
            der = request.build_request(chain, self.hash)
        except CertificateError as e:
            return Fetched(error=str(e))
        errors: list[str] = []
        retry_after: float | None = None
        for url in chain.ocsp_urls:
            http = request.http_request(url, der)
            started = time.monotonic()
            try:
                reply, staple = await self._exchange(url, http, der, chain)
            except (InvalidResponseError, OCSPStatusError) as e:
                errors.append(str(e.at(url)))
            except FetchError as e:
                # Name the responder, not the GET URL with the whole request in it.
                errors.append(f"{url}: {e.reason}" if e.url == http.url else str(e))
                if e.retry_after is not None:
                    retry_after = max(retry_after or 0.0, e.retry_after)
            else:
                self._timed(url, started)
                return Fetched(staple, url, max_age=reply.max_age)
            self._timed(url, started)
        return Fetched(error="; ".join(errors), retry_after=retry_after)

    async def _exchange(
        self, url: str, http: request.HTTPRequest, der: bytes, chain: CertChain
    ) -> tuple[Reply, ocsp.Staple]:
        try:
            reply = await self._ask(url, http.method, http.url, http.body)
            return reply, self._validate(url, reply, chain)
        except (FetchError, OCSPStatusError) as e:
            if http.method != "GET" or not _refuses_get(e):
                raise
            # Every responder must take POST (RFC 6960 A.1.1); some refuse GET.
            log.info("%s: GET refused (%s); asking again with POST", url, _why(e))
            reply = await self._ask(url, "POST", url, der)
            return reply, self._validate(url, reply, chain)

    def _timed(self, url: str, started: float) -> None:
        if self.timed is not None:
            self.timed(urls.host(url), time.monotonic() - started)

    async def _ask(self, url: str, method: str, target: str, body: bytes | None) -> Reply:
        assert self.client is not None
        async with self._limit(url):
            return await self.client.fetch(method, target, body)

    def _validate(self, url: str, reply: Reply, chain: CertChain) -> ocsp.Staple:
        if reply.content_type and reply.content_type != "application/ocsp-response":
            log.debug("%s: unexpected Content-Type %r", url, reply.content_type)
        return ocsp.validate(reply.body, chain, self.clock())

    def workers(self, chains: Iterable[CertChain], concurrency: int) -> int:
        """Tasks worth running for these fetches: no more than ``per_host`` lets run for
        their hosts (more would only wait for a host's turn)."""
        count = 0
        hosts: set[str] = set()
        for chain in chains:
            count += 1
            hosts.update(urls.host(url) for url in chain.ocsp_urls)
        return max(1, min(concurrency, count, self.per_host * max(1, len(hosts))))

    def _limit(self, url: str) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # semaphores belong to one loop
            self._loop, self._limits = loop, {}
        host = urls.host(url)
        if host not in self._limits:
            self._limits[host] = asyncio.Semaphore(self.per_host)
        return self._limits[host]


def _refuses_get(error: FetchError | OCSPStatusError) -> bool:
    """A GET answered with a client error (429 aside: that is "slow down") or with OCSP
    malformedRequest: the responder may well take the same request by POST."""
    if isinstance(error, OCSPStatusError):
        return error.status == "malformedRequest"
    return error.status is not None and 400 <= error.status < 500 and error.status != 429


def _why(error: FetchError | OCSPStatusError) -> str:
    return error.reason if isinstance(error, FetchError) else error.status


async def each(
    items: list[_T], job: Callable[[_T], Awaitable[_R]], workers: int
) -> AsyncIterator[tuple[_T, _R]]:
    """``job(item)`` for every item, ``workers`` at a time; results as they come.

    ``job`` must not raise: it turns its own failures into its result.
    """
    done: asyncio.Queue[tuple[_T, _R]] = asyncio.Queue()
    todo = iter(items)

    async def worker() -> None:
        for item in todo:
            done.put_nowait((item, await job(item)))

    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(workers, len(items))))]
    try:
        for _ in items:
            yield await done.get()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
