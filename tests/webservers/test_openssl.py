"""Against the real `openssl ocsp` responder: GET and POST, RSA-PSS, several SingleResponses."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stapled.cli import main
from stapled.core import certs, ocsp, request
from stapled.demo import ca as testca
from stapled.demo.ca import CA

from ..conftest import require_binary

pytestmark = pytest.mark.servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpenSSLResponder:
    """`openssl ocsp` answering for a CA's certificates, signing as an RSA delegated responder.

    The port is chosen first so that certificates can name the URL; :meth:`index` then
    lists the certificates it answers for, before it starts.
    """

    def __init__(self, root: Path, ca: CA, pss: bool = False) -> None:
        self.root = root
        self.port = _free_port()
        signer = ca.issue(
            "openssl responder",
            key_type="rsa",
            extended_key_usage=[testca.ExtendedKeyUsageOID.OCSP_SIGNING],
        )
        testca.write(root / "ca.pem", ca.cert_pem())
        testca.write(root / "resp.pem", signer.cert_pem())
        testca.write(root / "resp.key", signer.key_pem())
        (root / "index.txt.attr").write_text("unique_subject = no\n")
        self.argv = [
            require_binary("openssl"),
            "ocsp",
            "-index",
            str(root / "index.txt"),
            "-CA",
            str(root / "ca.pem"),
            "-rsigner",
            str(root / "resp.pem"),
            "-rkey",
            str(root / "resp.key"),
            "-port",
            str(self.port),
            "-nmin",
            "60",
            "-ignore_err",
        ] + (["-rsigopt", "rsa_padding_mode:pss"] if pss else [])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def index(self, leaves: list[testca.Issued]) -> None:
        lines = []
        for leaf in leaves:
            serial = format(leaf.cert.serial_number, "X")
            serial = serial if len(serial) % 2 == 0 else "0" + serial
            subject = "/" + leaf.cert.subject.rfc4514_string()
            lines.append("\t".join(["V", "491231235959Z", "", serial, "unknown", subject]))
        (self.root / "index.txt").write_text("\n".join(lines) + "\n")

    def __enter__(self) -> OpenSSLResponder:
        log = self.root / "openssl-ocsp.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        # A probe connection would wedge this single-threaded responder: read its log.
        for _ in range(200):
            if b"waiting for OCSP client connections" in log.read_bytes():
                return self
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"openssl ocsp did not start: {log.read_text()[-300:]}")

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[CA, Path]]:
    require_binary("openssl")
    yield CA("openssl-backed CA", key_type="rsa"), tmp_path


@pytest.mark.parametrize("pss", [False, True], ids=["pkcs1", "pss"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_once_against_openssl_responder(world: tuple[CA, Path], pss: bool, method: str) -> None:
    ca, tmp = world
    responder = OpenSSLResponder(tmp, ca, pss=pss)
    # stapled POSTs when the GET URL would pass 255 bytes; openssl ignores a POST's path,
    # so a long path makes the same responder take POST.
    url = responder.url + ("x" * 220 if method == "POST" else "")
    assert request.http_request(url, b"x" * 100).method == method
    leaf = ca.issue("a.example", ocsp_urls=[url])
    responder.index([leaf])
    testca.write(tmp / "certs" / "a.pem", leaf.cert_pem(), ca.cert_pem())
    cfg = tmp / "stapled.toml"
    cfg.write_text(f'output_dir = "{tmp / "out"}"\ncertificates = ["{tmp / "certs"}"]\n')
    with responder:
        assert main(["once", "--config", str(cfg)]) == 0
    der = (tmp / "out" / "a.der").read_bytes()
    staple = ocsp.validate(der, certs.build_chain([leaf.cert, ca.cert], "a"), datetime.now(UTC))
    assert staple.cert_status == "good"
    assert staple.signer.startswith("delegated responder")


def test_matching_single_response_among_several(world: tuple[CA, Path]) -> None:
    ca, tmp = world
    leaves = [ca.issue(f"{n}.example") for n in ("one", "two", "three")]
    responder = OpenSSLResponder(tmp, ca)
    responder.index(leaves)
    with responder:
        for i, leaf in enumerate(leaves):
            testca.write(tmp / f"leaf{i}.pem", leaf.cert_pem())
        argv = [
            require_binary("openssl"),
            "ocsp",
            "-issuer",
            str(tmp / "ca.pem"),
            *[a for i in range(3) for a in ("-cert", str(tmp / f"leaf{i}.pem"))],
            "-url",
            responder.url,
            "-respout",
            str(tmp / "multi.der"),
            "-noverify",
        ]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    der = (tmp / "multi.der").read_bytes()
    for leaf in leaves:
        chain = certs.build_chain([leaf.cert, ca.cert], "leaf")
        staple = ocsp.validate(der, chain, datetime.now(UTC))
        assert staple.serial == leaf.cert.serial_number
        assert staple.cert_status == "good"
    stranger = ca.issue("not-asked.example")
    with pytest.raises(ocsp.InvalidResponseError, match="no SingleResponse"):
        ocsp.validate(der, certs.build_chain([stranger.cert, ca.cert], "x"), datetime.now(UTC))
