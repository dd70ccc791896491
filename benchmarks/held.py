"""What `stapled run` holds for each certificate, by the line that allocated it.

Builds N certificates in certbot's lineage layout (or reads them from --cache), serves
them from a pre-signing responder, starts the daemon in a child process under
tracemalloc, and once its first pass is done (READY, as systemd would be told) prints
what Python holds in all and the allocation sites that hold the most, in bytes a
certificate: where to look for the next cut.

    .venv/bin/python benchmarks/held.py --size 10000
    .venv/bin/python benchmarks/held.py --size 100000 --cache /var/tmp/stapled-bench --top 40

Nothing here is asserted: it prints figures.  tracemalloc slows the daemon several times
over and adds to its memory, so its resident memory here is not the figure scale.py
reports; the bytes a certificate are.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from dataclasses import replace
from pathlib import Path

from scale import FastResponder, cached, stapled_config

HERE = Path(__file__).resolve().parent
TOP = HERE.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="certificates")
    parser.add_argument("--top", type=int, default=30, help="allocation sites to print")
    parser.add_argument(
        "--cache", type=Path, help="keep the built certificates here for later runs"
    )
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "REPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(Path(args.child[0]), Path(args.child[1]), args.top)
    with tempfile.TemporaryDirectory(prefix="stapled-held-") as scratch:
        top = Path(scratch)
        responder = FastResponder()
        world = cached(args.cache or top / "certificates", args.size, responder.url)
        responder.sign_all(world)
        world = replace(world, scratch=top)
        config = stapled_config(world, top / "staples", responder.url, "debounce = 0.5\n")
        report = top / "held.json"
        child = [sys.executable, str(Path(__file__).resolve()), "--top", str(args.top)]
        log = top / "daemon.log"
        with log.open("wb") as output:
            done = subprocess.run(
                [*child, "--child", str(config), str(report)], cwd=TOP, stdout=output, stderr=output
            )
        responder.stop()
        if not report.exists():  # the daemon stopped before READY: say why
            raise SystemExit(f"the daemon exited ({done.returncode}):\n{log.read_text()[-2000:]}")
        _print(json.loads(report.read_text()), args.size)
    return 0


def _child(config: Path, report: Path, top: int) -> int:
    """The daemon under tracemalloc; at READY, what it holds goes to ``report``."""
    tracemalloc.start()
    from stapled.service.daemon import Daemon
    from stapled.service.sdnotify import Notifier

    gc.collect()
    # What the interpreter and stapled's modules hold before any certificate.
    baseline, _ = tracemalloc.get_traced_memory()
    ready = threading.Event()

    class Ready(Notifier):
        def ready(self, status: str) -> None:
            ready.set()

    def take() -> None:
        ready.wait()
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")
        # Modules imported once running (watchdog's, h11's): code, not certificates.
        code = sum(s.size for s in stats if s.traceback[0].filename.startswith(_IMPORTS))
        sites = [
            (_where(s.traceback[0].filename, s.traceback[0].lineno), s.size, s.count)
            for s in stats
            if not s.traceback[0].filename.startswith(_IMPORTS)
        ][:top]
        traced, _ = tracemalloc.get_traced_memory()
        found = {"traced": traced, "baseline": baseline + code, "sites": sites}
        report.write_text(json.dumps(found))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=take, daemon=True).start()
    return Daemon(config, notifier=Ready(environ={})).run()


_IMPORTS = ("<frozen importlib", "<frozen abc>")


def _where(filename: str, lineno: int) -> str:
    for base in (str(TOP) + os.sep, sys.prefix + os.sep, sys.base_prefix + os.sep):
        if filename.startswith(base):
            return f"{filename[len(base) :]}:{lineno}"
    return f"{filename}:{lineno}"


def _print(found: dict[str, object], n: int) -> None:
    traced, baseline, sites = found["traced"], found["baseline"], found["sites"]
    assert isinstance(traced, int) and isinstance(baseline, int) and isinstance(sites, list)
    print(
        f"N={n}: Python holds {traced / 2**20:.0f} MiB, {baseline / 2**20:.0f} MiB of it the"
        f" modules' code and data: {(traced - baseline) / n:.0f} bytes a certificate"
    )
    print(f"| {'allocated at':<72} | bytes a certificate | blocks a certificate |")
    print(f"|{'-' * 74}|--------------------:|---------------------:|")
    for where, size, count in sites:
        print(f"| {where:<72} | {size / n:19.0f} | {count / n:20.2f} |")


if __name__ == "__main__":
    sys.exit(main())
