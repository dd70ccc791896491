"""Writers of one output directory that overlap: passes, the daemon's refreshes, certbot.

The races are made to happen at a chosen moment, through the client seam: the "network"
runs the other writer before it answers.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from stapled import config
from stapled.core import certs, ocsp
from stapled.core.fleet import digest
from stapled.errors import EX_TEMPFAIL, BusyError
from stapled.files.lock import LOCK_FILE
from stapled.net.client import Reply, Transport
from stapled.passes import Stapler

from .conftest import Site

pytestmark = pytest.mark.hostile


class Meanwhile:
    """A client that runs ``first()`` (the other writer) before it answers for real."""

    def __init__(self, site: Site, first: Callable[[], None]) -> None:
        self.real = Transport(timeout=5)
        self.first = first

    async def fetch(self, method: str, url: str, body: bytes | None) -> Reply:
        await asyncio.to_thread(self.first)
        return await self.real.fetch(method, url, body)


def _serial(site: Site, name: str, issued: object) -> int:
    der = site.staple(name)
    assert der is not None
    parsed = ocsp.validate(
        der,
        certs.build_chain([issued.cert, site.ca.cert], name),
        datetime.now(UTC),  # type: ignore[attr-defined]
    )
    return parsed.serial


def _refresh(stapler: Stapler, client: Meanwhile) -> list:  # type: ignore[type-arg]
    """One daemon-style refresh of the only certificate, forced, on a loop of its own."""
    _, groups = stapler.scan()
    (members,) = groups.values()

    async def run() -> list:  # type: ignore[type-arg]
        try:
            return await stapler.refresh(members, force=True)
        finally:
            await client.real.close_idle()

    return asyncio.run(run())


def test_a_refresh_never_writes_over_the_staple_of_a_renewed_certificate(site: Site) -> None:
    """The daemon fetched for the old certificate; certbot renewed and its hook stapled the
    new one meanwhile: the old answer must not land."""
    old = site.issue("renew.example")
    site.lineage("renew.example", old)
    site.config()
    assert site.once() == 0
    cfg = config.load(site.config_path)
    new = site.issue("renew.example")

    def renew_and_hook() -> None:
        site.lineage("renew.example", new, version=2)
        assert site.once("--only", str(site.certs)) == 0

    client = Meanwhile(site, renew_and_hook)
    records = _refresh(Stapler(cfg, transport=client), client)  # type: ignore[arg-type]
    assert _serial(site, "renew.example", new) == new.cert.serial_number
    assert all(
        r.failed_now and "changed while its staple was fetched" in str(r.last_error)
        for r in records
    )


def test_a_refresh_keeps_a_newer_staple_another_writer_made_meanwhile(site: Site) -> None:
    leaf = site.issue("same.example")
    site.bundle("same.example", leaf)
    site.config()
    assert site.once() == 0
    cfg = config.load(site.config_path)
    newer: list[bytes] = []

    def other_pass() -> None:
        # The CA's next answer, written by another pass before the daemon's lands.
        fresh = site.ca.sign_response(leaf.cert, this_update=datetime.now(UTC))
        site.responder.answer = lambda der: (200, {}, fresh)
        assert site.once("--force") == 0
        newer.append(fresh)
        # Newer than what was on disk when the daemon began, older than the other's.
        older = site.ca.sign_response(
            leaf.cert, this_update=datetime.now(UTC) - timedelta(seconds=30)
        )
        site.responder.answer = lambda der: (200, {}, older)

    client = Meanwhile(site, other_pass)
    records = _refresh(Stapler(cfg, transport=client), client)  # type: ignore[arg-type]
    assert site.staple("same.example") == newer[0]
    assert [(r.state, r.failed_now) for r in records] == [("good", False)]


def test_a_pass_waits_for_the_lock_and_says_who_holds_it(site: Site) -> None:
    site.bundle("wait.example", site.issue("wait.example"))
    site.config()
    cfg = config.load(site.config_path)
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    fd = os.open(cfg.state_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        stapler = Stapler(cfg, transport=Transport(timeout=5), lock_wait=0.3)
        with pytest.raises(BusyError, match=r"another stapled \(pid 4242\) is writing here") as err:
            stapler.once()
        assert err.value.exit_code == EX_TEMPFAIL
        assert site.staple("wait.example") is None
    finally:
        os.close(fd)
    assert Stapler(cfg, transport=Transport(timeout=5)).once().exit_code() == 0
    assert site.staple("wait.example") is not None


def test_a_refresh_a_little_before_the_refresh_point_keeps_its_answer(site: Site) -> None:
    """The daemon's jitter fires some refreshes before the staple is due: with nobody
    else writing meanwhile, the newer answer it fetched must be written, not thrown away
    (which would cost the CA a request and the fetch be made again)."""
    leaf = site.issue("early.example")
    site.bundle("early.example", leaf)
    site.config()
    site.responder.answer_aged(timedelta(hours=1))
    assert site.once() == 0
    before = site.staple("early.example")
    site.responder.answer_fresh()
    client = Meanwhile(site, lambda: None)
    stapler = Stapler(config.load(site.config_path), transport=client)  # type: ignore[arg-type]
    records = _refresh(stapler, client)
    assert [(r.changed, r.failed_now) for r in records] == [(True, False)]
    assert site.staple("early.example") != before
    assert site.responder.requests == 2


def test_where_staples_came_from_is_kept_only_for_those_held(site: Site) -> None:
    """The daemon runs for months and each refresh adds a staple: what it remembers of
    their origin stays as large as what it holds."""
    leaf = site.issue("kept.example")
    site.bundle("kept.example", leaf)
    site.config()
    client = Meanwhile(site, lambda: None)
    stapler = Stapler(config.load(site.config_path), transport=client)  # type: ignore[arg-type]
    for hours in (5, 4, 3, 2, 1):
        site.responder.answer_aged(timedelta(hours=hours))
        records = _refresh(stapler, client)
    assert len(stapler.sources) == 5
    stapler.sources.keep_only(r.current for r in records)
    (held,) = {r.current for r in records}
    assert held is not None and stapler.sources.by_digest == {digest(held.der): "ca"}
    # Where it came from and what validating it found are kept under one string.
    ((from_ca, _),) = stapler.sources.by_digest.items()
    kept = {key for key, _ in stapler.validated.remembered() if key == from_ca}
    assert len(kept) == 1 and kept.pop() is from_ca
