"""Proxies and the CA bundle, from the environment, as requests reads them.

``http_proxy``, ``https_proxy`` and ``all_proxy`` (either case) choose a proxy, and
``no_proxy`` exempts hosts, domains and CIDR ranges.  requests' own rules do the reading,
so an operator's environment means here what it means to curl-like tools; requests is
imported only when a proxy variable is set, since most hosts have none and the import
costs a tenth of a second at every start.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

import certifi

from ..core.urls import redacted

_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
_SCHEMES = ("http", "https")


class ProxyError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Proxy:
    url: SplitResult
    authorization: str | None  # the Proxy-Authorization value, from the URL's user:password

    @property
    def shown(self) -> str:
        """The proxy as it may be logged: without its password."""
        return redacted(self.url.geturl())


def proxy_for(url: str, environ: Mapping[str, str] = os.environ) -> Proxy | None:
    """The proxy for ``url``, or None to go direct.  Raises ProxyError for a bad setting."""
    if not any(environ.get(v) or environ.get(v.upper()) for v in _VARIABLES):
        return None
    import requests.utils

    choice = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    if not choice:
        return None
    try:
        parts = urlsplit(choice if "://" in choice else f"http://{choice}")
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as e:
        raise ProxyError(f"the proxy setting in the environment is not a URL ({e})") from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ProxyError(f"the proxy {redacted(parts.geturl())} is not an http or https proxy")
    authorization = None
    if parts.username is not None:
        user_password = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_password.encode()).decode()
    return Proxy(parts, authorization)


def ca_bundle(environ: Mapping[str, str] = os.environ) -> str:
    """The CA bundle https is verified against: requests' variables, else certifi's."""
    return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or certifi.where()
