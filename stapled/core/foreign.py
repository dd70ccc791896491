"""What reading an outside certificate, response or name through cryptography can raise,
and plain words for it.

cryptography parses lazily: loading checks the outer structure, and a field (an
extension, a key, a name) is parsed when it is first read, so these come long after the
bytes were loaded.  Callers that read fields of outside objects catch ``READ_ERRORS`` and
raise their own error with :func:`plain`.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

READ_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    OverflowError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)

# The Rust parser's error kinds (asn1 crate), in words an operator can read.
_KINDS = {
    "ShortData": "truncated",
    "ExtraData": "trailing bytes",
    "InvalidLength": "a bad length",
    "InvalidTag": "a bad tag",
    "UnexpectedTag": "an unexpected tag",
    "InvalidValue": "an invalid value",
    "InvalidSetOrdering": "a SET out of order",
    "EncodedDefault": "an encoded default value",
    "OidTooLong": "an OID too long",
    "IntegerOverflow": "an integer too large",
    "UnknownDefinedBy": "an unknown algorithm",
}
_KIND = re.compile(r"kind: (\w+)")
_LOCATION = re.compile(r'"(\w+)::(\w+)"')


def plain(error: BaseException) -> str:
    """``error`` in one plain clause, without the parser's debug text."""
    text = str(error)
    if isinstance(error, x509.DuplicateExtension):
        return f"the extension {error.oid.dotted_string} appears twice"
    if isinstance(error, UnsupportedAlgorithm):
        return "an algorithm stapled does not support"
    kind = _KIND.search(text)
    if kind is None:
        return text.splitlines()[0] if text else type(error).__name__
    what = _KINDS.get(kind.group(1), "a malformed value")
    where = _LOCATION.search(text)
    field = f" in {where.group(1)}.{where.group(2)}" if where else ""
    return f"malformed DER ({what}{field})"
