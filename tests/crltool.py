"""CRLs as a real CA publishes them: `openssl ca -revoke` and `-gencrl` over the test
CA's key, served as static files by a real nginx (which sends ETag and Last-Modified and
answers a conditional GET with 304)."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from stapled.demo.ca import CA, Issued

from .conftest import require_binary
from .servers import Nginx, free_port


class OpensslCA:
    """An `openssl ca` database for ``ca`` (its key and certificate), in ``root``."""

    def __init__(self, ca: CA, root: Path) -> None:
        self.ca, self.root = ca, root
        self.openssl = require_binary("openssl")
        root.mkdir(parents=True, exist_ok=True)
        (root / "ca.pem").write_bytes(ca.cert_pem())
        (root / "ca.key").write_bytes(
            ca.issued.key.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (root / "index.txt").write_text("")
        (root / "index.txt.attr").write_text("unique_subject = no\n")
        (root / "crlnumber").write_text("01\n")
        self.config = root / "ca.cnf"

    def _write_config(self, hours: int) -> None:
        self.config.write_text(
            "[ca]\ndefault_ca = test\n[test]\n"
            f"dir = {self.root}\ndatabase = $dir/index.txt\ncrlnumber = $dir/crlnumber\n"
            "certificate = $dir/ca.pem\nprivate_key = $dir/ca.key\n"
            f"default_md = sha256\ndefault_crl_hours = {hours}\n"
        )

    def _run(self, *args: str) -> None:
        subprocess.run([self.openssl, *args], check=True, capture_output=True, cwd=self.root)

    def revoke(self, issued: Issued, reason: str = "keyCompromise") -> None:
        self._write_config(24)
        leaf = self.root / "leaf.pem"
        leaf.write_bytes(issued.cert_pem())
        self._run("ca", "-config", str(self.config), "-revoke", str(leaf), "-crl_reason", reason)

    def revoke_many(self, count: int, start: int = 1 << 40) -> None:
        """``count`` revoked serials written straight into the database (what `-revoke`
        would write), for a CRL of that many entries."""
        when = datetime.now(UTC).strftime("%y%m%d%H%M%SZ")
        lines = [
            f"R\t301231235959Z\t{when},superseded\t{start + i:012X}\tunknown\t/CN=n{i}\n"
            for i in range(count)
        ]
        with (self.root / "index.txt").open("a") as f:
            f.writelines(lines)

    def gencrl(self, out: Path, hours: int = 24) -> bytes:
        """A CRL in DER, valid for ``hours``, written to ``out`` (atomically)."""
        self._write_config(hours)
        pem = self.root / "list.pem"
        self._run("ca", "-config", str(self.config), "-gencrl", "-out", str(pem))
        der = x509.load_pem_x509_crl(pem.read_bytes()).public_bytes(serialization.Encoding.DER)
        publish(out, der)
        return der


def built(
    ca: CA,
    *,
    revoked: dict[int, x509.ReasonFlags] | None = None,
    this_update: datetime | None = None,
    next_update: datetime | None = None,
    issuer: x509.Name | None = None,
) -> bytes:
    """A CRL with times of the test's choosing (`openssl ca` takes whole hours from now),
    signed by ``ca`` (under ``issuer``'s name when given)."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer or ca.cert.subject)
        .last_update(this_update or now - timedelta(minutes=1))
        .next_update(next_update or now + timedelta(days=1))
    )
    for serial, reason in (revoked or {}).items():
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - timedelta(minutes=5))
            .add_extension(x509.CRLReason(reason), critical=False)
        )
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.issued.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def publish(path: Path, data: bytes) -> None:
    """Replace a served file at once (as a CA's publisher does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(data)
    temp.replace(path)


class CrlServer(Nginx):
    """nginx serving ``www`` on loopback; its access log says what each request got."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.www = root / "www"
        self.www.mkdir(parents=True, exist_ok=True)
        self.access = root / "access.log"
        super().__init__(
            root / "nginx",
            "log_format crl '$status $request_uri';\n"
            f"server {{\n  listen 127.0.0.1:{self.port};\n  root {self.www};\n"
            f"  access_log {self.access} crl;\n}}\n",
        )
        if os.geteuid() == 0:
            # Workers run as nobody otherwise, and the test's directory is its owner's.
            self.conf.write_text("user root;\n" + self.conf.read_text())

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> CrlServer:
        self.start(self.port)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def requests(self, name: str) -> list[str]:
        """The status of each request for ``name`` so far ("200", "304", "404"...)."""
        if not self.access.exists():
            return []
        pattern = re.compile(rf"^(\d+) /{re.escape(name)}$")
        return [m[1] for line in self.access.read_text().splitlines() if (m := pattern.match(line))]
