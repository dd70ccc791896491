"""Certificate files of every kind, good and broken: each broken one is a per-file error."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from stapled.config import Source
from stapled.core import certs
from stapled.demo import ca as testca
from stapled.errors import CertificateError
from stapled.files import discovery, signatures


@pytest.fixture(scope="module")
def ca() -> testca.CA:
    return testca.CA()


@pytest.fixture(scope="module")
def leaf(ca: testca.CA) -> testca.Issued:
    return ca.issue("leaf.example", ocsp_urls=["http://127.0.0.1:9/"])


def _found(path: Path, **kw: object) -> list[discovery.Found]:
    return discovery.discover((Source(path=str(path), **kw),))  # type: ignore[arg-type]


def _one_error(path: Path) -> str:
    (found,) = _found(path)
    assert found.chain is None, "expected an error"
    assert found.error is not None
    return found.error


def _pem(cert: testca.Issued | testca.CA) -> bytes:
    return cert.cert_pem()


BROKEN = {
    "not-pem": (lambda ca, leaf: b"hello, I am not a certificate\n", "no certificate found"),
    "binary-junk": (lambda ca, leaf: bytes(range(256)) * 4, "no certificate found"),
    "empty": (lambda ca, leaf: b"", "no certificate found"),
    "truncated-pem": (lambda ca, leaf: _pem(leaf)[:200], "truncated PEM"),
    "bad-base64": (
        lambda ca, leaf: b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "not a valid certificate",
    ),
    "wrong-order": (lambda ca, leaf: _pem(ca) + _pem(leaf), "put the leaf first"),
    "self-signed": (lambda ca, leaf: _pem(ca), "self-signed"),
    "too-big": (lambda ca, leaf: b"#" * (discovery.MAX_CERT_FILE + 1), "larger than"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_file_named_directly(
    tmp_path: Path, ca: testca.CA, leaf: testca.Issued, case: str
) -> None:
    make, reason = BROKEN[case]
    path = testca.write(tmp_path / "site.pem", make(ca, leaf))
    assert reason in _one_error(path)


def test_leaf_without_issuer_is_found_without_one(tmp_path: Path, leaf: testca.Issued) -> None:
    (found,) = _found(testca.write(tmp_path / "a.pem", _pem(leaf)))
    assert found.chain is not None and found.chain.issuer is None


def test_der_certificate_is_accepted(tmp_path: Path, ca: testca.CA, leaf: testca.Issued) -> None:
    path = testca.write(tmp_path / "a.crt", leaf.cert.public_bytes(Encoding.DER))
    issuer = testca.write(tmp_path / "ca.pem", _pem(ca))
    (found,) = _found(path, issuer=issuer)
    assert found.chain is not None and found.chain.issuer == ca.cert


def test_configured_issuer_that_did_not_sign(tmp_path: Path, leaf: testca.Issued) -> None:
    stranger = testca.write(tmp_path / "other.pem", _pem(testca.CA("other")))
    (found,) = _found(testca.write(tmp_path / "a.pem", _pem(leaf)), issuer=stranger)
    assert found.error is not None and "did not sign" in found.error


def test_same_name_with_another_key_is_not_the_issuer(
    tmp_path: Path, ca: testca.CA, leaf: testca.Issued
) -> None:
    twin = testca.CA(ca.name)  # the same name, its own key and key identifier
    (found,) = _found(testca.write(tmp_path / "a.pem", _pem(leaf), _pem(twin)))
    assert found.chain is not None and found.chain.issuer is None
    (found,) = _found(testca.write(tmp_path / "b.pem", _pem(leaf), _pem(twin), _pem(ca)))
    assert found.chain is not None and found.chain.issuer == ca.cert


def test_without_key_identifiers_the_signature_decides(tmp_path: Path, ca: testca.CA) -> None:
    bare = ca.issue("bare.example", authority_key_id=False)
    twin = testca.CA(ca.name)
    (found,) = _found(testca.write(tmp_path / "a.pem", _pem(bare), _pem(twin), _pem(ca)))
    assert found.chain is not None and found.chain.issuer == ca.cert
    (found,) = _found(testca.write(tmp_path / "b.pem", _pem(bare), _pem(twin)))
    assert found.chain is not None and found.chain.issuer is None


def test_rescan_with_a_cache_reads_only_what_changed(tmp_path: Path, ca: testca.CA) -> None:
    a, b = ca.issue("a.example"), ca.issue("b.example")
    testca.write(tmp_path / "a.pem", _pem(a), _pem(ca))
    testca.write(tmp_path / "b.pem", _pem(b), _pem(ca))
    sources = (Source(path=str(tmp_path)),)
    cache = discovery.Cache(recent_ns=-(10**12))  # trust even fresh files
    first = {f.name: f.chain for f in discovery.discover(sources, cache)}
    assert first["a"] and first["b"]
    # One object for the issuer both bundles end with.
    assert first["a"].issuer is first["b"].issuer
    again = {f.name: f.chain for f in discovery.discover(sources, cache)}
    assert again["a"] is first["a"]  # not read again
    renewed = ca.issue("a.example")
    testca.write(tmp_path / "a.pem", _pem(renewed), _pem(ca))
    (tmp_path / "b.pem").unlink()
    third = {f.name: f.chain for f in discovery.discover(sources, cache)}
    assert (
        set(third) == {"a"} and third["a"] and third["a"].fingerprint == _fingerprint(renewed.cert)
    )
    assert len(cache.files) == 1


def test_a_source_asking_another_responder_holds_one_chain_a_certificate(
    tmp_path: Path, ca: testca.CA, leaf: testca.Issued
) -> None:
    testca.write(tmp_path / "site.pem", _pem(leaf), _pem(ca))
    sources = (Source(path=str(tmp_path / "site.pem"), ocsp_url=("http://127.0.0.2:9/",)),)
    cache = discovery.Cache(recent_ns=-(10**12))  # trust even fresh files
    (found,) = discovery.discover(sources, cache)
    assert found.chain is not None and found.chain.ocsp_urls == ("http://127.0.0.2:9/",)
    # The chain the source uses is the one the scans keep, at every scan: no copy.
    ((_, loaded),) = cache.files.items()
    assert loaded.chain is found.chain
    (again,) = discovery.discover(sources, cache)
    assert again.chain is found.chain
    # The next process is told what the file holds, not what the source asks.
    ((_, _, _, kept),) = cache.outcomes()
    assert not isinstance(kept, str) and kept.ocsp_urls == ("http://127.0.0.1:9/",)
    assert kept == found.chain.with_ocsp_urls(("http://127.0.0.1:9/",))


def test_a_file_changed_just_now_is_not_trusted_from_the_cache(
    tmp_path: Path, ca: testca.CA
) -> None:
    """Rewritten in place within one timestamp tick, a file would keep its signature."""
    path = testca.write(tmp_path / "a.pem", _pem(ca.issue("a.example")), _pem(ca))
    cache = discovery.Cache()
    discovery.discover((Source(path=str(path)),), cache)
    assert len(cache.files) == 0
    stamp = path.stat().st_ctime_ns - 2 * signatures.RECENT_NS
    assert path.stat().st_ctime_ns > stamp  # ctime cannot be set back
    os.utime(path, ns=(stamp, stamp))
    discovery.discover((Source(path=str(path)),), cache)
    assert len(cache.files) == 0


def test_certbot_renewal_is_seen_through_the_cache(tmp_path: Path, ca: testca.CA) -> None:
    root = tmp_path / "letsencrypt"
    live, archive = root / "live" / "site", root / "archive" / "site"
    old, new = ca.issue("site.example"), ca.issue("site.example")
    for version, issued in ((1, old), (2, new)):
        testca.write(archive / f"cert{version}.pem", _pem(issued))
        testca.write(archive / f"chain{version}.pem", _pem(ca))
        testca.write(archive / f"fullchain{version}.pem", _pem(issued), _pem(ca))
    live.mkdir(parents=True)
    for kind in ("cert", "chain", "fullchain"):
        (live / f"{kind}.pem").symlink_to(f"../../archive/site/{kind}1.pem")
    cache = discovery.Cache()
    (first,) = discovery.discover((Source(path=str(root)),), cache)
    assert first.chain and first.chain.fingerprint == _fingerprint(old.cert)
    for kind in ("cert", "chain", "fullchain"):  # what certbot does on renewal
        tmp = live / f"{kind}.tmp"
        tmp.symlink_to(f"../../archive/site/{kind}2.pem")
        tmp.replace(live / f"{kind}.pem")
    (second,) = discovery.discover((Source(path=str(root)),), cache)
    assert second.chain and second.chain.fingerprint == _fingerprint(new.cert)


def test_a_lineage_names_the_file_it_cannot_read(tmp_path: Path, ca: testca.CA) -> None:
    live = tmp_path / "live" / "site"
    testca.write(live / "cert.pem", _pem(ca.issue("site.example")))
    testca.write(live / "chain.pem", _pem(ca))
    (live / "fullchain.pem").symlink_to("../../archive/site/fullchain3.pem")  # cleaned up
    (found,) = _found(live)
    assert found.path == str(live / "cert.pem")
    assert found.error == f"{live / 'fullchain.pem'}: cannot read (No such file or directory)"


def test_directory_scan_skips_non_certificates_quietly(
    tmp_path: Path, ca: testca.CA, leaf: testca.Issued
) -> None:
    testca.write(tmp_path / "site.pem", _pem(leaf), _pem(ca))
    testca.write(
        tmp_path / "dhparam.pem",
        b"-----BEGIN DH PARAMETERS-----\nMAA=\n-----END DH PARAMETERS-----\n",
    )
    testca.write(tmp_path / "ca-bundle.crt", _pem(ca))
    testca.write(tmp_path / "notes.txt", b"not even a candidate")
    assert [f.name for f in _found(tmp_path)] == ["site"]


def test_symlink_loop_and_dangling_link(tmp_path: Path, ca: testca.CA, leaf: testca.Issued) -> None:
    testca.write(tmp_path / "sub" / "site.pem", _pem(leaf), _pem(ca))
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)
    (tmp_path / "gone.pem").symlink_to(tmp_path / "nowhere.pem")
    found = {f.name: f for f in _found(tmp_path)}
    assert set(found) == {"site", "gone"}
    assert found["site"].chain is not None
    assert "cannot read" in (found["gone"].error or "")


def test_glob_with_double_star(tmp_path: Path, ca: testca.CA, leaf: testca.Issued) -> None:
    testca.write(tmp_path / "a" / "b" / "site.pem", _pem(leaf), _pem(ca))
    assert [f.name for f in _found(tmp_path / "**" / "*.pem")] == ["site"]


def test_private_key_block_is_skipped(tmp_path: Path, ca: testca.CA, leaf: testca.Issued) -> None:
    path = testca.write(tmp_path / "hap.pem", leaf.key_pem(), _pem(leaf), _pem(ca))
    (found,) = _found(path)
    assert found.chain is not None and found.chain.fingerprint == _fingerprint(leaf.cert)


def test_expired_leaf_is_still_found(tmp_path: Path, ca: testca.CA) -> None:
    now = datetime.now(UTC)
    old = ca.issue(
        "old.example", not_before=now - timedelta(days=9), not_after=now - timedelta(days=1)
    )
    (found,) = _found(testca.write(tmp_path / "old.pem", _pem(old), _pem(ca)))
    assert found.chain is not None and found.chain.not_after < now


@pytest.mark.parametrize("form", ["der", "pem", "pkcs7-der", "pkcs7-pem"])
def test_issuer_bytes_in_every_form(ca: testca.CA, form: str) -> None:
    data = {
        "der": lambda: ca.cert.public_bytes(Encoding.DER),
        "pem": lambda: ca.cert.public_bytes(Encoding.PEM),
        "pkcs7-der": lambda: pkcs7.serialize_certificates([ca.cert], Encoding.DER),
        "pkcs7-pem": lambda: pkcs7.serialize_certificates([ca.cert], Encoding.PEM),
    }[form]()
    assert certs.parse_issuer_bytes(data, "aia") == ca.cert


def test_issuer_bytes_garbage() -> None:
    with pytest.raises(CertificateError, match="DER, PEM or PKCS#7"):
        certs.parse_issuer_bytes(b"<html>", "http://ca.example/issuer.crt")


def test_must_staple_and_urls(ca: testca.CA) -> None:
    ms = ca.issue("ms.example", must_staple=True, ocsp_urls=["http://a/", "http://b/"])
    chain = certs.build_chain([ms.cert, ca.cert], "ms")
    assert chain.must_staple
    assert chain.ocsp_urls == ("http://a/", "http://b/")


def _age_atime(path: Path) -> int:
    stat = path.stat()
    os.utime(path, ns=(stat.st_mtime_ns - 10**9, stat.st_mtime_ns))
    return path.stat().st_atime_ns


@pytest.mark.parametrize(
    "key_name", ["privkey.pem", "rsa-privkey.pem", "site.key", "site-key.pem", "site.key.pem"]
)
def test_key_file_is_never_opened(
    tmp_path: Path, ca: testca.CA, leaf: testca.Issued, key_name: str
) -> None:
    control = testca.write(tmp_path / "control.txt", b"x")
    before = _age_atime(control)
    control.read_bytes()
    if control.stat().st_atime_ns == before:
        pytest.skip("this filesystem does not record reads in access times")
    testca.write(tmp_path / "site.pem", _pem(leaf), _pem(ca))
    key = testca.write(tmp_path / key_name, leaf.key_pem())
    atime = _age_atime(key)
    assert [f.name for f in _found(tmp_path)] == ["site"]
    assert key.stat().st_atime_ns == atime  # a read would have moved it


def test_names_are_read_as_the_certificate_encodes_them() -> None:
    ca = testca.CA("Names CA")
    leaf = ca.issue("names.example").cert
    for cert in (leaf, ca.cert):
        assert certs.raw_names(cert) == (cert.issuer.public_bytes(), cert.subject.public_bytes())
    assert certs.raw_names(leaf)[0] == certs.raw_names(ca.cert)[1]


def test_the_leaf_fingerprint_is_read_as_a_scan_reads(tmp_path: Path, ca: testca.CA) -> None:
    """The daemon's renewal check: a FIFO planted in a certificate's place is refused at
    once (a plain open would wait for a writer), junk gives None, a bundle its leaf."""
    leaf = ca.issue("fp.example")
    bundle = testca.write(tmp_path / "fp.pem", _pem(leaf), _pem(ca))
    chain = certs.build_chain(certs.parse_certificates(bundle.read_bytes(), "fp"), "fp")
    assert discovery.leaf_fingerprint(str(bundle)) == chain.fingerprint
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    assert discovery.leaf_fingerprint(str(fifo)) is None
    (tmp_path / "junk.pem").write_bytes(b"junk")
    assert discovery.leaf_fingerprint(str(tmp_path / "junk.pem")) is None
    assert discovery.leaf_fingerprint(str(tmp_path / "missing.pem")) is None


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
