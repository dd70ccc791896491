"""A real redis-server on a loopback port of its own, without persistence, that a test
can stop, restart empty, hang (SIGSTOP) and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from .conftest import require_binary
from .servers import free_port


class RedisServer:
    def __init__(self, root: Path) -> None:
        self.binary = require_binary("redis-server")
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        """Start (again, empty: nothing is saved)."""
        log = (self.root / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--maxmemory-policy", "noeviction",
                "--dir", str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait()
        self.client.connection_pool.disconnect()

    def pause(self) -> None:
        """Hung: connections are accepted by the kernel and never answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def staple_keys(self) -> list[bytes]:
        return sorted(self.client.scan_iter(match="stapled:*:staple"))
