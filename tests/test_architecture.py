"""The package's layering, read from its imports with `ast` (docs/design.md draws it).

cli -> passes / service / demo -> fetch, issuers, servers, fleet -> files, net -> core -> errors.
Every module of the package belongs to exactly one layer below, so a new module fails
here until its place is decided.  The core does no I/O and never reads the clock, and
each outside library is imported by one module only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "stapled"

# What passes and everything above them may use.
_BELOW_PASSES = {"edges", "fleet", "observe", "files", "net", "core", "config", "report", "errors"}

# layer -> (its modules, the layers it may import besides its own)
LAYERS: dict[str, tuple[set[str], set[str]]] = {
    "errors": ({"errors", "__init__"}, set()),
    "core": ({"core.*"}, {"errors"}),
    "config": ({"config"}, {"core", "errors"}),
    "report": ({"report"}, {"core", "errors"}),
    "files": ({"files.*"}, {"core", "config", "errors"}),
    "net": ({"net.*"}, {"core", "errors"}),
    "edges": (
        {"fetch", "issuers", "servers", "crls", "hooks", "revocations"},
        {"files", "net", "core", "config", "errors"},
    ),
    "fleet": ({"fleet.*"}, {"core", "config", "errors"}),
    "observe": ({"observe.*"}, {"core", "config", "errors"}),
    "passes": (
        {"passes", "probes", "overview", "preflight"},
        _BELOW_PASSES,
    ),
    "service": ({"service.*"}, {"passes", *_BELOW_PASSES}),
    "demo": ({"demo.*"}, {"passes", "net", "core", "config", "report", "errors"}),
    "cli": ({"cli", "__main__"}, {"service", "demo", "passes", *_BELOW_PASSES}),
}
FORBIDDEN_IN_CORE = {"os", "socket", "subprocess", "requests", "pathlib", "time", "threading"}
OWNERS = {
    "requests": {"net.proxy"},
    "certifi": {"net.proxy"},
    "h11": {"net.http11"},
    "redis": {"fleet.redis"},
    "OpenSSL": {"observe.handshake"},
    "prometheus_client": {"observe.metrics"},
    "apscheduler": {"service.jobs"},
    "watchdog": {"service.watcher"},
    "systemd": {"service.sdnotify", "cli"},
}


def _modules() -> list[str]:
    return [
        *sorted(
            ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
            for p in PACKAGE.rglob("*.py")
            if p.name != "__init__.py" or p.parent != PACKAGE
        ),
        "__init__",
    ]


def _layer(module: str) -> str:
    name = module.removesuffix(".__init__")
    for layer, (members, _) in LAYERS.items():
        for pattern in members:
            package = pattern.removesuffix(".*")
            if name in (pattern, package) or name.startswith(package + "."):
                return layer
    raise AssertionError(f"{module} is in no layer; give it one in LAYERS")


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(stapled modules, other top-level modules) imported by ``module``."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    package = module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    ours, foreign = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = [*base, *(node.module.split(".") if node.module else [])]
                for alias in node.names:
                    target = ".".join([*prefix, alias.name])
                    known = PACKAGE / (target.replace(".", "/") + ".py")
                    ours.add(target if known.exists() else ".".join(prefix) or "__init__")
            elif node.module:
                foreign.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            foreign.update(a.name.split(".")[0] for a in node.names)
    return ours, foreign


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


@pytest.mark.parametrize("module", _modules())
def test_imports_follow_the_layers(module: str) -> None:
    layer = _layer(module)
    allowed = LAYERS[layer][1] | {layer}
    ours, _ = _imports(module)
    wrong = {m for m in ours if _layer(m) not in allowed}
    assert not wrong, f"{module} ({layer}) imports {wrong}"


@pytest.mark.parametrize("module", [m for m in _modules() if m.startswith("core.")])
def test_core_is_pure(module: str) -> None:
    _, foreign = _imports(module)
    assert not foreign & FORBIDDEN_IN_CORE, f"{module} does I/O: {foreign & FORBIDDEN_IN_CORE}"
    source = (PACKAGE / (module.replace(".", "/") + ".py")).read_text()
    assert ".now(" not in source, f"{module} reads the clock; take `now` as a parameter"


@pytest.mark.parametrize("module", _modules())
def test_outside_libraries_stay_in_their_module(module: str) -> None:
    _, foreign = _imports(module)
    for library, owners in OWNERS.items():
        if library in foreign:
            assert module in owners, f"{module} imports {library}; only {owners} may"


def test_heavy_libraries_are_imported_only_where_configured() -> None:
    """redis-py, prometheus_client and pyOpenSSL cost 40-70 ms each to import: a host
    without [fleet], [metrics] or a probe never pays for them."""
    import subprocess
    import sys

    code = (
        "import sys, stapled.cli, stapled.service.daemon, stapled.passes; "
        "print(sorted({'redis', 'prometheus_client', 'OpenSSL'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _graph() -> dict[str, set[str]]:
    """Module -> the stapled modules it imports (every import, TYPE_CHECKING ones too); a
    package is its __init__."""

    def node(name: str) -> str:
        return name.removesuffix(".__init__")

    graph: dict[str, set[str]] = {}
    for module in _modules():
        ours, _ = _imports(module)
        targets = set()
        for target in ours:
            parts = target.split(".")
            # `from .. import config` names a package; `from . import __version__` a name.
            while parts and not (
                (PACKAGE / ("/".join(parts) + ".py")).exists()
                or (PACKAGE / "/".join(parts) / "__init__.py").exists()
            ):
                parts.pop()
            if parts:
                targets.add(".".join(parts))
        graph[node(module)] = targets - {node(module)}
    return graph


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle_through_a_type_checking_import() -> None:
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .passes import Stapler\n"
    )
    tree = ast.parse(source)
    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "passes" in names  # ast.walk reaches imports under `if TYPE_CHECKING:`
