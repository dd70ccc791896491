"""The command line.  ``main(argv) -> exit status``; logging is configured here only."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, NoReturn

from . import __version__, config, overview, report
from .core import certs, ocsp, verdicts
from .errors import (
    EX_CONFIG,
    CertificateError,
    ConfigError,
    InvalidResponseError,
    MissingInputError,
    OCSPStatusError,
    StapledError,
    StoreError,
    UsageError,
)
from .net.client import Transport
from .passes import Stapler

log = logging.getLogger("stapled")

DEFAULT_CONFIG = "/etc/stapled/stapled.toml"
CONFIG_VARIABLE = "STAPLED_CONFIG"

EXIT_HELP = """\
exit status:
  0   all good
  1   some refresh (or the reload) failed, but every staple on disk is still valid
  2   some certificate has no valid staple, or is revoked
  64  usage error   65 bad input file   66 missing input   73 cannot write   78 bad config
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # main() puts "stapled: " before every message: name only the subcommand here.
        command = self.prog.removeprefix("stapled").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stapled",
        description="Keeps OCSP staples fresh and fully validated for TLS servers.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stapled {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    once = sub.add_parser(
        "once",
        help="refresh every staple that is due, once (for cron or by hand)",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arg(once)
    once.add_argument("--force", action="store_true", help="refresh every staple, due or not")
    once.add_argument(
        "--only",
        type=Path,
        metavar="PATH",
        help="only certificates at or below PATH (for a certbot deploy hook: $RENEWED_LINEAGE)",
    )
    noise = once.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    noise.add_argument("-v", "--verbose", action="store_true", help="print details")

    status = sub.add_parser(
        "status",
        help="show every certificate and its staple (no request to any responder)",
        description="Exit status like a monitoring check: 0 ok, 1 warning, 2 critical.",
    )
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--wide", action="store_true", help="every column: files, serials, URLs, whole errors"
    )

    check = sub.add_parser(
        "check",
        help="check the configuration and everything it names, listing every problem",
        description="Reads the configuration and every certificate source as `run` would, "
        "writes nothing and asks no responder.  Exit 0 when `run` can use it (problems of "
        "single certificate files are warnings), 78 otherwise.",
    )
    _config_arg(check)
    check.add_argument("-q", "--quiet", action="store_true", help="print only problems")

    verify = sub.add_parser(
        "verify",
        help="check a DER staple against its certificate",
        description="Exit 0 only for a valid staple saying 'good'.",
    )
    verify.add_argument("staple", type=Path, metavar="STAPLE", help="DER OCSP response file")
    verify.add_argument("--cert", type=Path, required=True, help="certificate (PEM or DER)")
    verify.add_argument(
        "--issuer", type=Path, help="issuer certificate, when --cert does not include it"
    )

    run = sub.add_parser(
        "run",
        help="run as a service: watch certificates and refresh every staple on time",
        description="Runs until SIGTERM or SIGINT; SIGHUP re-reads the configuration.",
    )
    _config_arg(run)
    run.add_argument("-v", "--verbose", action="store_true", help="log details")

    probe = sub.add_parser(
        "probe",
        help="check what live TLS servers staple, against what stapled wrote",
        description="Nagios exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.  Without "
        "TARGET, every [[probe]] of the configuration.",
    )
    probe.add_argument("target", nargs="?", metavar="HOST:PORT", help="one endpoint to probe")
    probe.add_argument("--servername", metavar="NAME", help="the SNI name to ask TARGET for")
    probe.add_argument(
        "-c", "--config", type=Path, metavar="FILE", help="configuration file (TOML)"
    )
    probe.add_argument("--json", action="store_true", help="machine-readable output")
    probe.add_argument(
        "--connections",
        type=int,
        default=verdicts.CONNECTIONS,
        metavar="N",
        help=f"handshakes per target, 1 to {verdicts.MAX_CONNECTIONS}; the worst counts "
        f"(default {verdicts.CONNECTIONS})",
    )

    demo = sub.add_parser("demo", help="run the whole pipeline against a throwaway CA on 127.0.0.1")
    demo.add_argument(
        "--keep", action="store_true", help="keep the demo directory and print its path"
    )
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help=f"configuration file (TOML); default ${CONFIG_VARIABLE} or {DEFAULT_CONFIG}",
    )


