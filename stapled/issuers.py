"""Issuer certificates a chain lacks, from the certificate's AIA caIssuers URLs.

A bundle or a configured ``issuer`` file is used by discovery; this is the fallback for
a certificate file that holds only the leaf.  What is fetched is kept in a disk cache
(``status`` finds it without network) and must have signed the leaf: caIssuers is plain
HTTP, so the signature decides, not copied names or key identifiers.  A failure is
remembered for a while, so one broken URL is not fetched for each of many certificates,
and then asked again, waiting twice as long after each failure in a row (up to an hour).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .core import certs
from .core.certs import CertChain
from .core.plan import NO_ISSUER
from .core.times import Clock
from .errors import CertificateError, StapledError, StoreError
from .files import store
from .net.client import Transport

# How long a failed fetch is remembered before the URL is asked again: this, doubled
# for each failure in a row, up to RETRY_MAX.
RETRY_AFTER = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=1)


class Issuers:
    def __init__(
        self,
        cache_dir: Path,
        transport: Transport | None,
        clock: Clock,
        retry_after: timedelta = RETRY_AFTER,
    ) -> None:
        self.cache_dir = cache_dir
        self.transport = transport
        self.clock = clock
        self.retry_after = retry_after
        self._known: dict[str, x509.Certificate] = {}
        # URL -> (why, when, failures in a row)
        self._failed: dict[str, tuple[str, datetime, int]] = {}
        self._running: dict[str, asyncio.Task[x509.Certificate | str]] = {}

    def known(self, chain: CertChain) -> CertChain:
        """``chain`` with its issuer from what is already held; no network.

        Raises CertificateError when the issuer is not held (yet).
        """
        if chain.issuer is not None:
            return chain
        for url in _urls(chain):
            self._held(url)
        return self._pick(chain)

    async def fetch(self, chain: CertChain) -> CertChain:
        """``chain`` with its issuer, fetched where it is not held.

        Raises CertificateError naming each URL and what went wrong with it.
        """
        if chain.issuer is not None:
            return chain
        for url in _urls(chain):
            if self._held(url) is not None:
                await self._fetch(url)
        return self._pick(chain)

    def _pick(self, chain: CertChain) -> CertChain:
        reasons = []
        for url in _urls(chain):
            issuer = self._known.get(url)
            if issuer is None:
                failed = self._failed.get(url)
                reasons.append(failed[0] if failed else f"{url}: not fetched yet")
            elif certs.issued_by(chain.leaf, issuer):
                return chain.with_issuer(issuer)
            else:
                reasons.append(f"{url}: that certificate did not sign this one")
        raise CertificateError(chain.path, "cannot get the issuer: " + "; ".join(reasons))

    def _held(self, url: str) -> str | None:
        """None when ``url``'s certificate is held (memory or disk cache), else why not."""
        if url in self._known:
            return None
        cache = self._cache_file(url)
        try:
            data = store.read(cache)
            if data is not None:
                self._known[url] = certs.parse_issuer_bytes(data, str(cache))
                return None
        except (StoreError, CertificateError):
            pass  # a damaged cache entry is fetched again
        failed = self._failed.get(url)
        if failed is not None and self._waiting(failed):
            return failed[0]
        return f"{url}: not fetched yet"

    def _waiting(self, failed: tuple[str, datetime, int]) -> bool:
        """Whether a URL that failed is still to be left alone."""
        _, when, count = failed
        doubled = self.retry_after * 2 ** min(count - 1, 20)  # no overflow after days
        wait: timedelta = min(doubled, max(self.retry_after, RETRY_MAX))
        now: datetime = self.clock()
        return now < when + wait

    async def _fetch(self, url: str) -> None:
        failed = self._failed.get(url)
        if failed is not None and self._waiting(failed):
            return
        task = self._running.get(url)
        if task is None:
            task = self._running[url] = asyncio.ensure_future(self._download(url))
            task.add_done_callback(lambda _: self._running.pop(url, None))
        result = await task
        if isinstance(result, str):
            count = self._failed[url][2] + 1 if url in self._failed else 1
            self._failed[url] = (result, self.clock(), count)
        else:
            self._known[url] = result
            self._failed.pop(url, None)

    async def _download(self, url: str) -> x509.Certificate | str:
        if self.transport is None:
            return f"{url}: no network in this mode"
        try:
            reply = await self.transport.fetch("GET", url, None)
            issuer = certs.parse_issuer_bytes(reply.body, url)
            cache = self._cache_file(url)
            store.prepare_dir(cache.parent)
            store.write_atomic(cache, issuer.public_bytes(Encoding.DER), mode=0o644)
        except StapledError as e:
            return str(e)
        return issuer

    def _cache_file(self, url: str) -> Path:
        return self.cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".der")


def _urls(chain: CertChain) -> tuple[str, ...]:
    if not chain.ca_issuers_urls:
        raise CertificateError(chain.path, NO_ISSUER)
    return chain.ca_issuers_urls
