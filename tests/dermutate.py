"""Structurally valid DER with one inner field changed, signed again: the inputs that reach
past the parser and the signature into the fields cryptography reads lazily.

A DER value is read into a tree of (tag, children | value) nodes; one primitive value is
replaced and every length above it is recomputed.  ``resign`` puts a new signature over a
changed ``tbs`` part (a certificate's tbsCertificate, a response's tbsResponseData) with
the real key, so validation gets as far as the changed field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from stapled.demo.ca import PrivateKey


@dataclass
class Node:
    tag: bytes
    value: bytes = b""
    children: list[Node] = field(default_factory=list)

    @property
    def constructed(self) -> bool:
        return bool(self.tag[0] & 0x20)


def parse(der: bytes) -> Node:
    node, rest = _one(der)
    assert not rest, "trailing bytes"
    return node


def _one(data: bytes) -> tuple[Node, bytes]:
    i = 1
    if data[0] & 0x1F == 0x1F:  # high tag number
        while data[i] & 0x80:
            i += 1
        i += 1
    tag = data[:i]
    first = data[i]
    i += 1
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(data[i : i + count], "big")
        i += count
    else:
        length = first
    body, rest = data[i : i + length], data[i + length :]
    node = Node(tag)
    if node.constructed:
        while body:
            child, body = _one(body)
            node.children.append(child)
    else:
        node.value = body
    return node, rest


def encode(node: Node) -> bytes:
    body = b"".join(encode(c) for c in node.children) if node.constructed else node.value
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return node.tag + length + body


def primitives(node: Node) -> list[Node]:
    """Every primitive node below ``node``, in document order."""
    if not node.constructed:
        return [node]
    return [p for c in node.children for p in primitives(c)]


def mutated(tbs: bytes, index: int, value: bytes) -> bytes:
    """``tbs`` with its ``index``-th primitive (modulo their count) holding ``value``."""
    tree = parse(tbs)
    found = primitives(tree)
    found[index % len(found)].value = value
    return encode(tree)


def resign(signed: bytes, change: bytes, key: PrivateKey, *, path: tuple[int, ...] = ()) -> bytes:
    """``signed`` (SEQUENCE { tbs, algorithm, BIT STRING }) at ``path`` below the top, with
    its tbs replaced by ``change`` and signed again by ``key`` (ECDSA with SHA-256, what
    the test CA uses)."""
    assert isinstance(key, ec.EllipticCurvePrivateKey), "the test CA signs with ECDSA"
    top = parse(signed)
    target = top
    for step in path:
        target = target.children[step]
    target.children[0] = parse(change)
    signature = key.sign(change, ec.ECDSA(hashes.SHA256()))
    target.children[2] = Node(b"\x03", b"\x00" + signature)
    return encode(top)


def part(signed: bytes, path: tuple[int, ...]) -> bytes:
    """The DER of the node at ``path`` below the top."""
    node = parse(signed)
    for step in path:
        node = node.children[step]
    return encode(node)
