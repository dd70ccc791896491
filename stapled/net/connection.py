"""Connections to responders: opened to the first address of a host that accepts one
(TLS when asked), kept with their HTTP state, and their failures in words."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl

from .http11 import ClientConnection


class Connection:
    __slots__ = ("http", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = ClientConnection()
        self.reused = False

    def usable(self) -> bool:
        # An idle connection with bytes waiting (an end, or an answer to nothing) was
        # closed or spoiled; StreamReader shows its buffer only as this private field.
        buffered = getattr(self.reader, "_buffer", b"")
        return not (self.writer.is_closing() or self.reader.at_eof() or buffered)

    def abort(self) -> None:
        self.writer.transport.abort()


class Progress:
    """How far one fetch got, for the words of a timeout."""

    __slots__ = ("answered", "connected")

    def __init__(self) -> None:
        self.connected = self.answered = False


async def open_connection(host: str, port: int, tls: ssl.SSLContext | None) -> Connection:
    """A connection to the first of ``host``'s addresses that accepts one."""
    loop = asyncio.get_running_loop()
    try:
        addresses = [(ipaddress.ip_address(host).compressed, port)]
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [(str(info[4][0]), int(info[4][1])) for info in infos]
    first_error: OSError | None = None
    for address, address_port in addresses:
        try:
            reader, writer = await asyncio.open_connection(
                address,
                address_port,
                ssl=tls,
                server_hostname=host if tls else None,
            )
        except ssl.SSLError:
            raise
        except OSError as e:
            first_error = first_error or e
            continue
        return Connection(reader, writer)
    raise first_error or OSError(f"no address for {host}")


def in_words(error: OSError, progress: Progress) -> str:
    """What went wrong with the connection, in words."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError | BrokenPipeError):
        return "the connection was reset by the responder"
    if isinstance(error, socket.gaierror):
        return "cannot resolve the host name"
    detail = error.strerror or str(error) or type(error).__name__
    if not progress.connected:
        return f"cannot connect ({detail})"
    return f"request failed ({detail})"
