"""A certificate file as a scan loaded it, and what scans keep of each by its path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..core.certs import CertChain
from . import signatures
from .signatures import Signature


@dataclass(frozen=True, slots=True)
class Loaded:
    """A certificate file read and parsed, before any source's settings apply."""

    signature: Signature | None  # of the files read; None when one could not be read
    shown: str
    chain: CertChain | None = None  # with the issuer the file holds, if it holds it
    error: str | None = None  # a CertificateError's reason
    skip: str | None = None  # why a file met in a directory scan is not a certificate
    key: bytes | None = None  # its entry for the next process (parsed.key)
    # What identifies files not read in full: the first one's device and inode when it
    # could be read, else the path.
    alias: object = None
    # The file's own OCSP URLs when ``chain`` asks a source's ``ocsp_url`` instead: the
    # chain a source uses is the one kept, not a copy beside the file's.
    file_urls: tuple[str, ...] | None = None

    def asking(self, chain: CertChain, file_urls: tuple[str, ...] | None) -> Loaded:
        """This file with ``chain`` in place of its own, which asks other responders."""
        # Spelled out: dataclasses.replace() costs several times more, once a file a scan.
        return Loaded(
            self.signature,
            self.shown,
            chain,
            self.error,
            self.skip,
            self.key,
            self.alias,
            file_urls,
        )

    @property
    def parsed(self) -> CertChain | None:
        """The chain as the file's bytes give it, with its own OCSP URLs."""
        if self.chain is None or self.file_urls is None:
            return self.chain
        return self.chain.with_ocsp_urls(self.file_urls)

    @property
    def identity(self) -> object:
        """What identifies the certificate's file: one file reached twice is one."""
        return self.alias if self.signature is None else signatures.identity(self.signature)


Key = tuple[str, bool, bool]  # (path, a certbot lineage?, named by a source?)


class Kept:
    """What scans loaded, by (path, lineage, named): a map of paths for each kind of
    path, so that no key is held for each of 100,000 files."""

    __slots__ = ("_kinds",)

    def __init__(self) -> None:
        self._kinds: dict[tuple[bool, bool], dict[str, Loaded]] = {}

    def __len__(self) -> int:
        return sum(len(paths) for paths in self._kinds.values())

    def get(self, key: Key) -> Loaded | None:
        path, lineage, named = key
        paths = self._kinds.get((lineage, named))
        return None if paths is None else paths.get(path)

    def put(self, key: Key, loaded: Loaded) -> None:
        path, lineage, named = key
        self._kinds.setdefault((lineage, named), {})[path] = loaded

    def items(self) -> Iterator[tuple[Key, Loaded]]:
        for (lineage, named), paths in self._kinds.items():
            for path, loaded in paths.items():
                yield (path, lineage, named), loaded
