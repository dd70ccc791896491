"""Several hosts of one fleet, each a real Stapler with its own output directory, on one
real redis-server and one counting responder: one CA request per certificate for the
fleet, the same bytes everywhere, nothing invalid ever written, and a store that is down,
empty or poisoned costs no staple."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.x509 import ocsp as x509_ocsp

from stapled import __version__, config, overview
from stapled.core import certs, ocsp
from stapled.core.fleet import Entry, digest
from stapled.core.model import PassResult, Record
from stapled.core.policy import State
from stapled.demo import ca as testca
from stapled.fleet import share
from stapled.fleet.store import Lease, Outcome
from stapled.net.client import Transport
from stapled.observe import textfile
from stapled.passes import Stapler

from ..conftest import Site
from ..redisproc import RedisServer

pytestmark = pytest.mark.servers

CERTS = ("a.example", "b.example", "c.example")


@dataclass
class Host:
    name: str
    stapler: Stapler
    out: Path

    def staple(self, cert: str) -> bytes | None:
        path = self.out / f"{cert}.der"
        return path.read_bytes() if path.exists() else None


class Fleet:
    """Hosts sharing ``site``'s certificates through ``redis``; ``skew`` moves their clock."""

    def __init__(self, site: Site, redis: RedisServer) -> None:
        self.site, self.redis = site, redis
        self.issued = {name: site.issue(name) for name in CERTS}
        for name, leaf in self.issued.items():
            site.bundle(name, leaf)
        self.skew = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.skew

    def host(self, name: str, extra: str = "", url: str | None = None) -> Host:
        out = self.site.root / name
        path = self.site.root / f"{name}.toml"
        path.write_text(
            f'output_dir = "{out}"\ncertificates = ["{self.site.certs}"]\ntimeout = 5\n'
            f'[fleet]\nredis = "{url or self.redis.url}"\nhost_id = "{name}"\n{extra}\n'
        )
        cfg = config.load(path)
        stapler = Stapler(cfg, transport=Transport(timeout=5), clock=self.now)
        return Host(name, stapler, out)

    def chain(self, cert: str) -> certs.CertChain:
        return certs.build_chain([self.issued[cert].cert, self.site.ca.cert], cert)

    def fingerprint(self, cert: str) -> str:
        return self.chain(cert).fingerprint

    def last_command(self, host: str, command: str) -> bool:
        """Whether ``host``'s last call to the store was ``command`` (Redis's client list)."""
        clients = self.redis.client.client_list()
        return any(c.get("name") == f"stapled:{host}" and c.get("cmd") == command for c in clients)

    def valid(self, cert: str, der: bytes | None) -> bool:
        """``der`` validates for ``cert`` now, by the hosts' clock."""
        try:
            ocsp.validate(der or b"", self.chain(cert), self.now())
        except Exception:
            return False
        return True


def together(*hosts: Host) -> list[PassResult]:
    """One pass on every host at once, on one event loop."""

    async def main() -> list[PassResult]:
        try:
            return list(await asyncio.gather(*(h.stapler.run_pass() for h in hosts)))
        finally:
            for h in hosts:
                assert h.stapler.fleet is not None and h.stapler.transport is not None
                await h.stapler.fleet.store.close()
                await h.stapler.transport.close_idle()

    return asyncio.run(main())


def sources(results: list[PassResult]) -> list[str | None]:
    return sorted(str(r.source) for result in results for r in result.records)


@pytest.fixture
def fleet(site: Site, redis_server: RedisServer) -> Fleet:
    return Fleet(site, redis_server)


def test_a_cold_fleet_asks_the_ca_once_per_certificate(fleet: Fleet) -> None:
    hosts = [fleet.host(f"web-{i}") for i in range(5)]
    results = together(*hosts)
    assert fleet.site.responder.requests == len(CERTS)
    assert all(r.exit_code() == 0 for r in results)
    for cert in CERTS:
        served = {h.staple(cert) for h in hosts}
        assert len(served) == 1 and None not in served
    # Each certificate fetched by one host, adopted by the four others.
    assert sources(results) == ["ca"] * 3 + ["fleet"] * 12
    # And the store says which host serves what.
    for cert in CERTS:
        served = fleet.redis.client.hgetall(f"stapled:{{{fleet.fingerprint(cert)}}}:hosts")
        held = digest(hosts[0].staple(cert) or b"")
        assert {k.decode(): v.decode().split()[0] for k, v in served.items()} == {
            h.name: held for h in hosts
        }
    # Every host says so in the state file too, and `status` reads it back.
    status = overview.status(hosts[1].stapler)
    assert {r.source for r in status.records} <= {"ca", "fleet"}
    assert status.fleet == {"redis": fleet.redis.url, "host_id": "web-1", "connected": True}


