"""TOML configuration -> a frozen :class:`Config`.

Every problem is a ConfigError naming the file and the key, raised before anything is
written.  Relative paths are taken relative to the configuration file.
"""

from __future__ import annotations

import glob
import ipaddress
import math
import shlex
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .core.fleet import redacted
from .core.urls import problem as url_problem
from .errors import ConfigError

DEFAULT_REFRESH_AT = 0.5
DEFAULT_CONCURRENCY = 16
DEFAULT_PER_HOST = 4
DEFAULT_TIMEOUT = 10.0
DEFAULT_RELOAD_TIMEOUT = 60.0
# The daemon's timing (seconds).
DEFAULT_RETRY_MIN = 60.0
DEFAULT_RETRY_MAX = 3600.0
DEFAULT_MIN_REFRESH_INTERVAL = 60.0
DEFAULT_RESCAN_INTERVAL = 600.0
DEFAULT_DEBOUNCE = 2.0
STATE_DIR_NAME = ".stapled"
DEFAULT_PROBE_INTERVAL = 300.0
# The local responder: connections served at once; more wait in the listen backlog.
DEFAULT_MAX_CLIENTS = 256


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


@dataclass(frozen=True)
class ResponderConfig:
    """``[responder]``: the local caching OCSP responder of ``stapled run``."""

    host: str
    port: int
    max_clients: int = DEFAULT_MAX_CLIENTS

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


@dataclass(frozen=True)
class FleetConfig:
    """``[fleet]``: share staples through Redis.  ``redis`` may hold a password: it is
    never shown (``url`` is what messages use)."""

    redis: str = field(repr=False)
    host_id: str
    key_prefix: str = "stapled:"
    # Seconds: how long a lease lets its holder ask the CA alone (measured by Redis).
    lease: float = 30.0
    # How often the store's generation is read, and every certificate's digest.
    poll_interval: float = 5.0
    sweep_interval: float = 300.0
    # With the store unreachable, a host asks the CA alone this long after the refresh
    # time, plus its share (by a hash of its id) of ``spread``.
    grace: float = 600.0
    spread: float = 600.0
    # Every Redis call; a failed one marks the store down for a few seconds.
    timeout: float = 1.0

    @property
    def url(self) -> str:
        return redacted(self.redis)


@dataclass(frozen=True)
class ProbeConfig:
    """One ``[[probe]]``: a live TLS endpoint of this host and the name to ask it for."""

    target: str
    servername: str


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: Prometheus text over HTTP (``run``) and/or a node_exporter textfile."""

    listen: tuple[str, int] | None = None
    textfile: Path | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    output_dir: Path
    certificates: tuple[Source, ...]
    reload_command: tuple[str, ...] = ()
    refresh_at: float = DEFAULT_REFRESH_AT
    concurrency: int = DEFAULT_CONCURRENCY
    per_host: int = DEFAULT_PER_HOST
    timeout: float = DEFAULT_TIMEOUT
    reload_timeout: float = DEFAULT_RELOAD_TIMEOUT
    cert_id_hash: str = "sha1"
    state_dir: Path | None = None
    reload_request_file: Path | None = None
    retry_min: float = DEFAULT_RETRY_MIN
    retry_max: float = DEFAULT_RETRY_MAX
    min_refresh_interval: float = DEFAULT_MIN_REFRESH_INTERVAL
    rescan_interval: float = DEFAULT_RESCAN_INTERVAL
    debounce: float = DEFAULT_DEBOUNCE
    nginx_snippets: bool = False
    config_test_command: tuple[str, ...] = ()
    haproxy_socket: str | None = None
    responder: ResponderConfig | None = None
    fleet: FleetConfig | None = None
    probes: tuple[ProbeConfig, ...] = ()
    probe_interval: float = DEFAULT_PROBE_INTERVAL
    metrics: MetricsConfig | None = None

    @property
    def state_path(self) -> Path:
        """Where stapled keeps its own records (state file, caIssuers cache)."""
        return self.state_dir or self.output_dir / STATE_DIR_NAME


_TOP_KEYS = {
    "output_dir",
    "certificates",
    "reload_command",
    "refresh_at",
    "concurrency",
    "per_host",
    "timeout",
    "reload_timeout",
    "cert_id_hash",
    "state_dir",
    "reload_request_file",
    "retry_min",
    "retry_max",
    "min_refresh_interval",
    "rescan_interval",
    "debounce",
    "nginx_snippets",
    "config_test_command",
    "haproxy",
    "responder",
    "fleet",
    "probe",
    "probe_interval",
    "metrics",
}
_SOURCE_KEYS = {"path", "ocsp_url", "issuer", "name", "haproxy"}
_HAPROXY_KEYS = {"admin_socket"}
_RESPONDER_KEYS = {"listen", "max_clients"}
_FLEET_KEYS = {
    "redis",
    "host_id",
    "key_prefix",
    "lease",
    "poll_interval",
    "sweep_interval",
    "grace",
    "spread",
    "timeout",
}
_FLEET_SCHEMES = ("redis", "rediss", "unix")
_PROBE_KEYS = {"target", "servername"}
_METRICS_KEYS = {"listen", "textfile"}


def load(path: str | Path) -> Config:
    """Read and check the configuration file at ``path``.

    Raises ConfigError (exit 78) for an unreadable file, bad TOML, unknown keys,
    wrong types, values out of range and sources that do not exist.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(str(path), f"cannot read the configuration file ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), "the configuration file is not UTF-8 text") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML ({e})") from e
    return parse(raw, path)


