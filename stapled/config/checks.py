"""Type checks for the configuration that name the file and the key in every error."""

from __future__ import annotations

import glob
import math
import shlex
from pathlib import Path
from typing import Any

from ..core.certs import is_key_name
from ..core.urls import problem as url_problem
from ..errors import ConfigError
from .source import SOURCE_KEYS, Source


class Checker:
    """Type checks that name the file and key in every error."""

    def __init__(self, path: Path) -> None:
        self.file = path
        self.base = path.resolve().parent

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(str(self.file), reason, key)

    def path(self, raw: dict[str, Any], key: str, *, required: bool = False) -> Path | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing")
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string path")
        return self.base / Path(value).expanduser()

    def number(self, raw: dict[str, Any], key: str, default: float, prefix: str = "") -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise self.error(prefix + key, f"must be a number, not {value!r}")
        return float(value)

    def duration(self, raw: dict[str, Any], key: str, default: float, prefix: str = "") -> float:
        value = self.number(raw, key, default, prefix)
        if not 0 < value < math.inf:
            raise self.error(prefix + key, f"must be a positive number of seconds, not {value}")
        return value

    def count(self, raw: dict[str, Any], key: str, default: int, prefix: str = "") -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(prefix + key, f"must be a whole number of at least 1, not {value!r}")
        return value

    def flag(self, raw: dict[str, Any], key: str, prefix: str = "") -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise self.error(prefix + key, f"must be true or false, not {value!r}")
        return value

    def table(self, raw: dict[str, Any], key: str, known: set[str]) -> dict[str, Any] | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(key, "must be a table ([" + key + "])")
        for unknown in sorted(set(value) - known):
            raise self.error(f"{key}.{unknown}", f"unknown key (known: {', '.join(sorted(known))})")
        return value

    def command(self, raw: dict[str, Any], key: str) -> tuple[str, ...]:
        value = raw.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            # Split like a shell would, but never hand it to one.
            try:
                argv = shlex.split(value)
            except ValueError as e:
                raise self.error(key, f"cannot be split into words ({e})") from e
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            argv = list(value)
        else:
            raise self.error(key, "must be a string or a list of strings")
        if not argv:
            raise self.error(key, "is empty; remove it to run no command")
        return tuple(argv)

    def source(self, entry: object, key: str) -> Source:
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise self.error(key, "must be a path or a table with 'path'")
        for unknown in sorted(set(entry) - SOURCE_KEYS):
            known = ", ".join(sorted(SOURCE_KEYS))
            raise self.error(f"{key}.{unknown}", f"unknown key (known: {known})")
        path = self.path(entry, "path", required=True) if "path" in entry else None
        if path is None:
            raise self.error(f"{key}.path", "missing")
        where = f"{key}.path"
        if glob.has_magic(str(path)):
            if not path.parent.exists() and not glob.has_magic(str(path.parent)):
                raise self.error(where, f"the directory of the glob {path} does not exist")
        elif not path.exists():
            raise self.error(where, f"{path} does not exist")
        elif not path.is_dir() and is_key_name(path.name):
            raise self.error(
                where,
                f"{path} is a private key file by its name; stapled never reads keys: "
                "name the certificate (or its directory) instead",
            )
        issuer = self.path(entry, "issuer")
        if issuer is not None and not issuer.is_file():
            raise self.error(f"{key}.issuer", f"{issuer} is not a file")
        urls = entry.get("ocsp_url", ())
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
            raise self.error(f"{key}.ocsp_url", "must be a URL or a list of URLs")
        for url in urls:
            if (why := url_problem(url)) is not None:
                raise self.error(f"{key}.ocsp_url", why)
        name = entry.get("name")
        if name is not None and (
            not isinstance(name, str) or not name or "/" in name or name.startswith(".")
        ):
            raise self.error(f"{key}.name", "must be a plain file name without '/' or leading '.'")
        return Source(
            path=str(path),
            ocsp_url=tuple(urls),
            issuer=issuer,
            name=name,
            haproxy=self.flag(entry, "haproxy", f"{key}."),
        )
