"""Fleet mode: CA requests, time to converge and Redis load for H hosts x M certificates.

Starts a real redis-server on a loopback port of its own and the pre-signing responder of
scale.py, then for each H:
- without fleet mode: H `stapled once` runs (own output directories): the requests;
- with fleet mode: H `stapled run` daemons started together against one empty Redis: the
  requests, the seconds from their start until every host holds all M staples and they
  are byte-identical, and, 10 s after that, Redis commands per host per minute at rest.

    .venv/bin/python benchmarks/fleet.py                      # H = 1, 3, 10; M = 100
    .venv/bin/python benchmarks/fleet.py --hosts 5 --certs 1000 --rest 120

Nothing here is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from scale import FastResponder, World, build

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, top: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(top)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        sys.exit("redis-server did not start")

    def calls(self) -> int:
        stats = self.client.info("commandstats")
        return sum(int(v["calls"]) for v in stats.values() if isinstance(v, dict))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def config(world: World, out: Path, url: str, fleet: str = "") -> Path:
    path = out.with_suffix(".toml")
    path.write_text(
        f'output_dir = "{out}"\n'
        f'certificates = [{{ path = "{world.top / "letsencrypt"}", ocsp_url = "{url}" }}]\n'
        f"{fleet}\n"
    )
    return path


def stapled(*args: str) -> list[str]:
    return [sys.executable, "-m", "stapled", *args]


def staples(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.der")} if out.exists() else {}


def run_hosts(world: World, responder: FastResponder, store: Redis, hosts: int, rest: float) -> str:
    top = world.top / f"h{hosts}"
    top.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Without fleet mode: every host asks for every certificate.
    before = responder.requests
    for i in range(hosts):
        cfg = config(world, top / f"alone-{i}", responder.url)
        subprocess.run(stapled("once", "--quiet", "--config", str(cfg)), env=env, check=False)
    alone = responder.requests - before
    # Fleet mode: H daemons started together on an empty store.
    store.client.flushall()
    before = responder.requests
    outs = [top / f"web-{i}" for i in range(hosts)]
    procs = []
    start = time.monotonic()
    for i, out in enumerate(outs):
        fleet = f'[fleet]\nredis = "{store.url}"\nhost_id = "web-{i}"\n'
        cfg = config(world, out, responder.url, fleet)
        procs.append(
            subprocess.Popen(
                stapled("run", "--config", str(cfg)),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        m = len(world.leaves)
        while True:
            held = [staples(out) for out in outs]
            if all(len(h) == m for h in held) and all(h == held[0] for h in held):
                break
            if time.monotonic() - start > 600:
                return f"| {hosts} | {m} | {alone} | did not converge in 600 s | | |"
            time.sleep(0.05)
        converged = time.monotonic() - start
        shared = responder.requests - before
        # Each daemon compares every digest once after its start; rest begins after that.
        time.sleep(10)
        store.client.config_resetstat()
        begin = store.calls()
        time.sleep(rest)
        # Less the INFO call that read the count.
        per_minute = (store.calls() - begin - 1) / hosts / (rest / 60)
        if os.environ.get("STAPLED_BENCH_DETAIL"):
            print(store.client.info("commandstats"), file=sys.stderr)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
    return f"| {hosts} | {m} | {alone} | {shared} | {converged:.1f} | {per_minute:.0f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,3,10")
    parser.add_argument("--certs", type=int, default=100)
    parser.add_argument("--rest", type=float, default=60.0, help="seconds at rest to count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stapled-fleet-") as tmp:
        top = Path(tmp)
        responder = FastResponder()
        world = build(top, args.certs, responder.url)
        responder.sign_all(world)
        store = Redis(top)
        try:
            print("| hosts | certificates | CA requests alone | CA requests in a fleet "
                  "| seconds to converge | Redis commands per host per minute at rest |"
            )  # fmt: skip
            print("|---|---|---|---|---|---|")
            for hosts in (int(h) for h in args.hosts.split(",")):
                print(run_hosts(world, responder, store, hosts, args.rest), flush=True)
        finally:
            store.stop()
            responder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
