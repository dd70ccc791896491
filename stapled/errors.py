"""The one exception tree of stapled.

::

    StapledError                      anything stapled reports to an operator
    ├── UsageError                    bad command line                      (exit 64)
    ├── ConfigError(path, key)        bad configuration file or value       (exit 78)
    ├── CertificateError(path)        a certificate file that cannot be used
    ├── FetchError(url)               network/HTTP failure talking to a responder
    ├── OCSPStatusError(url)          responder answered an unsuccessful responseStatus
    ├── InvalidResponseError          an OCSP response that fails validation
    ├── StoreError(path)              a staple or state file cannot be read or written
    └── ReloadError(argv)             the web server's reload command failed

Every message is one sentence an operator can act on, built from the fields, so the CLI
prints ``str(error)`` and nothing else.  Foreign exceptions are wrapped with
``raise ... from`` at the module that meets them.
"""

from __future__ import annotations

from collections.abc import Sequence

# sysexits(3) codes: operators and monitoring already know them.
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_CONFIG = 78


class StapledError(Exception):
    """Root of every error stapled raises on purpose."""

    exit_code = EX_SOFTWARE


class UsageError(StapledError):
    """The command line does not make sense."""

    exit_code = EX_USAGE


class ConfigError(StapledError):
    """A configuration file or one of its values is unusable."""

    exit_code = EX_CONFIG

    def __init__(self, path: str, reason: str, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: key '{key}'" if key else path
        super().__init__(f"{where}: {reason}")


class CertificateError(StapledError):
    """A certificate file cannot be read, parsed or used."""

    exit_code = EX_DATAERR

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class FetchError(StapledError):
    """Talking to an OCSP responder (or a caIssuers URL) failed."""

    def __init__(self, url: str, reason: str, retry_after: float | None = None) -> None:
        self.url = url
        self.reason = reason
        # Seconds the responder asked us to wait (HTTP Retry-After), when it said so.
        self.retry_after = retry_after
        super().__init__(f"{url}: {reason}")


class OCSPStatusError(StapledError):
    """The responder answered with an unsigned, unsuccessful responseStatus.

    RFC 6960 section 2.3: these responses carry no signature, so they are never
    published; they are a failed fetch to be retried later.
    """

    def __init__(self, status: str, url: str | None = None) -> None:
        self.status = status
        self.url = url
        prefix = f"{url}: " if url else ""
        super().__init__(f"{prefix}responder answered '{status}' instead of a signed response")

    def at(self, url: str) -> OCSPStatusError:
        """The same error, naming the URL the response came from."""
        return OCSPStatusError(self.status, url)


class InvalidResponseError(StapledError):
    """An OCSP response failed validation and must not be published."""

    exit_code = EX_DATAERR

    def __init__(self, reason: str, url: str | None = None) -> None:
        self.reason = reason
        self.url = url
        prefix = f"{url}: " if url else ""
        super().__init__(f"{prefix}invalid OCSP response: {reason}")

    def at(self, url: str) -> InvalidResponseError:
        """The same error, naming the URL the response came from."""
        return InvalidResponseError(self.reason, url)


class StoreError(StapledError):
    """A staple or state file cannot be read or written."""

    exit_code = EX_CANTCREAT

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ReloadError(StapledError):
    """The command that tells the web server to pick up new staples failed."""

    def __init__(self, argv: Sequence[str], reason: str, output: str = "") -> None:
        self.argv = list(argv)
        self.reason = reason
        # The tail of what the command printed: enough to diagnose, never a flood.
        self.output = output[-2000:]
        detail = f": {self.output.strip().splitlines()[-1]}" if self.output.strip() else ""
        super().__init__(f"reload command '{' '.join(self.argv)}' {reason}{detail}")