def parse(raw: dict[str, Any], path: Path) -> Config:
    """Check an already decoded TOML table; ``path`` names the file in errors."""
    p = _Checker(path)
    for key in sorted(set(raw) - _TOP_KEYS):
        raise p.error(key, f"unknown key (known keys: {', '.join(sorted(_TOP_KEYS))})")
    output_dir = p.path(raw, "output_dir", required=True)
    assert output_dir is not None  # required=True
    if "certificates" not in raw:
        raise p.error("certificates", "missing: list the certificate directories, files or globs")
    entries = raw["certificates"]
    if not isinstance(entries, list) or not entries:
        raise p.error("certificates", "must be a non-empty list of paths or tables")
    sources = tuple(p.source(entry, f"certificates[{i}]") for i, entry in enumerate(entries))
    refresh_at = p.number(raw, "refresh_at", DEFAULT_REFRESH_AT)
    if not 0 < refresh_at < 1:
        raise p.error("refresh_at", f"must be between 0 and 1 (exclusive), not {refresh_at}")
    cert_id_hash = raw.get("cert_id_hash", "sha1")
    if cert_id_hash not in ("sha1", "sha256"):
        raise p.error("cert_id_hash", f"must be 'sha1' or 'sha256', not {cert_id_hash!r}")
    return Config(
        path=path,
        output_dir=output_dir,
        certificates=sources,
        reload_command=p.command(raw, "reload_command"),
        refresh_at=refresh_at,
        concurrency=p.count(raw, "concurrency", DEFAULT_CONCURRENCY),
        per_host=p.count(raw, "per_host", DEFAULT_PER_HOST),
        timeout=p.duration(raw, "timeout", DEFAULT_TIMEOUT),
        reload_timeout=p.duration(raw, "reload_timeout", DEFAULT_RELOAD_TIMEOUT),
        cert_id_hash=cert_id_hash,
        state_dir=p.path(raw, "state_dir"),
        reload_request_file=p.path(raw, "reload_request_file"),
        nginx_snippets=p.flag(raw, "nginx_snippets"),
        config_test_command=p.command(raw, "config_test_command"),
        haproxy_socket=_haproxy_socket(p, raw),
        responder=_responder(p, raw),
        fleet=_fleet(p, raw),
        probes=_probes(p, raw),
        probe_interval=p.duration(raw, "probe_interval", DEFAULT_PROBE_INTERVAL),
        metrics=_metrics(p, raw),
        **_daemon_timing(p, raw),
    )


def _haproxy_socket(p: _Checker, raw: dict[str, Any]) -> str | None:
    table = p.table(raw, "haproxy", _HAPROXY_KEYS)
    if table is None or "admin_socket" not in table:
        return None
    value = table["admin_socket"]
    if not isinstance(value, str) or not value:
        raise p.error("haproxy.admin_socket", "must be a socket path or host:port")
    if value.startswith("/") or ":" not in value:
        return str(p.base / Path(value).expanduser())
    return value


def _responder(p: _Checker, raw: dict[str, Any]) -> ResponderConfig | None:
    table = p.table(raw, "responder", _RESPONDER_KEYS)
    if table is None:
        return None
    value = table.get("listen")
    if not isinstance(value, str):
        raise p.error("responder.listen", 'missing: an address such as "127.0.0.1:8080"')
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise p.error("responder.listen", f"{value!r} is not HOST:PORT with a port 1-65535")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        # It serves whatever stapled holds to anyone who asks: the web server on this
        # host is its only client.
        raise p.error("responder.listen", f"{host!r} is not a loopback address")
    return ResponderConfig(
        host, int(port_text), p.count(table, "max_clients", DEFAULT_MAX_CLIENTS, "responder.")
    )


