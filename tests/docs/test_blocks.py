"""Every block of README.md and docs/ is run by a test, and every file of examples/ is
used by one: a block or an example nobody runs fails here."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .blocks import TOP, every

TESTS = TOP / "tests"
TAKEN = re.compile(r"""(?:block|commands)\(\s*["']([a-z0-9-]+)["']""")


QUOTED = re.compile(r"""["']([a-z0-9-]+)["']""")


def _sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in TESTS.rglob("*.py"))


def _taken() -> set[str]:
    """Names given to block() or commands(), directly or through a parametrized name."""
    return set(TAKEN.findall(_sources()))


def test_every_block_has_a_marker_and_a_unique_name() -> None:
    blocks = every()
    assert blocks, "no blocks found: the parser is broken"
    unmarked = [b.where for b in blocks if b.name is None]
    assert not unmarked, f"blocks without <!-- test: NAME -->: {unmarked}"
    twice = [n for n, c in Counter(b.name for b in blocks).items() if c > 1]
    assert not twice, f"names given to more than one block: {twice}"


def test_every_block_is_run_by_a_test() -> None:
    taken = _taken()
    quoted = set(QUOTED.findall(_sources()))
    untested = [f"{b.name} ({b.where})" for b in every() if b.name not in taken | quoted]
    assert not untested, f"blocks no test runs: {untested}"
    named = {b.name for b in every()}
    stale = sorted(taken - named)
    assert not stale, f"tests take blocks the docs no longer have: {stale}"


def test_every_example_is_used_by_a_test() -> None:
    sources = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.rglob("*.py"))
    sources += "".join(p.read_text(encoding="utf-8") for p in (TESTS / "service").glob("*.sh"))
    unused = [p.name for p in sorted((TOP / "examples").iterdir()) if f'"{p.name}"' not in sources]
    assert not unused, f"examples no test uses: {unused}"


def test_a_block_without_a_marker_is_found(tmp_path: Path) -> None:
    from .blocks import read

    doc = tmp_path / "x.md"
    doc.write_text("text\n\n```sh\nls\n```\n\n<!-- test: named -->\n```toml\na = 1\n```\n")
    found = read(doc)
    assert [(b.name, b.lang, b.text) for b in found] == [
        (None, "sh", "ls\n"),
        ("named", "toml", "a = 1\n"),
    ]
