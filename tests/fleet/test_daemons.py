"""Real `stapled run` processes of one fleet (own output directories and host ids), one
real redis-server and one counting responder: a simultaneous cold start, a refresh
window, a lease holder killed or stopped mid-fetch, Redis stopped, restarted empty and
hung.  No staple is ever lost or replaced by anything invalid, and the fleet converges."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.x509 import ocsp as x509_ocsp

from stapled.core import certs, ocsp
from stapled.demo import ca as testca

from ..conftest import Site
from ..daemonproc import DaemonProcess, wait_for
from ..redisproc import RedisServer

pytestmark = pytest.mark.servers

CERTS = ("a.example", "b.example")


class Fleet:
    def __init__(self, site: Site, redis: RedisServer, hosts: int, **fleet: object) -> None:
        self.site, self.redis = site, redis
        self.issued = {name: site.issue(name) for name in CERTS}
        for name, leaf in self.issued.items():
            site.bundle(name, leaf)
        self.names = [f"web-{i}" for i in range(hosts)]
        # The shipped timeout: a loaded machine must not count the store down by mistake.
        settings = {"lease": 4, "poll_interval": 0.5, "timeout": 1.0, **fleet}
        extra = "\n".join(f"{k} = {v}" for k, v in settings.items())
        for name in self.names:
            (site.root / f"{name}.toml").write_text(
                f'output_dir = "{site.root / name}"\ncertificates = ["{site.certs}"]\n'
                "timeout = 5\ndebounce = 0.2\nmin_refresh_interval = 1\nretry_min = 1\n"
                f'retry_max = 5\n[fleet]\nredis = "{redis.url}"\nhost_id = "{name}"\n{extra}\n'
            )
        self.daemons: dict[str, DaemonProcess] = {}

    def start(self) -> None:
        """Every host at once: all are started before any is waited for."""
        for name in self.names:
            self.daemons[name] = DaemonProcess(
                self.site,
                config=self.site.root / f"{name}.toml",
                log=self.site.root / f"{name}.log",
            )
        for d in self.daemons.values():
            d.wait_ready()

    def staple(self, host: str, cert: str) -> bytes | None:
        path = self.site.root / host / f"{cert}.der"
        return path.read_bytes() if path.exists() else None

    def alive(self) -> list[str]:
        return [n for n, d in self.daemons.items() if d.proc.poll() is None]

    def chain(self, cert: str) -> certs.CertChain:
        pem = (self.site.certs / f"{cert}.pem").read_bytes()
        return certs.build_chain(certs.parse_certificates(pem, cert), cert)

    def valid(self, host: str, cert: str) -> ocsp.Staple | None:
        der = self.staple(host, cert)
        if der is None:
            return None
        try:
            return ocsp.validate(der, self.chain(cert), datetime.now(UTC))
        except Exception:
            return None

    def converged(self, cert: str, hosts: list[str] | None = None) -> bool:
        served = {self.staple(h, cert) for h in hosts or self.alive()}
        return len(served) == 1 and all(self.valid(h, cert) for h in hosts or self.alive())

    def logs(self) -> str:
        """Every host's log, for a failure's message."""
        return "\n".join(f"--- {n}\n{d.output()}" for n, d in self.daemons.items())

    def lease_holder(self, cert: str) -> str | None:
        value = self.redis.client.get(f"stapled:{{{self.chain(cert).fingerprint}}}:lease")
        return value.decode().split(" ", 1)[1] if value else None

    def renew(self, cert: str) -> testca.Issued:
        leaf = self.site.issue(cert)
        tmp = self.site.certs / f".{cert}.tmp"
        testca.write(tmp, leaf.cert_pem(), self.site.ca.cert_pem())
        os.replace(tmp, self.site.certs / f"{cert}.pem")
        return leaf

    def stop(self) -> dict[str, int]:
        return {n: d.stop() for n, d in self.daemons.items() if d.proc.poll() is None}

    def kill(self) -> None:
        for d in self.daemons.values():
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
            d.sock.close()


@pytest.fixture
def make_fleet(site: Site, redis_server: RedisServer) -> Iterator[object]:
    made: list[Fleet] = []

    def make(hosts: int, **fleet: object) -> Fleet:
        made.append(Fleet(site, redis_server, hosts, **fleet))
        return made[-1]

    yield make
    for f in made:
        f.kill()


def test_a_fleet_of_daemons_asks_once_per_certificate_and_window(make_fleet: object) -> None:
    fleet = make_fleet(3)  # type: ignore[operator]
    # Answers valid for 20 s from now, so that a refresh window passes in the test.
    fleet.site.responder.answer_aged(timedelta(seconds=1), timedelta(seconds=20))
    fleet.start()
    # A simultaneous cold start: one request per certificate for the fleet.
    assert fleet.site.responder.requests == len(CERTS)
    for cert in CERTS:
        assert fleet.converged(cert)
    first = {c: fleet.staple("web-0", c) for c in CERTS}
    # The next window (the refresh point is half of 20 s, jittered by 1 s either way).
    for cert in CERTS:
        wait_for(
            f"a new staple of {cert} on some host",
            lambda c=cert: any(fleet.staple(h, c) != first[c] for h in fleet.names),
            timeout=20,
        )
        # Announced: every host serves the same bytes within 5 s of the first write.
        wait_for(f"{cert} converged", lambda c=cert: fleet.converged(c), timeout=5)
    assert fleet.site.responder.requests == 2 * len(CERTS)
    assert fleet.stop() == dict.fromkeys(fleet.names, 0)
    assert not [n for n, d in fleet.daemons.items() if "Traceback" in d.output()]


def test_holders_killed_or_stopped_and_redis_gone_cost_no_staple(make_fleet: object) -> None:
    fleet = make_fleet(3)  # type: ignore[operator]
    fleet.start()
    assert fleet.site.responder.requests == len(CERTS)
    slow: set[int] = set()
    default = fleet.site.responder.answer

    def slowly(request_der: bytes) -> tuple[int, dict[str, str], bytes]:
        if x509_ocsp.load_der_ocsp_request(request_der).serial_number in slow:
            time.sleep(2)  # a fetch in flight long enough to kill its host
        return default(request_der)

    fleet.site.responder.answer = slowly

    # 1. The lease holder is killed mid-fetch: its lease runs out, another host asks.
    leaf = fleet.renew("a.example")
    slow.add(leaf.cert.serial_number)
    holder = wait_for_value("a lease holder", lambda: fleet.lease_holder("a.example"))
    os.kill(fleet.daemons[holder].proc.pid, signal.SIGKILL)
    fleet.daemons[holder].proc.wait()
    wait_for(
        "the others to converge",
        lambda: fleet.converged("a.example"),
        timeout=20,
        detail=fleet.logs,
    )
    assert fleet.valid(fleet.alive()[0], "a.example").serial == leaf.cert.serial_number

    # 2. The holder is stopped mid-fetch and resumed after another host took over: its
    #    late answer is refused by the store, and it serves the fleet's.
    leaf = fleet.renew("b.example")
    slow.add(leaf.cert.serial_number)
    holder = wait_for_value("a lease holder", lambda: fleet.lease_holder("b.example"))
    stalled = fleet.daemons[holder]
    stalled.proc.send_signal(signal.SIGSTOP)
    others = [h for h in fleet.alive() if h != holder]
    wait_for(
        "the others to converge",
        lambda: fleet.converged("b.example", others),
        timeout=20,
        detail=fleet.logs,
    )
    stalled.proc.send_signal(signal.SIGCONT)
    # Its own refresh ends too (refused, timed out or kept: whichever way the stop fell),
    # and the fleet serves one staple again.  Not at once: a store call that times out
    # as the host wakes sends it to the CA alone (it has no staple for the new
    # certificate), and its newer answer reaches the others through the store.
    wait_for(
        "the stalled host's refresh to end",
        lambda: stalled.output().count("b.example: good staple") >= 2,
        timeout=20,
        detail=fleet.logs,
    )
    wait_for("the fleet to converge", lambda: fleet.converged("b.example"), 20, detail=fleet.logs)

    # 3. Redis stopped: every host keeps serving, and says so.
    served = {(h, c): fleet.staple(h, c) for h in fleet.alive() for c in CERTS}
    requests = fleet.site.responder.requests
    fleet.redis.stop()
    wait_for(
        "every host to notice",
        lambda: all(_fleet_state(fleet, h).get("connected") is False for h in fleet.alive()),
    )
    # 4. Restarted empty: re-seeded from the hosts' staples, no CA request.
    fleet.redis.start()
    wait_for("the store re-seeded", lambda: len(fleet.redis.staple_keys()) == len(CERTS))
    for cert in CERTS:
        stored = fleet.redis.client.hget(
            f"stapled:{{{fleet.chain(cert).fingerprint}}}:staple", "der"
        )
        assert stored == served[fleet.alive()[0], cert]
    # 5. Hung (SIGSTOP): the daemons go on and stop cleanly within their timeouts.
    fleet.redis.pause()
    try:
        wait_for(
            "every host to notice the hang",
            lambda: all(_fleet_state(fleet, h).get("connected") is False for h in fleet.alive()),
        )
        assert {(h, c): fleet.staple(h, c) for h in fleet.alive() for c in CERTS} == served
        assert fleet.site.responder.requests == requests
        codes = fleet.stop()
    finally:
        fleet.redis.resume()
    assert codes and set(codes.values()) == {0}
    assert not [n for n, d in fleet.daemons.items() if "Traceback" in d.output()]


def wait_for_value(what: str, read: object, timeout: float = 15.0) -> str:
    found: list[str] = []

    def check() -> bool:
        value = read()  # type: ignore[operator]
        if value:
            found.append(value)
        return bool(value)

    wait_for(what, check, timeout)
    return found[0]


def _fleet_state(fleet: Fleet, host: str) -> dict[str, object]:
    """The daemon's view of the store, as its state file records it."""
    path = fleet.site.root / host / ".stapled" / "state.json"
    try:
        value = json.loads(path.read_text()).get("fleet") or {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
