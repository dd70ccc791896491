"""``stapled check``: the configuration and everything it names, read as ``run`` would,
with every problem listed at once.

Problems of the configuration (a key, a source that is not there, an output directory
that cannot be used, a command that cannot run or a configuration test that fails) make
``run`` refuse or fail to deliver: they are errors.  Problems of single certificate files
are warnings: ``run`` serves every other certificate.  Nothing is written and no
responder is asked.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config
from .config import Config
from .core.policy import State
from .errors import ConfigError, ReloadError, StoreError
from .files import store
from .passes import Stapler
from .servers import run_command

# A bound on problems listed: each one removed from the file lets the next show.
_MOST = 100
# Commands that manage services, refused to an unprivileged user.
_ROOT_ONLY = {"systemctl", "service", "apache2ctl", "apachectl"}
_INDEX = re.compile(r"^([A-Za-z_]+)(?:\[(\d+)\])?")


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    certificates: int = 0
    without_ocsp: int = 0


def check(path: Path) -> Findings:
    """Every problem of the configuration at ``path`` and of what it names."""
    found = Findings()
    cfg = _config(path, found)
    if cfg is None:
        return found
    _output(cfg, found)
    _commands(cfg, found)
    _certificates(cfg, found)
    return found


def _config(path: Path, found: Findings) -> Config | None:
    """The configuration with every bad key left out, each one's error noted."""
    try:
        raw = config.read(path)
    except ConfigError as e:
        found.errors.append(str(e))
        return None
    for _ in range(_MOST):
        try:
            cfg = config.parse(raw, path)
        except ConfigError as e:
            found.errors.append(str(e))
            if not _without(raw, e.key):
                return None
            continue
        return cfg
    return None


def _without(raw: dict[str, Any], key: str | None) -> bool:
    """Leave out the part of ``raw`` that ``key`` names; False when it cannot be."""
    match = _INDEX.match(key or "")
    if match is None or match.group(1) not in raw:
        return False
    top, index = match.group(1), match.group(2)
    value = raw[top]
    if index is not None and isinstance(value, list) and len(value) > 1:
        del value[int(index)]
    elif top in ("output_dir", "certificates"):
        return False  # required: nothing after this can be checked
    else:
        del raw[top]
    return True


def _output(cfg: Config, found: Findings) -> None:
    where = [(cfg.output_dir, "output_dir")]
    if cfg.state_dir is not None:
        where.append((cfg.state_dir, "state_dir"))
    if cfg.reload_request_file is not None:
        where.append((cfg.reload_request_file.parent, "reload_request_file"))
    for directory, key in where:
        if not directory.exists():
            parent = next((p for p in directory.parents if p.exists()), Path("/"))
            if not os.access(parent, os.W_OK | os.X_OK):
                _error(found, cfg, key, f"{directory} does not exist and cannot be created here")
            continue
        try:
            store.check_dir(directory)
        except StoreError as e:
            _error(found, cfg, key, str(e))


def _commands(cfg: Config, found: Findings) -> None:
    missing = False
    for key, argv in (
        ("reload_command", cfg.reload_command),
        ("config_test_command", cfg.config_test_command),
        ("revoked_command", cfg.revoked_command),
    ):
        if argv and shutil.which(argv[0]) is None:
            _error(found, cfg, key, f"{argv[0]} is not a program this user can run")
            missing |= key == "config_test_command"
            continue
        if (
            key == "reload_command"
            and argv
            and Path(argv[0]).name in _ROOT_ONLY
            and os.geteuid() != 0
        ):
            _error(
                found,
                cfg,
                key,
                f"{Path(argv[0]).name} reloads a service only for root, and stapled runs "
                "unprivileged: use reload_request_file with stapled-reload.path instead",
            )
    if not cfg.config_test_command or missing:
        return
    try:
        run_command(cfg.config_test_command, cfg.reload_timeout, "configuration test")
    except ReloadError as e:
        hint = ""
        if cfg.reload_request_file is not None:
            hint = (
                "; with reload_request_file, leave the test to stapled-reload.service, "
                "which runs it as root"
            )
        _error(found, cfg, "config_test_command", f"{e}{hint}")


def _certificates(cfg: Config, found: Findings) -> None:
    records, groups = Stapler(cfg).scan()
    found.certificates = len(groups) + sum(1 for r in records if r.state is not State.ERROR)
    found.without_ocsp = sum(1 for r in records if r.state is State.NO_OCSP)
    for rec in records:
        if rec.state is State.ERROR:
            found.warnings.append(f"{rec.path}: {rec.last_error}")
    if found.certificates == 0 and not found.warnings:
        found.warnings.append(f"{cfg.path}: no certificate found in any source yet")


def _error(found: Findings, cfg: Config, key: str, reason: str) -> None:
    found.errors.append(str(ConfigError(str(cfg.path), reason, key)))
