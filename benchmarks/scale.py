"""stapled at scale, side by side with a plain loop of `openssl ocsp` client calls.

Builds N certificates in certbot's lineage layout, starts local responders (a fast one
that pre-signs every response, for stapled's own cost, and the real `openssl ocsp`,
signing each answer, up to --openssl-max), and prints one table row per run: wall time,
CPU time, peak memory and the requests the responder counted.  The openssl loop runs
against the real responder; with ``--runs`` the medians follow the table.

    .venv/bin/python benchmarks/scale.py                       # N = 100, 1000, 10000
    .venv/bin/python benchmarks/scale.py --sizes 1000 --runs 3  # medians, both responders
    .venv/bin/python benchmarks/scale.py --sizes 10000 --daemon --idle 60
    .venv/bin/python benchmarks/scale.py --sizes 1000,10000 --compare HEAD~5 --daemon

``--compare REV`` also runs the same commands with the package as it was at git
revision REV (an export of it, in a temporary directory), one version after the other on
the same certificates and responder, so a change can be judged on one machine.

Nothing here is asserted: it prints figures.  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Version:
    """A copy of the package to run: its label and the directory holding ``stapled/``."""

    label: str
    src: Path

    def argv(self, *args: str) -> list[str]:
        # -S: no site processing, so the editable install's finder cannot pick the
        # working tree's package over ``src``; the dependencies come from PYTHONPATH.
        return [PYTHON, "-S", "-m", "stapled", *args]

    def compile(self) -> None:
        """Bytecode for every module, as an installed package has (pip and the Debian
        package compile it), so no run pays for compiling."""
        subprocess.run(
            [PYTHON, "-m", "compileall", "-q", str(self.src / "stapled")],
            check=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
        )

    def env(self) -> dict[str, str]:
        paths = dict.fromkeys([str(self.src), *sysconfig.get_paths().values()])
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def export(rev: str, into: Path) -> Version:
    """The package as it was at git revision ``rev``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "stapled"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    label = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Version(label, into)


# ---- certificates -------------------------------------------------------------------


@dataclass
class World:
    top: Path  # the certificates (letsencrypt/, ca.pem)
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    leaves: list[x509.Certificate]
    url: str
    scratch: Path  # configurations, logs and responders' files of this run

    @property
    def ca_pem(self) -> Path:
        return self.top / "ca.pem"


