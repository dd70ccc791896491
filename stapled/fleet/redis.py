"""The fleet store on Redis: the only module that imports redis-py.

Keys of one certificate share a hash tag (its leaf's SHA-256), so Redis Cluster keeps them
in one slot and one script can touch them all::

    <prefix>{<sha256>}:staple    hash: der, digest, rank fields, host, fetched_at
    <prefix>{<sha256>}:lease     "<token> <host>", expiring (PX): who may ask the CA
    <prefix>{<sha256>}:fence     counter, incremented with every lease granted
    <prefix>{<sha256>}:backoff   hash: until (the store's clock, ms), failures, error, host
    <prefix>{<sha256>}:hosts     hash: host -> "<digest> <unix time>" (who serves what)
    <prefix>generation           counter, incremented after every store
    <prefix>announce             channel: the fingerprint of each entry stored

Timeouts are short and there are no retries: after any failure the store counts as down
for a few seconds and every call fails at once, so a dead or hung Redis costs a pass one
timeout, not one per certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ..core.fleet import Entry, digest
from ..core.times import iso
from ..core.urls import redacted
from ..errors import FleetError
from .store import UNREADABLE, Backoff, Held, Lease, Outcome, Shared

log = logging.getLogger("stapled")

# How long the store counts as down after a failure: calls fail at once meanwhile.
DOWN_SECONDS = 5.0
# Digests are asked for in pipelines of this many.
PIPELINE = 1000

_ACQUIRE = """
local b = redis.call('HMGET', KEYS[3], 'until', 'host', 'error', 'failures')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failures = tonumber(b[4]) or 0
if tonumber(b[1]) and tonumber(b[1]) > now then
  return {'backoff', tonumber(b[1]) - now, b[2] or '', b[3] or '', failures}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'lease', redis.call('INCR', KEYS[2]), failures}
end
local holder = redis.call('GET', KEYS[1]) or ''
return {'held', redis.call('PTTL', KEYS[1]), holder}
"""

# The ordering of RANK_FIELDS, compared field by field; anything unreadable ranks lowest.
_STORE = """
local function store(key, a)
  redis.call('DEL', key)
  redis.call('HSET', key, 'der', a[1], 'digest', a[2], 'final', a[3], 'this_update', a[4],
             'produced_at', a[5], 'status', a[6], 'host', a[7], 'fetched_at', a[8])
  redis.call('PEXPIREAT', key, a[9])
  redis.call('PUBLISH', a[10], a[11])
end
"""

_PUBLISH = (
    _STORE
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[12] then return 'lease lost' end
if redis.call('GET', KEYS[3]) ~= ARGV[13] then return 'fenced' end
-- The holder is done either way: the lease goes, and with an answer the back-off.
redis.call('DEL', KEYS[2], KEYS[4])
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  local old = redis.call('HMGET', KEYS[1], 'final', 'this_update', 'produced_at')
  for i = 1, 3 do
    local o, n = tonumber(old[i]) or -1, tonumber(ARGV[i + 2])
    if n > o then break end
    if n < o or i == 3 then return 'not newer' end
  end
end
store(KEYS[1], ARGV)
return 'stored'
"""
)

_REPLACE = (
    _STORE
    + """
local kind = redis.call('TYPE', KEYS[1]).ok
local seen = ''
if kind == 'hash' then
  seen = redis.call('HGET', KEYS[1], 'digest') or ''
elseif kind ~= 'none' then
  seen = ARGV[13]
end
if seen ~= ARGV[12] then return 'changed' end
store(KEYS[1], ARGV)
return 'stored'
"""
)

