"""The one exception tree of stapled.

::

    StapledError                      anything stapled reports to an operator
    ├── UsageError                    bad command line                      (exit 64)
    ├── ConfigError(path, key)        bad configuration file or value       (exit 78)
    ├── CertificateError(path)        a certificate file that cannot be used
    │   └── MissingInputError(path)   a path named on the command line is not there (exit 66)
    ├── FetchError(url)               network/HTTP failure talking to a responder
    ├── OCSPStatusError(url)          responder answered an unsuccessful responseStatus
    ├── InvalidResponseError          an OCSP response that fails validation
    ├── InvalidRequestError           an OCSP request to the local responder that is unusable
    ├── InvalidCrlError(url)          a certificate revocation list that fails validation
    ├── StoreError(path)              a staple or state file cannot be read or written
    ├── ListenError(address)          an address to listen on cannot be bound   (exit 69)
    │   └── BusyError(path)           another stapled holds the output directory  (exit 75)
    ├── ReloadError(argv)             config test, reload command or HAProxy push failed
    └── FleetError(url)               the fleet store is unreachable, slow or refusing

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
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
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


class InvalidCrlError(StapledError):
    """A certificate revocation list that must not decide anything."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class MissingInputError(CertificateError):
    """A file or path named on the command line is not there (or holds no certificate)."""

    exit_code = EX_NOINPUT


class FetchError(StapledError):
    """Talking to an OCSP responder (or a caIssuers URL) failed."""

    def __init__(
        self,
        url: str,
        reason: str,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        self.url = url
        self.reason = reason
        # Seconds the responder asked us to wait (HTTP Retry-After), when it said so.
        self.retry_after = retry_after
        # The HTTP status of an answer other than 200, when there was an answer.
        self.status = status
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


class InvalidRequestError(StapledError):
    """An OCSP request sent to stapled's local responder cannot be answered."""

    exit_code = EX_DATAERR

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid OCSP request: {reason}")


class StoreError(StapledError):
    """A staple or state file cannot be read or written."""

    exit_code = EX_CANTCREAT

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ListenError(StapledError):
    """An address stapled is told to listen on (the metrics endpoint) cannot be bound."""

    exit_code = EX_UNAVAILABLE

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"{address}: {reason}")


class BusyError(StoreError):
    """Another stapled process kept the output directory's lock past the wait."""

    exit_code = EX_TEMPFAIL


class ReloadError(StapledError):
    """Telling the web server to pick up new staples failed.

    ``what`` says which step: the reload command, the configuration test run before it,
    or a push over HAProxy's admin socket.
    """

    def __init__(
        self, argv: Sequence[str], reason: str, output: str = "", what: str = "reload command"
    ) -> None:
        self.argv = list(argv)
        self.reason = reason
        self.what = what
        # The tail of what the command printed: enough to diagnose, never a flood.
        self.output = output[-2000:]
        line = _telling_line(self.output)
        detail = f": {line}" if line else ""
        super().__init__(f"{what} '{' '.join(self.argv)}' {reason}{detail}")


class FleetError(StapledError):
    """The fleet store cannot be used now.  ``url`` never holds a password."""

    exit_code = EX_TEMPFAIL

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"the fleet store {url} {reason}")


def _telling_line(output: str) -> str:
    """The line of a command's output that says what went wrong.

    ``nginx -t`` ends with "test failed"; the line naming the file and the problem is
    the one marked [emerg] (or an apache/haproxy error line) before it.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("[emerg]", "[alert]", "[ALERT]", "AH0", "error"):
        for line in lines:
            if marker in line:
                return line
    return lines[-1] if lines else ""
