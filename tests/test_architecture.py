"""The package's layering, read from its imports with `ast` (see DESIGN notes in README).

cli -> pipeline -> shell modules (discovery, transport, store, reload) -> pure core
(certs, ocsp, policy) -> errors.  The core does no I/O and never reads the clock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "stapled"
CORE = {"certs", "ocsp", "policy", "errors"}
SHELL = {"discovery", "transport", "store", "reload"}
FORBIDDEN_IN_CORE = {"os", "socket", "subprocess", "requests", "pathlib", "time", "threading"}


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(stapled modules, other top-level modules) imported by ``module``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    ours, foreign = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                names = [node.module] if node.module else [a.name for a in node.names]
                ours.update(n.split(".")[0] for n in names)
            elif node.module:
                foreign.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            foreign.update(a.name.split(".")[0] for a in node.names)
    return ours, foreign


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_is_pure(module: str) -> None:
    ours, foreign = _imports(module)
    assert ours <= CORE, f"{module} imports {ours - CORE}"
    assert not foreign & FORBIDDEN_IN_CORE, f"{module} does I/O: {foreign & FORBIDDEN_IN_CORE}"
    source = (PACKAGE / f"{module}.py").read_text()
    assert ".now(" not in source, f"{module} reads the clock; take `now` as a parameter"


@pytest.mark.parametrize("module", sorted(SHELL))
def test_shell_modules_do_not_import_each_other(module: str) -> None:
    ours, _ = _imports(module)
    assert not ours & (SHELL - {module}), f"{module} imports {ours & SHELL}"


def test_third_party_libraries_stay_in_their_module() -> None:
    owners = {"requests": {"transport"}, "apscheduler": {"daemon"}, "watchdog": {"watcher"}}
    for path in PACKAGE.glob("*.py"):
        _, foreign = _imports(path.stem)
        for library, allowed in owners.items():
            if library in foreign:
                assert path.stem in allowed, f"{path.stem} imports {library}"
