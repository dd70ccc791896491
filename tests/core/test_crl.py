"""CRLs checked as values: real lists signed by the test CA (cryptography's builder, and
`openssl ca -gencrl`), each rule with a case, and arbitrary or mutated bytes never more
than stapled's own error."""

from __future__ import annotations

import contextlib
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from stapled.core import crl
from stapled.demo.ca import CA, Issued
from stapled.errors import InvalidCrlError
from tests import dermutate

from ..conftest import require_binary

# cryptography warns about some odd fields it can still read (names of an illegal length);
# stapled's command line logs those warnings at debug level.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
NOW = datetime.now(UTC).replace(microsecond=0)
URL = "http://crl.example/shard-1.crl"
THE_CA = CA("crl CA")
STRANGER = CA("stranger CA")
LEAF = THE_CA.issue("c.example", ocsp_urls=[])
OTHER = THE_CA.issue("d.example", ocsp_urls=[])


def build(
    signer: CA = THE_CA,
    *,
    revoked: dict[int, x509.ReasonFlags | None] | None = None,
    this_update: datetime = NOW - timedelta(hours=1),
    next_update: datetime = NOW + timedelta(days=7),
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    entry_extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    issuer: x509.Name | None = None,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer or signer.cert.subject)
        .last_update(this_update)
    )
    builder = builder.next_update(next_update)
    for serial, reason in (revoked or {}).items():
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(NOW - timedelta(hours=2))
        )
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        for ext, critical in entry_extensions:
            entry = entry.add_extension(ext, critical=critical)
        builder = builder.add_revoked_certificate(entry.build())
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    key = signer.issued.key
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def _without_next_update(der: bytes) -> bytes:
    """cryptography's builder always writes nextUpdate (optional in RFC 5280): take it out
    of the TBSCertList { version, signature, issuer, thisUpdate, nextUpdate, ... } and
    sign again."""
    tbs = dermutate.parse(dermutate.part(der, (0,)))
    del tbs.children[4]
    return dermutate.resign(der, dermutate.encode(tbs), THE_CA.issued.key)


def check(data: bytes, *, url: str = URL, serials: tuple[int, ...] | None = None) -> crl.Crl:
    wanted = serials if serials is not None else (LEAF.cert.serial_number, OTHER.cert.serial_number)
    return crl.check(data, url, THE_CA.cert, wanted, NOW)


def test_a_listed_serial_is_revoked_with_its_reason_and_the_rest_good() -> None:
    found = check(build(revoked={LEAF.cert.serial_number: x509.ReasonFlags.key_compromise}))
    entry = found.verdict(LEAF.cert.serial_number)
    assert entry is not None and entry.reason == "keyCompromise"
    assert found.verdict(OTHER.cert.serial_number) is None
    assert found.next_update == NOW + timedelta(days=7)


def test_an_entry_without_a_reason_is_unspecified() -> None:
    found = check(build(revoked={LEAF.cert.serial_number: None}))
    entry = found.verdict(LEAF.cert.serial_number)
    assert entry is not None and entry.reason == "unspecified"


def test_only_the_serials_asked_about_are_kept() -> None:
    many = dict.fromkeys(range(1, 2000)) | {LEAF.cert.serial_number: None}
    found = check(build(revoked=many), serials=(LEAF.cert.serial_number,))
    assert set(found.revoked) == {LEAF.cert.serial_number}


def _idp(full_name: list[str] | None, **flags: bool) -> x509.IssuingDistributionPoint:
    names = [x509.UniformResourceIdentifier(u) for u in full_name] if full_name else None
    return x509.IssuingDistributionPoint(
        full_name=names,
        relative_name=None,
        only_contains_user_certs=flags.get("user", False),
        only_contains_ca_certs=flags.get("ca", False),
        only_some_reasons=flags.get("reasons") and frozenset({x509.ReasonFlags.key_compromise}),  # type: ignore[arg-type]
        indirect_crl=flags.get("indirect", False),
        only_contains_attribute_certs=False,
    )


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"<html>not found</html>", "not a CRL"),
        (b"\x30\x03\x02\x01\x00", "not a CRL"),
        (build(STRANGER), "another CA"),
        (build(STRANGER, issuer=THE_CA.cert.subject), "signature does not verify"),
        (build(this_update=NOW + timedelta(hours=1)), "in the future"),
        (
            build(this_update=NOW - timedelta(days=9), next_update=NOW - timedelta(days=1)),
            "expired",
        ),
        (_without_next_update(build()), "no nextUpdate"),
        (build(extensions=[(x509.DeltaCRLIndicator(7), True)]), "delta CRL"),
        (build(extensions=[(_idp([URL], indirect=True), True)]), "indirect"),
        (
            build(extensions=[(_idp(["http://crl.example/shard-2.crl"]), True)]),
            "another distribution point",
        ),
        (build(extensions=[(_idp([URL], ca=True), True)]), "CA or attribute"),
        (build(extensions=[(_idp([URL], reasons=True), True)]), "some revocation reasons"),
        (
            build(
                extensions=[
                    (
                        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"),
                        True,
                    )
                ]
            ),
            "unrecognised critical extension 1.2.3.4",
        ),
        (
            build(
                revoked={LEAF.cert.serial_number: None},
                entry_extensions=[
                    (
                        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.5"), b"\x05\x00"),
                        True,
                    )
                ],
            ),
            "unrecognised critical extension 1.2.3.5",
        ),
    ],
    ids=[
        "empty",
        "html",
        "garbage-der",
        "stranger",
        "stranger-key-our-name",
        "future",
        "expired",
        "no-next-update",
        "delta",
        "indirect",
        "other-shard",
        "ca-only",
        "some-reasons",
        "critical-extension",
        "critical-entry-extension",
    ],
)
def test_what_must_not_decide_is_refused_naming_the_url(data: bytes, words: str) -> None:
    with pytest.raises(InvalidCrlError) as refused:
        check(data)
    assert words in str(refused.value) and URL in str(refused.value)


