"""SIGHUP is a restart without the gap: a daemon started on configuration A and reloaded
to B answers on exactly B's listeners and manages exactly B's certificates, as one
started on B would; what cannot be applied refuses B whole, naming the key."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..conftest import Site
from ..daemonproc import DaemonProcess, wait_for
from ..redisproc import RedisServer
from ..servers import free_port

pytestmark = pytest.mark.servers


@dataclass(frozen=True)
class Shape:
    """What a configuration holds: which sources, which listeners on which slot, whether
    it is in a fleet, and which endpoint it probes."""

    sources: frozenset[str]
    responder: int | None  # index into the ports of the test
    metrics: int | None
    fleet: bool = False
    probe: int | None = None  # index into the closed ports of the test
    reload: int | None = None  # which of two marker files its reload_command touches


shapes = st.builds(
    Shape,
    sources=st.frozensets(st.sampled_from(["one", "two"]), min_size=1),
    responder=st.one_of(st.none(), st.integers(0, 1)),
    metrics=st.one_of(st.none(), st.integers(2, 3)),
    fleet=st.booleans(),
    probe=st.one_of(st.none(), st.integers(0, 1)),
    reload=st.one_of(st.none(), st.integers(0, 1)),
)


def _marker(site: Site, index: int) -> Path:
    return site.out.parent / f"reloaded-{index}"


def _write(
    site: Site, shape: Shape, ports: list[int], redis_url: str = "", closed: Sequence[int] = ()
) -> None:
    sources = json.dumps([str(site.certs / s) for s in sorted(shape.sources)])
    extra = "probe_interval = 3600\n"
    if shape.reload is not None:
        extra += f'reload_command = ["touch", "{_marker(site, shape.reload)}"]\n'
    if shape.responder is not None:
        extra += f'[responder]\nlisten = "127.0.0.1:{ports[shape.responder]}"\n'
    if shape.metrics is not None:
        extra += f'[metrics]\nlisten = "127.0.0.1:{ports[shape.metrics]}"\n'
    if shape.fleet:
        extra += f'[fleet]\nredis = "{redis_url}"\nhost_id = "web-1"\n'
    if shape.probe is not None:
        target = f"127.0.0.1:{closed[shape.probe]}"
        extra += f'[[probe]]\ntarget = "{target}"\nservername = "one.example"\n'
    site.config(extra, certificates=sources)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _state(site: Site) -> dict[str, object]:
    path = next(site.out.rglob("state.json"), None)
    if path is None:
        return {}
    try:
        found = json.loads(path.read_text())
    except ValueError:
        return {}  # not there yet
    return found if isinstance(found, dict) else {}


def _state_names(site: Site) -> set[str]:
    return set(_state(site).get("certificates", {}))  # type: ignore[call-overload]


def _probed(output: str, port: int) -> bool:
    return f"probe: UNKNOWN - 127.0.0.1:{port} " in output


def _holds(
    site: Site, d: DaemonProcess, shape: Shape, ports: list[int], taken: int | None = None
) -> bool:
    """``taken``: a port another socket listens on (and never accepts from)."""
    wanted = {ports[i] for i in (shape.responder, shape.metrics) if i is not None}
    if {p for p in ports if p != taken and _listening(p)} != wanted - {taken}:
        return False
    if shape.metrics is not None:
        text = requests.get(f"http://127.0.0.1:{ports[shape.metrics]}/metrics", timeout=5).text
        served = {
            line.split('cert="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith("stapled_staple_valid{")
        }
        if served != {f"{s}.example" for s in shape.sources}:
            return False
    if ("fleet" in _state(site)) != shape.fleet:
        return False
    return _state_names(site) == {f"{s}.example" for s in shape.sources}


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(a=shapes, b=shapes)
def test_a_reload_gives_exactly_what_a_start_on_the_new_file_would(
    site: Site,
    daemon: Callable[..., DaemonProcess],
    redis_server: RedisServer,
    a: Shape,
    b: Shape,
) -> None:
    for name in ("one", "two"):
        if not (site.certs / name).exists():
            (site.certs / name).mkdir()
            site.bundle(f"{name}/{name}.example", site.issue(f"{name}.example"))
    ports = [free_port() for _ in range(4)]
    closed = [free_port() for _ in range(2)]
    _write(site, a, ports, redis_server.url, closed)
    d = daemon()
    try:
        wait_for("configuration A in force", lambda: _holds(site, d, a, ports))
        if a.probe is not None:
            wait_for("A's probe", lambda: _probed(d.output(), closed[a.probe]))  # type: ignore[index]
        readies = d.count("READY=1")
        _write(site, b, ports, redis_server.url, closed)
        d.signal(signal.SIGHUP)
        wait_for("the reload", lambda: d.count("READY=1") > readies)
        mark = len(d.output())
        wait_for("configuration B in force", lambda: _holds(site, d, b, ports))
        if b.probe is not None:
            port = closed[b.probe]
            wait_for("B's probe", lambda: _probed(d.output()[mark:], port))
        # A's probe target, if B does not name it, is probed no more.
        for i, port in enumerate(closed):
            if a.probe == i and b.probe != i:
                assert not _probed(d.output()[mark:], port), d.output()[mark:]
        if b.reload is not None:
            # A renewal after the reload runs B's reload_command, not A's.
            for i in (0, 1):
                _marker(site, i).unlink(missing_ok=True)
            name = min(b.sources)
            site.bundle(f"{name}/{name}.example", site.issue(f"{name}.example"))
            wait_for("B's reload_command", _marker(site, b.reload).exists)
            assert not _marker(site, 1 - b.reload).exists()
        assert d.proc.poll() is None, d.output()
        assert "Traceback" not in d.output()
    finally:
        d.stop()


def test_a_listener_that_cannot_bind_refuses_the_new_file_whole(
    site: Site, daemon: Callable[..., DaemonProcess]
) -> None:
    (site.certs / "one").mkdir()
    site.bundle("one/one.example", site.issue("one.example"))
    ports = [free_port() for _ in range(4)]
    a = Shape(frozenset({"one"}), responder=0, metrics=None)
    _write(site, a, ports)
    d = daemon()
    busy = socket.socket()
    busy.bind(("127.0.0.1", ports[2]))
    busy.listen()
    try:
        wait_for("A", lambda: _holds(site, d, a, ports, taken=ports[2]))
        readies = d.count("READY=1")
        # B moves the responder and adds metrics on a port that is taken.
        _write(site, Shape(frozenset({"one"}), responder=1, metrics=2), ports)
        d.signal(signal.SIGHUP)
        wait_for("the refusal", lambda: d.count("READY=1") > readies)
        out = d.output()
        (line,) = [x for x in out.splitlines() if "keeping the configuration in use" in x]
        assert "ERROR" in line and str(site.config_path) in line and "metrics.listen" in line
        # A stays whole: its responder still answers, B's new one was closed again.
        assert _listening(ports[0]) and not _listening(ports[1])
        assert d.proc.poll() is None and "Traceback" not in out
    finally:
        busy.close()
        d.stop()


def test_a_responder_added_by_reload_answers(
    site: Site, daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """The reproduction: [responder] appended, SIGHUP; the process used to exit 1."""
    site.bundle("a.example", site.issue("a.example"))
    site.config()
    d = daemon()
    port = free_port()
    with site.config_path.open("a") as f:
        f.write(f'\n[responder]\nlisten = "127.0.0.1:{port}"\n')
    d.signal(signal.SIGHUP)
    wait_for("the responder", lambda: _listening(port))
    assert d.proc.poll() is None and "Traceback" not in d.output()
    assert d.stop() == 0