def config_path(given: Path | None) -> Path:
    """--config, else $STAPLED_CONFIG, else the path the units and README use."""
    return given or Path(os.environ.get(CONFIG_VARIABLE) or DEFAULT_CONFIG)


def load_config(given: Path | None) -> config.Config:
    """Raises ConfigError, in one line that says where the path came from when the
    file is missing."""
    path = config_path(given)
    if given is None and not path.exists():
        if os.environ.get(CONFIG_VARIABLE):
            hint = f"${CONFIG_VARIABLE} names it; correct it or give --config FILE"
        else:
            hint = f"give --config FILE or set ${CONFIG_VARIABLE}"
        raise ConfigError(str(path), f"no configuration file here; {hint}")
    return config.load(path)


def setup_logging(level: int, *, service: bool = False) -> None:
    """Plain lines on stderr; under systemd, the journal with priorities and no timestamps.

    The journal stamps each line itself.  systemd-python's JournalHandler is used when the
    extra is installed; otherwise each line starts with a syslog priority prefix "<N>",
    which systemd reads from a service's stderr.
    """
    handler: logging.Handler
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    if service and under_journal and (journal := _journal_handler()) is not None:
        handler = journal
    else:
        handler = logging.StreamHandler(sys.stderr)
        if service and under_journal:
            handler.setFormatter(_PriorityFormatter("%(message)s"))
        elif service:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        else:
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger("stapled")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Libraries' warnings (cryptography's about odd fields of outside certificates) are
    # details: shown with --verbose, never as bare lines on stderr.
    logging.captureWarnings(True)
    warned = logging.getLogger("py.warnings")
    warned.handlers[:] = [handler]
    warned.setLevel(logging.DEBUG if level <= logging.DEBUG else logging.ERROR)
    warned.propagate = False
    # The scheduler's own complaints (a job skipped or failing) in the same form.
    scheduler = logging.getLogger("apscheduler")
    scheduler.handlers[:] = [handler]
    scheduler.setLevel(max(level, logging.WARNING))
    scheduler.propagate = False


class _PriorityFormatter(logging.Formatter):
    _PRIORITY: ClassVar[dict[str, int]] = {
        "CRITICAL": 2,
        "ERROR": 3,
        "WARNING": 4,
        "INFO": 6,
        "DEBUG": 7,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelname, 6)}>{super().format(record)}"


def _journal_handler() -> logging.Handler | None:
    try:
        journal = importlib.import_module("systemd.journal")  # the stapled[systemd] extra
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER="stapled")
    return handler


# A pass builds a few dozen long-lived objects per certificate and little garbage in
# cycles; with Python's default thresholds the collector walked all of them a dozen
# times, a quarter of a warm pass at 100,000 certificates (docs/performance.md).
GC_THRESHOLDS = (50_000, 20, 100)


