"""The blocks of README.md and docs/ that run on this machine as written: commands and
their options, configurations through `stapled check` and a real daemon, excerpts of
server configurations that the server tests run whole.  The blocks that need a booted
systemd, the package and the unprivileged user are run in tests/service/test_docs_booted.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from stapled.cli import build_parser, main
from stapled.core import certs, ocsp, request

from ..conftest import Site, require_binary
from ..daemonproc import DaemonProcess
from ..servers import free_port
from .blocks import TOP, block, commands

STAPLED = TOP / "stapled"


def test_readme_quick_start(tmp_path: Path) -> None:
    demo, test = commands("readme-quick-start")
    done = subprocess.run(
        ["sh", "-c", demo], cwd=TOP, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "good" in done.stdout and "ssl_stapling_file" in done.stdout
    # The suite cannot run itself: CI's .ci/run ends by running this very line.
    ci = (TOP / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == f"exec {test.split('#')[0].strip()}"


def _options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(
        a
        for a in parser._actions
        if isinstance(a, type(parser._subparsers._group_actions[0]))  # type: ignore[union-attr]
    )
    found: set[str] = set()
    for action in sub.choices[command]._actions:  # type: ignore[union-attr]
        found |= set(action.option_strings)
    return found


def test_readme_commands_are_the_parser_s() -> None:
    lines = block("readme-commands").splitlines()
    named = {line.split()[1] for line in lines}
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert named == set(subcommands), "README's command list and the parser differ"
    for line in lines:
        command = line.split()[1]
        for option in re.findall(r"--[a-z-]+", line):
            assert option in _options(command), f"{command} has no {option}"


@pytest.mark.parametrize("name", ["readme-fleet", "fleet-config"])
def test_fleet_blocks_are_a_valid_configuration(
    site: Site, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site.bundle("a", site.issue("a.example"))
    site.config(block(name))
    assert main(["check", "--config", str(site.config_path)]) == 0, capsys.readouterr().err


def test_fleet_status_json_has_the_keys_the_docs_show(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = set(re.findall(r'"([a-z_]+)":', block("fleet-status-json")))
    site.bundle("www.example.com", site.issue("www.example.com"))
    closed = free_port()
    site.config(f'[fleet]\nredis = "redis://127.0.0.1:{closed}/0"\nhost_id = "web-1"\n')
    command = block("fleet-status-json").splitlines()[0].removeprefix("$ ").split()
    assert command == ["stapled", "status", "--json"]
    main([*command[1:], "--config", str(site.config_path)])
    out = json.loads(capsys.readouterr().out)
    keys = set(out) | set(out["fleet"]) | set(out["certificates"][0])
    assert shown <= keys, shown - keys
    assert out["fleet"]["host_id"] == "web-1" and out["fleet"]["connected"] is False


def test_the_module_map_names_every_module() -> None:
    text = block("design-module-map")
    words = set(re.findall(r"[a-z_0-9]+", text))
    modules = {p.stem for p in STAPLED.rglob("*.py") if p.stem not in ("__init__", "__main__")}
    missing = sorted(modules - words)
    assert not missing, f"docs/design.md's module map misses {missing}"
    for named in re.findall(r"\b([a-z_]+)\.py\b", text):
        assert list(STAPLED.rglob(f"{named}.py")), f"the module map names {named}.py, not there"


def test_the_scrape_config_is_valid_for_prometheus(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    path = tmp_path / "prometheus.yml"
    path.write_text(block("monitoring-scrape"))
    done = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_benchmark_commands_take_the_options_written() -> None:
    written = (
        "performance-commands",
        "performance-validated",
        "performance-limit",
        "performance-signatures",
        "performance-memory",
        "performance-floor",
        "performance-held",
    )
    for line in (line for name in written for line in commands(name)):
        words = shlex.split(line, comments=True)
        if words[0] == ".venv/bin/python":
            script = TOP / words[1]
            assert script.is_file(), line
            done = subprocess.run(
                [sys.executable, str(script), "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            for option in (w for w in words[2:] if w.startswith("--")):
                assert option in done.stdout, f"{script.name} has no {option}"
        else:
            assert (TOP / words[0]).is_file() and len(words) == 1, line


@pytest.mark.parametrize(
    ("name", "example"),
    [("web-apache", "apache-site.conf"), ("web-nginx-dual", "nginx-dual.conf")],
)
def test_server_excerpts_are_lines_of_the_examples_the_server_tests_run(
    name: str, example: str
) -> None:
    whole = {
        " ".join(line.split()) for line in (TOP / "examples" / example).read_text().splitlines()
    }
    for line in block(name).splitlines():
        line = " ".join(line.split())
        if line and line != "...":
            assert line in whole, f"{name}: {line!r} is not in examples/{example}"


@pytest.mark.parametrize(
    ("readme", "web"),
    [("readme-nginx-site", "web-nginx-site"), ("readme-nginx-config", "web-nginx-config")],
)
def test_web_servers_repeats_readme_s_nginx_recipe(readme: str, web: str) -> None:
    """README's recipe runs whole in the booted package test; this one says the same."""

    def lines(name: str) -> list[str]:
        return [
            line for line in block(name).splitlines() if line.strip() and not line.startswith("#")
        ]

    assert lines(web) == lines(readme)


def test_the_responder_block_answers_on_its_address(
    site: Site, daemon: Callable[..., DaemonProcess]
) -> None:
    leaf = site.issue("r.example")
    site.bundle("r.example", leaf)
    site.config(block("web-responder"))
    daemon()
    chain = certs.build_chain([leaf.cert, site.ca.cert], "r.example")
    listen = re.search(r'listen = "([^"]+)"', block("web-responder"))
    assert listen is not None
    reply = requests.post(
        f"http://{listen.group(1)}/",
        data=request.build_request(chain),
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10,
    )
    assert reply.status_code == 200
    assert ocsp.validate(reply.content, chain, datetime.now(UTC)).cert_status.name == "GOOD"


def test_the_example_configuration_lists_every_key() -> None:
    """tests/test_config.py checks that it parses."""
    from stapled import config
    from stapled.config import tables
    from stapled.config.source import SOURCE_KEYS

    path = TOP / "examples" / "stapled.toml"
    text = path.read_text()
    keys = set(config._TOP_KEYS) | SOURCE_KEYS
    for group in (
        "_HAPROXY_KEYS",
        "_RESPONDER_KEYS",
        "_FLEET_KEYS",
        "_PROBE_KEYS",
        "_METRICS_KEYS",
    ):
        keys |= getattr(tables, group)
    tables_named = set(re.findall(r"^\[+(\w+)\]+", text, re.M))
    missing = sorted(
        k for k in keys - tables_named if not re.search(rf"(^|[\s{{,#]){k}\s*=", text, re.M)
    )
    assert not missing, f"examples/stapled.toml does not list {missing}"
