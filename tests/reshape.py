"""OCSP responses cryptography's builder cannot make, for tests: several SingleResponses,
single and response extensions of any OID, CRL reasons without a name.

A response signed by the test CA is taken apart with asn1crypto, changed, and signed
again with the same key, so every fixture carries a real, valid signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asn1crypto import core, ocsp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from stapled.demo.ca import Issued

Change = Callable[[Any], None]


def reshape(der: bytes, signer: Issued, change: Change) -> bytes:
    """``der`` with ``change`` applied to its ResponseData, signed again by ``signer``."""
    response = ocsp.OCSPResponse.load(der)
    basic = response["response_bytes"]["response"].parsed
    data = basic["tbs_response_data"]
    change(data)
    tbs = data.dump()
    key = signer.key
    assert isinstance(key, ec.EllipticCurvePrivateKey), "the test CA signs with ECDSA"
    basic["signature"] = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    response["response_bytes"]["response"] = ocsp.BasicOCSPResponse.load(basic.dump())
    return bytes(response.dump())


def _extension(oid: str, critical: bool, value: bytes = b"\x05\x00") -> dict[str, Any]:
    return {"extn_id": oid, "critical": critical, "extn_value": core.ParsableOctetString(value)}


def single_extension(oid: str, *, critical: bool, value: bytes = b"\x05\x00") -> Change:
    """Add an extension of ``oid`` (``value``: its DER) to the first SingleResponse."""

    def change(data: Any) -> None:
        single = data["responses"][0]
        existing = list(single["single_extensions"]) if single["single_extensions"] else []
        single["single_extensions"] = [*existing, _extension(oid, critical, value)]

    return change


def response_extension(oid: str, *, critical: bool, value: bytes = b"\x05\x00") -> Change:
    """Add an extension of ``oid`` (``value``: its DER) to the ResponseData."""

    def change(data: Any) -> None:
        existing = list(data["response_extensions"]) if data["response_extensions"] else []
        data["response_extensions"] = [*existing, _extension(oid, critical, value)]

    return change


def _status(status: str, when: Any, reason: str | None = None) -> ocsp.CertStatus:
    if status == "revoked":
        info = ocsp.RevokedInfo({"revocation_time": when, "revocation_reason": reason})
        return ocsp.CertStatus(name="revoked", value=info)
    return ocsp.CertStatus(name=status, value=core.Null())


def twin(status: str, reason: str | None = None) -> Change:
    """Add a second SingleResponse for the same CertID, saying ``status``."""

    def change(data: Any) -> None:
        first = data["responses"][0]
        second = ocsp.SingleResponse(
            {
                "cert_id": ocsp.CertId.load(first["cert_id"].dump()),
                "cert_status": _status(status, first["this_update"].native, reason),
                "this_update": first["this_update"].native,
                "next_update": first["next_update"].native,
            }
        )
        data["responses"] = [first, second]

    return change


def reason_code(code: int) -> Change:
    """Make the first SingleResponse say revoked with CRLReason ``code``, named or not.

    asn1crypto knows only the named reasons, so the RevokedInfo is written as DER.
    """

    def change(data: Any) -> None:
        single = data["responses"][0]
        when = core.GeneralizedTime(single["this_update"].native).dump()
        reason = bytes([0xA0, 0x03, 0x0A, 0x01, code])
        body = when + reason
        info = ocsp.RevokedInfo.load(bytes([0x30, len(body)]) + body)
        single["cert_status"] = ocsp.CertStatus(name="revoked", value=info)

    return change
