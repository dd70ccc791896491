"""`stapled run` for a long time with short response windows: is anything growing?

Builds N certificates, serves OCSP answers valid for a few minutes (signed afresh at
every request, so the daemon refreshes each certificate every minute or two), runs the
daemon, and samples its resident memory, open file descriptors and threads. It prints
one line per sample and, at the end, each series' slope per hour over the second half
of the run (the first half holds the warm-up).

    .venv/bin/python benchmarks/soak.py --certificates 300 --minutes 60
    .venv/bin/python benchmarks/soak.py --certificates 100 --minutes 5 --every 10

Nothing here is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import scale
from cryptography import x509


class FreshResponder(scale.FastResponder):
    """Signs an answer at every request, valid for ``window`` from a minute ago."""

    def __init__(self, world: scale.World, window: timedelta) -> None:
        super().__init__()
        self.world = world
        self.window = window
        self.leaves = {leaf.serial_number: leaf for leaf in world.leaves}
        self.responses = _Signing(self)


class _Signing(dict[int, bytes]):
    def __init__(self, responder: FreshResponder) -> None:
        super().__init__()
        self.responder = responder

    def __getitem__(self, serial: int) -> bytes:
        return _sign(self.responder, self.responder.leaves[serial])


def _sign(responder: FreshResponder, leaf: x509.Certificate) -> bytes:
    this_update = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    return scale.signed_response(responder.world, leaf, this_update, responder.window)


def _sample(pid: int) -> tuple[float, int, int]:
    """Resident MiB, open descriptors and threads of ``pid``."""
    rss_kib, threads = 0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return rss_kib / 1024, fds, threads


def _slope_per_hour(times: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` over ``times`` (seconds), per hour."""
    n = len(times)
    if n < 2:
        return 0.0
    mean_t, mean_v = sum(times) / n, sum(values) / n
    var = sum((t - mean_t) ** 2 for t in times)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True))
    return cov / var * 3600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--window", type=float, default=4.0, help="response validity, minutes")
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="stapled-soak-"))
    responder: FreshResponder | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        fast = scale.FastResponder()
        world = scale.build(top, args.certificates, fast.url)
        fast.stop()
        responder = FreshResponder(world, timedelta(minutes=args.window))
        extra = "min_refresh_interval = 10\nretry_min = 5\nretry_max = 30\n"
        cfg = scale.stapled_config(world, top / "staples", responder.url, extra)
        log = (top / "daemon.log").open("wb")
        proc = subprocess.Popen(
            [scale.PYTHON, "-m", "stapled", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=scale.ROOT,
        )
        started = time.monotonic()
        series: list[tuple[float, float, int, int, int]] = []
        print("minute  requests  RSS MiB  fds  threads", flush=True)
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            if proc.poll() is not None:
                print((top / "daemon.log").read_text()[-2000:], file=sys.stderr)
                return 1
            rss, fds, threads = _sample(proc.pid)
            elapsed = time.monotonic() - started
            series.append((elapsed, rss, fds, threads, responder.requests))
            print(
                f"{elapsed / 60:6.1f}  {responder.requests:8d}  {rss:7.1f}  {fds:3d}  {threads:7d}",
                flush=True,
            )
        half = [s for s in series if s[0] >= series[-1][0] / 2] if series else []
        times = [s[0] for s in half]
        for name, index in (("RSS MiB", 1), ("fds", 2), ("threads", 3)):
            slope = _slope_per_hour(times, [float(s[index]) for s in half])
            print(f"slope over the second half: {name} {slope:+.2f} per hour")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if responder is not None:
            responder.stop()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