_BACK_OFF = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'until', now + tonumber(ARGV[2]), 'host', ARGV[3],
           'error', ARGV[4], 'failures', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('DEL', KEYS[1])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """:class:`stapled.fleet.store.Store` on one Redis server (redis://, rediss://, unix://)."""

    def __init__(
        self,
        url: str,
        *,
        host_id: str,
        prefix: str = "stapled:",
        timeout: float = 1.0,
        down_seconds: float = DOWN_SECONDS,
        retry_max: float = 3600.0,
    ) -> None:
        self.url = redacted(url)
        self.host_id = host_id
        self.prefix = prefix
        self.timeout = timeout
        self.down_seconds = down_seconds
        # A failure count outlives the back-off itself by this much, so it keeps growing.
        self.failures_kept_ms = int(retry_max * 2 * 1000)
        self._down_until = 0.0
        self._reason: str | None = None
        self._ever = False
        self._url = url
        self._client: _Client | None = None
        try:
            # Options in the URL are read now, not at the first call in the middle of a pass.
            aioredis.ConnectionPool.from_url(url)
        except (ValueError, TypeError) as e:
            raise FleetError(self.url, f"has an option redis-py cannot use ({e})") from e

    @property
    def _redis(self) -> aioredis.Redis:
        return self._on_this_loop().redis

    def _on_this_loop(self) -> _Client:
        """The client of the running event loop: a connection belongs to one loop, and
        each ``once`` runs a loop of its own."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.loop is not loop:
            self._client = _Client(self._url, self.timeout, self.host_id, loop)
        return self._client

    # ---- keys ---------------------------------------------------------------------------

    def _key(self, fingerprint: str, what: str) -> str:
        return f"{self.prefix}{{{fingerprint}}}:{what}"

    @property
    def _channel(self) -> str:
        return self.prefix + "announce"

    # ---- health -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ever and self._reason is None

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """Fail at once while down; any failure marks the store down for a while."""
        if self._reason is not None and time.monotonic() < self._down_until:
            raise FleetError(self.url, self._reason)
        try:
            async with asyncio.timeout(self.timeout * 3):
                yield
        except Exception as e:  # whatever fails inside redis-py is the store failing
            reason = _reason(e)
            if self._reason is None:
                log.warning("the fleet store %s %s", self.url, reason)
            self._reason, self._down_until = reason, time.monotonic() + self.down_seconds
            raise FleetError(self.url, reason) from e
        if self._reason is not None:
            log.info("the fleet store %s answers again", self.url)
        self._reason, self._ever = None, True

    # ---- the interface ------------------------------------------------------------------

    async def ping(self) -> None:
        async with self._call():
            await self._redis.ping()

    async def generation(self) -> int | None:
        async with self._call():
            value = await self._redis.get(self.prefix + "generation")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return -1  # garbage: still a value that changes when someone stores

    async def digests(self, fingerprints: Iterable[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for chunk in _chunks(list(fingerprints), PIPELINE):
            async with self._call():
                pipe = self._redis.pipeline(transaction=False)
                for fp in chunk:
                    pipe.hget(self._key(fp, "staple"), "digest")
                answers = await pipe.execute(raise_on_error=False)
            for fp, answer in zip(chunk, answers, strict=True):
                found[fp] = _digest(answer)
        return found

    async def read(self, fingerprint: str) -> Shared | None:
        async with self._call():
            try:
                der, host = await self._redis.hmget(self._key(fingerprint, "staple"), "der", "host")
            except ResponseError:  # not a hash: garbage, for the caller to refuse
                return Shared(b"", "?", UNREADABLE)
        if not isinstance(der, bytes):
            return None
        return Shared(der, _text(host), digest(der))

    async def acquire(self, fingerprint: str, ttl: float) -> Lease | Held | Backoff:
        token = f"{secrets.token_hex(16)} {self.host_id}"
        keys = [self._key(fingerprint, k) for k in ("lease", "fence", "backoff")]
        async with self._call():
            answer = await self._on_this_loop().acquire(
                keys=keys, args=[token, max(1, int(ttl * 1000))]
            )
        kind = _text(answer[0])
        if kind == "lease":
            return Lease(token, int(answer[1]), int(answer[2]))
        if kind == "backoff":
            return Backoff(
                _text(answer[2]), _text(answer[3]), int(answer[1]) / 1000, int(answer[4])
            )
        holder = _text(answer[2]).partition(" ")[2] or "another host"
        return Held(holder, max(0, int(answer[1])) / 1000)

    async def publish(self, fingerprint: str, lease: Lease, entry: Entry) -> Outcome:
        keys = [self._key(fingerprint, k) for k in ("staple", "lease", "fence", "backoff")]
        args = [*self._fields(fingerprint, entry), lease.token, lease.fence]
        async with self._call():
            outcome = Outcome(_text(await self._on_this_loop().publish(keys=keys, args=args)))
        if outcome is Outcome.STORED:
            await self._stored()
        return outcome

    async def replace(self, fingerprint: str, expected: str | None, entry: Entry) -> Outcome:
        keys = [self._key(fingerprint, "staple")]
        args = [*self._fields(fingerprint, entry), expected or "", UNREADABLE]
        async with self._call():
            outcome = Outcome(_text(await self._on_this_loop().replace(keys=keys, args=args)))
        if outcome is Outcome.STORED:
            await self._stored()
        return outcome

    async def release(self, fingerprint: str, lease: Lease) -> None:
        async with self._call():
            await self._on_this_loop().release(
                keys=[self._key(fingerprint, "lease")], args=[lease.token]
            )

    async def back_off(self, fingerprint: str, lease: Lease, error: str, delay: float) -> bool:
        keys = [self._key(fingerprint, "lease"), self._key(fingerprint, "backoff")]
        ms = max(1, int(delay * 1000))
        kept = ms + self.failures_kept_ms
        args: list[str | int] = [
            lease.token,
            ms,
            self.host_id,
            error[:500],
            lease.failures + 1,
            kept,
        ]
        async with self._call():
            return bool(await self._on_this_loop().back_off(keys=keys, args=args))

    async def heartbeat(self, fingerprint: str, staple_digest: str, expire_at_ms: int) -> None:
        key = self._key(fingerprint, "hosts")
        async with self._call():
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(key, self.host_id, f"{staple_digest} {int(time.time())}")
            pipe.pexpireat(key, expire_at_ms)
            await pipe.execute()

    async def announcements(self) -> AsyncIterator[str]:
        """Yields fingerprints as they are announced; reconnects by itself, forever."""
        wait = 1.0
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                wait = 1.0
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None and isinstance(message.get("data"), bytes):
                        yield _text(message["data"])
            except (RedisError, OSError, TimeoutError) as e:
                log.debug("fleet announcements from %s: %s", self.url, _reason(e))
            finally:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await pubsub.aclose()
            await asyncio.sleep(wait)
            wait = min(wait * 2, 30.0)

    async def close(self) -> None:
        """Close the running loop's connections (call it on the loop that used them)."""
        client, self._client = self._client, None
        if client is not None and client.loop is asyncio.get_running_loop():
            with contextlib.suppress(RedisError, OSError):
                await client.redis.aclose()

    # ---- helpers ------------------------------------------------------------------------

    def _fields(self, fingerprint: str, entry: Entry) -> list[bytes | str | int]:
        now = iso(datetime.now(UTC))
        final, this_update, produced_at = entry.rank
        return [
            entry.der,
            entry.digest,
            final,
            this_update,
            produced_at,
            entry.status,
            self.host_id,
            now,
            entry.expire_at_ms,
            self._channel,
            fingerprint,
        ]

    async def _stored(self) -> None:
        # Not in the script: on Redis Cluster this key lives in another slot.  A lost
        # increment only delays the others until their periodic sweep.
        with contextlib.suppress(FleetError):
            async with self._call():
                await self._redis.incr(self.prefix + "generation")


class _Client:
    """redis-py's client and the scripts registered on it, for one event loop."""

    def __init__(self, url: str, timeout: float, host_id: str, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            client_name=f"stapled:{host_id}"[:100],
        )
        self.acquire = self.redis.register_script(_ACQUIRE)
        self.publish = self.redis.register_script(_PUBLISH)
        self.replace = self.redis.register_script(_REPLACE)
        self.back_off = self.redis.register_script(_BACK_OFF)
        self.release = self.redis.register_script(_RELEASE)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _digest(answer: object) -> str | None:
    if answer is None:
        return None
    if isinstance(answer, bytes):
        text = answer.decode("ascii", "replace")
        return text if len(text) == 64 else UNREADABLE
    return UNREADABLE  # a ResponseError: the key holds something other than a hash


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError) or "Timeout" in type(error).__name__:
        return "did not answer in time"
    text = str(error).strip() or type(error).__name__
    return f"cannot be used ({text[:200]})"
