"""Certificate files parsed by an earlier process: a scan that takes them finds exactly
what a scan that parses every file finds, whatever the state directory holds."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stapled.config import Source
from stapled.core.model import Found
from stapled.demo import ca as testca
from stapled.files import discovery, parsed
from stapled.files.parsed import Parsed

URL = "http://127.0.0.1:9/"
CA = testca.CA("parsed CA")
OTHER = testca.CA("parsed other CA")
PLAIN = CA.issue("plain.example", ocsp_urls=[URL])
RICH = CA.issue(
    "rich.example",
    ocsp_urls=[URL, "http://127.0.0.2:9/"],
    ca_issuers_urls=["http://127.0.0.1:9/ca.der"],
    crl_urls=["http://127.0.0.1:9/ca.crl"],
    must_staple=True,
)
LONE = OTHER.issue("lone.example", ocsp_urls=[URL])


def _lineage(live: Path, name: str, leaf: testca.Issued, *, full: bool) -> None:
    testca.write(live / name / "cert.pem", leaf.cert_pem())
    testca.write(live / name / "chain.pem", CA.cert_pem())
    testca.write(live / name / "privkey.pem", b"never read\n")
    if full:
        testca.write(live / name / "fullchain.pem", leaf.cert_pem() + CA.cert_pem())


def _tree(top: Path) -> tuple[Source, ...]:
    """Files of every kind a scan meets: lineages, bundles, DER, skipped and broken."""
    _lineage(top / "le" / "live", "full.example", PLAIN, full=True)
    _lineage(top / "le" / "live", "split.example", RICH, full=False)
    certs = top / "certs"
    testca.write(certs / "bundle.pem", RICH.cert_pem() + CA.cert_pem())
    key = b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"
    testca.write(certs / "keyfirst.pem", key + PLAIN.cert_pem() + CA.cert_pem())
    testca.write(certs / "lone.pem", LONE.cert_pem())
    testca.write(certs / "cas.pem", CA.cert_pem() + OTHER.cert_pem())
    testca.write(certs / "notes.pem", b"not a certificate\n")
    testca.write(certs / "broken.pem", PLAIN.cert_pem()[:300])
    der = testca.write(top / "der" / "site.crt", PLAIN.cert.public_bytes(Encoding.DER))
    issuer = testca.write(top / "issuer.pem", CA.cert_pem())
    return (
        Source(path=str(top / "le")),
        Source(path=str(certs)),
        Source(path=str(der), issuer=issuer),
        Source(path=str(certs / "lone.pem"), ocsp_url=(URL,)),
    )


def _scan(sources: tuple[Source, ...], state_dir: Path | None) -> tuple[list[Found], bool]:
    """A scan in a new process: what it found, and whether it would write the file."""
    earlier = Parsed.load(state_dir) if state_dir is not None else None
    cache = discovery.Cache(recent_ns=0, earlier=earlier)
    found = discovery.discover(sources, cache)
    if state_dir is not None and cache.changed:
        parsed.save(state_dir, cache.outcomes())
    return found, cache.changed


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Source, ...], Path]:
    top = tmp_path_factory.mktemp("parsed")
    sources = _tree(top)
    _scan(sources, top / "state")
    return sources, top / "state"


def test_files_parsed_before_are_found_as_parsing_finds_them(
    tree: tuple[tuple[Source, ...], Path],
) -> None:
    sources, state_dir = tree
    fresh, _ = _scan(sources, None)
    again, changed = _scan(sources, state_dir)
    assert again == fresh
    assert {f.name for f in fresh if f.chain} >= {"full.example", "split.example", "site"}
    assert any(f.error for f in fresh), "the broken file is an error either way"
    assert not changed, "every file was taken: nothing to write"


def test_a_changed_file_is_parsed_anew_and_its_old_entry_forgotten(tmp_path: Path) -> None:
    source = Source(path=str(tmp_path / "certs"))
    path = testca.write(tmp_path / "certs" / "a.pem", PLAIN.cert_pem() + CA.cert_pem())
    _scan((source,), tmp_path / "state")
    path.write_bytes(RICH.cert_pem() + CA.cert_pem())
    (found,), changed = _scan((source,), tmp_path / "state")
    assert changed and found.chain is not None
    assert found.chain.fingerprint == discovery.leaf_fingerprint(str(path))
    assert len(_document(tmp_path / "state")["files"]) == 1


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), junk=st.binary(max_size=40))
def test_any_damage_to_the_file_finds_what_parsing_finds(
    tree: tuple[tuple[Source, ...], Path], tmp_path: Path, data: st.DataObject, junk: bytes
) -> None:
    """Any run of bytes of the file replaced by any bytes (a torn write, a disk error):
    the scan finds exactly what parsing every file finds, and raises nothing."""
    sources, state_dir = tree
    text = (state_dir / parsed.PARSED_FILE).read_bytes()
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 64)))
    damaged = tmp_path / "damaged"
    damaged.mkdir(exist_ok=True)
    (damaged / parsed.PARSED_FILE).write_bytes(text[:start] + junk + text[end:])
    found, _ = _scan(sources, damaged)
    assert found == _scan(sources, None)[0]


# The types each value of a file's entry may have.
SHAPES: list[tuple[type, ...]] = [(str,), (str,), (int,), (int,), (int, type(None)), (list,), (int,), (list,), (list,)]  # fmt: skip


def _document(state_dir: Path) -> Any:
    return json.loads((state_dir / parsed.PARSED_FILE).read_bytes().partition(b"\n")[2])


def _write_document(state_dir: Path, document: object) -> None:
    """The file as stapled writes it: the SHA-256 of the JSON, then the JSON."""
    state_dir.mkdir(exist_ok=True)
    body = json.dumps(document).encode()
    (state_dir / parsed.PARSED_FILE).write_bytes(
        hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    value=st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.lists(st.integers(), max_size=3),
)
def test_an_entry_of_the_wrong_shape_is_parsed_anew(
    tree: tuple[tuple[Source, ...], Path], tmp_path: Path, data: st.DataObject, value: object
) -> None:
    """Entries whose checksum holds but whose values have the wrong type (a file written
    by another version): never an exception, and files whose entries do not read back
    are parsed anew."""
    sources, state_dir = tree
    document = _document(state_dir)
    key = data.draw(st.sampled_from(sorted(document["files"])))
    entry = document["files"][key]
    if isinstance(entry, list):
        index = data.draw(st.integers(0, len(entry) - 1))
        if type(value) in SHAPES[index]:
            return  # a value stapled itself could have written
        entry[index] = value
    else:
        document["files"][key] = value
    _write_document(tmp_path / "shape", document)
    found, _ = _scan(sources, tmp_path / "shape")
    assert found == _scan(sources, None)[0]


def test_indexes_and_reasons_stapled_never_writes_are_parsed_anew(
    tree: tuple[tuple[Source, ...], Path], tmp_path: Path
) -> None:
    """Under a checksum that holds: a negative index (Python would take it from the end
    of a table) and a skip reason stapled does not give."""
    sources, state_dir = tree
    document = _document(state_dir)
    chains = [key for key, entry in document["files"].items() if isinstance(entry, list)]
    for key in chains[1:]:
        entry = document["files"][key]
        entry[3] = -1
        entry[4] = -1 if entry[4] is not None else None
    for key, entry in document["files"].items():
        if key == chains[0] or not isinstance(entry, list):
            document["files"][key] = "skipped for no reason"  # a certificate's, too
    _write_document(tmp_path / "indexes", document)
    found, changed = _scan(sources, tmp_path / "indexes")
    assert found == _scan(sources, None)[0]
    assert changed, "nothing was taken: it is written anew"


def test_an_entry_for_another_certificate_is_not_taken_where_the_leaf_is_read(
    tmp_path: Path,
) -> None:
    """A leaf whose issuer is not in its file is kept as read: an entry that names
    another leaf (a file edited by hand) is parsed anew."""
    source = Source(path=str(tmp_path / "certs"))
    testca.write(tmp_path / "certs" / "a.pem", LONE.cert_pem())
    _scan((source,), tmp_path / "state")
    document = _document(tmp_path / "state")
    (entry,) = document["files"].values()
    entry[0] = "0" * 64
    _write_document(tmp_path / "state", document)
    (found,), changed = _scan((source,), tmp_path / "state")
    assert changed and found.chain is not None and found.chain.serial == LONE.cert.serial_number
    assert found.chain.fingerprint == discovery.leaf_fingerprint(str(tmp_path / "certs" / "a.pem"))


def test_a_chain_with_other_responder_urls_is_the_same_chain_otherwise(tmp_path: Path) -> None:
    path = testca.write(tmp_path / "x.pem", RICH.cert_pem() + CA.cert_pem())
    (found,) = discovery.discover((Source(path=str(path)),))
    assert found.chain is not None
    urls = ("http://127.0.0.3/",)
    assert found.chain.with_ocsp_urls(urls) == replace(found.chain, ocsp_urls=urls)


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The certificate files a scan reads from now on."""
    read: list[str] = []
    real = discovery._read

    def spy(path: str) -> tuple[bytes, os.stat_result]:
        read.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(discovery, "_read", spy)
    return read


