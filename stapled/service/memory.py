"""The daemon's memory given back to the system once a pass no longer needs it."""

from __future__ import annotations

import contextlib
import ctypes
import gc


def give_back() -> None:
    """Return the allocator's free pages: what the first pass needed only while it ran
    would otherwise stay in the daemon's resident memory (glibc; elsewhere nothing)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
