"""Which certificates are checked against their CRL (``crl``: "no-ocsp", "all", "off"),
which URL each one asks, and what each one's CRL says: the bridge between the
certificates found and the CRLs kept by URL in ``crls``."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from .config import REVOKED_COMMAND_TIMEOUT, Config
from .core.certs import CertChain
from .core.model import Found, Record
from .core.revocation import CrlView
from .core.times import Clock, iso
from .crls import Crls, Want
from .errors import StapledError, StoreError
from .hooks import RevokedHook, found_revoked
from .issuers import Issuers
from .net.client import Transport

log = logging.getLogger("stapled")


class Revocations:
    def __init__(
        self, mode: str, crls: Crls, issuers: Issuers, concurrency: int, hook: RevokedHook
    ) -> None:
        self.mode = mode
        self.crls = crls
        self.issuers = issuers
        self.concurrency = concurrency
        self.hook = hook
        # One run of the hook at a time: each reads and writes what was done.
        self._acting = asyncio.Lock()

    @classmethod
    def of(
        cls,
        config: Config,
        transport: Transport | None,
        clock: Clock,
        issuers: Issuers,
        counted: Callable[[str, int], None],
    ) -> Revocations:
        """``counted(result, size)``: each CRL fetch, for the metrics."""
        crls = Crls(
            config.state_path,
            transport,
            clock,
            config.timing,
            counted,
            host=socket.gethostname(),
        )
        hook = RevokedHook(
            config.revoked_command, config.state_path, clock, REVOKED_COMMAND_TIMEOUT
        )
        return cls(config.crl, crls, issuers, config.concurrency, hook)

    async def act(self, records: Iterable[Record], crl: Mapping[str, CrlView]) -> None:
        """``revoked_command`` for each certificate newly revoked by either source (in a
        thread: the command may take up to a minute)."""
        found = found_revoked(records, crl)
        if found and self.hook.command:
            async with self._acting:
                await asyncio.to_thread(self.hook.run, found)

    def checked(self, found: Iterable[Found], now: datetime) -> dict[str, CertChain]:
        """The certificates whose CRL is checked, by name: the mode decides, and an
        expired certificate or one without an http(s) distribution point is left out."""
        if self.mode == "off":
            return {}
        chosen = {}
        for item in found:
            chain = item.chain
            if chain is None or item.directory or chain.crl_url is None or now >= chain.not_after:
                continue
            if self.mode == "all" or not chain.ocsp_urls:
                chosen[item.name] = chain
        return chosen

    async def check(
        self, found: Iterable[Found], now: datetime, *, force: bool, only: set[str] | None = None
    ) -> dict[str, CrlView]:
        """Fetch the CRLs that are due (all with ``force``) and say what each checked
        certificate's CRL says.  ``only``: a pass over these names, which keeps what is
        known of the CRLs only others name."""
        if only is not None:
            found = [f for f in found if f.name in only]
        chains = self.checked(found, now)
        wants: dict[str, Want] = {}
        missing: dict[str, str] = {}
        for name, chain in chains.items():
            url = chain.crl_url
            assert url is not None
            try:
                issuer = await self.issuers.fetch(chain)
            except StapledError as e:
                missing[name] = f"{url}: cannot be checked: {e}"
                continue
            assert issuer.issuer is not None
            held = wants.get(url)
            serials = frozenset({chain.serial}) | (held.serials if held else frozenset())
            wants[url] = Want(url, issuer.issuer, serials)
        await self.crls.refresh(wants, force=force, concurrency=self.concurrency)
        if only is None:
            # Every URL a checked certificate names, wanted now or not (its issuer may be
            # out of reach for a while): the verdicts held stand.
            self.crls.keep_only(c.crl_url for c in chains.values() if c.crl_url)
        try:
            self.crls.save()
        except StoreError as e:
            log.error("%s", e)
        views = self._views(chains, now)
        for name, reason in missing.items():
            # What is held stands (until its nextUpdate); the problem is named.
            views[name] = replace(views[name], last_error=reason)
        for name, view in views.items():
            if view.revoked:
                log.critical(
                    "%s: certificate serial %s is REVOKED according to its CRL %s (%s, since %s)",
                    name,
                    chains[name].serial_hex,
                    view.url,
                    view.reason,
                    iso(view.revoked_at),
                )
        return views

    def views(self, found: Iterable[Found], now: datetime) -> dict[str, CrlView]:
        """What each checked certificate's CRL says, from what is kept (no network)."""
        return self._views(self.checked(found, now), now)

    def _views(self, chains: dict[str, CertChain], now: datetime) -> dict[str, CrlView]:
        views = {}
        for name, chain in chains.items():
            assert chain.crl_url is not None
            views[name] = self.crls.view(chain.crl_url, chain.serial, now)
        return views