def _probes(p: _Checker, raw: dict[str, Any]) -> tuple[ProbeConfig, ...]:
    entries = raw.get("probe", [])
    if not isinstance(entries, list):
        raise p.error("probe", "must be an array of tables ([[probe]])")
    probes = []
    for i, entry in enumerate(entries):
        key = f"probe[{i}]"
        if not isinstance(entry, dict):
            raise p.error(key, "must be a table with 'target' and 'servername'")
        for unknown in sorted(set(entry) - _PROBE_KEYS):
            raise p.error(f"{key}.{unknown}", "unknown key (known: servername, target)")
        target = entry.get("target")
        if not isinstance(target, str) or _host_port(target) is None:
            raise p.error(f"{key}.target", f"{target!r} is not HOST:PORT with a port 1-65535")
        name = entry.get("servername")
        if not isinstance(name, str) or not 0 < len(name) <= 253 or not _plain(name):
            raise p.error(f"{key}.servername", "must be a host name (the SNI to send)")
        probes.append(ProbeConfig(target, name))
    return tuple(probes)


def _metrics(p: _Checker, raw: dict[str, Any]) -> MetricsConfig | None:
    table = p.table(raw, "metrics", _METRICS_KEYS)
    if table is None:
        return None
    listen = None
    if "listen" in table:
        value = table["listen"]
        listen = _host_port(value) if isinstance(value, str) else None
        if listen is None:
            raise p.error("metrics.listen", f"{value!r} is not HOST:PORT with a port 1-65535")
    textfile = p.path(table, "textfile")
    if textfile is not None and textfile.suffix != ".prom":
        # node_exporter's textfile collector reads *.prom only.
        raise p.error("metrics.textfile", f"{textfile} must end in .prom")
    return MetricsConfig(listen, textfile)


def _host_port(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not _plain(host) or not port.isdigit():
        return None
    if not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _fleet(p: _Checker, raw: dict[str, Any]) -> FleetConfig | None:
    table = p.table(raw, "fleet", _FLEET_KEYS)
    if table is None:
        return None
    url = table.get("redis")
    if not isinstance(url, str) or not url:
        raise p.error("fleet.redis", 'missing: a URL such as "redis://127.0.0.1:6379/0"')
    if (why := _store_url_problem(url)) is not None:
        raise p.error("fleet.redis", why)
    host_id = table.get("host_id", socket.gethostname())
    if not isinstance(host_id, str) or not 0 < len(host_id) <= 64 or not _plain(host_id):
        raise p.error("fleet.host_id", "must be 1 to 64 printable ASCII characters, no spaces")
    prefix = table.get("key_prefix", "stapled:")
    if not isinstance(prefix, str) or len(prefix) > 64 or not _plain(prefix or "x"):
        raise p.error("fleet.key_prefix", "must be at most 64 printable ASCII characters")
    if "{" in prefix or "}" in prefix:
        # Braces would change which part of a key Redis Cluster hashes.
        raise p.error("fleet.key_prefix", "must not hold '{' or '}'")
    times = {
        key: p.duration(table, key, getattr(FleetConfig, key), "fleet.")
        for key in ("lease", "poll_interval", "sweep_interval", "grace", "spread", "timeout")
    }
    return FleetConfig(url, host_id, prefix, **times)


def _store_url_problem(url: str) -> str | None:
    """Why ``url`` is no Redis URL (naming it without its password), or None."""
    shown = redacted(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as e:
        return f"{shown} is not a valid URL ({e})"
    if parts.scheme not in _FLEET_SCHEMES:
        return f"{shown} is not a redis://, rediss:// or unix:// URL"
    if parts.scheme == "unix" and not parts.path:
        return f"{shown} names no socket path"
    if parts.scheme != "unix" and not parts.hostname:
        return f"{shown} names no host"
    if not _plain(url):
        return f"{shown} holds spaces, control or non-ASCII characters"
    return None


def _plain(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


def _daemon_timing(p: _Checker, raw: dict[str, Any]) -> dict[str, float]:
    timing = {
        "retry_min": p.duration(raw, "retry_min", DEFAULT_RETRY_MIN),
        "retry_max": p.duration(raw, "retry_max", DEFAULT_RETRY_MAX),
        "min_refresh_interval": p.duration(
            raw, "min_refresh_interval", DEFAULT_MIN_REFRESH_INTERVAL
        ),
        "rescan_interval": p.duration(raw, "rescan_interval", DEFAULT_RESCAN_INTERVAL),
        "debounce": p.duration(raw, "debounce", DEFAULT_DEBOUNCE),
    }
    if timing["retry_max"] < timing["retry_min"]:
        raise p.error("retry_max", "must not be less than retry_min")
    return timing


class _Checker:
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
        for unknown in sorted(set(entry) - _SOURCE_KEYS):
            known = ", ".join(sorted(_SOURCE_KEYS))
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