def test_each_later_window_costs_one_request_per_certificate(fleet: Fleet) -> None:
    hosts = [fleet.host(f"web-{i}") for i in range(3)]
    together(*hosts)
    for window in range(1, 3):
        # Past the refresh point of the staples held (half of four days).
        fleet.skew = timedelta(days=2, hours=window)
        before = fleet.site.responder.requests
        together(*hosts)
        assert fleet.site.responder.requests - before == len(CERTS)
        for cert in CERTS:
            assert len({h.staple(cert) for h in hosts}) == 1


def test_a_warm_pass_reads_the_store_and_adopts_a_newer_staple(fleet: Fleet) -> None:
    first, second = fleet.host("web-1"), fleet.host("web-2")
    together(first, second)
    fleet.skew = timedelta(days=2, hours=1)
    together(first)  # web-1 alone refreshes and shares
    fleet.skew = timedelta(0)  # web-2's staples are not due by its clock
    requests = fleet.site.responder.requests
    (result,) = together(second)
    assert fleet.site.responder.requests == requests
    for cert in CERTS:
        assert second.staple(cert) == first.staple(cert)
    assert {r.source for r in result.records} == {"fleet"}
    assert all(r.changed for r in result.records)


def test_a_dead_holder_loses_its_lease_and_another_host_asks(fleet: Fleet) -> None:
    host = fleet.host("web-2", extra="lease = 0.5")
    assert host.stapler.fleet is not None
    # web-1 took every lease, then died: nothing is ever published under them.
    dead = fleet.host("web-1").stapler.fleet
    assert dead is not None

    async def take() -> None:
        for cert in CERTS:
            assert isinstance(await dead.store.acquire(fleet.fingerprint(cert), 0.5), Lease)
        await dead.store.close()

    asyncio.run(take())
    (result,) = together(host)
    assert result.exit_code() == 0
    assert fleet.site.responder.requests == len(CERTS)
    assert all(host.staple(c) is not None for c in CERTS)


def test_a_failing_ca_is_backed_off_by_the_whole_fleet(fleet: Fleet) -> None:
    fleet.site.responder.answer = lambda _: (503, {}, b"busy")
    hosts = [fleet.host(f"web-{i}") for i in range(4)]
    results = together(*hosts)
    # One host asked (the back-off is shared), the others were told to wait.
    assert fleet.site.responder.requests == len(CERTS)
    errors = [r.last_error or "" for result in results for r in result.records]
    assert sum("the fleet waits until" in e for e in errors) == 3 * len(CERTS)
    assert all(r.exit_code() == 2 for r in results)  # no staple anywhere: critical


# ---- a store that cannot be trusted ---------------------------------------------------


def _poison(fleet: Fleet, kind: str) -> bytes | dict[bytes, bytes]:
    """Something that must never be written to disk from the store, for a.example."""
    ca, leaf = fleet.site.ca, fleet.issued["a.example"]
    now = datetime.now(UTC)
    if kind == "garbage":
        return b"\x30\x03\x0a\x01\x00junk"
    if kind == "another certificate's staple":
        return ca.sign_response(fleet.issued["b.example"].cert)
    if kind == "expired":
        return ca.sign_response(leaf.cert, this_update=now - timedelta(days=5))
    if kind == "older than the host's":
        return ca.sign_response(leaf.cert, this_update=now - timedelta(hours=6))
    if kind == "signed by a stranger":
        return testca.CA().sign_response(leaf.cert, issuer=ca.cert)
    if kind == "unknown":
        return ca.sign_response(leaf.cert, status=x509_ocsp.OCSPCertStatus.UNKNOWN)
    if kind == "tryLater":
        return testca.unsuccessful(x509_ocsp.OCSPResponseStatus.TRY_LATER)
    raise AssertionError(kind)


POISONS = (
    "garbage",
    "another certificate's staple",
    "expired",
    "older than the host's",
    "signed by a stranger",
    "unknown",
    "tryLater",
)


def _plant(fleet: Fleet, der: bytes, *, rank: int = 2**62) -> None:
    """Stored as a well-formed entry that claims to outrank anything."""
    key = f"stapled:{{{fleet.fingerprint('a.example')}}}:staple"
    fleet.redis.client.delete(key)
    fleet.redis.client.hset(
        key,
        mapping={
            "der": der,
            "digest": hashlib.sha256(der).hexdigest(),
            "final": 1,
            "this_update": rank,
            "produced_at": rank,
            "host": "evil",
        },
    )
    fleet.redis.client.incr("stapled:generation")


