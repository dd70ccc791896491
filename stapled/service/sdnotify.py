"""Telling systemd how the service is doing (sd_notify(3)).

systemd-python's ``systemd.daemon.notify`` is used when the optional extra is installed;
otherwise a datagram is sent to ``$NOTIFY_SOCKET`` directly.  Both are no-ops when the
service is not run by systemd.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import time
from collections.abc import Callable, Mapping

Sender = Callable[[str], None]


def _socket_sender(address: str) -> Sender:
    # A leading '@' names a Linux abstract socket: a NUL byte in the real address.
    target = "\0" + address[1:] if address.startswith("@") else address

    def send(message: str) -> None:
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
        ):
            sock.connect(target)
            sock.sendall(message.encode())

    return send


def _library_sender() -> Sender | None:
    try:
        # The optional extra stapled[systemd].  Imported by name: from a checkout, the
        # repository's own systemd/ folder of unit files is importable as "systemd" too.
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None

    def send(message: str) -> None:
        daemon.notify(message)

    return send


class Notifier:
    """Sends READY, STATUS, RELOADING, STOPPING and WATCHDOG messages, when under systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, use_library: bool = True):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.enabled = bool(address)
        self._send: Sender | None = None
        if self.enabled:
            self._send = (_library_sender() if use_library else None) or _socket_sender(address)
        self.watchdog_interval = _watchdog_interval(env)

    def send(self, **fields: str | int) -> None:
        """``send(READY=1, STATUS="...")`` -> "READY=1\\nSTATUS=..."."""
        if self._send is None:
            return
        self._send("\n".join(f"{k}={v}" for k, v in fields.items()))

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def reloading(self) -> None:
        # systemd 253+ wants the moment of the reload with RELOADING=1; older ones ignore it.
        usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
        self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> None:
        self.send(STOPPING=1)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (a parent shell, say)
    return int(usec) / 2e6
