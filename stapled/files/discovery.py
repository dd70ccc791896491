"""Certificate sources on disk -> one :class:`Found` per certificate file.

Per-file problems are values (``Found.error``), never exceptions, so one broken file
never stops the others from being served.  Private key files are never opened.
"""

# Paths are plain strings here: a pathlib object per file and per directory entry is a
# measurable part of a scan of ten thousand certificates.
# ruff: noqa: PTH112, PTH116, PTH118, PTH119, PTH122

from __future__ import annotations

import glob
import hashlib
import logging
import os
import stat
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..config import Source
from ..core import certs
from ..core.certs import CertChain
from ..core.model import Found, Record
from ..errors import CertificateError
from . import parsed
from .parsed import Outcome, Parsed

log = logging.getLogger(__name__)

CERT_SUFFIXES = (".pem", ".crt", ".cer")
# Certbot's layout: live/NAME/{cert,chain,fullchain,privkey}.pem
LINEAGE_CERT = "cert.pem"
# Refuse to slurp something that cannot be a certificate bundle.
MAX_CERT_FILE = 1024 * 1024


def is_key_file(path: Path) -> bool:
    """Private key files by name: never opened, whatever they hold."""
    return certs.is_key_name(path.name)


# What identifies a file's content without reading it: device, inode, size, times.
Signature = tuple[int, ...]
# A file changed this recently may change again within the same timestamp tick (some
# filesystems count whole seconds) without its signature changing: it is read again at
# the next scan rather than trusted from the cache.
RECENT_NS = 3_000_000_000


@dataclass
class Cache:
    """What earlier scans read, so a rescan parses only the files that changed.

    Ten thousand certificates take seconds to read and parse and a fraction of a second
    to stat; the daemon's rescans (on every change a watcher reports, and periodically)
    keep one of these.  ``shared`` holds chain certificates by DER, one object each.
    """

    files: dict[tuple[str, bool, bool], tuple[Signature, _Loaded]] = field(default_factory=dict)
    shared: dict[bytes, x509.Certificate] = field(default_factory=dict)
    # Files changed within this many nanoseconds are not kept (a test may trust all).
    recent_ns: int = RECENT_NS
    # What an earlier process parsed (the state directory's), for the next scan only.
    earlier: Parsed | None = None
    # Whether what is kept for the next process differs from what it was given.
    changed: bool = False

    def outcomes(self) -> Iterator[tuple[bytes, Outcome]]:
        """What the files read so far parsed to, for :func:`parsed.save`."""
        for _, loaded in self.files.values():
            outcome = loaded.chain or loaded.skip
            if loaded.key is not None and outcome is not None:
                yield loaded.key, outcome


def discover(sources: tuple[Source, ...], cache: Cache | None = None) -> list[Found]:
    """Every certificate the configured sources hold, with unique staple names."""
    cache = cache or Cache()
    before, cache.files = cache.files, {}
    issuers: dict[Path, x509.Certificate | str] = {}
    found: list[Found] = []
    seen: set[object] = set()
    unlisted: list[tuple[str, str]] = []
    for source in sources:
        for path, lineage, named in _expand(source, unlisted):
            loaded = _loaded(path, lineage, named, before, cache)
            if loaded.identity in seen:
                continue  # one file reached by two sources or through a symlink
            seen.add(loaded.identity)
            item = _found(path, lineage is not None, source, loaded, issuers)
            if item is not None:
                found.append(item)
    if cache.earlier is not None:
        cache.changed |= not cache.earlier.all_taken
        cache.earlier = None  # held for one scan: the files cache serves later ones
    for directory, reason in unlisted:
        # The certificates it may hold are unknown: that is an error, never "none".
        found.append(Found(directory, directory, error=reason, directory=True))
    return _unique_names(found)