@pytest.mark.hostile
@pytest.mark.parametrize("kind", POISONS)
def test_a_poisoned_entry_is_never_written_and_gets_repaired(fleet: Fleet, kind: str) -> None:
    warm = fleet.host("web-1")
    together(warm)
    good = warm.staple("a.example")
    assert good is not None
    _plant(fleet, _poison(fleet, kind))
    cold = fleet.host("web-2")
    requests = fleet.site.responder.requests
    results = together(warm, cold)
    assert warm.staple("a.example") == good  # kept: nothing valid and newer was offered
    served = cold.staple("a.example")
    assert served is not None
    chain = fleet.chain("a.example")
    assert ocsp.validate(served, chain, datetime.now(UTC)).cert_status == "good"
    assert all(r.exit_code() == 0 for r in results)
    # The store holds a valid staple again, for the others; at most one new request.
    stored = fleet.redis.client.hget(f"stapled:{{{chain.fingerprint}}}:staple", "der")
    assert stored is not None
    ocsp.validate(stored, chain, datetime.now(UTC))
    assert fleet.site.responder.requests - requests <= 1


@pytest.mark.hostile
def test_a_key_of_the_wrong_type_is_repaired(fleet: Fleet) -> None:
    warm = fleet.host("web-1")
    together(warm)
    key = f"stapled:{{{fleet.fingerprint('a.example')}}}:staple"
    fleet.redis.client.delete(key)
    fleet.redis.client.lpush(key, b"junk")
    (result,) = together(warm)
    assert result.exit_code() == 0
    assert fleet.redis.client.type(key) == b"hash"


def test_a_revoked_answer_is_shared_and_reported_on_every_host(fleet: Fleet) -> None:
    hosts = [fleet.host(f"web-{i}") for i in range(3)]
    together(*hosts)
    fleet.site.ca.revoke(fleet.issued["b.example"].cert)
    fleet.skew = timedelta(days=2, hours=1)
    before = fleet.site.responder.requests
    results = together(*hosts)
    assert fleet.site.responder.requests - before == len(CERTS)
    for result in results:
        (b,) = [r for r in result.records if r.name == "b.example"]
        assert b.state is State.REVOKED
        assert result.exit_code() == 2


# ---- a store that is down --------------------------------------------------------------


def test_with_the_store_down_staples_stay_and_the_ca_waits_for_the_grace(fleet: Fleet) -> None:
    host = fleet.host("web-1", extra="grace = 3600\nspread = 600\ntimeout = 0.2")
    together(host)
    held = {c: host.staple(c) for c in CERTS}
    fleet.redis.stop()
    requests = fleet.site.responder.requests
    # Not due: nothing to ask; the store being gone changes nothing on disk.
    (result,) = together(host)
    assert result.exit_code() == 0 and {host.staple(c) for c in CERTS} == set(held.values())
    assert overview.status(host.stapler).fleet == {
        "redis": fleet.redis.url,
        "host_id": "web-1",
        "connected": False,
    }
    # Due, within the grace: kept, reported, no request.
    fleet.skew = timedelta(days=2, minutes=10)
    (result,) = together(host)
    assert fleet.site.responder.requests == requests
    assert result.exit_code() == 1
    assert all("asking the CA alone from" in (r.last_error or "") for r in result.records)
    assert {host.staple(c) for c in CERTS} == set(held.values())
    # Past the grace and this host's share of the spread: it asks alone.
    fleet.skew = timedelta(days=2, hours=1, minutes=11)
    (result,) = together(host)
    assert fleet.site.responder.requests == requests + len(CERTS)
    assert result.exit_code() == 0
    assert all(host.staple(c) != held[c] for c in CERTS)


def test_a_store_hung_while_the_ca_answers_costs_no_answer(fleet: Fleet) -> None:
    """A host holds its leases and the CA answers, then the store hangs before the
    answers are shared: each answer is written, none is asked for twice."""
    default = fleet.site.responder.answer

    def hang_the_store(request_der: bytes) -> tuple[int, dict[str, str], bytes]:
        fleet.redis.pause()
        return default(request_der)

    fleet.site.responder.answer = hang_the_store
    for skew in (timedelta(0), timedelta(days=2, minutes=10)):
        # Cold (nothing to serve meanwhile), then due within the grace (a staple to keep);
        # a new Stapler each time (as each `once` is), not one that counts the store down
        # already.  Short leases: the hung store kept the first run's, the second waits.
        host = fleet.host("web-1", extra="grace = 3600\nspread = 600\ntimeout = 0.2\nlease = 1")
        fleet.skew = skew
        held = {c: host.staple(c) for c in CERTS}
        requests = fleet.site.responder.requests
        try:
            (result,) = together(host)
        finally:
            fleet.redis.resume()
        assert fleet.site.responder.requests == requests + len(CERTS)
        assert result.exit_code() == 0
        assert all(r.source == "ca" for r in result.records)
        for cert in CERTS:
            assert host.staple(cert) not in (None, held[cert])
            assert fleet.valid(cert, host.staple(cert))


