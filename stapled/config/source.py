"""One entry of ``certificates`` in the configuration."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

SOURCE_KEYS = {"path", "ocsp_url", "issuer", "name", "haproxy"}


@dataclass(frozen=True)
class Source:
    """One entry of ``certificates``: a directory, file or glob, with its overrides."""

    path: str
    ocsp_url: tuple[str, ...] = ()
    issuer: Path | None = None
    name: str | None = None
    # Also write <certificate file>.ocsp beside each certificate, where HAProxy reads it.
    haproxy: bool = False

    @property
    def is_glob(self) -> bool:
        return glob.has_magic(self.path)