def _expand(
    source: Source, unlisted: list[tuple[str, str]]
) -> Iterator[tuple[str, tuple[str, ...] | None, bool]]:
    """(path, the files of a certbot lineage directory or None for a file, named
    directly) for each match of a source.

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
        if os.path.isdir(match):
            for found, lineage in _scan_dir(match, set(), unlisted):
                yield found, lineage, False
        elif not is_key_file(Path(match)):
            yield match, None, not source.is_glob


def _scan_dir(
    directory: str, visited: set[tuple[int, int]], unlisted: list[tuple[str, str]]
) -> Iterator[tuple[str, tuple[str, ...] | None]]:
    """Certificate files and certbot lineages below ``directory``, in name order.

    A directory that cannot be listed goes to ``unlisted`` with the reason.  A lineage is
    recognised by two lstats and not listed; any other directory is listed once, with no
    stat per plain file, since at ten thousand lineages the walk is most of a scan.
    Symbolic links are followed; a loop is cut where a directory comes round again.
    """
    lineage = _lineage_files(directory)
    if lineage is not None:
        # Two lstats instead of listing it: live/ holds one such directory per certificate.
        yield directory, lineage
        return
    try:
        st = os.stat(directory)
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as e:
        unlisted.append((directory, f"cannot list the directory ({e.strerror or e})"))
        return
    if (st.st_dev, st.st_ino) in visited:
        return  # a symlink loop
    visited.add((st.st_dev, st.st_ino))
    names = {e.name for e in entries}
    subdirs: list[str] = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if not entry.name.startswith("."):
                subdirs.append(entry.path)
        elif entry.name.lower().endswith(CERT_SUFFIXES) and not is_key_file(Path(entry.name)):
            yield entry.path, None
    if "live" in names and "archive" in names:
        # certbot's archive/ holds every old certificate too
        subdirs = [d for d in subdirs if os.path.basename(d) == "live"]
    for subdir in subdirs:
        yield from _scan_dir(subdir, visited, unlisted)


@dataclass(frozen=True, slots=True)
class _Loaded:
    """A certificate file read and parsed, before any source's settings apply."""

    identity: object  # (device, inode) of the file read, or its path when unreadable
    shown: str
    chain: CertChain | None = None  # with the issuer the file holds, if it holds it
    error: str | None = None  # a CertificateError's reason
    skip: str | None = None  # why a file met in a directory scan is not a certificate
    key: bytes | None = None  # its entry for the next process (parsed.key)


def _loaded(
    path: str,
    lineage_files: tuple[str, ...] | None,
    named: bool,
    before: dict[tuple[str, bool, bool], tuple[Signature, _Loaded]],
    cache: Cache,
) -> _Loaded:
    """``path`` read and parsed, or what an earlier scan made of it if it is unchanged."""
    lineage = lineage_files is not None
    files = lineage_files or (path,)
    shown = os.path.join(path, LINEAGE_CERT) if lineage else path
    key = (path, lineage, named)
    earlier = before.get(key)
    if earlier is not None:
        try:
            unchanged = _signature(files) == earlier[0]
        except CertificateError as e:
            return _Loaded(path, shown, error=_reason(e, shown))
        if unchanged:
            cache.files[key] = earlier
            return earlier[1]
    loaded, signature = _load(files, shown, lineage, named, cache)
    if signature and time.time_ns() - max(signature[3::5] + signature[4::5]) > cache.recent_ns:
        cache.files[key] = (signature, loaded)
    return loaded


def _lineage_files(directory: str) -> tuple[str, ...] | None:
    """The files a certbot lineage is read from; None when ``directory`` is not one.

    A lineage is cert.pem beside chain.pem or fullchain.pem (links, as certbot makes
    them, dangling or not).  fullchain.pem (cert.pem followed by chain.pem) is what web
    servers are pointed at, so its leaf is the certificate they serve; it is also one
    read instead of two.  Without it, cert.pem and chain.pem.
    """
    lexists, join = os.path.lexists, os.path.join
    cert = join(directory, LINEAGE_CERT)
    if not lexists(cert):
        return None
    full = join(directory, "fullchain.pem")
    if lexists(full):
        return (full,)
    chain = join(directory, "chain.pem")
    return (cert, chain) if lexists(chain) else None


def _signature(files: tuple[str, ...]) -> Signature:
    stats: list[os.stat_result] = []
    for name in files:
        try:
            st = os.stat(name)
        except OSError as e:
            raise CertificateError(name, f"cannot read ({e.strerror})") from e
        if not stat.S_ISREG(st.st_mode):
            raise CertificateError(name, "not a regular file")
        stats.append(st)
    return _signature_of(stats)


