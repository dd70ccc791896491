"""The nginx include snippet stapled keeps beside each staple.  Pure: text in, text out.

nginx refuses to start or reload when an ``ssl_stapling_file`` is missing or unparsable,
and serves whatever that file holds for ever, expired or not (REFERENCE: nginx reads it
at configuration load only and checks nothing but the DER syntax).  So the stapling
lines of a server block are stapled's to write: the snippet names the staple file only
while a valid staple is in it, and otherwise turns stapling off, which nginx always
accepts.  Its text depends on the state alone (never a time), so it changes, and asks
for a reload, only when stapling is switched on or off.
"""

from __future__ import annotations

from .policy import State

SUFFIX = ".nginx.conf"

# Why stapling is on or off, by state; part of the text, so kept free of times and errors.
REASONS = {
    State.GOOD: "a valid staple saying good",
    State.REVOKED: "a valid staple saying REVOKED",
    State.UNKNOWN: "the responder does not know this certificate",
    State.MISSING: "none fetched yet, or the last one expired",
    State.EXPIRED: "the certificate itself has expired",
    State.NO_OCSP: "the certificate names no OCSP responder",
    State.ERROR: "the certificate file cannot be used",
}


def render(certificate: str, staple: str | None, state: State) -> bytes:
    """The snippet for one certificate.

    ``staple`` is the path of a valid staple file, or None when there is none; the
    ``state`` says why, in a comment.
    """
    reason = REASONS[state]
    lines = [
        f"# Written by stapled for {_comment(certificate)}; it is replaced, do not edit.",
        "# Include it in the server block that uses that certificate, in place of any",
        "# ssl_stapling lines of its own.",
    ]
    if staple is not None:
        lines += [
            f"# Stapling on: {_comment(reason)}, kept fresh by stapled.",
            "ssl_stapling on;",
            f"ssl_stapling_file {quote(staple)};",
        ]
    else:
        lines += [
            f"# Stapling off: no valid staple ({_comment(reason)}); on again once there is one.",
            "ssl_stapling off;",
        ]
    return ("\n".join(lines) + "\n").encode()


def quote(value: str) -> str:
    """``value`` as one nginx configuration token (double-quoted, escapes as nginx reads)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _comment(text: str) -> str:
    # A newline would end the comment and let the rest be read as configuration.
    return " ".join(text.split())
