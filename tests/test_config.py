"""Bad configuration: one sentence naming the file and the key, exit 78, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from stapled import config
from stapled.cli import main
from stapled.errors import EX_CONFIG, ConfigError


@pytest.fixture
def certs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "certs"
    d.mkdir()
    return d


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stapled.toml"
    path.write_text(text)
    return path


BAD = {
    "unknown-key": ('output_dir = "out"\ncertificates = ["certs"]\nrefresh = 0.5\n', "refresh"),
    "missing-output": ('certificates = ["certs"]\n', "output_dir"),
    "missing-certificates": ('output_dir = "out"\n', "certificates"),
    "empty-certificates": ('output_dir = "out"\ncertificates = []\n', "certificates"),
    "certificates-not-list": ('output_dir = "out"\ncertificates = "certs"\n', "certificates"),
    "source-missing": ('output_dir = "out"\ncertificates = ["nope"]\n', "certificates[0].path"),
    "glob-dir-missing": (
        'output_dir = "out"\ncertificates = ["nope/*.pem"]\n',
        "certificates[0].path",
    ),
    "refresh-at-1": (
        'output_dir = "out"\ncertificates = ["certs"]\nrefresh_at = 1\n',
        "refresh_at",
    ),
    "refresh-at-0": (
        'output_dir = "out"\ncertificates = ["certs"]\nrefresh_at = 0\n',
        "refresh_at",
    ),
    "refresh-at-string": (
        'output_dir = "out"\ncertificates = ["certs"]\nrefresh_at = "half"\n',
        "refresh_at",
    ),
    "timeout-zero": ('output_dir = "out"\ncertificates = ["certs"]\ntimeout = 0\n', "timeout"),
    "timeout-negative": ('output_dir = "out"\ncertificates = ["certs"]\ntimeout = -3\n', "timeout"),
    "concurrency-bool": (
        'output_dir = "out"\ncertificates = ["certs"]\nconcurrency = true\n',
        "concurrency",
    ),
    "per-host-zero": ('output_dir = "out"\ncertificates = ["certs"]\nper_host = 0\n', "per_host"),
    "crl-unknown": ('output_dir = "out"\ncertificates = ["certs"]\ncrl = "yes"\n', "crl"),
    "crl-bool": ('output_dir = "out"\ncertificates = ["certs"]\ncrl = true\n', "crl"),
    "revoked-command-number": (
        'output_dir = "out"\ncertificates = ["certs"]\nrevoked_command = 3\n',
        "revoked_command",
    ),
    "revoked-command-empty": (
        'output_dir = "out"\ncertificates = ["certs"]\nrevoked_command = []\n',
        "revoked_command",
    ),
    "reload-empty": (
        'output_dir = "out"\ncertificates = ["certs"]\nreload_command = ""\n',
        "reload_command",
    ),
    "reload-unbalanced": (
        'output_dir = "out"\ncertificates = ["certs"]\nreload_command = "a \\"b"\n',
        "reload_command",
    ),
    "hash": (
        'output_dir = "out"\ncertificates = ["certs"]\ncert_id_hash = "md5"\n',
        "cert_id_hash",
    ),
    "source-unknown-key": (
        'output_dir = "out"\ncertificates = [{ path = "certs", url = "x" }]\n',
        "certificates[0].url",
    ),
    "source-bad-url": (
        'output_dir = "out"\ncertificates = [{ path = "certs", ocsp_url = "ldap://x" }]\n',
        "certificates[0].ocsp_url",
    ),
    "source-malformed-url": (
        'output_dir = "out"\ncertificates = [{ path = "certs", ocsp_url = "http://[::1/" }]\n',
        "certificates[0].ocsp_url",
    ),
    "source-url-bad-port": (
        'output_dir = "out"\ncertificates = [{ path = "certs", ocsp_url = ["http://a/", "http://a:0x/"] }]\n',
        "certificates[0].ocsp_url",
    ),
    "source-missing-issuer": (
        'output_dir = "out"\ncertificates = [{ path = "certs", issuer = "ca.pem" }]\n',
        "certificates[0].issuer",
    ),
    "source-bad-name": (
        'output_dir = "out"\ncertificates = [{ path = "certs", name = "../x" }]\n',
        "certificates[0].name",
    ),
    "source-haproxy-string": (
        'output_dir = "out"\ncertificates = [{ path = "certs", haproxy = "yes" }]\n',
        "certificates[0].haproxy",
    ),
    "snippets-not-bool": (
        'output_dir = "out"\ncertificates = ["certs"]\nnginx_snippets = 1\n',
        "nginx_snippets",
    ),
    "config-test-empty": (
        'output_dir = "out"\ncertificates = ["certs"]\nconfig_test_command = []\n',
        "config_test_command",
    ),
    "haproxy-not-table": (
        'output_dir = "out"\ncertificates = ["certs"]\nhaproxy = "/run/h.sock"\n',
        "haproxy",
    ),
    "haproxy-unknown-key": (
        'output_dir = "out"\ncertificates = ["certs"]\n[haproxy]\nsocket = "/run/h.sock"\n',
        "haproxy.socket",
    ),
    "haproxy-socket-empty": (
        'output_dir = "out"\ncertificates = ["certs"]\n[haproxy]\nadmin_socket = ""\n',
        "haproxy.admin_socket",
    ),
    "responder-no-listen": (
        'output_dir = "out"\ncertificates = ["certs"]\n[responder]\nmax_clients = 4\n',
        "responder.listen",
    ),
    "responder-public": (
        'output_dir = "out"\ncertificates = ["certs"]\n[responder]\nlisten = "0.0.0.0:8053"\n',
        "responder.listen",
    ),
    "responder-hostname": (
        'output_dir = "out"\ncertificates = ["certs"]\n[responder]\nlisten = "ocsp.example:80"\n',
        "responder.listen",
    ),
    "responder-no-port": (
        'output_dir = "out"\ncertificates = ["certs"]\n[responder]\nlisten = "127.0.0.1"\n',
        "responder.listen",
    ),
    "responder-port-range": (
        'output_dir = "out"\ncertificates = ["certs"]\n[responder]\nlisten = "127.0.0.1:70000"\n',
        "responder.listen",
    ),
    "responder-max-clients": (
        'output_dir = "out"\ncertificates = ["certs"]\n'
        '[responder]\nlisten = "127.0.0.1:8053"\nmax_clients = 0\n',
        "responder.max_clients",
    ),
}


@pytest.mark.hostile
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_key_and_file(
    tmp_path: Path, certs_dir: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text, key = BAD[case]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)
    assert main(["once", "--config", str(path)]) == EX_CONFIG
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and key in message  # one line, naming the key
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"output_dir = [", "not valid TOML"), (b"\xff\xfe", "not UTF-8")],
    ids=["toml", "encoding"],
)
def test_unreadable_config(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason):
        config.load(path)


def test_missing_config_file(tmp_path: Path) -> None:
    assert main(["once", "--config", str(tmp_path / "absent.toml")]) == EX_CONFIG


def test_defaults_and_relative_paths(tmp_path: Path, certs_dir: Path) -> None:
    cfg = config.load(_write(tmp_path, 'output_dir = "out"\ncertificates = ["certs"]\n'))
    assert cfg.output_dir == tmp_path.resolve() / "out"
    assert cfg.certificates[0].path == str(tmp_path.resolve() / "certs")
    assert cfg.refresh_at == 0.5
    assert cfg.cert_id_hash == "sha1"
    assert cfg.reload_command == ()
    assert cfg.state_path == cfg.output_dir / ".stapled"


def test_reload_command_is_split_like_a_shell(tmp_path: Path, certs_dir: Path) -> None:
    cfg = config.load(
        _write(
            tmp_path,
            'output_dir = "out"\ncertificates = ["certs"]\n'
            "reload_command = \"systemctl reload 'nginx server'\"\n",
        )
    )
    assert cfg.reload_command == ("systemctl", "reload", "nginx server")


@pytest.mark.parametrize(
    ("listen", "host", "url"),
    [
        ("127.0.0.1:8053", "127.0.0.1", "http://127.0.0.1:8053/"),
        ("localhost:8053", "127.0.0.1", "http://127.0.0.1:8053/"),
        ("[::1]:8053", "::1", "http://[::1]:8053/"),
        ("127.0.0.2:8053", "127.0.0.2", "http://127.0.0.2:8053/"),
    ],
)
def test_responder_listens_on_loopback(
    tmp_path: Path, certs_dir: Path, listen: str, host: str, url: str
) -> None:
    text = f'output_dir = "out"\ncertificates = ["certs"]\n[responder]\nlisten = "{listen}"\n'
    cfg = config.load(_write(tmp_path, text))
    assert cfg.responder is not None
    assert (cfg.responder.host, cfg.responder.port, cfg.responder.url) == (host, 8053, url)


def test_server_outputs_are_off_unless_asked(tmp_path: Path, certs_dir: Path) -> None:
    cfg = config.load(_write(tmp_path, 'output_dir = "out"\ncertificates = ["certs"]\n'))
    assert not cfg.nginx_snippets and cfg.config_test_command == ()
    assert cfg.haproxy_socket is None and cfg.responder is None
    assert not cfg.certificates[0].haproxy


def test_example_config_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "stapled.toml"
    raw = config.tomllib.loads(example.read_text())
    # Point the example's sources at directories that exist here; every key stays checked.
    (tmp_path / "ca.pem").write_text("x")
    for i, source in enumerate(raw["certificates"]):
        d = tmp_path / f"src{i}"
        d.mkdir()
        if isinstance(source, dict):
            source["path"] = str(d)
            if "issuer" in source:
                source["issuer"] = str(tmp_path / "ca.pem")
        else:
            raw["certificates"][i] = str(d)
    cfg = config.parse(raw, example)
    # The shipped units run stapled unprivileged: the example reloads through the path unit.
    assert cfg.reload_request_file and cfg.nginx_snippets and not cfg.reload_command
    assert cfg.fleet is not None and cfg.metrics is not None and cfg.probes
    assert cfg.haproxy_socket == "/run/haproxy/admin.sock"
    assert cfg.responder is not None and cfg.responder.url == "http://127.0.0.1:8053/"
    assert any(s.haproxy for s in cfg.certificates)