def test_files_kept_with_their_signature_are_not_read(
    tree: tuple[tuple[Source, ...], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only files whose leaf is needed to find its issuer (none in the file), broken
    files and configured issuers are read again."""
    sources, state_dir = tree
    fresh, _ = _scan(sources, None)
    read = _reads(monkeypatch)
    again, changed = _scan(sources, state_dir)
    assert again == fresh and not changed
    assert sorted(read) == ["broken.pem", "issuer.pem", "lone.pem", "lone.pem", "site.crt"]


def test_a_file_touched_is_read_and_its_new_signature_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = Source(path=str(tmp_path / "certs"))
    path = testca.write(tmp_path / "certs" / "a.pem", PLAIN.cert_pem() + CA.cert_pem())
    (first,), _ = _scan((source,), tmp_path / "state")
    read = _reads(monkeypatch)
    os.utime(path, ns=(1, 1))  # the same bytes: its times alone changed
    (again,), changed = _scan((source,), tmp_path / "state")
    assert again == first and changed and read == ["a.pem"]
    (third,), changed = _scan((source,), tmp_path / "state")
    assert third == first and not changed and read == ["a.pem"]


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    value=st.none()
    | st.integers()
    | st.text()
    | st.lists(st.none() | st.integers() | st.text(max_size=70), max_size=3),
)
def test_a_signature_of_the_wrong_shape_is_read_anew(
    tree: tuple[tuple[Source, ...], Path], tmp_path: Path, data: st.DataObject, value: object
) -> None:
    """A path's signature that is not what stapled writes (any shape, any other text):
    its files are read, and found as parsing finds them."""
    sources, state_dir = tree
    document = _document(state_dir)
    place = data.draw(st.sampled_from(sorted(document["seen"])))
    # (No text drawn is 80 characters long: never the real signature.)
    document["seen"][place] = value
    _write_document(tmp_path / "seen", document)
    found, _ = _scan(sources, tmp_path / "seen")
    assert found == _scan(sources, None)[0]
