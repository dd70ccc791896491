"""Real nginx, apache2 and haproxy on loopback, and ``openssl s_client -status`` against them.

Each server runs with its own configuration, pid file and logs under the test's
directory, on a free loopback port, and touches no system configuration.  The server
blocks come from examples/, rewritten with this test's ports and paths, so the examples
cannot drift from what is tested.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from stapled.servers import HAPROXY_UPDATED

from .conftest import require_binary

EXAMPLES = Path(__file__).parent.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def example(name: str, replacements: dict[str, str]) -> str:
    """examples/NAME with each key replaced; every key must occur (or the example drifted)."""
    text = (EXAMPLES / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"examples/{name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def wait_until(what: str, check: object, timeout: float = 20.0) -> object:
    """Poll ``check()`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()  # type: ignore[operator]
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass(frozen=True)
class Handshake:
    """What a client saw: the certificate served and the staple, if any."""

    output: str
    cert_serial: int | None
    staple_status: str | None  # "good", "revoked", ... or None when nothing was stapled
    staple_serial: int | None
    this_update: str | None


def s_client(port: int, servername: str, *extra: str) -> Handshake:
    """One TLS handshake asking for a staple, as an operator checks by hand."""
    openssl = require_binary("openssl")
    done = subprocess.run(
        [
            openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            servername,
            "-status",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    out = done.stdout + done.stderr
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    cert_serial = (
        x509.load_pem_x509_certificate(pem.group().encode()).serial_number if pem else None
    )
    status = re.search(r"Cert Status: (\w+)", out)
    serial = re.search(r"Serial Number: ([0-9A-F]+)", out)
    this = re.search(r"This Update: (.+)", out)
    return Handshake(
        out,
        cert_serial,
        status.group(1) if status else None,
        int(serial.group(1), 16) if serial else None,
        this.group(1).strip() if this else None,
    )


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}:\n{_tail(log)}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


class Server:
    """A server process in the foreground, its output in a log file; stopped at the end."""

    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = root / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, port: int) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_listening(port, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return _tail(self.log)


class Nginx(Server):
    name = "nginx"

    def __init__(self, root: Path, site_conf: str) -> None:
        super().__init__(root)
        self.binary = require_binary("nginx")
        (root / "site.conf").write_text(site_conf)
        self.conf = root / "nginx.conf"
        self.conf.write_text(
            "worker_processes 1;\n"
            f"pid {root}/nginx.pid;\n"
            f"error_log {root}/error.log info;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            "    access_log off;\n"
            + "".join(
                f"    {kind}_temp_path {root}/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + f"    include {root}/site.conf;\n"
            "}\n"
        )

    def command(self, *args: str) -> list[str]:
        return [self.binary, "-p", f"{self.root}/", "-c", str(self.conf), "-e", "stderr", *args]

    def argv(self) -> list[str]:
        return self.command("-g", "daemon off;")

    @property
    def error_log(self) -> str:
        return _tail(self.root / "error.log")


class Apache(Server):
    name = "apache2"
    MODULES = ("mpm_event", "authz_core", "socache_shmcb", "ssl")

    def __init__(self, root: Path, port: int, site_conf: str) -> None:
        super().__init__(root)
        self.binary = require_binary("apache2")
        modules = Path("/usr/lib/apache2/modules")
        (root / "site.conf").write_text(site_conf)
        self.conf = root / "httpd.conf"
        # Started as root, Apache must hand its workers to another user.
        workers = ["User nobody", "Group nogroup"] if os.geteuid() == 0 else []
        lines = [
            f"ServerRoot {root}",
            f"DefaultRuntimeDir {root}",
            f"PidFile {root}/apache2.pid",
            f"ErrorLog {root}/error.log",
            "LogLevel warn ssl:info",
            "ServerName localhost",
            *(f"LoadModule {m}_module {modules}/mod_{m}.so" for m in self.MODULES),
            f"Listen 127.0.0.1:{port}",
            *workers,
            f"Include {root}/site.conf",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [self.binary, "-d", str(self.root), "-f", str(self.conf), "-DFOREGROUND"]

    @property
    def error_log(self) -> str:
        return _tail(self.root / "error.log")


class HAProxy(Server):
    name = "haproxy"

    def __init__(self, root: Path, conf: str) -> None:
        super().__init__(root)
        self.binary = require_binary("haproxy")
        self.conf = root / "haproxy.cfg"
        self.conf.write_text(conf)

    def argv(self) -> list[str]:
        return [self.binary, "-f", str(self.conf), "-db"]


class FakeHAProxySocket:
    """A unix socket speaking HAProxy's admin protocol: one command in, one answer out.

    The real HAProxy is driven in test_servers; this one can be made to refuse.
    """

    def __init__(self, path: Path, answer: str = HAPROXY_UPDATED + "\n") -> None:
        self.path = path
        self.answer = answer
        self.commands: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.commands.append(data.decode())
                conn.sendall(self.answer.encode())

    def pushed(self) -> list[bytes]:
        prefix = "set ssl ocsp-response "
        return [base64.b64decode(c[len(prefix) :]) for c in self.commands]

    def close(self) -> None:
        self.sock.close()
