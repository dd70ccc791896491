"""Running ``stapled run`` as a real subprocess, and waiting on real outcomes.

sd_notify goes to an abstract AF_UNIX datagram socket the test owns.  Waits are bounded
polls of real outcomes (files, messages), never fixed sleeps standing in for them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conftest import Site


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float = 15.0,
    *,
    detail: Callable[[], str] | None = None,
) -> None:
    """``detail``: what to show beside the timeout (the daemons' logs, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{detail()}" if detail else ""))


class DaemonProcess:
    def __init__(
        self,
        site: Site,
        env: dict[str, str] | None = None,
        config: Path | None = None,
        log: Path | None = None,
    ) -> None:
        self.site = site
        self.name = f"stapled-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self.log = log or site.root / "daemon.log"
        env = {**os.environ, "NOTIFY_SOCKET": "@" + self.name, **(env or {})}
        env.pop("JOURNAL_STREAM", None)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stapled",
                    "run",
                    "--config",
                    str(config or site.config_path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def notified(self, fragment: str) -> bool:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        return any(fragment in m for m in self.messages)

    def count(self, fragment: str) -> int:
        self.notified(fragment)  # collect what has arrived
        return sum(fragment in m for m in self.messages)

    def wait_ready(self) -> None:
        wait_for("READY=1", lambda: self.notified("READY=1") or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.log.read_text()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self.notified("")  # collect what it said on the way out
            self.sock.close()

    def output(self) -> str:
        return self.log.read_text()
