"""``[metrics] textfile`` after a pass: the metrics of plain values, written for
node_exporter.  prometheus_client is imported only when a textfile is wanted."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from ..core.model import Record
from ..core.revocation import CrlView
from ..errors import StoreError
from .tally import Tally

log = logging.getLogger("stapled")


def write(
    path: Path,
    version: str,
    tally: Tally,
    records: Sequence[Record],
    now: datetime,
    fleet_up: bool | None,
    crl: Mapping[str, CrlView],
) -> None:
    """Rewrite ``path`` with the metrics of ``records`` at ``now``; a failure is logged."""
    from .metrics import Metrics, Snapshot

    snapshot = Snapshot(tuple(records), now, fleet_up, crl)
    try:
        Metrics(version, tally, lambda: snapshot).write_textfile(path)
    except StoreError as e:
        log.error("%s", e)
