"""The Redis store's rules, against a real redis-server: the lease, fencing, "newer wins",
compare-and-set, the shared back-off, garbage in keys, and a store that is down or hung."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from cryptography.x509 import ocsp as x509_ocsp

from stapled.core import certs, ocsp
from stapled.core.fleet import Entry, digest
from stapled.demo import ca as testca
from stapled.errors import FleetError
from stapled.fleet.redis import RedisStore
from stapled.fleet.store import UNREADABLE, Backoff, Held, Lease, Outcome

from ..redisproc import RedisServer
from ..servers import free_port

pytestmark = pytest.mark.servers

T = TypeVar("T")
NOW = datetime.now(UTC)


def run(call: Awaitable[T]) -> T:
    async def main() -> T:
        return await call

    return asyncio.run(main())


class World:
    def __init__(self) -> None:
        self.ca = testca.CA()
        self.leaf = self.ca.issue("fleet.example", ocsp_urls=["http://127.0.0.1:9/"])
        self.chain = certs.build_chain([self.leaf.cert, self.ca.cert], "fleet.example")
        self.fp = self.chain.fingerprint

    def staple(self, age: timedelta = timedelta(minutes=1), **kw: object) -> ocsp.Staple:
        der = self.ca.sign_response(self.leaf.cert, this_update=NOW - age, **kw)  # type: ignore[arg-type]
        return ocsp.validate(der, self.chain, NOW)


@pytest.fixture
def world() -> World:
    return World()


def store_of(server: RedisServer, host: str = "web-1", **kw: object) -> RedisStore:
    return RedisStore(server.url, host_id=host, **kw)  # type: ignore[arg-type]


def test_one_lease_at_a_time_and_a_new_fence_with_each(
    redis_server: RedisServer, world: World
) -> None:
    a, b = store_of(redis_server, "web-1"), store_of(redis_server, "web-2")

    async def go() -> None:
        first = await a.acquire(world.fp, 30)
        assert isinstance(first, Lease) and first.fence == 1
        held = await b.acquire(world.fp, 30)
        assert isinstance(held, Held) and held.host == "web-1" and 0 < held.remaining <= 30
        await b.release(world.fp, Lease("not-the-token", 1))  # someone else's: no effect
        assert isinstance(await b.acquire(world.fp, 30), Held)
        await a.release(world.fp, first)
        second = await b.acquire(world.fp, 30)
        assert isinstance(second, Lease) and second.fence == 2
        await a.close()
        await b.close()

    run(go())


def test_publish_stores_announces_and_frees_the_lease(
    redis_server: RedisServer, world: World
) -> None:
    a, b = store_of(redis_server, "web-1"), store_of(redis_server, "web-2")
    staple = world.staple()

    async def go() -> list[str]:
        heard: list[str] = []

        async def listen() -> None:
            async for fp in b.announcements():
                heard.append(fp)
                return

        listener = asyncio.ensure_future(listen())
        # Subscribed before the publish: wait for the server to count the subscriber.
        while redis_server.client.pubsub_numsub("stapled:announce")[0][1] < 1:
            await asyncio.sleep(0.02)
        lease = await a.acquire(world.fp, 30)
        assert isinstance(lease, Lease)
        assert await a.publish(world.fp, lease, Entry.of(staple)) is Outcome.STORED
        await asyncio.wait_for(listener, 5)
        assert (await b.digests([world.fp])) == {world.fp: digest(staple.der)}
        shared = await b.read(world.fp)
        assert shared is not None and shared.der == staple.der and shared.host == "web-1"
        assert await b.generation() == 1
        assert isinstance(await b.acquire(world.fp, 30), Lease)  # published: lease freed
        await a.close()
        await b.close()
        return heard

    assert run(go()) == [world.fp]
    # The entry outlives the staple's nextUpdate, not much longer.
    ttl = redis_server.client.pttl(f"stapled:{{{world.fp}}}:staple") / 1000
    left = (staple.next_update - datetime.now(UTC)).total_seconds()
    assert left < ttl <= left + 3600 + 5


def test_a_lease_that_ran_out_or_was_superseded_cannot_publish(
    redis_server: RedisServer, world: World
) -> None:
    a, b = store_of(redis_server, "web-1"), store_of(redis_server, "web-2")
    staple = world.staple()

    async def go() -> None:
        stalled = await a.acquire(world.fp, 0.05)
        assert isinstance(stalled, Lease)
        while redis_server.client.exists(f"stapled:{{{world.fp}}}:lease"):
            await asyncio.sleep(0.01)  # expiry as Redis measures it
        taken = await b.acquire(world.fp, 30)
        assert isinstance(taken, Lease) and taken.fence == stalled.fence + 1
        assert await a.publish(world.fp, stalled, Entry.of(staple)) is Outcome.LEASE_LOST
        # A fence moved on by a grant this holder never saw (a failover) refuses too.
        redis_server.client.incr(f"stapled:{{{world.fp}}}:fence")
        assert await b.publish(world.fp, taken, Entry.of(staple)) is Outcome.FENCED
        assert await b.digests([world.fp]) == {world.fp: None}
        await a.close()
        await b.close()

    run(go())


@pytest.mark.parametrize(
    ("stored", "offered", "outcome"),
    [
        ("new", "old", Outcome.NOT_NEWER),
        ("new", "new", Outcome.NOT_NEWER),
        ("old", "new", Outcome.STORED),
        ("new", "revoked-old", Outcome.STORED),  # a final revocation beats any good
        ("revoked-old", "new", Outcome.NOT_NEWER),  # and nothing good follows it
        ("hold-old", "new", Outcome.STORED),  # except after certificateHold
    ],
)
def test_newer_wins_as_settle_decides(
    redis_server: RedisServer, world: World, stored: str, offered: str, outcome: Outcome
) -> None:
    def make(kind: str) -> ocsp.Staple:
        age = timedelta(hours=3) if kind.endswith("old") else timedelta(minutes=1)
        if kind.startswith("revoked"):
            return world.staple(age, status=x509_ocsp.OCSPCertStatus.REVOKED)
        if kind.startswith("hold"):
            staple = world.staple(age, status=x509_ocsp.OCSPCertStatus.REVOKED)
            # The rank is all the store sees: a hold is a non-final revocation.
            return _as_hold(staple)
        return world.staple(age)

    store = store_of(redis_server)

    async def go() -> Outcome:
        first = await store.acquire(world.fp, 30)
        assert isinstance(first, Lease)
        assert await store.publish(world.fp, first, Entry.of(make(stored))) is Outcome.STORED
        second = await store.acquire(world.fp, 30)
        assert isinstance(second, Lease)
        result = await store.publish(world.fp, second, Entry.of(make(offered)))
        # Refused or not, the holder is done: the lease is free for the next window.
        assert isinstance(await store.acquire(world.fp, 30), Lease)
        await store.close()
        return result

    assert run(go()) is outcome


def _as_hold(staple: ocsp.Staple) -> ocsp.Staple:
    from dataclasses import replace

    return replace(staple, revocation_reason="certificateHold")


def test_compare_and_set_repairs_only_what_it_saw(redis_server: RedisServer, world: World) -> None:
    store = store_of(redis_server)
    old, new = world.staple(timedelta(hours=2)), world.staple()
    key = f"stapled:{{{world.fp}}}:staple"

    async def go() -> None:
        assert await store.replace(world.fp, None, Entry.of(old)) is Outcome.STORED
        # Not what is there now: refused, whatever the rank.
        assert await store.replace(world.fp, None, Entry.of(new)) is Outcome.CHANGED
        assert await store.replace(world.fp, digest(old.der), Entry.of(new)) is Outcome.STORED
        # Garbage of another type is named UNREADABLE, and replaced as such.
        redis_server.client.delete(key)
        redis_server.client.set(key, b"\x00garbage")
        assert await store.digests([world.fp]) == {world.fp: UNREADABLE}
        shared = await store.read(world.fp)
        assert shared is not None and shared.der == b""
        assert await store.replace(world.fp, UNREADABLE, Entry.of(new)) is Outcome.STORED
        assert await store.digests([world.fp]) == {world.fp: digest(new.der)}
        # A hash whose digest field is not a digest reads as UNREADABLE too.
        redis_server.client.hset(key, "digest", "short")
        assert await store.digests([world.fp]) == {world.fp: UNREADABLE}
        await store.close()

    run(go())


def test_the_back_off_is_shared_and_its_failures_counted(
    redis_server: RedisServer, world: World
) -> None:
    a, b = store_of(redis_server, "web-1"), store_of(redis_server, "web-2")

    async def go() -> None:
        lease = await a.acquire(world.fp, 30)
        assert isinstance(lease, Lease) and lease.failures == 0
        await a.back_off(world.fp, lease, "http://ca.example/: HTTP 503", 0.3)
        told = await b.acquire(world.fp, 30)
        assert isinstance(told, Backoff)
        assert told.host == "web-1" and "503" in told.error and told.failures == 1
        assert 0 < told.remaining <= 0.3
        while isinstance(told := await b.acquire(world.fp, 30), Backoff):
            await asyncio.sleep(0.05)
        assert isinstance(told, Lease) and told.failures == 1  # the count lives on
        await a.close()
        await b.close()

    run(go())


def test_a_dead_store_fails_fast_then_stays_down_briefly(tmp_path: object) -> None:
    port = free_port()
    store = RedisStore(
        f"redis://:s3cret-pass@127.0.0.1:{port}/0", host_id="web-1", down_seconds=0.5
    )

    async def go() -> None:
        with pytest.raises(FleetError) as first:
            await store.generation()
        assert "s3cret" not in str(first.value) and "***" in str(first.value)
        assert not store.connected
        # Within the down period no call touches the network: the same reason at once.
        with pytest.raises(FleetError) as again:
            await store.digests(["a" * 64])
        assert again.value.reason == first.value.reason
        await store.close()

    run(go())


def test_a_hung_store_costs_one_timeout(redis_server: RedisServer, world: World) -> None:
    store = store_of(redis_server, timeout=0.3)

    async def go() -> float:
        await store.ping()
        assert store.connected
        redis_server.pause()
        try:
            start = time.monotonic()
            with pytest.raises(FleetError, match="did not answer in time"):
                await store.acquire(world.fp, 30)
            for _ in range(100):  # a pass's worth of calls: each fails at once
                with pytest.raises(FleetError):
                    await store.digests([world.fp])
            return time.monotonic() - start
        finally:
            redis_server.resume()
            await store.close()

    # One timeout (0.3 s, bounded by 3x as the store promises), not 101 of them.
    assert run(go()) < 0.3 * 3 + 0.5


def test_it_answers_again_when_the_store_comes_back(
    redis_server: RedisServer, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_of(redis_server, down_seconds=0.1)

    async def go() -> None:
        await store.ping()
        redis_server.stop()
        with pytest.raises(FleetError):
            await store.ping()
        redis_server.start()
        while True:
            try:
                await store.ping()
                break
            except FleetError:
                await asyncio.sleep(0.05)
        assert store.connected
        await store.close()

    with caplog.at_level(logging.INFO, logger="stapled"):
        run(go())
    lines = [r.getMessage() for r in caplog.records]
    # One line when it went, one when it came back: not one per failed call.
    assert sum("cannot be used" in line for line in lines) == 1
    assert sum("answers again" in line for line in lines) == 1


def test_a_password_protected_store(tmp_path: object, world: World) -> None:
    from pathlib import Path

    server = RedisServer(Path(str(tmp_path)))
    server.start()
    try:
        server.client.config_set("requirepass", "pa55word")
        right = RedisStore(server.url.replace("//", "//:pa55word@"), host_id="web-1")
        wrong = RedisStore(server.url.replace("//", "//:nope@"), host_id="web-1")

        async def go() -> None:
            await right.ping()
            with pytest.raises(FleetError) as refused:
                await wrong.ping()
            assert "nope" not in str(refused.value)
            await right.close()
            await wrong.close()

        run(go())
    finally:
        server.stop()
        server.client.close()