def _signature_of(stats: list[os.stat_result]) -> Signature:
    return tuple(
        n
        for st in stats
        for n in (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    )


def _load(
    files: tuple[str, ...], shown: str, lineage: bool, named: bool, cache: Cache
) -> tuple[_Loaded, Signature | None]:
    """The files read and parsed (or found parsed before), and the signature of what
    was read (None when a file could not be read)."""
    identity: object = files[0]
    parts: list[bytes] = []
    stats: list[os.stat_result] = []
    try:
        for name in files:
            data, st = _read(name)
            parts.append(data)
            stats.append(st)
    except CertificateError as e:
        if stats:  # the file that holds the leaf identifies the certificate
            identity = (stats[0].st_dev, stats[0].st_ino)
        return _Loaded(identity, shown, error=_reason(e, shown)), None
    identity = (stats[0].st_dev, stats[0].st_ino)
    signature = _signature_of(stats)
    data = b"\n".join(parts)
    key = parsed.key(data, lineage, named)
    if cache.earlier is not None:
        outcome = cache.earlier.take(key, data, shown, cache.shared)
        if isinstance(outcome, str):
            return _Loaded(identity, shown, skip=outcome, key=key), signature
        if outcome is not None:
            return _Loaded(identity, shown, chain=outcome, key=key), signature
    try:
        loaded = _parse(data, identity, shown, lineage, named, cache.shared)
    except CertificateError as e:
        return _Loaded(identity, shown, error=_reason(e, shown)), signature
    cache.changed = True
    return replace(loaded, key=key), signature


def _parse(
    data: bytes,
    identity: object,
    shown: str,
    lineage: bool,
    named: bool,
    shared: dict[bytes, x509.Certificate],
) -> _Loaded:
    if not named and not lineage and not _may_hold_certificate(data):
        return _Loaded(identity, shown, skip="no certificate in it")
    found = certs.parse_certificates(data, shown, shared)
    if not named and not lineage and all(certs.is_ca(c) for c in found):
        return _Loaded(identity, shown, skip="CA certificates only, no leaf")
    if lineage and len(found) > 1 and found[1] == found[0]:
        found = found[:1] + found[2:]  # fullchain.pem repeats the leaf
    return _Loaded(identity, shown, chain=certs.build_chain(found, shown))


def _reason(error: CertificateError, shown: str) -> str:
    """The error's reason, naming its file when that is not the one shown (a lineage's
    fullchain.pem or chain.pem, shown under its cert.pem)."""
    return error.reason if error.path == shown else f"{error.path}: {error.reason}"


def _found(
    path: str,
    lineage: bool,
    source: Source,
    loaded: _Loaded,
    issuers: dict[Path, x509.Certificate | str],
) -> Found | None:
    """The Found for a loaded file under one source's settings (issuer, URL, HAProxy)."""
    if loaded.skip is not None:
        log.debug("%s: %s; skipped", path, loaded.skip)
        return None
    base = os.path.basename(path)
    name = source.name or (base if lineage else os.path.splitext(base)[0])
    shown, chain = loaded.shown, loaded.chain
    if chain is None:
        return Found(name, shown, error=loaded.error, haproxy=source.haproxy)
    try:
        issuer = _issuer(source, issuers) if chain.issuer is None else None
        if issuer is not None:
            chain = certs.with_configured_issuer(chain, issuer)
    except CertificateError as e:
        return Found(name, shown, error=e.reason, haproxy=source.haproxy)
    if source.ocsp_url:
        chain = chain.with_ocsp_urls(source.ocsp_url)
    return Found(name, shown, chain=chain, haproxy=source.haproxy)


def _may_hold_certificate(data: bytes) -> bool:
    return b"-----BEGIN CERTIFICATE-----" in data or data[:1] == b"\x30"


def _issuer(source: Source, cache: dict[Path, x509.Certificate | str]) -> x509.Certificate | None:
    if source.issuer is None:
        return None
    if source.issuer not in cache:
        try:
            data, _ = _read(str(source.issuer))
            cache[source.issuer] = certs.parse_issuer_bytes(data, str(source.issuer))
        except CertificateError as e:
            cache[source.issuer] = str(e)
    got = cache[source.issuer]
    if isinstance(got, str):
        raise CertificateError(str(source.issuer), f"configured issuer unusable: {got}")
    return got


def leaf_fingerprint(path: str) -> str | None:
    """The SHA-256 fingerprint of the first certificate in ``path`` now (how a CertChain
    names it); None when the file cannot be read as one.  Read as a scan reads it, so a
    FIFO or a huge file planted there is refused, not waited on."""
    try:
        data, _ = _read(path)
        leaf = certs.parse_certificates(data, path)[0]
    except (CertificateError, IndexError):
        return None
    return hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()


def _read(path: str) -> tuple[bytes, os.stat_result]:
    """The file's bytes and its stat, refusing what cannot be a certificate file."""
    # Non-blocking open: a FIFO named like a certificate must not hang stapled.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise CertificateError(path, f"cannot read ({e.strerror})") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CertificateError(path, "not a regular file")
        parts: list[bytes] = []
        size = 0
        while size <= MAX_CERT_FILE:
            chunk = os.read(fd, MAX_CERT_FILE + 1 - size)
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise CertificateError(path, f"cannot read ({e.strerror})") from e
    finally:
        os.close(fd)
    if size > MAX_CERT_FILE:
        raise CertificateError(path, f"larger than {MAX_CERT_FILE} bytes: not a certificate")
    return b"".join(parts), st


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


def below(
    records: list[Record], groups: dict[str, list[Found]], only: Path
) -> tuple[list[Record], dict[str, list[Found]]]:
    """The records and groups found at or below ``only`` (``once --only``)."""
    top = only.resolve()

    def below(path: str) -> bool:
        resolved = Path(path).resolve()
        # A lineage's cert.pem resolves into archive/: its live/NAME directory counts too.
        return any(p == top or top in p.parents for p in (Path(path), resolved))

    kept = {fp: members for fp, members in groups.items() if any(below(m.path) for m in members)}
    return [r for r in records if below(r.path)], kept
