"""Certificate sources on disk -> one :class:`Found` per certificate file.

Per-file problems are values (``Found.error``), never exceptions, so one broken file
never stops the others from being served.  Private key files are never opened.
"""

# Paths are plain strings here: a pathlib object per file and per directory entry is a
# measurable part of a scan of ten thousand certificates.
# ruff: noqa: PTH113, PTH118, PTH119, PTH120, PTH122

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections import defaultdict
from collections.abc import Iterator, Set
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..config import Source
from ..core import certs
from ..core.model import Found, Record
from ..errors import CertificateError, StoreError
from . import parsed, signatures, walk
from .loaded import Kept, Key, Loaded
from .parsed import Parsed
from .signatures import Signature

log = logging.getLogger(__name__)

# Refuse to slurp something that cannot be a certificate bundle.
MAX_CERT_FILE = 1024 * 1024


@dataclass
class Cache:
    """What earlier scans read, so a rescan parses only the files that changed.

    Ten thousand certificates take seconds to read and parse and a fraction of a second
    to stat; the daemon's rescans (on every change a watcher reports, and periodically)
    keep one of these.  ``shared`` holds chain certificates by DER, one object each.
    """

    files: Kept = field(default_factory=Kept)
    shared: dict[bytes, x509.Certificate] = field(default_factory=dict)
    # Files changed within this many nanoseconds are not kept (a test may trust all).
    recent_ns: int = signatures.RECENT_NS
    # What an earlier process parsed (the state directory's), for the next scan only.
    earlier: Parsed | None = None
    # Whether what is kept for the next process differs from what it was given.
    changed: bool = False
    # What the last whole scan found, in order, for a scan of a few changed files.
    items: list[_Item] = field(default_factory=list)
    unlisted: list[tuple[str, str]] = field(default_factory=list)
    # Each path's item; None for a path reached by two sources (left to a whole scan).
    # The item rather than its index: 100,000 int objects are 3 MB.
    positions: dict[str, _Item | None] = field(default_factory=dict)

    def outcomes(self) -> Iterator[parsed.Kept]:
        """What the files read so far parsed to, for :func:`parsed.save`."""
        for (path, lineage, named), loaded in self.files.items():
            outcome = loaded.parsed or loaded.skip
            if loaded.key is not None and loaded.signature is not None and outcome is not None:
                yield parsed.where(path, lineage, named), loaded.signature, loaded.key, outcome


def discover(
    sources: tuple[Source, ...], cache: Cache | None = None, changed: Set[str] | None = None
) -> list[Found]:
    """Every certificate the configured sources hold, with unique staple names.

    ``changed``: the paths a watcher saw change since the last scan with this cache.
    When each is a file of a certificate that scan found, only those are read again;
    anything else (a new file, a directory made or removed) makes it a whole scan.
    """
    cache = cache or Cache()
    if changed is not None:
        again = _rediscover(cache, changed)
        if again is not None:
            return again
    before, cache.files = cache.files, Kept()
    issuers: dict[Path, x509.Certificate | str] = {}
    items: list[_Item] = []
    unlisted: list[tuple[str, str]] = []
    for source in sources:
        for path, lineage, named in walk.expand(source, unlisted):
            loaded = _loaded(path, lineage, named, before, cache)
            loaded = _asking(loaded, source, (path, lineage is not None, named), cache)
            found = _found(path, lineage is not None, source, loaded, issuers)
            items.append(_Item(source, path, lineage is not None, named, loaded, found))
    if cache.earlier is not None:
        cache.changed |= not cache.earlier.all_taken
        cache.earlier = None  # held for one scan: the files cache serves later ones
    cache.items, cache.unlisted = items, unlisted
    positions: dict[str, _Item | None] = {}
    for item in items:
        positions[item.path] = None if item.path in positions else item
    cache.positions = positions
    return _assembled(items, unlisted)


def keep(cache: Cache, state_dir: Path) -> None:
    """What ``cache``'s scans parsed, for the next process (files/parsed.py); written
    only when it changed, and a failure costs only the next process's time."""
    if not cache.changed:
        return
    try:
        parsed.save(state_dir, cache.outcomes())
    except StoreError as e:
        log.debug("cannot keep the certificates parsed: %s", e)
    else:
        cache.changed = False