def build(top: Path, n: int, url: str) -> World:
    """N leaves sharing one key (stapled never reads keys), as certbot lays them out."""
    now = datetime.now(UTC).replace(microsecond=0)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    (top / "ca.pem").write_bytes(ca_pem)
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url)
            )
        ]
    )
    # As every public CA does: leaves name their issuer's key (RFC 5280 4.2.1.1).
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    leaves = []
    for i in range(n):
        cn = f"site{i:05d}.example"
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=90))
            .add_extension(aia, critical=False)
            .add_extension(aki, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaves.append(leaf)
        write_lineage(top / "letsencrypt", cn, leaf, ca_pem, key_pem, 1)
    return World(top, ca_cert, ca_key, leaves, url, top)


def cached(cache: Path, n: int, url: str) -> World:
    """The N certificates built once under ``cache`` and read back on later runs.

    100,000 lineages take minutes to build; the CA's key is kept beside them so the
    responders can sign for them again.
    """
    top = cache / f"n{n}"
    done = top / "complete"
    if not done.exists():
        shutil.rmtree(top, ignore_errors=True)
        top.mkdir(parents=True)
        world = build(top, n, url)
        key = world.ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (top / "ca.key").write_bytes(key)
        done.write_text(f"{n}\n")
        return world
    ca_key = serialization.load_pem_private_key((top / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    live = top / "letsencrypt" / "live"
    leaves = [
        x509.load_pem_x509_certificate((lineage / "cert.pem").read_bytes())
        for lineage in sorted(live.iterdir())
    ]
    ca_cert = x509.load_pem_x509_certificate((top / "ca.pem").read_bytes())
    return World(top, ca_cert, ca_key, leaves, url, top)


def write_lineage(
    root: Path, cn: str, leaf: x509.Certificate, ca_pem: bytes, key_pem: bytes, version: int
) -> None:
    archive, live = root / "archive" / cn, root / "live" / cn
    archive.mkdir(parents=True, exist_ok=True)
    live.mkdir(parents=True, exist_ok=True)
    cert_pem = leaf.public_bytes(serialization.Encoding.PEM)
    for kind, data in (
        ("cert", cert_pem),
        ("chain", ca_pem),
        ("fullchain", cert_pem + ca_pem),
        ("privkey", key_pem),
    ):
        (archive / f"{kind}{version}.pem").write_bytes(data)
        link = live / f"{kind}.pem"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(f"../../archive/{cn}/{kind}{version}.pem")


# ---- responders ---------------------------------------------------------------------


def signed_response(
    world: World,
    leaf: x509.Certificate,
    this_update: datetime,
    validity: timedelta = timedelta(days=4),
) -> bytes:
    """A good answer for ``leaf``, signed by the world's CA."""
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=world.ca_cert,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=this_update,
            next_update=this_update + validity,
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, world.ca_cert)
    )
    return builder.sign(world.ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class FastResponder:
    """Pre-signed responses by serial, served from memory: measures the client, not us."""

    def __init__(self) -> None:
        self.responses: dict[int, bytes] = {}
        self.requests = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: without this, Nagle and the
            # client's delayed ACK hold every response back by 40 ms.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                self._answer(base64.b64decode(unquote(self.path.rsplit("/", 1)[-1])))

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _answer(self, der: bytes) -> None:
                with outer._lock:
                    outer.requests += 1
                serial = ocsp.load_der_ocsp_request(der).serial_number
                body = outer.responses[serial]
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def sign_all(self, world: World) -> None:
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        for leaf in world.leaves:
            self.sign(world, leaf, now)

    def sign(self, world: World, leaf: x509.Certificate, this_update: datetime) -> None:
        self.responses[leaf.serial_number] = signed_response(world, leaf, this_update)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class OpenSSLResponder:
    """The real `openssl ocsp` responder over an index of every certificate."""

    def __init__(self, world: World) -> None:
        top = world.scratch / "openssl"
        top.mkdir()
        expiry = (datetime.now(UTC) + timedelta(days=90)).strftime("%y%m%d%H%M%SZ")
        lines = [
            f"V\t{expiry}\t\t{leaf.serial_number:X}\tunknown\t/CN={leaf.subject.rfc4514_string()}"
            for leaf in world.leaves
        ]
        (top / "index.txt").write_text("\n".join(lines) + "\n")
        (top / "index.txt.attr").write_text("unique_subject = no\n")
        key = world.ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (top / "ca.key").write_bytes(key)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = top / "responder.log"
        self.proc = subprocess.Popen(
            [
                "openssl",
                "ocsp",
                "-index",
                str(top / "index.txt"),
                "-CA",
                str(world.ca_pem),
                "-rsigner",
                str(world.ca_pem),
                "-rkey",
                str(top / "ca.key"),
                "-port",
                str(port),
                "-nmin",
                "1440",
                "-ignore_err",
                "-multi",
                "2",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        # "ACCEPT" once it listens (with -multi, the forked workers say nothing more).
        while not any(m in self.log.read_bytes() for m in (b"ACCEPT ", b"waiting for OCSP")):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit(f"openssl ocsp did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port}/"

    @property
    def requests(self) -> int:
        # Not counted by openssl; the table shows what the clients sent instead.
        return -1

    def stop(self) -> None:
        # With -multi, openssl makes itself a process group leader and forks its workers
        # into that group (so it must not be started in a session of its own).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(timeout=10)


# ---- measurements -------------------------------------------------------------------


@dataclass
class Row:
    tool: str
    n: int
    wall: float
    cpu: float
    peak_mib: float
    requests: int

    def line(self) -> str:
        per = self.cpu / self.n * 1000 if self.n else 0.0
        req = str(self.requests) if self.requests >= 0 else "-"
        return (
            f"| {self.tool:26} | {self.n:>6} | {self.wall:8.2f} s | {self.cpu:8.2f} s "
            f"| {per:6.2f} ms | {self.peak_mib:7.1f} MiB | {req:>8} |"
        )


HEADER = (
    "| tool                       |      N |       wall |        CPU | CPU/cert |   peak RSS "
    "| requests |\n"
    "|----------------------------|-------:|-----------:|-----------:|---------:|-----------:"
    "|---------:|"
)


def measure(argv: list[str], **kw: object) -> tuple[float, float, float, int]:
    """Wall s, CPU s (user+sys), peak RSS MiB and exit status of one command."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def stapled_config(world: World, out: Path, url: str, extra: str = "") -> Path:
    path = world.scratch / "stapled.toml"
    path.write_text(
        f'output_dir = "{out}"\n'
        f'certificates = [{{ path = "{world.top / "letsencrypt"}", ocsp_url = "{url}" }}]\n'
        f"{extra}\n"
    )
    return path


def stapled_once(
    world: World,
    out: Path,
    responder: FastResponder | OpenSSLResponder,
    label: str,
    version: Version,
    command: tuple[str, ...] = ("once", "--quiet"),
) -> Row:
    cfg = stapled_config(world, out, responder.url)
    before = responder.requests
    wall, cpu, peak, code = measure(
        version.argv(*command, "--config", str(cfg)),
        stdout=subprocess.DEVNULL,
        env=version.env(),
        cwd=version.src,  # python -m puts the working directory first on sys.path
    )
    if code != 0:
        print(f"  ({label}: exit status {code})", file=sys.stderr)
    requests = responder.requests - before if responder.requests >= 0 else -1
    return Row(label, len(world.leaves), wall, cpu, peak, requests)


def openssl_loop(world: World, out: Path, url: str) -> Row:
    """What shell-script staplers do: one `openssl ocsp` process per certificate."""
    script = out.parent / "openssl-loop.sh"
    out.mkdir(exist_ok=True)
    script.write_text(
        "#!/bin/sh\n"
        f'for live in "{world.top}"/letsencrypt/live/*/; do\n'
        '  name=$(basename "$live")\n'
        f'  openssl ocsp -no_nonce -issuer "$live/chain.pem" -cert "$live/cert.pem" '
        f'-CAfile "$live/chain.pem" -url {url} -respout "{out}/$name.der" >/dev/null 2>&1\n'
        "done\n"
    )
    wall, cpu, peak, _ = measure(["sh", str(script)])
    return Row("openssl ocsp loop", len(world.leaves), wall, cpu, peak, len(world.leaves))


def daemon_figures(
    world: World, out: Path, responder: FastResponder, idle: float, version: Version
) -> list[str]:
    """`stapled run` at this scale: ready time, memory, idle CPU, a renewal picked up."""
    cfg = stapled_config(world, out, responder.url, "debounce = 0.5\n")
    started = time.monotonic()
    log = world.scratch / "daemon.log"
    proc = subprocess.Popen(
        version.argv("run", "--config", str(cfg)),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=version.env(),
        cwd=version.src,
    )
    state = out / ".stapled" / "state.json"
    while not (state.exists() and b'"daemon"' in state.read_bytes()):
        if proc.poll() is not None:
            raise SystemExit(log.read_text()[-2000:])
        time.sleep(0.2)
    ready = time.monotonic() - started
    # Idle from the line that ends its start (the summary it logs is worked out first).
    while b"running: " not in log.read_bytes() and proc.poll() is None:
        time.sleep(0.2)
    rss = _rss(proc.pid)
    cpu0 = _cpu(proc.pid)
    time.sleep(idle)
    idle_cpu = _cpu(proc.pid) - cpu0
    # A renewal: a new certificate for the first site, as certbot writes it.
    leaf = world.leaves[0]
    cn = _common_name(leaf)
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(world.ca_cert.subject)
        .public_key(leaf.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
    )
    for extension in leaf.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    renewed = builder.sign(world.ca_key, hashes.SHA256())
    responder.sign(world, renewed, datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))
    staple = out / f"{cn}.der"
    before = staple.read_bytes()
    t0 = time.monotonic()
    write_lineage(world.top / "letsencrypt", cn, renewed, world.ca_pem.read_bytes(), b"", 2)
    while staple.read_bytes() == before and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    pickup = time.monotonic() - t0
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    n, who = len(world.leaves), f"daemon ({version.label})"
    return [
        f"{who}, N={n}: ready after {ready:.1f} s, resident memory {rss / 1024:.0f} MiB",
        f"{who}, N={n}: CPU over {idle:.0f} idle seconds: {idle_cpu * 1000:.1f} ms",
        f"{who}, N={n}: a renewed certificate stapled {pickup:.2f} s after certbot's swap",
    ]


def _common_name(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return value if isinstance(value, str) else value.decode()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu(pid: int) -> float:
    """Seconds on a CPU of the process's threads, to the nanosecond (schedstat): the
    clock ticks of /proc/PID/stat count 10 ms steps, too coarse for an idle daemon."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


# ---- main ---------------------------------------------------------------------------


Responder = FastResponder | OpenSSLResponder


def run_size(
    world: World,
    top: Path,
    responders: dict[str, Responder],
    args: argparse.Namespace,
    versions: list[Version],
) -> list[str]:
    """Print the table rows for one N; medians and the daemon's figures, as notes."""
    notes: list[str] = []
    n = len(world.leaves)
    for tag, responder in responders.items():
        walls: dict[str, list[float]] = {}
        suffix = "" if tag == "fast" else ", openssl"
        for run in range(args.runs):
            for version in versions:
                out = top / f"staples-{tag}-{version.label}-{run}"
                for kind in ("cold", "warm", "status"):
                    if kind == "status":  # what was just written, read back
                        label = f"stapled status ({version.label}{suffix})"
                        command: tuple[str, ...] = ("status",)
                    else:
                        label = f"stapled once ({kind}, {version.label}{suffix})"
                        command = ("once", "--quiet")
                    row = stapled_once(world, out, responder, label, version, command)
                    print(row.line(), flush=True)
                    walls.setdefault(f"{kind}, {version.label}", []).append(row.wall)
                    os.sync()  # each run starts with nothing of the last one's to write
            loop_here = tag == "openssl" or "openssl" not in responders
            if loop_here and n <= args.openssl_max:
                loop = openssl_loop(world, top / f"openssl-out-{tag}-{run}", responder.url)
                print(loop.line(), flush=True)
                walls.setdefault("loop", []).append(loop.wall)
        notes += _medians(n, tag, walls)
    fast = responders.get("fast")
    if args.daemon and isinstance(fast, FastResponder):
        for version in versions:
            out = top / f"staples-daemon-{version.label}"
            notes += daemon_figures(world, out, fast, args.idle, version)
            _renew_back(world, fast)
    return notes


def _medians(n: int, tag: str, walls: dict[str, list[float]]) -> list[str]:
    """The median wall time of each kind of run, and each stapled cold run's against the
    openssl loop's."""
    medians = {kind: statistics.median(times) for kind, times in walls.items()}
    notes = [
        f"N={n}, {tag} responder, median wall of {len(walls[kind])}: {kind} {median:.2f} s"
        for kind, median in medians.items()
    ]
    loop = medians.get("loop")
    for kind, median in medians.items():
        if loop is not None and kind.startswith("cold"):
            notes.append(f"N={n}, {tag} responder: {kind} {loop / median:.1f}x the openssl loop")
    return notes


def _renew_back(world: World, responder: FastResponder) -> None:
    """Put the first lineage back as it was, so the next version renews the same way."""
    leaf = world.leaves[0]
    cn = _common_name(leaf)
    write_lineage(world.top / "letsencrypt", cn, leaf, world.ca_pem.read_bytes(), b"", 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument(
        "--responder",
        choices=["fast", "openssl", "both"],
        default="both",
        help="both: the fast one at every N, the real openssl one too up to --openssl-max",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of each kind, for medians")
    parser.add_argument(
        "--openssl-max", type=int, default=1000, help="largest N for the openssl loop (slow)"
    )
    parser.add_argument("--daemon", action="store_true", help="also measure `stapled run`")
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds to measure")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to build the certificates (default: TMPDIR)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="build the certificates here once and reuse them (outputs still go to --dir)",
    )
    parser.add_argument(
        "--compare", metavar="REV", help="also run the package as it was at git revision REV"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"cores: {os.cpu_count()}, responder: {args.responder}, python: {sys.version.split()[0]}")
    print(HEADER)
    notes: list[str] = []
    # Every size's files are removed only at the end: ext4 without a journal scans past
    # recently deleted inodes to create a file, so creating thousands of files right
    # after deleting thousands costs several times more, and that is not stapled's cost.
    tops: list[Path] = []
    versions = [Version("this", ROOT)]
    try:
        if args.compare:
            tops.append(Path(tempfile.mkdtemp(prefix="stapled-bench-rev-", dir=args.dir)))
            versions.append(export(args.compare, tops[-1]))
        for version in versions:
            version.compile()
        for n in sizes:
            top = Path(tempfile.mkdtemp(prefix=f"stapled-bench-{n}-", dir=args.dir))
            tops.append(top)
            fast = FastResponder()
            responders: dict[str, Responder] = {}
            try:
                if args.cache is not None:
                    world = replace(cached(args.cache, n, fast.url), scratch=top)
                else:
                    world = build(top, n, fast.url)
                # Written back before any run: a pass's syncfs would otherwise wait for
                # the certificates just built, and charge the first version for it.
                os.sync()
                if args.responder in ("fast", "both"):
                    fast.sign_all(world)
                    responders["fast"] = fast
                wanted = args.responder == "openssl" or n <= args.openssl_max
                if args.responder in ("openssl", "both") and wanted:
                    responders["openssl"] = OpenSSLResponder(world)
                notes += run_size(world, top, responders, args, versions)
            finally:
                for responder in responders.values():
                    if responder is not fast:
                        responder.stop()
                fast.stop()
    finally:
        for top in tops:
            shutil.rmtree(top, ignore_errors=True)
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    raise SystemExit(main())
