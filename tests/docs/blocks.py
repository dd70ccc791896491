"""The command and configuration blocks of README.md and docs/, by the name their marker
gives them, so that tests run them as written.

Every fenced block is preceded by ``<!-- test: NAME -->``; a test takes it with
``block("NAME")``.  tests/docs/test_blocks.py fails for a block without a marker, a
name given twice, and a name no test takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TOP = Path(__file__).parents[2]
DOCS = (TOP / "README.md", *sorted((TOP / "docs").glob("*.md")))
MARKER = re.compile(r"^<!-- test: ([a-z0-9-]+) -->$")
FENCE = re.compile(r"^```(\S*)$")


@dataclass(frozen=True)
class Block:
    name: str | None
    path: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(TOP)}:{self.line}"


def read(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, with the marker on the line before."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        text = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(marker and marker.group(1), path, i + 1, opened.group(1), text))
        i = end + 1
    return found


def every() -> list[Block]:
    return [b for path in DOCS for b in read(path)]


def block(name: str) -> str:
    """The text of the block marked ``name`` (KeyError when there is none)."""
    for b in every():
        if b.name == name:
            return b.text
    raise KeyError(f"no block marked {name!r} in README.md or docs/")


def commands(name: str) -> list[str]:
    """The command lines of a shell block, comments and blank lines left out (a comment
    after a command stays: the shell ignores it)."""
    return [
        line
        for line in block(name).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
