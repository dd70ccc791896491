"""``stapled demo``: the real ``once`` pipeline against a throwaway CA on 127.0.0.1.

Needs no network and no root, and leaves no process or file behind (unless --keep).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .. import config, report
from ..core.policy import State
from ..net.client import Transport
from ..passes import Stapler
from . import ca as testca

EXPECTED = {
    "good.example": State.GOOD,
    "revoked.example": State.REVOKED,
    "no-ocsp.example": State.NO_OCSP,
}


def run(*, keep: bool = False) -> int:
    """Build the demo, run one pass, show the result; 0 when every state is as expected."""
    top = Path(tempfile.mkdtemp(prefix="stapled-demo-"))
    try:
        return _run(top)
    finally:
        if keep:
            print(f"\nThe demo files are kept in {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


def _run(top: Path) -> int:
    ca = testca.CA("stapled demo CA")
    with testca.ResponderServer(ca) as responder:
        print(f"A throwaway CA answers OCSP at {responder.url} (loopback only).\n")
        _write_certificates(top, ca, responder.url)
        cfg_path = testca.write(top / "stapled.toml", _config_text(top).encode())
        cfg = config.load(cfg_path)
        # Flushed so the pass's log lines (stderr) follow this line, not precede it.
        print(f"Running `stapled once --config {cfg_path}`:\n", flush=True)
        result = Stapler(cfg, transport=Transport(timeout=cfg.timeout)).once()
        for handler in logging.getLogger("stapled").handlers:
            handler.flush()
    print("\nstapled status:\n")
    print(report.table(result))
    print(f"\nFiles written to {cfg.output_dir} (staples and nginx snippets):")
    for written in sorted(p for p in cfg.output_dir.iterdir() if p.is_file()):
        print(f"  {written.name:32} {written.stat().st_size:5} bytes")
    print(f"and for HAProxy, beside the bundles in {top / 'sites'}:")
    for written in sorted((top / "sites").glob("*.ocsp")):
        print(f"  {written.name:32} {written.stat().st_size:5} bytes")
    good = cfg.output_dir / "good.example.der"
    lineage = top / "letsencrypt/live/good.example"
    snippet = cfg.output_dir / "good.example.nginx.conf"
    print(
        "\nnginx staples with one line in the server block of good.example:\n"
        f"    include {snippet};\n"
        "which holds (stapling goes off by itself when there is no valid staple):\n"
        + "".join(f"    {line}\n" for line in snippet.read_text().splitlines())
        + "Check a staple by hand:\n"
        f"    stapled verify {good} --cert {lineage}/fullchain.pem\n"
    )
    got = {r.name: r.state for r in result.records}
    if got != EXPECTED:
        print(f"Unexpected outcome: {got}")
        return 1
    print("Demo finished: one good staple, one revoked (alerted), one certificate without OCSP.")
    return 0


def _write_certificates(top: Path, ca: testca.CA, url: str) -> None:
    # A certbot lineage, as /etc/letsencrypt/live/NAME looks.
    good = ca.issue("good.example", ocsp_urls=[url])
    archive, live = top / "letsencrypt/archive/good.example", top / "letsencrypt/live/good.example"
    testca.write(archive / "cert1.pem", good.cert_pem())
    testca.write(archive / "chain1.pem", ca.cert_pem())
    testca.write(archive / "fullchain1.pem", good.cert_pem(), ca.cert_pem())
    testca.write(archive / "privkey1.pem", good.key_pem())
    live.mkdir(parents=True)
    for name in ("cert", "chain", "fullchain", "privkey"):
        (live / f"{name}.pem").symlink_to(f"../../archive/good.example/{name}1.pem")
    # A HAProxy-style bundle with its private key: stapled skips the key block.
    revoked = ca.issue("revoked.example", ocsp_urls=[url])
    ca.revoke(revoked.cert)
    testca.write(
        top / "sites/revoked.example.pem", revoked.cert_pem(), ca.cert_pem(), revoked.key_pem()
    )
    # Since 2025 many public certificates carry no OCSP URL at all.
    plain = ca.issue("no-ocsp.example")
    testca.write(top / "sites/no-ocsp.example.pem", plain.cert_pem(), ca.cert_pem())


def _config_text(top: Path) -> str:
    return (
        f'output_dir = "{top / "staples"}"\n'
        "nginx_snippets = true\n"
        f'certificates = ["{top / "letsencrypt"}",\n'
        f'    {{ path = "{top / "sites"}", haproxy = true }}]\n'
    )
