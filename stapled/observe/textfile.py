"""``[metrics] textfile`` after a pass: the metrics of plain values, written for
node_exporter.  prometheus_client is imported only when a textfile is wanted."""

from __future__ import annotations

import logging
from pathlib import Path

from ..core.model import PassResult
from ..errors import StoreError
from .tally import Tally

log = logging.getLogger("stapled")


def write(
    path: Path | None, version: str, tally: Tally, result: PassResult, fleet_up: bool | None
) -> None:
    """Rewrite ``path`` (if any) with the metrics of a pass's result; a failure is logged."""
    if path is None:
        return
    from .metrics import Metrics, Snapshot

    snapshot = Snapshot(tuple(result.records), result.now, fleet_up, result.crl)
    try:
        Metrics(version, tally, lambda: snapshot).write_textfile(path)
    except StoreError as e:
        log.error("%s", e)
