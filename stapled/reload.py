"""Telling the web server to pick up new staples: a command, or HAProxy's admin socket."""

from __future__ import annotations

import base64
import socket
import subprocess
from collections.abc import Sequence

from .errors import ReloadError

# What HAProxy answers to a `set ssl ocsp-response` it accepted (src/ssl_ckch.c).
HAPROXY_UPDATED = "OCSP Response updated!"
# A one-line answer; more than this is not HAProxy's admin socket.
MAX_SOCKET_REPLY = 64 * 1024


def run_command(argv: Sequence[str], timeout: float, what: str = "reload command") -> str:
    """Run ``argv`` (never through a shell); its output, or ReloadError.

    A command that hangs is killed after ``timeout`` seconds: a stuck web server must
    not hold stapled.  Standard input is closed so the command cannot wait for it.
    """
    try:
        done = subprocess.run(
            list(argv),
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
