"""A rescan told which paths changed finds exactly what a whole scan finds, whatever the
changes: certbot renewing, adding or deleting a lineage, files edited, added, removed
or made unreadable beside it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from stapled.config import Source
from stapled.core.model import Found
from stapled.demo import ca as testca
from stapled.files import discovery, parsed

URL = "http://127.0.0.1:9/"
CA = testca.CA("rescan CA")
LEAVES = [CA.issue(f"r{i}.example", ocsp_urls=[URL]) for i in range(4)]


class Tree:
    """A certbot tree and a directory of bundles, changed as operators and certbot do;
    ``touched`` collects what a watcher of live/ and certs/ would report."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.le, self.certs = top / "le", top / "certs"
        self.touched: set[str] = set()
        self.version = 0
        for i in range(3):
            self.lineage(f"l{i}", LEAVES[i])
        for i in range(2):
            testca.write(self.certs / f"b{i}.pem", LEAVES[i].cert_pem() + CA.cert_pem())
        self.touched.clear()

    def sources(self) -> tuple[Source, ...]:
        # certs/ twice, the second time by a glob asking another responder: its files
        # are reached by both, each source with its own URLs.
        return (
            Source(path=str(self.le)),
            Source(path=str(self.certs)),
            Source(path=str(self.certs / "*.pem"), ocsp_url=("http://127.0.0.3:9/",)),
        )

    def lineage(self, name: str, leaf: testca.Issued) -> None:
        """certbot: new files in archive/NAME, then live/NAME's links replaced."""
        self.version += 1
        archive, live = self.le / "archive" / name, self.le / "live" / name
        archive.mkdir(parents=True, exist_ok=True)
        if not live.exists():
            live.mkdir(parents=True)
            self.touched.add(str(live))
        for kind, data in (
            ("cert", leaf.cert_pem()),
            ("chain", CA.cert_pem()),
            ("fullchain", leaf.cert_pem() + CA.cert_pem()),
        ):
            (archive / f"{kind}{self.version}.pem").write_bytes(data)
            link = live / f"{kind}.pem"
            link.unlink(missing_ok=True)
            link.symlink_to(f"../../archive/{name}/{kind}{self.version}.pem")
            self.touched.add(str(link))

    def remove_lineage(self, name: str) -> None:
        live = self.le / "live" / name
        if live.exists():
            self.touched |= {str(p) for p in live.iterdir()} | {str(live)}
            shutil.rmtree(live)

    def write(self, name: str, data: bytes) -> None:
        path = self.certs / name
        path.unlink(missing_ok=True)  # it may be a FIFO, which a write would wait on
        path.write_bytes(data)
        self.touched.add(str(path))

    def remove(self, name: str) -> None:
        path = self.certs / name
        if path.exists():
            path.unlink()
            self.touched.add(str(path))

    def unreadable(self, name: str) -> None:
        path = self.certs / name
        if path.exists():
            path.unlink()
            os.mkfifo(path)
            self.touched.add(str(path))


Change = Callable[[Tree], None]


def _changes() -> st.SearchStrategy[Change]:
    lineage = st.sampled_from(["l0", "l1", "l2", "l3"])
    bundle = st.sampled_from(["b0.pem", "b1.pem", "b2.pem"])
    leaf = st.sampled_from(LEAVES)
    return st.one_of(
        st.builds(lambda n, leaf: lambda t: t.lineage(n, leaf), lineage, leaf),
        st.builds(lambda n: lambda t: t.remove_lineage(n), lineage),
        st.builds(
            lambda n, leaf: lambda t: t.write(n, leaf.cert_pem() + CA.cert_pem()), bundle, leaf
        ),
        st.builds(lambda n, leaf: lambda t: t.write(n, leaf.cert_pem()[:200]), bundle, leaf),
        st.builds(lambda n: lambda t: t.write(n, b"not a certificate\n"), bundle),
        st.builds(lambda n: lambda t: t.remove(n), bundle),
        st.builds(lambda n: lambda t: t.unreadable(n), bundle),
    )


@settings(max_examples=60, deadline=None)
@given(rounds=st.lists(st.lists(_changes(), min_size=1, max_size=3), min_size=1, max_size=4))
def test_a_rescan_of_the_changed_paths_finds_what_a_whole_scan_finds(
    rounds: list[list[Change]],
) -> None:
    with tempfile.TemporaryDirectory() as top:
        tree = Tree(Path(top))
        cache = discovery.Cache(recent_ns=0)
        discovery.discover(tree.sources(), cache)
        for changes in rounds:
            for change in changes:
                change(tree)
            again = discovery.discover(tree.sources(), cache, changed=set(tree.touched))
            tree.touched.clear()
            assert again == discovery.discover(tree.sources(), discovery.Cache())


@settings(max_examples=60, deadline=None)
@given(rounds=st.lists(st.lists(_changes(), min_size=1, max_size=3), min_size=1, max_size=4))
def test_a_new_process_after_any_changes_finds_what_parsing_finds(
    rounds: list[list[Change]],
) -> None:
    """Each round a new process, taking what the last one kept in the state directory
    (files with the signature kept are not read): it finds what parsing every file
    finds."""
    with tempfile.TemporaryDirectory() as top:
        tree = Tree(Path(top))
        state_dir = Path(top) / "state"

        def new_process() -> list[Found]:
            cache = discovery.Cache(recent_ns=0, earlier=parsed.Parsed.load(state_dir))
            found = discovery.discover(tree.sources(), cache)
            discovery.keep(cache, state_dir)
            return found

        new_process()
        for changes in rounds:
            for change in changes:
                change(tree)
            assert new_process() == discovery.discover(tree.sources(), discovery.Cache())


def test_a_renewal_reads_only_its_own_lineage(tmp_path: Path) -> None:
    """The point of it: a renewal among many lineages reads the renewed one alone."""
    tree = Tree(tmp_path)
    cache = discovery.Cache(recent_ns=0)
    discovery.discover(tree.sources(), cache)
    tree.lineage("l1", LEAVES[3])
    for path in (tree.le / "live" / "l0").iterdir():
        path.unlink()  # were l0 read again, it would be an error now
    found = discovery.discover(tree.sources(), cache, changed=set(tree.touched))
    names = {f.name: f for f in found}
    assert names["l0"].chain is not None
    assert names["l1"].chain is not None
    assert names["l1"].chain.serial == LEAVES[3].cert.serial_number


def test_a_lineage_renewed_again_is_read_again(tmp_path: Path) -> None:
    """A daemon runs for months: the same lineage renews again after its last rescan."""
    tree = Tree(tmp_path)
    cache = discovery.Cache(recent_ns=0)
    discovery.discover(tree.sources(), cache)
    for leaf in (LEAVES[3], LEAVES[2], LEAVES[3]):
        tree.lineage("l1", leaf)
        found = discovery.discover(tree.sources(), cache, changed=set(tree.touched))
        tree.touched.clear()
        chain = {f.name: f for f in found}["l1"].chain
        assert chain is not None and chain.serial == leaf.cert.serial_number
        assert found == discovery.discover(tree.sources(), discovery.Cache())
