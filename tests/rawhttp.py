"""A TCP server on 127.0.0.1 whose every connection is handled by a test's function.

For responders that misbehave below HTTP: drip bytes, never finish, loop redirects.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Behaviour = Callable[[socket.socket], None]


class RawServer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        # The first bytes of every request received, in order.
        self.received: list[bytes] = []

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                self.received.append(conn.recv(65536))
                self.behaviour(conn)
            except OSError:
                pass

    @classmethod
    def until_stopped(cls, make: Callable[[Callable[[], bool]], Behaviour]) -> RawServer:
        """A server whose behaviour goes on until the server stops (drips, streams)."""
        server = cls(lambda conn: None)
        server.behaviour = make(server.stopped)
        return server

    def stopped(self) -> bool:
        return self._stop.is_set()

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)


def drip(stop: Callable[[], bool], delay: float = 0.2) -> Behaviour:
    """Headers at once, then a body one byte at a time, for as long as allowed."""

    def behaviour(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"
            b"Content-Length: 2000\r\n\r\n"
        )
        while not stop():
            conn.sendall(b"0")
            threading.Event().wait(delay)

    return behaviour


def drip_headers(stop: Callable[[], bool], delay: float = 0.2) -> Behaviour:
    """A header line that never ends, one byte at a time."""

    def behaviour(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not stop():
            conn.sendall(b"a")
            threading.Event().wait(delay)

    return behaviour


def endless_chunks(stop: Callable[[], bool]) -> Behaviour:
    def behaviour(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not stop():
            conn.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")

    return behaviour


def respond(status: str, headers: dict[str, str], body: bytes = b"") -> Behaviour:
    def behaviour(conn: socket.socket) -> None:
        fields = {"Content-Length": str(len(body)), "Connection": "close", **headers}
        lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in fields.items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return behaviour


def silent(stop: Callable[[], bool]) -> Behaviour:
    """Accept, read the request, and never answer, for as long as allowed."""

    def behaviour(conn: socket.socket) -> None:
        while not stop():
            time.sleep(0.05)

    return behaviour
