"""Telling the web server to pick up new staples."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from .errors import ReloadError


def run_command(argv: Sequence[str], timeout: float) -> str:
    """Run ``argv`` (never through a shell); its output, or ReloadError.

    A reload that hangs is killed after ``timeout`` seconds: a stuck web server must
    not hold stapled.  Standard input is closed so the command cannot wait for it.
    """
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise ReloadError(argv, "cannot be run: no such program") from e
    except PermissionError as e:
        raise ReloadError(argv, "cannot be run: permission denied") from e
    except subprocess.TimeoutExpired as e:
        out = e.stderr or e.stdout or ""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise ReloadError(argv, f"did not finish within {timeout:g} s", text) from e
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        raise ReloadError(argv, f"failed with exit status {done.returncode}", output)
    return output
