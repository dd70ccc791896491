"""What identifies a file's content without reading it: device, inode, size, and the
modification and change times, packed (five Python ints and a tuple per file were a
tenth of the daemon's memory for each certificate)."""

# Paths are plain strings: a pathlib object per file is measurable at thousands.
# ruff: noqa: PTH116

from __future__ import annotations

import os
import stat
import struct

from ..errors import CertificateError

Signature = bytes
_PACKED = struct.Struct("=QQqqq")
# A file changed this recently may change again within the same timestamp tick (some
# filesystems count whole seconds) without its signature changing: it is read again at
# the next scan rather than trusted.
RECENT_NS = 3_000_000_000


def of(files: tuple[str, ...]) -> Signature:
    """The signature of ``files`` now.  Raises CertificateError for one that cannot be
    stat'ed or is not a regular file."""
    stats: list[os.stat_result] = []
    for name in files:
        try:
            st = os.stat(name)
        except OSError as e:
            raise CertificateError(name, f"cannot read ({e.strerror})") from e
        if not stat.S_ISREG(st.st_mode):
            raise CertificateError(name, "not a regular file")
        stats.append(st)
    return packed(stats)


def packed(stats: list[os.stat_result]) -> Signature:
    if len(stats) == 1:  # a lineage's fullchain.pem, a bundle: most files, by far
        st = stats[0]
        return _PACKED.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return b"".join(
        _PACKED.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        for st in stats
    )


# The device and inode lead each file's signature.
_IDENTITY = struct.calcsize("=QQ")


def identity(signature: Signature) -> bytes:
    """The device and inode of the first file, packed: what identifies the certificate."""
    return signature[:_IDENTITY]


def changed_last(signature: Signature) -> int:
    """The latest change time, in nanoseconds, among the files of ``signature``."""
    times: list[int] = []
    for at in range(0, len(signature), _PACKED.size):
        times += _PACKED.unpack_from(signature, at)[3:]
    return max(times)
