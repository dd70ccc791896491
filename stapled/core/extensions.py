"""Which OCSP extensions and CRL reasons stapled understands (RFC 6960 4.4, RFC 5280).

A critical extension not understood makes a response unusable: RFC 5280 4.2, which
RFC 6960 4.4 relies on, and Firefox refuses such staples.
"""

from __future__ import annotations

from ..errors import InvalidResponseError
from . import der

# Extensions whose meaning stapled knows and may pass on unchanged, critical or not
# (RFC 6960 4.4): nonce, extended revoke; archive cutoff, CRL references, and the CRL
# entry extensions reasonCode and invalidityDate.  certificateIssuer is not among them:
# it would make the answer about another issuer's certificate.
RECOGNISED_RESPONSE_EXTENSIONS = frozenset({"1.3.6.1.5.5.7.48.1.2", "1.3.6.1.5.5.7.48.1.9"})
RECOGNISED_SINGLE_EXTENSIONS = frozenset(
    {"1.3.6.1.5.5.7.48.1.3", "1.3.6.1.5.5.7.48.1.6", "2.5.29.21", "2.5.29.24"}
)
# CRLReason names (RFC 5280 5.3.1); 7 is unused, and any other number is reported as one.
REASONS = {
    0: "unspecified",
    1: "keyCompromise",
    2: "cACompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
    6: "certificateHold",
    8: "removeFromCRL",
    9: "privilegeWithdrawn",
    10: "aACompromise",
}


def reason_name(code: int) -> str:
    """A CRLReason's name, or "reason N" for a number RFC 5280 does not name."""
    return REASONS.get(code, f"reason {code}")


def checked(tbs_response: bytes) -> der.ResponseFacts:
    """Extensions and CRLReasons of an OCSP ResponseData (DER); InvalidResponseError for
    any critical extension stapled does not recognise."""
    try:
        facts = der.response_data(tbs_response)
    except ValueError as e:
        raise InvalidResponseError(f"the ResponseData cannot be read ({e})") from None
    for ext in facts.extensions:
        if ext.critical and ext.oid not in RECOGNISED_RESPONSE_EXTENSIONS:
            raise InvalidResponseError(f"unrecognised critical response extension {ext.oid}")
    for single in facts.singles:
        for ext in single.extensions:
            if ext.critical and ext.oid not in RECOGNISED_SINGLE_EXTENSIONS:
                raise InvalidResponseError(f"unrecognised critical single extension {ext.oid}")
    return facts