def _rediscover(cache: Cache, changed: Set[str]) -> list[Found] | None:
    """The last scan with only the certificates under ``changed`` read again; None when
    a path is not a file of a certificate that scan found."""
    if not cache.items:
        return None
    affected: set[int] = set()  # the ids of the items to read again
    positions = cache.positions
    for path in changed:
        item = positions.get(path)
        if item is not None and not item.lineage:
            affected.add(id(item))  # a certificate file
            continue
        item = positions.get(os.path.dirname(path))
        if item is None or not item.lineage:
            return None  # a new file, a directory made or removed, or reached twice
        affected.add(id(item))  # a file in a certbot lineage
    issuers: dict[Path, x509.Certificate | str] = {}
    items = list(cache.items)
    renewed: list[_Item] = []
    for at, item in enumerate(items):
        if id(item) not in affected:
            continue
        lineage = walk.lineage_files(item.path) if item.lineage else None
        if lineage is None and (item.lineage or not os.path.isfile(item.path)):
            return None  # no longer a lineage, a file gone or made a directory
        loaded = _loaded(item.path, lineage, item.named, cache.files, cache)
        loaded = _asking(loaded, item.source, (item.path, item.lineage, item.named), cache)
        found = _found(item.path, item.lineage, item.source, loaded, issuers)
        items[at] = replace(item, loaded=loaded, found=found)
        renewed.append(items[at])
    cache.items = items
    for item in renewed:
        positions[item.path] = item
    return _assembled(items, cache.unlisted)


def _assembled(items: list[_Item], unlisted: list[tuple[str, str]]) -> list[Found]:
    found: list[Found] = []
    seen: set[object] = set()
    for item in items:
        identity = item.loaded.identity
        if identity in seen:
            continue  # one file reached by two sources or through a symlink
        seen.add(identity)
        if item.found is not None:
            found.append(item.found)
    for directory, reason in unlisted:
        # The certificates it may hold are unknown: that is an error, never "none".
        found.append(Found(directory, directory, error=reason, directory=True))
    return _unique_names(found)


@dataclass(frozen=True, slots=True)
class _Item:
    """One path a scan met, under the source that led to it, and what came of it."""

    source: Source
    path: str
    lineage: bool
    named: bool
    loaded: Loaded
    found: Found | None  # None: skipped


def _loaded(
    path: str,
    lineage_files: tuple[str, ...] | None,
    named: bool,
    before: Kept,
    cache: Cache,
) -> Loaded:
    """``path`` read and parsed, or what an earlier scan made of it if it is unchanged."""
    lineage = lineage_files is not None
    files = lineage_files or (path,)
    shown = os.path.join(path, walk.LINEAGE_CERT) if lineage else path
    key = (path, lineage, named)
    earlier = before.get(key)
    if earlier is not None:
        try:
            unchanged = signatures.of(files) == earlier.signature
        except CertificateError as e:
            return Loaded(None, shown, error=_reason(e, shown), alias=path)
        if unchanged:
            cache.files.put(key, earlier)
            return earlier
    elif cache.earlier is not None and cache.earlier.has_signatures:
        recalled = _recalled(key, files, shown, cache, cache.earlier)
        if recalled is not None:
            return recalled
    loaded = _load(files, shown, key, cache)
    signature = loaded.signature
    if signature and time.time_ns() - signatures.changed_last(signature) > cache.recent_ns:
        cache.files.put(key, loaded)
    return loaded


def _recalled(
    key: Key, files: tuple[str, ...], shown: str, cache: Cache, earlier: Parsed
) -> Loaded | None:
    """What an earlier process parsed of these files, if their signature is the one it
    kept (it kept only signatures older than ``recent_ns``, as the cache does)."""
    try:
        signature = signatures.of(files)
    except CertificateError:
        return None  # read, for the reason to tell
    recalled = earlier.recall(parsed.where(*key), signature, shown, cache.shared)
    if recalled is None:
        return None
    entry, outcome = recalled
    if isinstance(outcome, str):
        loaded = Loaded(signature, shown, skip=outcome, key=entry)
    else:
        loaded = Loaded(signature, shown, chain=outcome, key=entry)
    cache.files.put(key, loaded)
    return loaded


