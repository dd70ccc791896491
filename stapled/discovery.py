"""Certificate sources on disk -> one :class:`Found` per certificate file.

Per-file problems are values (``Found.error``), never exceptions, so one broken file
never stops the others from being served.  Private key files are never opened.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import stat
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from . import certs
from .certs import CertChain
from .config import Source
from .errors import CertificateError

log = logging.getLogger(__name__)

CERT_SUFFIXES = (".pem", ".crt", ".cer")
# Certbot's layout: live/NAME/{cert,chain,fullchain,privkey}.pem
LINEAGE_CERT = "cert.pem"
LINEAGE_CHAINS = ("chain.pem", "fullchain.pem")
# Refuse to slurp something that cannot be a certificate bundle.
MAX_CERT_FILE = 1024 * 1024


def is_key_file(path: Path) -> bool:
    """Private key files by name: never opened, whatever they hold."""
    name = path.name.lower()
    return name.endswith((".key", "-key.pem", "_key.pem", ".key.pem")) or "privkey" in name


@dataclass(frozen=True)
class Found:
    """One certificate stapled should look after, or the reason it cannot."""

    name: str
    path: str
    chain: CertChain | None = None
    error: str | None = None
    # HAProxy reads the staple from <path>.ocsp, beside the certificate file it loads.
    haproxy: bool = False

    @property
    def haproxy_staple(self) -> Path | None:
        return Path(self.path + ".ocsp") if self.haproxy else None


def discover(sources: tuple[Source, ...]) -> list[Found]:
    """Every certificate the configured sources hold, with unique staple names."""
    issuers: dict[Path, x509.Certificate | str] = {}
    found: list[Found] = []
    seen: set[str] = set()
    for source in sources:
        for path, lineage, named in _expand(source):
            key = os.path.realpath(path)
            if key in seen:
                continue  # one file reached by two sources or through a symlink
            seen.add(key)
            item = _load(path, lineage, source, issuers, named=named)
            if item is not None:
                found.append(item)
    return _unique_names(found)


def _expand(source: Source) -> Iterator[tuple[Path, bool, bool]]:
    """(path, is a certbot lineage directory, named directly) for each match of a source.

    A file named directly must be a certificate; one met while scanning a directory may
    be anything (DH parameters, a CA bundle) and is skipped quietly when it is not a leaf.
    """
    if source.is_glob:
        matches = sorted(glob.glob(source.path, recursive=True))  # noqa: PTH207 (absolute)
        if not matches:
            log.info("%s: the glob matches no file yet", source.path)
    else:
        matches = [source.path]
    for match in matches:
        path = Path(match)
        if path.is_dir():
            for found, lineage in _scan_dir(path):
                yield found, lineage, False
        elif not is_key_file(path):
            yield path, False, not source.is_glob


def _scan_dir(top: Path) -> Iterator[tuple[Path, bool]]:
    if _is_lineage(top):
        yield top, True
        return
    visited: set[str] = set()
    for root, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            dirs[:] = []  # a symlink loop
            continue
        visited.add(real)
        here = Path(root)
        if here != top and _is_lineage(here):
            dirs[:] = []
            yield here, True
            continue
        if "live" in dirs and "archive" in dirs:
            dirs[:] = ["live"]  # certbot's archive/ holds every old certificate too
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = here / name
            if path.suffix.lower() in CERT_SUFFIXES and not is_key_file(path):
                yield path, False


def _is_lineage(path: Path) -> bool:
    return (path / LINEAGE_CERT).is_file() and any((path / c).is_file() for c in LINEAGE_CHAINS)


def _load(
    path: Path,
    lineage: bool,
    source: Source,
    issuers: dict[Path, x509.Certificate | str],
    *,
    named: bool,
) -> Found | None:
    name = source.name or (path.name if lineage else path.stem)
    shown = str(path)
    try:
        if lineage:
            shown = str(path / LINEAGE_CERT)
            data = _read_lineage(path)
        else:
            data = _read(path)
            if not named and not _may_hold_certificate(data):
                log.debug("%s: no certificate in it, skipped", path)
                return None
        parsed = certs.parse_certificates(data, shown)
        if not named and not lineage and all(certs.is_ca(c) for c in parsed):
            log.debug("%s: CA certificates only, no leaf; skipped", path)
            return None
        if lineage and len(parsed) > 1 and parsed[1].subject == parsed[0].subject:
            parsed = parsed[:1] + parsed[2:]  # fullchain.pem repeats the leaf
        issuer = _issuer(source, issuers)
        chain = certs.build_chain(parsed, shown, issuer)
    except CertificateError as e:
        return Found(name, shown, error=e.reason, haproxy=source.haproxy)
    if source.ocsp_url:
        chain = chain.with_ocsp_urls(source.ocsp_url)
    return Found(name, shown, chain=chain, haproxy=source.haproxy)


def _read_lineage(path: Path) -> bytes:
    """The leaf and its chain from a certbot lineage.

    fullchain.pem (cert.pem followed by chain.pem) is what web servers are pointed at,
    so its leaf is the certificate they serve; it is also one read instead of two,
    which is most of the cost of finding ten thousand certificates.  Without it,
    cert.pem and chain.pem.
    """
    full = path / "fullchain.pem"
    if full.is_file():
        return _read(full)
    return _read(path / LINEAGE_CERT) + b"\n" + _read(path / "chain.pem")


def _may_hold_certificate(data: bytes) -> bool:
    return b"-----BEGIN CERTIFICATE-----" in data or data[:1] == b"\x30"


def _issuer(source: Source, cache: dict[Path, x509.Certificate | str]) -> x509.Certificate | None:
    if source.issuer is None:
        return None
    if source.issuer not in cache:
        try:
            cache[source.issuer] = certs.parse_issuer_bytes(
                _read(source.issuer), str(source.issuer)
            )
        except CertificateError as e:
            cache[source.issuer] = str(e)
    got = cache[source.issuer]
    if isinstance(got, str):
        raise CertificateError(str(source.issuer), f"configured issuer unusable: {got}")
    return got


def _read(path: Path) -> bytes:
    # Non-blocking open: a FIFO named like a certificate must not hang stapled.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise CertificateError(str(path), f"cannot read ({e.strerror})") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CertificateError(str(path), "not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_CERT_FILE + 1)
    except OSError as e:
        raise CertificateError(str(path), f"cannot read ({e.strerror})") from e
    finally:
        os.close(fd)
    if len(data) > MAX_CERT_FILE:
        raise CertificateError(str(path), f"larger than {MAX_CERT_FILE} bytes: not a certificate")
    return data


def _unique_names(found: list[Found]) -> list[Found]:
    """Distinct staple names: colliding ones get a suffix derived from their path.

    The suffix depends only on the path, so the names are the same on every run; an
    explicit ``name`` in the config keeps a name fixed even when a collision appears.
    """
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(found):
        by_name[f.name].append(i)
    out = list(found)
    for name, indexes in by_name.items():
        if len(indexes) < 2:
            continue
        for i in indexes:
            suffix = hashlib.sha256(found[i].path.encode()).hexdigest()[:8]
            out[i] = replace(found[i], name=f"{name}-{suffix}")
            log.warning(
                "%s: another certificate also maps to %s.der; its staple is %s.der",
                found[i].path,
                name,
                out[i].name,
            )
    return out
