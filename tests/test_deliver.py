"""One delivery rule for `once` and `run`: Servers.deliver does what is owed, and what
fails stays owed (reloads, HAProxy pushes), as does a push for a name not delivered."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stapled import config
from stapled.core import certs, ocsp
from stapled.core.model import Owed, Record
from stapled.core.policy import State
from stapled.demo import ca as testca
from stapled.errors import ReloadError
from stapled.servers import Servers

CA = testca.CA()
LEAF = CA.issue("d.example", ocsp_urls=["http://127.0.0.1:9/"])
NOW = datetime.now(UTC)


def _servers(tmp_path: Path, *, reload_fails: bool, refused: set[str]) -> tuple[Servers, list[str]]:
    cfg = config.parse(
        {
            "output_dir": str(tmp_path),
            "certificates": [str(tmp_path)],
            "reload_command": "reload-it",
            "haproxy": {"admin_socket": "/run/haproxy.sock"},
        },
        tmp_path / "c.toml",
    )
    calls: list[str] = []

    def reloader(argv: Sequence[str], timeout: float, what: str) -> str:
        calls.append("reload")
        if reload_fails:
            raise ReloadError(argv, "failed with exit status 1")
        return ""

    def pusher(address: str, der: bytes, timeout: float) -> bool:
        name = next(n for n, d in STAPLES.items() if d.der == der)
        calls.append(f"push {name}")
        if name in refused:
            raise ReloadError(["set ssl ocsp-response"], "was refused", what="HAProxy")
        return True

    return Servers(cfg, lambda: NOW, reloader=reloader, pusher=pusher), calls


NAMES = ["a", "b", "c"]
STAPLES = {
    n: ocsp.validate(
        CA.sign_response(LEAF.cert, this_update=NOW.replace(microsecond=i)),
        certs.build_chain([LEAF.cert, CA.cert], n),
        NOW,
    )
    for i, n in enumerate(NAMES)
}


def _record(name: str) -> Record:
    return Record(
        name,
        f"/x/{name}.pem",
        State.GOOD,
        current=STAPLES[name],
        haproxy_staple_path=f"/x/{name}.ocsp",
    )


@given(
    reload=st.booleans(),
    push=st.frozensets(st.sampled_from([*NAMES, "gone"])),
    given_names=st.frozensets(st.sampled_from(NAMES)),
    reload_fails=st.booleans(),
    refused=st.sets(st.sampled_from(NAMES)),
)
def test_what_fails_or_is_not_delivered_stays_owed(
    tmp_path_factory: pytest.TempPathFactory,
    reload: bool,
    push: frozenset[str],
    given_names: frozenset[str],
    reload_fails: bool,
    refused: set[str],
) -> None:
    servers, calls = _servers(
        tmp_path_factory.mktemp("d"), reload_fails=reload_fails, refused=refused
    )
    delivered = servers.deliver(Owed(reload, push), [_record(n) for n in sorted(given_names)])
    assert delivered.reloaded == reload and calls.count("reload") == int(reload)
    assert delivered.owed.reload == (reload and reload_fails)
    assert (delivered.reload_error is not None) == (reload and reload_fails)
    pushed = {c.removeprefix("push ") for c in calls if c.startswith("push ")}
    assert pushed == push & given_names
    assert delivered.owed.push == (push & given_names & refused) | (push - given_names)