def test_a_staple_adopted_while_waiting_is_kept_when_the_store_hangs(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host waits for another's lease; meanwhile it adopts the holder's answer (the
    daemon hears it announced), then the store hangs before the wait sees it: the
    adopted staple is served, and the CA is not asked again."""
    # One long step of the wait, so that all of this happens inside it.
    monkeypatch.setattr(share, "WAIT_STEPS", (5.0,))
    cert = "a.example"
    waiting = fleet.host("web-2", extra="timeout = 0.2\ngrace = 3600")
    holder = fleet.host("web-1")
    assert waiting.stapler.fleet is not None and holder.stapler.fleet is not None
    shared = holder.stapler.fleet.store
    fp = fleet.fingerprint(cert)

    async def main() -> list[Record]:
        _, groups = waiting.stapler.scan()
        lease = await shared.acquire(fp, 30)
        assert isinstance(lease, Lease)
        refresh = asyncio.ensure_future(waiting.stapler.refresh(groups[fp]))
        async with asyncio.timeout(10):  # until it has asked for the lease (a script)
            while not fleet.last_command("web-2", "evalsha"):
                await asyncio.sleep(0.01)
        der = fleet.site.ca.sign_response(fleet.issued[cert].cert)
        staple = ocsp.validate(der, fleet.chain(cert), fleet.now())
        assert await shared.publish(fp, lease, Entry.of(staple)) is Outcome.STORED
        adopted = await waiting.stapler.adopt(groups[fp])
        assert adopted and adopted[0].state is State.GOOD
        fleet.redis.pause()
        try:
            return await refresh
        finally:
            fleet.redis.resume()
            for h in (waiting, holder):
                assert h.stapler.fleet is not None
                await h.stapler.fleet.store.close()

    records = asyncio.run(main())
    assert fleet.site.responder.requests == 0
    assert [r.state for r in records] == [State.GOOD] and records[0].last_error is None
    assert waiting.staple(cert) == fleet.redis.client.hget(f"stapled:{{{fp}}}:staple", "der")


def test_a_store_restarted_empty_is_seeded_without_asking_the_ca(fleet: Fleet) -> None:
    hosts = [fleet.host(f"web-{i}") for i in range(3)]
    together(*hosts)
    fleet.redis.stop()
    fleet.redis.start()
    requests = fleet.site.responder.requests
    together(*hosts)
    assert fleet.site.responder.requests == requests
    for cert in CERTS:
        stored = fleet.redis.client.hget(f"stapled:{{{fleet.fingerprint(cert)}}}:staple", "der")
        assert stored == hosts[0].staple(cert)


def test_a_certificate_renewed_on_one_host_only_gets_its_own_staple(fleet: Fleet) -> None:
    """Mid-rollout: keys are per certificate, so two certificates under one name never
    share a staple."""
    old_host = fleet.host("web-1")
    together(old_host)
    renewed = fleet.site.root / "renewed"
    renewed.mkdir()
    leaf = fleet.site.issue("a.example")
    testca.write(renewed / "a.example.pem", leaf.cert_pem(), fleet.site.ca.cert_pem())
    new_host_path = fleet.site.root / "web-2.toml"
    new_host_path.write_text(
        f'output_dir = "{fleet.site.root / "web-2"}"\ncertificates = ["{renewed}"]\n'
        f'[fleet]\nredis = "{fleet.redis.url}"\nhost_id = "web-2"\n'
    )
    new_host = Host(
        "web-2", Stapler(config.load(new_host_path), transport=Transport(timeout=5)), renewed
    )
    together(old_host, new_host)
    served = (fleet.site.root / "web-2" / "a.example.der").read_bytes()
    chain = certs.build_chain([leaf.cert, fleet.site.ca.cert], "a.example")
    assert ocsp.validate(served, chain, datetime.now(UTC)).serial == leaf.cert.serial_number
    assert served != old_host.staple("a.example")


def test_entries_rank_like_settle() -> None:
    """The store's cheap ordering never contradicts the validated one."""
    ca = testca.CA()
    leaf = ca.issue("r.example", ocsp_urls=["http://127.0.0.1:9/"])
    chain = certs.build_chain([leaf.cert, ca.cert], "r.example")
    now = datetime.now(UTC)
    staples = [
        ocsp.validate(
            ca.sign_response(leaf.cert, this_update=now - timedelta(hours=h), status=status),
            chain,
            now,
        )
        for h in (1, 5, 9)
        for status in (x509_ocsp.OCSPCertStatus.GOOD, x509_ocsp.OCSPCertStatus.REVOKED)
    ]
    from stapled.core import plan
    from stapled.core.model import Fetched

    for held in staples:
        for offered in staples:
            if held is offered:
                continue
            kept = plan.settle(held, Fetched(offered)).current is offered
            assert kept == (Entry.of(offered).rank > Entry.of(held).rank), (held, offered)
            assert digest(offered.der) != digest(held.der)


Poison = Callable[[Fleet], bytes]


# ---- whatever the store holds ----------------------------------------------------------


def test_whatever_the_store_holds_only_a_valid_newer_staple_is_taken(
    fleet: Fleet,
) -> None:
    """A property over arbitrary entries: bytes, digests and rank fields of any kind, and
    sometimes a real response (any status, any age, for this or another certificate)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from stapled.fleet.share import Fleet as Sharing

    host = fleet.host("web-1")
    together(host)
    chain = fleet.chain("a.example")
    held_der = host.staple("a.example")
    assert held_der is not None
    held = ocsp.validate(held_der, chain, datetime.now(UTC))
    sharing = host.stapler.fleet
    assert isinstance(sharing, Sharing)
    key = f"stapled:{{{chain.fingerprint}}}:staple"
    statuses = list(x509_ocsp.OCSPCertStatus)
    real = st.builds(
        lambda cert, status, hours: fleet.site.ca.sign_response(
            fleet.issued[cert].cert,
            status=status,
            this_update=datetime.now(UTC) - timedelta(hours=hours),
        ),
        st.sampled_from(CERTS),
        st.sampled_from(statuses),
        st.floats(-1, 200),
    )
    field = st.one_of(st.binary(max_size=40), st.integers().map(lambda i: str(i).encode()))

    @settings(max_examples=60, deadline=None)
    @given(der=st.one_of(st.binary(max_size=300), real), digest_=field, rank=field)
    def check(der: bytes, digest_: bytes, rank: bytes) -> None:
        fleet.redis.client.delete(key)
        fleet.redis.client.hset(
            key, mapping={"der": der, "digest": digest_, "this_update": rank, "final": rank}
        )

        async def go() -> object:
            try:
                return await sharing.reconcile(chain, held)
            finally:
                await sharing.store.close()

        taken = asyncio.run(go())
        if taken is not None:
            staple = taken.staple  # type: ignore[attr-defined]
            # Taken only when it validates for this certificate and wins over the held one.
            assert ocsp.validate(staple.der, chain, datetime.now(UTC)) is not None
            assert staple.der == der and staple.cert_status != "unknown"
            # Newer, or a revocation (which wins over a good staple however old it is).
            assert not staple.is_older_than(held) or (
                staple.cert_status == "revoked" and held.cert_status == "good"
            )
        else:
            # Refused: the store gets this host's valid staple back (unless it held it).
            stored = fleet.redis.client.hget(key, "der")
            assert stored in (held_der, der)

    check()


def test_the_fleet_metrics(fleet: Fleet) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def metrics(host: Host, result: PassResult) -> dict[tuple[str, tuple[str, ...]], float]:
        path = fleet.site.root / f"{host.name}.prom"
        up = host.stapler.fleet.store.connected if host.stapler.fleet is not None else None
        textfile.write(path, __version__, host.stapler.tally, result, up)
        return {
            (s.name, tuple(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(path.read_text())
            for s in f.samples
        }

    first, second = fleet.host("web-1"), fleet.host("web-2")
    together(first)
    (result,) = together(second)
    seen = metrics(second, result)
    assert seen["stapled_fleet_up", ()] == 1.0
    assert seen["stapled_staple_updates_total", ("cert=a.example", "source=fleet")] == 1.0
    assert ("stapled_ocsp_fetch_total", ("cert=a.example", "result=success")) not in seen
    _plant(fleet, b"garbage")
    (result,) = together(second)
    seen = metrics(second, result)
    assert seen["stapled_fleet_rejected_total", ("cert=a.example", "reason=invalid")] == 1.0
    fleet.redis.stop()
    (result,) = together(second)
    assert metrics(second, result)["stapled_fleet_up", ()] == 0.0
