"""Responder URLs from certificates and the configuration, checked before any use.

A certificate is outside input: its AIA URLs may be anything, and one that cannot be
parsed must be that certificate's error, never an exception in the middle of a pass.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

SCHEMES = ("http", "https")


def shown(url: str) -> str:
    """``url`` as a log line may hold it: quoted when it has spaces or control characters."""
    printable = url.isascii() and url.isprintable() and " " not in url
    return url if printable and url else repr(url)


# Thousands of certificates name the few URLs of their CA: each is checked once.
@functools.lru_cache(maxsize=4096)
def problem(url: str) -> str | None:
    """Why ``url`` cannot be asked over HTTP (a clause naming it), or None when it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
        host = parts.hostname
    except ValueError as e:
        return f"{shown(url)} is not a valid URL ({e})"
    if parts.scheme.lower() not in SCHEMES:
        return f"{shown(url)} is not http or https"
    if not host:
        return f"{shown(url)} names no host"
    if shown(url) != url:
        return f"{shown(url)} holds spaces, control or non-ASCII characters"
    return None


def host(url: str) -> str:
    """The ``host:port`` part of a URL that has no :func:`problem`."""
    return urlsplit(url).netloc


def redacted(url: str) -> str:
    """A URL as logs and ``status`` show it (a fleet store, a proxy): never with its password.

    Everything before the last "@" but the scheme is hidden (a password with unencoded
    "#", "?" or "@" in it fools URL parsers), and so is a ``password=`` parameter.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    base, mark, query = rest.partition("?")
    if mark:
        query = "&".join(
            f"{name}=***" if name.lower() == "password" else f"{name}{eq}{value}"
            for name, eq, value in (item.partition("=") for item in query.split("&"))
        )
    return scheme + sep + base + mark + query
