"""Fleet decisions as values: when a cut-off host asks the CA alone, how a store URL is
shown, and what a bad ``[fleet]`` table says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stapled import config
from stapled.core import certs, ocsp
from stapled.core.fleet import alone_at, host_share
from stapled.core.policy import refresh_time
from stapled.core.urls import redacted
from stapled.demo import ca as testca
from stapled.errors import ConfigError

_CA = testca.CA()
_LEAF = _CA.issue("rules.example", ocsp_urls=["http://127.0.0.1:9/"])
_CHAIN = certs.build_chain([_LEAF.cert, _CA.cert], "rules.example")
_NOW = datetime.now(UTC)


def _staple(lifetime: timedelta) -> ocsp.Staple:
    der = _CA.sign_response(_LEAF.cert, this_update=_NOW - timedelta(seconds=1), validity=lifetime)
    return ocsp.validate(der, _CHAIN, _NOW)


_STAPLES = {s: _staple(timedelta(seconds=s)) for s in (60, 300, 3600, 86400, 7 * 86400)}


@given(
    lifetime=st.sampled_from(sorted(_STAPLES)),
    refresh_at=st.floats(0.05, 0.95),
    grace=st.floats(0, 10**6),
    spread=st.floats(0, 10**6),
    host=st.text(min_size=1, max_size=64),
)
def test_a_cut_off_host_asks_after_the_refresh_point_and_before_the_end(
    lifetime: int, refresh_at: float, grace: float, spread: float, host: str
) -> None:
    staple = _STAPLES[lifetime]
    when = alone_at(
        staple,
        refresh_at=refresh_at,
        grace=timedelta(seconds=grace),
        spread=timedelta(seconds=spread),
        host_id=host,
    )
    assert when is not None
    due = refresh_time(staple, refresh_at)
    assert when >= due
    if staple.usable_until > due:
        # Always in the first half of what is left: room for retries before the end.
        assert when <= due + (staple.usable_until - due) / 2


def test_without_a_staple_a_cut_off_host_asks_at_once() -> None:
    kw: dict[str, Any] = {"grace": timedelta(hours=1), "spread": timedelta(hours=1)}
    assert alone_at(None, refresh_at=0.5, host_id="web-1", **kw) is None


@given(st.text(min_size=1, max_size=64))
def test_a_host_share_is_in_the_unit_interval_and_fixed(host: str) -> None:
    assert 0 <= host_share(host) < 1
    assert host_share(host) == host_share(host)


def test_host_shares_spread_out() -> None:
    shares = sorted(host_share(f"web-{i}") for i in range(500))
    # 500 hosts fill the interval: no tenth of it is empty.
    assert {int(s * 10) for s in shares} == set(range(10))


_SECRET = st.text(
    alphabet=st.characters(
        min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="@/:?#[]%&=+"
    ),
    min_size=4,
    max_size=30,
)


@given(
    secret=_SECRET,
    user=st.sampled_from(["", "stapled"]),
    scheme=st.sampled_from(["redis", "rediss"]),
)
def test_a_password_is_never_shown(secret: str, user: str, scheme: str) -> None:
    assume(secret not in ("127.0.0.1", "6379", "redis", "rediss", "stapled", "***"))
    # A secret that is part of what is shown anyway ("pass" in "password=***") proves nothing.
    assume(not any(secret in s for s in ("redis://", "rediss://", "127.0.0.1:6379/0?password=***")))
    for url in (
        f"{scheme}://{user}:{secret}@127.0.0.1:6379/0",
        f"{scheme}://{secret}@127.0.0.1:6379/0",
        f"{scheme}://127.0.0.1:6379/0?password={secret}",
    ):
        assert secret not in redacted(url), url


def test_urls_without_a_password_are_shown_as_they_are() -> None:
    for url in ("redis://127.0.0.1:6379/0", "unix:///run/redis/redis.sock?db=1"):
        assert redacted(url) == url
    assert redacted("redis://u:p@[::1]:6380/2") == "redis://***@[::1]:6380/2"
    assert redacted("redis://:p#?@x@h/0?password=q&db=1") == "redis://***@h/0?password=***&db=1"


def _load(tmp_path: Path, fleet: str) -> config.Config:
    path = tmp_path / "stapled.toml"
    path.write_text(f'output_dir = "{tmp_path}"\ncertificates = ["{tmp_path}"]\n[fleet]\n{fleet}\n')
    return config.load(path)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("host_id = 'web-1'", "fleet.redis"),
        ("redis = 5", "fleet.redis"),
        ("redis = 'http://127.0.0.1/'", "fleet.redis"),
        ("redis = 'redis://:hunter22@[::1/'", "fleet.redis"),
        ("redis = 'redis://:hunter22@127.0.0.1:99999/'", "fleet.redis"),
        ("redis = 'redis:///0'", "fleet.redis"),
        ("redis = 'unix://'", "fleet.redis"),
        ("redis = 'redis://:hunter22@host name/'", "fleet.redis"),
        ("redis = 'redis://h/'\nhost_id = ''", "fleet.host_id"),
        ("redis = 'redis://h/'\nhost_id = 'web 1'", "fleet.host_id"),
        ("redis = 'redis://h/'\nhost_id = 3", "fleet.host_id"),
        ("redis = 'redis://h/'\nkey_prefix = 'a{b}'", "fleet.key_prefix"),
        ("redis = 'redis://h/'\nlease = 0", "fleet.lease"),
        ("redis = 'redis://h/'\npoll_interval = -1", "fleet.poll_interval"),
        ("redis = 'redis://h/'\ntimeout = 'soon'", "fleet.timeout"),
        ("redis = 'redis://h/'\nleases = 3", "fleet.leases"),
    ],
)
def test_a_bad_fleet_table_names_its_key(tmp_path: Path, table: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, table)
    assert e.value.key == key and e.value.exit_code == 78
    assert "hunter22" not in str(e.value)


def test_fleet_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "redis = 'redis://:pw@127.0.0.1:6379/0'\nhost_id = 'web-7'")
    assert cfg.fleet is not None
    assert cfg.fleet.url == "redis://***@127.0.0.1:6379/0"
    assert "pw" not in repr(cfg.fleet)
    assert (cfg.fleet.host_id, cfg.fleet.key_prefix, cfg.fleet.lease) == ("web-7", "stapled:", 30)


_URLISH = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda scheme, rest: f"{scheme}://{rest}",
        st.sampled_from(["redis", "rediss", "unix", "http", "REDIS"]),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    ),
)


@given(url=_URLISH)
def test_any_fleet_url_is_refused_by_name_or_gives_a_usable_store(url: str) -> None:
    """Outside input never becomes an internal error: a ConfigError naming the key, or a
    store object (reaching it is another matter, reported as the store's failure)."""
    import tempfile

    from stapled.fleet.share import Fleet

    # A password, where the URL has one, made unmistakable: a drawn one may be text that
    # the message holds anyway ("redis", or "//**" within the mask "://***@").
    head, at, tail = url.partition("@")
    secret = "Pw7-q2Zx" if at and ":" in head else None
    if secret is not None:
        url = f"{head.rsplit(':', 1)[0]}:{secret}@{tail}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stapled.toml"
        path.write_text(
            f'output_dir = "{tmp}"\ncertificates = ["{tmp}"]\n[fleet]\nredis = {json.dumps(url)}\n'
        )
        try:
            cfg = config.load(path)
            assert Fleet.of(cfg, lambda: _NOW) is not None
        except ConfigError as e:
            assert e.key in ("fleet.redis", None), e
            if secret is not None:
                assume(secret not in tail)  # named again where it is no password
                assert secret not in str(e)


@pytest.mark.parametrize(
    "url", ["redis://h/0?socket_timeout=soon", "unix:///run/r.sock?db=x", "redis://h/zero"]
)
def test_a_url_option_redis_cannot_use_is_a_configuration_error(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from stapled.cli import main

    path = tmp_path / "stapled.toml"
    path.write_text(
        f'output_dir = "{tmp_path}"\ncertificates = ["{tmp_path}"]\n[fleet]\nredis = "{url}"\n'
    )
    for command in ("once", "status"):
        assert main([command, "--config", str(path)]) == 78
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "fleet.redis" in err
