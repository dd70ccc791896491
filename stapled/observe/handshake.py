"""A TLS handshake asking for the certificate status: what a live server staples.

The only module that imports pyOpenSSL.  Each handshake uses a Context of its own, so no
session is resumed (a resumed session carries no staple).  Nothing is verified here: the
chain and the staple are handed back to be judged with stapled's own validation.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL

from ..errors import StapledError


class ProbeError(StapledError):
    """The endpoint cannot be reached or the handshake failed (Nagios UNKNOWN)."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"{target}: {reason}")


@dataclass(frozen=True, slots=True)
class Handshake:
    """The chain the server sent (leaf first) and the staple it sent (None: none)."""

    chain: list[x509.Certificate]
    staple: bytes | None


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) -> (host, port).  Raises ProbeError."""
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProbeError(target, "is not HOST:PORT with a port 1-65535")
    return host, int(port)


def handshake(target: str, servername: str, timeout: float) -> Handshake:
    """One TLS handshake with ``target``, SNI ``servername``, asking for the OCSP status.

    Raises ProbeError when the endpoint cannot be reached or the handshake fails.
    """
    host, port = split_target(target)
    stapled: list[bytes] = []

    def got_status(_conn: SSL.Connection, data: bytes, _arg: object) -> bool:
        stapled.append(bytes(data))
        return True  # judged afterwards: never abort the handshake here

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE)
    context.set_ocsp_client_callback(got_status)
    try:
        name = servername.encode("idna")
    except UnicodeError as e:
        raise ProbeError(target, f"{servername!r} is not a usable server name") from e
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ProbeError(target, f"cannot connect ({e.strerror or e})") from e
    try:
        # OpenSSL reads the descriptor itself: a blocking socket with kernel timeouts
        # (Python's own timeout would make it non-blocking under OpenSSL).
        sock.setblocking(True)
        limit = struct.pack("ll", int(timeout), int(timeout % 1 * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        conn = SSL.Connection(context, sock)
        conn.set_tlsext_host_name(name)
        conn.request_ocsp()
        conn.set_connect_state()
        try:
            conn.do_handshake()
        except (SSL.Error, OSError) as e:
            raise ProbeError(target, f"TLS handshake failed ({_reason(e)})") from e
        try:
            chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        except (SSL.Error, ValueError) as e:
            raise ProbeError(target, f"the server's certificates cannot be read ({e})") from e
        staple = stapled[0] if stapled and stapled[0] else None
        with contextlib.suppress(SSL.Error, OSError):
            conn.shutdown()  # the answer is in hand; a rude close changes nothing
        return Handshake(list(chain), staple)
    finally:
        sock.close()


def _reason(error: BaseException) -> str:
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        parts = [str(p[-1]) for p in error.args[0] if isinstance(p, tuple) and p]
        if parts:
            return "; ".join(parts)
    return str(error) or type(error).__name__
