"""What CRL checking costs: certificates without an OCSP URL sharing one CRL of N entries
(made by `openssl ca -gencrl`), served on loopback with ETag; `stapled once` run three
times in a fresh process each: the first fetch, a pass with nothing due, and `--force`
(a conditional GET answered 304).  Wall time, CPU, peak memory and bytes fetched.

    .venv/bin/python benchmarks/crl.py [--entries N] [--certificates C]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stapled.demo.ca import CA


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b""
    sent = 0

    def do_GET(self) -> None:
        etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)
        type(self).sent += len(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _crl(ca: CA, root: Path, entries: int, revoked: list[int]) -> bytes:
    """`openssl ca -gencrl` over a database of ``entries`` revoked serials."""
    key = ca.issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (root / "ca.pem").write_bytes(ca.cert_pem())
    (root / "ca.key").write_bytes(key)
    (root / "crlnumber").write_text("01\n")
    when = datetime.now(UTC).strftime("%y%m%d%H%M%SZ")
    with (root / "index.txt").open("w") as f:
        for i, serial in enumerate([*range(1 << 40, (1 << 40) + entries), *revoked]):
            f.write(f"R\t301231235959Z\t{when},superseded\t{serial:040X}\tunknown\t/CN=n{i}\n")
    (root / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = b\n[b]\ndir = {root}\ndatabase = $dir/index.txt\n"
        "crlnumber = $dir/crlnumber\ncertificate = $dir/ca.pem\nprivate_key = $dir/ca.key\n"
        "default_md = sha256\ndefault_crl_days = 7\n"
    )
    pem = root / "list.pem"
    subprocess.run(
        ["openssl", "ca", "-config", "ca.cnf", "-gencrl", "-out", str(pem)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    return x509.load_pem_x509_crl(pem.read_bytes()).public_bytes(serialization.Encoding.DER)


def _once(config: Path, *extra: str) -> tuple[float, float, int]:
    """(wall s, CPU s, peak resident MiB) of one `stapled once` in a fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stapled", "once", "--quiet", "--config", str(config), *extra]
    )
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped here, for its own usage
    wall = time.perf_counter() - started
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--certificates", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = CA()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        url = f"http://127.0.0.1:{server.server_address[1]}/shard.crl"
        certs = root / "certs"
        certs.mkdir()
        leaves = [
            ca.issue(f"c{i}.example", ocsp_urls=[], crl_urls=[url])
            for i in range(args.certificates)
        ]
        for i, leaf in enumerate(leaves):
            (certs / f"c{i}.example.pem").write_bytes(leaf.cert_pem() + ca.cert_pem())
        (root / "ca").mkdir()
        _Handler.body = _crl(ca, root / "ca", args.entries, [leaves[0].cert.serial_number])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        config = root / "stapled.toml"
        config.write_text(f'output_dir = "{root / "out"}"\ncertificates = ["{certs}"]\n')
        print(
            f"{args.certificates} certificates sharing one CRL of {args.entries:,} entries"
            f" ({len(_Handler.body) / 2**20:.1f} MiB DER)"
        )
        for label, extra in (
            ("first fetch", ()),
            ("nothing due", ()),
            ("--force (304)", ("--force",)),
        ):
            sent = _Handler.sent
            wall, cpu, peak = _once(config, *extra)
            fetched = (_Handler.sent - sent) / 2**20
            print(
                f"{label:>14}: {wall:5.2f} s wall, {cpu:5.2f} s CPU, peak {peak} MiB"
                f", {fetched:.1f} MiB fetched"
            )
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
