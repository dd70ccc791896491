"""TOML configuration -> a frozen :class:`Config`.

Every problem is a ConfigError naming the file and the key, raised before anything is
written.  Relative paths are taken relative to the configuration file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.policy import Timing
from ..errors import ConfigError
from .checks import Checker
from .source import Source
from .tables import (
    DEFAULT_MAX_CLIENTS,
    FleetConfig,
    MetricsConfig,
    ProbeConfig,
    ResponderConfig,
    fleet,
    haproxy_socket,
    metrics,
    probes,
    responder,
)

__all__ = [
    "DEFAULT_MAX_CLIENTS",
    "Config",
    "ConfigError",
    "FleetConfig",
    "MetricsConfig",
    "ProbeConfig",
    "ResponderConfig",
    "Source",
    "load",
    "parse",
]

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
# ``crl``: which certificates are checked against their CRL.
CRL_MODES = ("no-ocsp", "all", "off")
# A revoked_command may renew a certificate: give it as long as a reload.
REVOKED_COMMAND_TIMEOUT = 60.0


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
    crl: str = "no-ocsp"
    revoked_command: tuple[str, ...] = ()

    @property
    def timing(self) -> Timing:
        """When staples and CRLs are asked for again."""
        return Timing(self.refresh_at, self.retry_min, self.retry_max, self.min_refresh_interval)

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
    "crl",
    "revoked_command",
}


def load(path: str | Path) -> Config:
    """Read and check the configuration file at ``path``.

    Raises ConfigError (exit 78) for an unreadable file, bad TOML, unknown keys,
    wrong types, values out of range and sources that do not exist.
    """
    path = Path(path)
    return parse(read(path), path)


def read(path: Path) -> dict[str, Any]:
    """The TOML table of the file at ``path``, unchecked; ConfigError if it is none."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(str(path), f"cannot read the configuration file ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), "the configuration file is not UTF-8 text") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML ({e})") from e


def parse(raw: dict[str, Any], path: Path) -> Config:
    """Check an already decoded TOML table; ``path`` names the file in errors."""
    p = Checker(path)
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
    crl = raw.get("crl", "no-ocsp")
    if crl not in CRL_MODES:
        raise p.error("crl", f"must be 'no-ocsp', 'all' or 'off', not {crl!r}")
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
        haproxy_socket=haproxy_socket(p, raw),
        responder=responder(p, raw),
        fleet=fleet(p, raw),
        probes=probes(p, raw),
        probe_interval=p.duration(raw, "probe_interval", DEFAULT_PROBE_INTERVAL),
        metrics=metrics(p, raw),
        crl=crl,
        revoked_command=p.command(raw, "revoked_command"),
        **_daemon_timing(p, raw),
    )


def _daemon_timing(p: Checker, raw: dict[str, Any]) -> dict[str, float]:
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