def main(argv: Sequence[str] | None = None) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        args = build_parser().parse_args(argv)
        quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
        level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
        setup_logging(level, service=args.command == "run")
        command = {
            "once": _once,
            "run": _run,
            "status": _status,
            "check": _check,
            "verify": _verify,
            "probe": _probe,
            "demo": _demo,
        }
        return command[args.command](args)
    except StapledError as e:
        print(f"stapled: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def _once(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    transport = Transport(timeout=cfg.timeout, pool_size=cfg.concurrency)
    result = Stapler(cfg, transport=transport).once(force=args.force, only=args.only)
    return result.exit_code()


def _run(args: argparse.Namespace) -> int:
    from .service.daemon import Daemon  # the scheduler and the watcher are only needed here

    load_config(args.config)  # a missing default file is reported as such
    return Daemon(config_path(args.config)).run()


# Nagios's code for a check that could not look: status cannot vouch for what it did not see.
STATUS_UNKNOWN = 3


def _status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    try:
        result = overview.status(Stapler(cfg))
    except StoreError as e:
        print(f"stapled: {e}; run status as the user stapled runs as, or root", file=sys.stderr)
        return STATUS_UNKNOWN
    if args.json:
        print(json.dumps(report.as_json(result), indent=2))
    else:
        print(report.table(result, wide=args.wide))
    if not result.records:
        print(f"stapled: {cfg.path}: no certificate found in any source", file=sys.stderr)
        return STATUS_UNKNOWN
    return int(result.severity())


def _check(args: argparse.Namespace) -> int:
    from .preflight import check

    path = config_path(args.config)
    if args.config is None and not path.exists():
        load_config(None)  # the one line saying where the default comes from
    found = check(path)
    for error in found.errors:
        print(f"stapled: {error}", file=sys.stderr)
    for warning in found.warnings:
        print(f"stapled: warning: {warning}", file=sys.stderr)
    if found.errors:
        print(f"{path}: {len(found.errors)} problem(s); `run` would not use it as it is")
        return EX_CONFIG
    if not args.quiet:
        print(
            f"{path}: ok, {found.certificates} certificate(s), "
            f"{found.without_ocsp} without an OCSP URL, {len(found.warnings)} warning(s)"
        )
    return 0


def _probe(args: argparse.Namespace) -> int:
    # pyOpenSSL is slow to import: only the probe pays for it.
    from .observe.handshake import ProbeError, split_target
    from .probes import Target, exit_code, probe_target

    if not 1 <= args.connections <= verdicts.MAX_CONNECTIONS:
        raise UsageError(f"probe: --connections takes 1 to {verdicts.MAX_CONNECTIONS}")
    if args.target is not None:
        if not args.servername:
            raise UsageError("probe: HOST:PORT needs --servername NAME")
        try:
            split_target(args.target)
        except ProbeError as e:
            raise UsageError(f"probe: {e}") from e
        # Compared with what stapled holds wherever a configuration is found, like every
        # other command; judged on its own only where there is none.
        named = args.config or os.environ.get(CONFIG_VARIABLE)
        cfg = load_config(args.config) if named or config_path(None).exists() else None
        targets = [Target(args.target, args.servername)]
    else:
        cfg = load_config(args.config)
        targets = [Target(p.target, p.servername) for p in cfg.probes]
        if not targets:
            raise ConfigError(str(cfg.path), "nothing to probe: add a [[probe]]", "probe")
    held = overview.held(Stapler(cfg)) if cfg is not None else None
    timeout = cfg.timeout if cfg is not None else config.DEFAULT_TIMEOUT
    now = datetime.now(UTC)
    results = [
        probe_target(t, held, now, timeout=timeout, connections=args.connections) for t in targets
    ]
    if args.json:
        print(json.dumps({"probes": [p.as_json() for p in results]}, indent=2))
    else:
        for p in results:
            print(p.line)
    return exit_code(results)


def _verify(args: argparse.Namespace) -> int:
    leaf_certs = certs.parse_certificates(_read(args.cert), str(args.cert))
    issuer_path = args.issuer
    # certbot's cert.pem holds the leaf alone; its issuer is chain.pem beside it.
    beside = args.cert.parent / "chain.pem"
    if issuer_path is None and len(leaf_certs) == 1 and beside.is_file():
        issuer_path = beside
    issuer = certs.parse_issuer_bytes(_read(issuer_path), str(issuer_path)) if issuer_path else None
    chain = certs.build_chain(leaf_certs, str(args.cert), issuer)
    if chain.issuer is None:
        raise CertificateError(
            str(args.cert), "the file does not include its issuer; name it with --issuer"
        )
    try:
        # No margin: the question is whether it is valid now, not whether it is worth serving.
        staple = ocsp.validate(_read(args.staple), chain, datetime.now(UTC), margin=timedelta(0))
    except (InvalidResponseError, OCSPStatusError) as e:
        print(f"stapled: {args.staple}: {e}", file=sys.stderr)
        return 2
    print(f"staple:       {args.staple}")
    print(f"certificate:  serial {chain.serial_hex}, {leaf_certs[0].subject.rfc4514_string()}")
    print(f"status:       {staple.cert_status}")
    if staple.revocation_time:
        when = report.rfc3339(staple.revocation_time)
        print(f"revoked at:   {when} ({staple.revocation_reason or 'no reason given'})")
    print(f"signed by:    {staple.signer}")
    print(f"produced at:  {report.rfc3339(staple.produced_at)}")
    print(f"this update:  {report.rfc3339(staple.this_update)}")
    print(f"next update:  {report.rfc3339(staple.next_update)}")
    return 0 if staple.cert_status is ocsp.CertStatus.GOOD else 2


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise MissingInputError(str(path), "no such file") from e
    except OSError as e:
        raise MissingInputError(str(path), f"cannot read ({e.strerror})") from e


def _demo(args: argparse.Namespace) -> int:
    from .demo import tour  # the throwaway CA is only needed here

    return tour.run(keep=args.keep)
