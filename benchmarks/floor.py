"""The CPU a cold pass cannot spend less than for each certificate, with the libraries
stapled is built on: what each unavoidable step costs alone, without stapled's own work.

    .venv/bin/python benchmarks/floor.py [--count N] [--dir DIR]

Each step runs N times in a loop of its own: the OCSP request built (cryptography), one
HTTP/1.1 request and its answer framed (h11), the same exchanged over kept-alive
loopback connections with asyncio's streams, four in flight as a pass has them (the
client's CPU only; the answering process is another), the answer parsed and its ECDSA
signature verified (cryptography), and the staple written as a new file by rename.
What a filesystem takes to create a file varies with what was deleted from it lately
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h11
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from stapled.core import certs, request
from stapled.demo.ca import CA

# An HTTP server for the exchange, in a process of its own: one canned answer for each
# request, on kept-alive connections (a thread each).
_SERVER = """
import socket, sys, threading
body = sys.stdin.buffer.read()
head = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/ocsp-response\\r\\n"
answer = head + b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body
def serve(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""
    while chunk := conn.recv(65536):
        pending += chunk
        while (end := pending.find(b"\\r\\n\\r\\n")) >= 0:
            length = 0
            for line in pending[:end].split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(pending) < end + 4 + length:
                break
            pending = pending[end + 4 + length :]
            conn.sendall(answer)
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="runs of each step")
    parser.add_argument("--dir", help="where to write the files (default: TMPDIR)")
    args = parser.parse_args()
    n = args.count
    ca = CA()
    leaf = ca.issue("floor.example", ocsp_urls=["http://127.0.0.1:9/"])
    chain = certs.build_chain([leaf.cert, ca.cert], "floor")
    der = ca.sign_response(leaf.cert)
    asked = request.build_request(chain)
    rows = [
        ("OCSP request built", _each(n, lambda: request.build_request(chain))),
        ("HTTP/1.1 request and answer framed (h11)", _each(n, lambda: _framed(asked, der))),
        ("... exchanged on kept-alive loopback connections", _exchanged(n, asked, der)),
        ("answer parsed, ECDSA signature verified", _each(n, lambda: _verified(der, ca))),
    ]
    with tempfile.TemporaryDirectory(prefix="stapled-floor-", dir=args.dir) as scratch:
        rows.append(("staple written as a new file, by rename", _writes(Path(scratch), n, der)))
    floor = sum(us for label, us in rows if not label.startswith("HTTP"))
    for label, us in rows:
        print(f"{label:<52} {us:7.1f} us")
    print(f"{'the floor, one of each (the exchange includes framing)':<52} {floor:7.1f} us")
    return 0


def _each(n: int, step: Callable[[], object]) -> float:
    started = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - started) / n * 1e6


def _framed(asked: bytes, der: bytes) -> None:
    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", "127.0.0.1"), ("Content-Type", "application/ocsp-request")]
    length = ("Content-Length", str(len(asked)))
    conn.send(h11.Request(method="POST", target="/", headers=[*headers, length]))
    conn.send(h11.Data(data=asked))
    conn.send(h11.EndOfMessage())
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(der) + der)
    while not isinstance(conn.next_event(), h11.EndOfMessage):
        pass


def _exchanged(n: int, asked: bytes, der: bytes) -> float:
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(der)
    server.stdin.close()
    port = int(server.stdout.readline())

    async def run() -> float:
        # As a pass asks: several requests in flight, each on a connection of its own.
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(_FLIGHT)]
        started = time.process_time()
        await asyncio.gather(*(_ask(r, w, n // _FLIGHT, asked) for r, w in streams))
        spent = time.process_time() - started
        for _, writer in streams:
            writer.transport.abort()
        return spent / (n // _FLIGHT * _FLIGHT) * 1e6

    try:
        return asyncio.run(run())
    finally:
        server.kill()
        server.wait()


_FLIGHT = 4


async def _ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int, asked: bytes
) -> None:
    conn = h11.Connection(h11.CLIENT)
    for _ in range(n):
        headers = [("Host", "127.0.0.1"), ("Content-Length", str(len(asked)))]
        data = conn.send(h11.Request(method="POST", target="/", headers=headers)) or b""
        writer.write(data + (conn.send(h11.Data(data=asked)) or b""))
        conn.send(h11.EndOfMessage())
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
        conn.start_next_cycle()


def _verified(der: bytes, ca: CA) -> None:
    response = ocsp.load_der_ocsp_response(der)
    algorithm = response.signature_hash_algorithm
    assert algorithm is not None
    key = ca.cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))


def _writes(directory: Path, n: int, der: bytes) -> float:
    started = time.process_time()
    for i in range(n):
        path = f"{directory}/site{i}.der"
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, der)
        os.close(fd)
        os.replace(path + ".tmp", path)
    return (time.process_time() - started) / n * 1e6


if __name__ == "__main__":
    raise SystemExit(main())
