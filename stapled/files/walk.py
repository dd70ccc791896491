"""Where certificate files are: each source's paths, directories walked, certbot
lineages recognised without listing them.  Private key files are never opened."""

# Paths are plain strings here: a pathlib object per file and per directory entry is a
# measurable part of a scan of ten thousand certificates.
# ruff: noqa: PTH112, PTH116, PTH119

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from ..config import Source
from ..core import certs

log = logging.getLogger("stapled.files.discovery")

CERT_SUFFIXES = (".pem", ".crt", ".cer")
# Certbot's layout: live/NAME/{cert,chain,fullchain,privkey}.pem
LINEAGE_CERT = "cert.pem"


def is_key_file(path: Path) -> bool:
    """Private key files by name: never opened, whatever they hold."""
    return certs.is_key_name(path.name)


def expand(
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
    lineage = lineage_files(directory)
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


def lineage_files(directory: str) -> tuple[str, ...] | None:
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
