"""caIssuers fetches through the client seam, on a clock the test moves."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from stapled.core import certs
from stapled.errors import CertificateError, FetchError
from stapled.issuers import Issuers
from stapled.net.client import Reply

from .pki import World

WORLD = World()
URL = "http://ca.example/issuer.der"


class Flaky:
    """Fails while ``down``; then serves the issuer.  Counts what it is asked."""

    def __init__(self) -> None:
        self.down = True
        self.asked = 0

    async def fetch(self, method: str, url: str, body: bytes | None) -> Reply:
        self.asked += 1
        if self.down:
            raise FetchError(url, "connection refused")
        return Reply(url, WORLD.ca.cert.public_bytes(Encoding.DER), "application/pkix-cert")


def test_a_failed_issuer_is_asked_again_with_backoff(tmp_path: Path) -> None:
    now = [datetime(2026, 6, 1, tzinfo=UTC)]
    client = Flaky()
    issuers = Issuers(tmp_path, client, lambda: now[0])  # type: ignore[arg-type]
    chain = replace(certs.build_chain([WORLD.leaf.cert], "leaf.pem"), ca_issuers_urls=(URL,))

    def attempt() -> bool:
        try:
            asyncio.run(issuers.fetch(chain))
        except CertificateError as e:
            assert "connection refused" in e.reason
            return False
        return True

    asked_at = []
    for _ in range(80 * 60):  # eighty hours, a minute at a time: no overflow either
        before = client.asked
        attempt()
        if client.asked > before:
            asked_at.append(now[0])
        now[0] += timedelta(minutes=1)
    gaps = [(b - a).total_seconds() / 60 for a, b in itertools.pairwise(asked_at)]
    assert gaps[:6] == [1, 2, 4, 8, 16, 32] and set(gaps[7:]) == {60}
    client.down = False
    now[0] += timedelta(hours=1)
    assert attempt()
    assert issuers.known(chain).issuer == WORLD.ca.cert  # kept, and cached on disk
    assert Issuers(tmp_path, None, lambda: now[0]).known(chain).issuer == WORLD.ca.cert


@pytest.mark.parametrize("bad", [b"", b"not a certificate", b"\x30\x03\x02\x01\x01"])
def test_an_issuer_url_serving_junk_names_the_url(tmp_path: Path, bad: bytes) -> None:
    class Junk:
        async def fetch(self, method: str, url: str, body: bytes | None) -> Reply:
            return Reply(url, bad, "application/pkix-cert")

    issuers = Issuers(tmp_path, Junk(), lambda: datetime.now(UTC))  # type: ignore[arg-type]
    chain = replace(certs.build_chain([WORLD.leaf.cert], "leaf.pem"), ca_issuers_urls=(URL,))
    with pytest.raises(CertificateError, match=URL):
        asyncio.run(issuers.fetch(chain))