def _load(files: tuple[str, ...], shown: str, key: Key, cache: Cache) -> Loaded:
    """The files read and parsed (or found parsed before), with the signature of what
    was read (None when a file could not be read)."""
    parts: list[bytes] = []
    stats: list[os.stat_result] = []
    try:
        for name in files:
            data, st = _read(name)
            parts.append(data)
            stats.append(st)
    except CertificateError as e:
        # The file that holds the leaf identifies the certificate.
        alias = signatures.identity(signatures.packed(stats)) if stats else files[0]
        return Loaded(None, shown, error=_reason(e, shown), alias=alias)
    signature = signatures.packed(stats)
    data = b"\n".join(parts)
    _, lineage, named = key
    entry = parsed.key(data, lineage, named)
    if cache.earlier is not None:
        outcome = cache.earlier.take(entry, data, shown, cache.shared)
        if outcome is not None and not cache.earlier.keeps(parsed.where(*key), signature, entry):
            cache.changed = True  # the same bytes, met with another signature or elsewhere
        if isinstance(outcome, str):
            return Loaded(signature, shown, skip=outcome, key=entry)
        if outcome is not None:
            return Loaded(signature, shown, chain=outcome, key=entry)
    try:
        loaded = _parse(data, signature, shown, lineage, named, cache.shared)
    except CertificateError as e:
        return Loaded(signature, shown, error=_reason(e, shown))
    cache.changed = True
    return replace(loaded, key=entry)


def _parse(
    data: bytes,
    signature: Signature,
    shown: str,
    lineage: bool,
    named: bool,
    shared: dict[bytes, x509.Certificate],
) -> Loaded:
    if not named and not lineage and not _may_hold_certificate(data):
        return Loaded(signature, shown, skip=parsed.NOT_A_CERTIFICATE)
    found = certs.parse_certificates(data, shown, shared)
    if not named and not lineage and all(certs.is_ca(c) for c in found):
        return Loaded(signature, shown, skip=parsed.NO_LEAF)
    if lineage and len(found) > 1 and found[1] == found[0]:
        found = found[:1] + found[2:]  # fullchain.pem repeats the leaf
    return Loaded(signature, shown, chain=certs.build_chain(found, shown))


def _reason(error: CertificateError, shown: str) -> str:
    """The error's reason, naming its file when that is not the one shown (a lineage's
    fullchain.pem or chain.pem, shown under its cert.pem)."""
    return error.reason if error.path == shown else f"{error.path}: {error.reason}"


def _found(
    path: str,
    lineage: bool,
    source: Source,
    loaded: Loaded,
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
    return Found(name, shown, chain=chain, haproxy=source.haproxy)


def _asking(loaded: Loaded, source: Source, key: Key, cache: Cache) -> Loaded:
    """``loaded`` with its chain asking the responders ``source`` says (its ``ocsp_url``,
    else the certificate's own), and kept so for the next scan: at 100,000 certificates
    a chain copied for each at every scan is 12 MB held."""
    chain = loaded.chain
    if chain is None:
        return loaded
    own = chain.ocsp_urls if loaded.file_urls is None else loaded.file_urls
    urls = source.ocsp_url or own
    if urls == chain.ocsp_urls:
        return loaded
    asking = loaded.asking(chain.with_ocsp_urls(urls), None if urls == own else own)
    if cache.files.get(key) is loaded:
        cache.files.put(key, asking)
    return asking


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
        # The size it has, and one byte more: a short read is the end of the file.
        ask = min(st.st_size, MAX_CERT_FILE) + 1
        while size <= MAX_CERT_FILE:
            chunk = os.read(fd, ask)
            parts.append(chunk)
            size += len(chunk)
            if len(chunk) < ask:
                break
            ask = MAX_CERT_FILE + 1 - size  # it grew while read
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
