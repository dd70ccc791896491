"""Just enough DER to read what cryptography does not expose: the extensions of each
SingleResponse, every CRLReason number, and names as a certificate encodes them.

Only ever run over bytes cryptography has already parsed strictly, and each reader
raises ValueError for anything unexpected, which callers turn into their own error.
"""

from __future__ import annotations

from dataclasses import dataclass

SEQUENCE = 0x30
OID = 0x06
BOOLEAN = 0x01
ENUMERATED = 0x0A


def tlv(der: bytes, offset: int, tag: int | None = None) -> tuple[int, int, int]:
    """The DER element at ``offset``: (tag, content start, content end).

    Raises ValueError when the tag is not ``tag`` (if given) or the element is cut short.
    """
    if offset + 2 > len(der):
        raise ValueError(f"DER ends at {offset}")
    found = der[offset]
    if tag is not None and found != tag:
        raise ValueError(f"expected DER tag {tag:#x} at {offset}, found {found:#x}")
    length = der[offset + 1]
    start = offset + 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError(f"unsupported DER length at {offset}")
        length = int.from_bytes(der[start : start + n], "big")
        start += n
    end = start + length
    if end > len(der):
        raise ValueError(f"DER element at {offset} runs past the end")
    return found, start, end


def children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The elements between ``start`` and ``end``: (tag, content start, content end)."""
    items = []
    offset = start
    while offset < end:
        item = tlv(der, offset)
        items.append(item)
        offset = item[2]
    return items


def oid_text(content: bytes) -> str:
    """An OBJECT IDENTIFIER's content octets in dotted form."""
    if not content:
        raise ValueError("empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or value:
        raise ValueError("an OBJECT IDENTIFIER cut short")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


@dataclass(frozen=True, slots=True)
class Extension:
    oid: str
    critical: bool


def extensions(der: bytes, start: int, end: int) -> list[Extension]:
    """The Extensions SEQUENCE whose contents span ``start:end``."""
    found = []
    for _, ext_start, ext_end in children(der, start, end):
        parts = children(der, ext_start, ext_end)
        if not parts or parts[0][0] != OID:
            raise ValueError("an extension without an OID")
        critical = False
        if len(parts) == 3 and parts[1][0] == BOOLEAN:
            if parts[1][2] - parts[1][1] != 1:
                raise ValueError("a BOOLEAN of other than one octet")
            critical = der[parts[1][1]] != 0
        found.append(Extension(oid_text(der[parts[0][1] : parts[0][2]]), critical))
    return found


@dataclass(frozen=True, slots=True)
class SingleFacts:
    """What a SingleResponse holds beyond cryptography's accessors."""

    extensions: tuple[Extension, ...]
    # The CRLReason number of a revoked answer, when it gives one.
    reason_code: int | None


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    extensions: tuple[Extension, ...]
    singles: tuple[SingleFacts, ...]


def response_data(tbs: bytes) -> ResponseFacts:
    """Read an OCSP ResponseData (RFC 6960 4.2.1): its and each SingleResponse's extensions,
    and each revoked answer's CRLReason.  Raises ValueError."""
    _, start, end = tlv(tbs, 0, SEQUENCE)
    items = children(tbs, start, end)
    position = 1 if items and items[0][0] == 0xA0 else 0  # version, when present
    position += 2  # responderID, producedAt
    if position >= len(items) or items[position][0] != SEQUENCE:
        raise ValueError("no responses in the ResponseData")
    _, resp_start, resp_end = items[position]
    singles = tuple(_single(tbs, s, e) for _, s, e in children(tbs, resp_start, resp_end))
    top: tuple[Extension, ...] = ()
    for tag, s, _ in items[position + 1 :]:
        if tag == 0xA1:
            _, ext_start, ext_end = tlv(tbs, s, SEQUENCE)
            top = tuple(extensions(tbs, ext_start, ext_end))
    return ResponseFacts(top, singles)


def _single(der: bytes, start: int, end: int) -> SingleFacts:
    parts = children(der, start, end)
    if len(parts) < 3:
        raise ValueError("a SingleResponse with fewer than three parts")
    reason = None
    status_tag, status_start, status_end = parts[1]
    if status_tag == 0xA1:  # revoked [1] IMPLICIT RevokedInfo
        for tag, s, _ in children(der, status_start, status_end):
            if tag == 0xA0:  # revocationReason [0] EXPLICIT CRLReason
                _, value_start, value_end = tlv(der, s, ENUMERATED)
                reason = int.from_bytes(der[value_start:value_end], "big")
    found: tuple[Extension, ...] = ()
    for tag, s, _ in parts[3:]:
        if tag == 0xA1:  # singleExtensions [1] EXPLICIT
            _, ext_start, ext_end = tlv(der, s, SEQUENCE)
            found = tuple(extensions(der, ext_start, ext_end))
    return SingleFacts(found, reason)
