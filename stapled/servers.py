"""Telling the web server to pick up new staples: a configuration test, then a reload
command or a request file; and HAProxy's admin socket."""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .config import Config
from .core.model import Owed, Record
from .core.times import Clock
from .errors import ReloadError, StoreError
from .files import store

log = logging.getLogger("stapled")

Reloader = Callable[[Sequence[str], float, str], str]
Pusher = Callable[[str, bytes, float], bool]

# What HAProxy answers to a `set ssl ocsp-response` it accepted (src/ssl_ckch.c).
HAPROXY_UPDATED = "OCSP Response updated!"
# A one-line answer; more than this is not HAProxy's admin socket.
MAX_SOCKET_REPLY = 64 * 1024


def run_command(
    argv: Sequence[str],
    timeout: float,
    what: str = "reload command",
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``argv`` (never through a shell), with ``env`` added to the environment; its
    output, or ReloadError.

    A command that hangs is killed after ``timeout`` seconds: a stuck web server must
    not hold stapled.  Standard input is closed so the command cannot wait for it.
    """
    try:
        done = subprocess.run(
            list(argv),
            env={**os.environ, **env} if env else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise ReloadError(argv, "cannot be run: no such program", what=what) from e
    except PermissionError as e:
        raise ReloadError(argv, "cannot be run: permission denied", what=what) from e
    except subprocess.TimeoutExpired as e:
        out = e.stderr or e.stdout or ""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise ReloadError(argv, f"did not finish within {timeout:g} s", text, what) from e
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        raise ReloadError(argv, f"failed with exit status {done.returncode}", output, what)
    return output


def haproxy_set_ocsp(address: str, der: bytes, timeout: float) -> bool:
    """Hand one staple to a running HAProxy over its admin socket; no reload needed.

    ``address`` is the path of a unix socket, or ``host:port`` for a TCP one.  HAProxy
    finds the certificate by the response's CertID; it only updates a certificate that
    had a ``.ocsp`` file when it started.  False when nothing listens there (HAProxy is
    not running, and reads the .ocsp files when it starts).  Raises ReloadError unless
    HAProxy answers "OCSP Response updated!".
    """
    command = b"set ssl ocsp-response " + base64.b64encode(der) + b"\n"
    what = ["set ssl ocsp-response", "on", address]
    try:
        with _connect(address, timeout) as conn:
            conn.sendall(command)
            conn.shutdown(socket.SHUT_WR)
            reply = _read_all(conn)
    except TimeoutError as e:
        raise ReloadError(what, f"got no answer within {timeout:g} s", what="HAProxy") from e
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except OSError as e:
        raise ReloadError(
            what, f"cannot reach the admin socket ({e.strerror or e})", what="HAProxy"
        ) from e
    text = reply.decode(errors="replace")
    if HAPROXY_UPDATED not in text:
        raise ReloadError(what, "was refused", text or "(no answer)", what="HAProxy")
    return True


def _connect(address: str, timeout: float) -> socket.socket:
    if address.startswith("/") or ":" not in address:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = address
    else:
        host, _, port = address.rpartition(":")
        conn = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        target = (host.strip("[]"), int(port))
    conn.settimeout(timeout)
    try:
        conn.connect(target)
    except OSError:
        conn.close()
        raise
    return conn


def _read_all(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_SOCKET_REPLY:
        chunk = conn.recv(4096)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What telling the servers did: what is still owed, and the reload's outcome
    (``reload_error`` is None when it worked or was not attempted)."""

    owed: Owed
    reloaded: bool = False
    reload_error: str | None = None


class Servers:
    """The web servers of one configuration.  ``reloader`` and ``pusher`` are the seams
    (a command runner and an admin-socket client) that tests may replace."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        *,
        reloader: Reloader = run_command,
        pusher: Pusher = haproxy_set_ocsp,
    ) -> None:
        self.config = config
        self.clock = clock
        self.reloader = reloader
        self.pusher = pusher

    @property
    def can_reload(self) -> bool:
        return bool(self.config.reload_command or self.config.reload_request_file)

    def reload(self) -> str | None:
        """Ask for the web server to reload; the error message, or None when it worked.

        ``reload_request_file`` is rewritten atomically (a systemd path unit running as
        root can react to it, so stapled itself needs no privilege); ``reload_command``
        is run.  Either or both may be configured.
        """
        if error := self.config_test():
            return error
        request = self.config.reload_request_file
        if request is not None:
            try:
                # Full precision, so that two requests within a second still differ.
                store.write_atomic(request, f"{self.clock().isoformat()}\n".encode())
            except StoreError as e:
                log.error("cannot request a reload: %s", e)
                return str(e)
            log.info("reload requested through %s", request)
        argv = self.config.reload_command
        if argv:
            try:
                self.reloader(argv, self.config.reload_timeout, "reload command")
            except ReloadError as e:
                log.error("%s", e)
                return str(e)
            log.info("reloaded: %s", " ".join(argv))
        return None

    def config_test(self) -> str | None:
        """Run ``config_test_command``; its error (with the server's words), or None."""
        argv = self.config.config_test_command
        if not argv:
            return None
        try:
            self.reloader(argv, self.config.reload_timeout, "configuration test")
        except ReloadError as e:
            log.error("%s; not reloading", e)
            for line in e.output.strip().splitlines()[-20:]:
                log.error("  %s", line)
            return str(e)
        return None

    def deliver(self, owed: Owed, records: Iterable[Record]) -> Delivered:
        """Tell the servers what ``owed`` says, for ``records``: one reload (when one is
        owed and configured) and the HAProxy pushes.  Whatever fails stays owed, and so
        does a push for a name not among ``records``."""
        reload_error = None
        reloaded = owed.reload and self.can_reload
        if reloaded:
            reload_error = self.reload()
        given = list(records)
        failed = self.push([r for r in given if r.name in owed.push])
        left = owed.push - {r.name for r in given}
        return Delivered(
            Owed(reload_error is not None, frozenset(failed) | left), reloaded, reload_error
        )

    def push(self, records: list[Record]) -> set[str]:
        """Hand HAProxy each record's new staple over its admin socket; the names that failed.

        Without ``[haproxy] admin_socket`` nothing is pushed: HAProxy reads the .ocsp
        files when it next starts or reloads.
        """
        address = self.config.haproxy_socket
        failed: set[str] = set()
        if address is None:
            return failed
        for rec in records:
            staple = rec.current
            if rec.haproxy_staple_path is None or staple is None or staple.haproxy_problem:
                continue
            if not staple.valid_at(self.clock()):
                continue  # expired since it was written: HAProxy would refuse it anyway
            try:
                running = self.pusher(address, staple.der, self.config.reload_timeout)
            except ReloadError as e:
                log.error("%s: %s", rec.name, e)
                failed.add(rec.name)
                continue
            if not running:
                log.warning(
                    "nothing listens on HAProxy's admin socket %s (HAProxy not running?); "
                    "it reads the .ocsp files when it starts",
                    address,
                )
                break
            log.info("%s: HAProxy took the new staple (%s)", rec.name, address)
        return failed