def test_a_partition_covering_this_url_and_non_critical_extensions_are_fine() -> None:
    data = build(
        revoked={LEAF.cert.serial_number: x509.ReasonFlags.superseded},
        extensions=[
            (_idp([URL], user=True), True),
            (x509.CRLNumber(42), False),
            (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.6"), b"\x05\x00"), False),
        ],
    )
    entry = check(data).verdict(LEAF.cert.serial_number)
    assert entry is not None and entry.reason == "superseded"


def test_pem_is_read_too() -> None:
    der = build(revoked={LEAF.cert.serial_number: None})
    pem = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
    assert check(pem).verdict(LEAF.cert.serial_number) is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_a_crl_or_stapled_s_error(data: bytes) -> None:
    with contextlib.suppress(InvalidCrlError):
        check(data)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, 10_000), value=st.binary(max_size=40))
def test_a_changed_field_signed_again_is_a_crl_or_stapled_s_error(index: int, value: bytes) -> None:
    der = build(
        revoked={LEAF.cert.serial_number: x509.ReasonFlags.key_compromise},
        extensions=[(_idp([URL]), True), (x509.CRLNumber(1), False)],
    )
    tbs = dermutate.part(der, (0,))
    changed = dermutate.resign(der, dermutate.mutated(tbs, index, value), THE_CA.issued.key)
    with contextlib.suppress(InvalidCrlError):
        check(changed)


def test_a_crl_made_by_openssl_ca(tmp_path: Path) -> None:
    """The real CA tool's output: `openssl ca -revoke` then `-gencrl`."""
    openssl = require_binary("openssl")
    ca = CA("openssl crl CA", key_type="rsa")
    leaf = ca.issue("o.example", ocsp_urls=[])
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "ca.key").write_bytes(_key_pem(ca.issued))
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem())
    (tmp_path / "index.txt").write_text("")
    (tmp_path / "index.txt.attr").write_text("unique_subject = no\n")
    (tmp_path / "crlnumber").write_text("01\n")
    (tmp_path / "ca.cnf").write_text(
        "[ca]\ndefault_ca = test\n[test]\n"
        f"dir = {tmp_path}\ndatabase = $dir/index.txt\ncrlnumber = $dir/crlnumber\n"
        "certificate = $dir/ca.pem\nprivate_key = $dir/ca.key\n"
        "default_md = sha256\ndefault_crl_days = 7\n"
    )
    run = lambda *a: subprocess.run([openssl, *a], check=True, capture_output=True, cwd=tmp_path)  # noqa: E731
    run("ca", "-config", "ca.cnf", "-revoke", "leaf.pem", "-crl_reason", "keyCompromise")
    run("ca", "-config", "ca.cnf", "-gencrl", "-out", "list.pem")
    data = (tmp_path / "list.pem").read_bytes()
    found = crl.check(data, URL, ca.cert, [leaf.cert.serial_number, 1], NOW + timedelta(minutes=1))
    entry = found.verdict(leaf.cert.serial_number)
    assert entry is not None and entry.reason == "keyCompromise"
    assert found.verdict(1) is None


def _key_pem(issued: Issued) -> bytes:
    return issued.key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_the_issuer_name_is_compared_as_encoded() -> None:
    # The same text in another string type is another name to RFC 5280's byte comparison
    # only where the CA changed encodings; cryptography encodes CN as UTF8String, so a
    # PrintableString one with the same text differs in its bytes.
    printable = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "crl CA", x509.name._ASN1Type.PrintableString)]
    )
    assert printable.public_bytes() != THE_CA.cert.subject.public_bytes()
    with pytest.raises(InvalidCrlError, match="another CA"):
        check(build(issuer=printable))


def test_a_certificate_s_distribution_points_are_read_in_order() -> None:
    from stapled.core import certs

    urls = ["http://crl.example/a.crl", "http://crl.example/b.crl"]
    leaf = THE_CA.issue("p.example", crl_urls=urls)
    chain = certs.build_chain([leaf.cert, THE_CA.cert], "p.pem")
    assert chain.crl_urls == tuple(urls) and chain.ocsp_urls == ()
    # And a CRL at the first one decides for it.
    data = build(revoked={leaf.cert.serial_number: x509.ReasonFlags.cessation_of_operation})
    entry = crl.check(data, chain.crl_urls[0], THE_CA.cert, [chain.serial], NOW).verdict(
        chain.serial
    )
    assert entry is not None and entry.reason == "cessationOfOperation"
