"""The Fetcher through its seam: a client that answers from a table, no network."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from stapled.core import ocsp
from stapled.core.model import Fetched
from stapled.errors import FetchError
from stapled.fetch import Fetcher
from stapled.net.client import Reply

from .pki import World

WORLD = World()
FIRST, SECOND = "http://first.example/", "http://second.example/"


class Table:
    """Answers by responder URL: a Reply's body, or a FetchError's reason; ``get`` gives
    the HTTP status (or body) a GET gets instead."""

    def __init__(self, answers: dict[str, bytes | str], get: int | bytes | None = None) -> None:
        self.answers = answers
        self.get = get
        self.asked: list[str] = []
        self.methods: list[str] = []

    async def fetch(self, method: str, url: str, body: bytes | None) -> Reply:
        base = next(u for u in self.answers if url.startswith(u))
        self.asked.append(base)
        self.methods.append(method)
        if method == "GET" and isinstance(self.get, int):
            raise FetchError(url, f"HTTP {self.get}", status=self.get)
        if method == "GET" and isinstance(self.get, bytes):
            return Reply(url, self.get, "application/ocsp-response")
        answer = self.answers[base]
        if isinstance(answer, str):
            raise FetchError(url, answer)
        return Reply(url, answer, "application/ocsp-response")


def _fetch(table: Table) -> Fetched:
    fetcher = Fetcher(table, hash_name="sha1", per_host=2, clock=lambda: datetime.now(UTC))
    chain = replace(WORLD.chain, ocsp_urls=(FIRST, SECOND))
    return asyncio.run(fetcher.fetch(chain))


def test_the_next_responder_is_asked_when_one_fails() -> None:
    good = WORLD.ca.sign_response(WORLD.leaf.cert)
    table = Table({FIRST: "connection refused", SECOND: good})
    fetched = _fetch(table)
    assert table.asked == [FIRST, SECOND]
    assert fetched.staple is not None and fetched.staple.cert_status is ocsp.CertStatus.GOOD
    assert fetched.origin == SECOND


def test_every_responders_failure_is_named() -> None:
    stranger = WORLD.stranger.sign_response(WORLD.leaf.cert)
    fetched = _fetch(Table({FIRST: "HTTP 503", SECOND: stranger}))
    assert fetched.staple is None
    assert fetched.error is not None
    assert fetched.error.startswith(f"{FIRST}: HTTP 503; {SECOND}: ")


def test_the_first_valid_answer_wins() -> None:
    good = WORLD.ca.sign_response(WORLD.leaf.cert)
    table = Table({FIRST: good, SECOND: "never asked"})
    assert _fetch(table).origin == FIRST
    assert table.asked == [FIRST]


@pytest.mark.parametrize(
    ("get", "methods", "found"),
    [
        (400, ["GET", "POST"], True),
        (405, ["GET", "POST"], True),
        (bytes.fromhex("3003 0a01 01"), ["GET", "POST"], True),  # OCSP malformedRequest
        (429, ["GET"], False),  # "slow down" is not "use POST"
        (503, ["GET"], False),
        (bytes.fromhex("3003 0a01 03"), ["GET"], False),  # tryLater
    ],
    ids=["400", "405", "malformed", "429", "503", "try-later"],
)
def test_a_refused_get_is_asked_again_with_post(
    get: int | bytes, methods: list[str], found: bool
) -> None:
    table = Table({FIRST: WORLD.ca.sign_response(WORLD.leaf.cert)}, get=get)
    fetcher = Fetcher(table, hash_name="sha1", per_host=2, clock=lambda: datetime.now(UTC))
    fetched = asyncio.run(fetcher.fetch(replace(WORLD.chain, ocsp_urls=(FIRST,))))
    assert table.methods == methods
    assert (fetched.staple is not None) is found
