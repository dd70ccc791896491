"""The optional tables of the configuration: [haproxy], [responder], [fleet],
[[probe]] and [metrics], each a frozen value checked before anything is written."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.urls import redacted
from .checks import Checker

# The local responder: connections served at once; more wait in the listen backlog.
DEFAULT_MAX_CLIENTS = 256


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


def haproxy_socket(p: Checker, raw: dict[str, Any]) -> str | None:
    table = p.table(raw, "haproxy", _HAPROXY_KEYS)
    if table is None or "admin_socket" not in table:
        return None
    value = table["admin_socket"]
    if not isinstance(value, str) or not value:
        raise p.error("haproxy.admin_socket", "must be a socket path or host:port")
    if value.startswith("/") or ":" not in value:
        return str(p.base / Path(value).expanduser())
    return value


def responder(p: Checker, raw: dict[str, Any]) -> ResponderConfig | None:
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


def probes(p: Checker, raw: dict[str, Any]) -> tuple[ProbeConfig, ...]:
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


def metrics(p: Checker, raw: dict[str, Any]) -> MetricsConfig | None:
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


def fleet(p: Checker, raw: dict[str, Any]) -> FleetConfig | None:
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
    if parts.port == 0:
        return f"{shown} names port 0"
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        return f"{shown}: the path must be a database number such as /0"
    if not _plain(url):
        return f"{shown} holds spaces, control or non-ASCII characters"
    return None


def _plain(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text
