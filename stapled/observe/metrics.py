"""Prometheus metrics: the only module that imports prometheus_client.

A registry of stapled's own holds one collector that reads the current records and the
tally at scrape time, so nothing is kept twice.  Label ``cert`` is the staple's NAME;
serials and fingerprints appear only on ``stapled_certificate_info``, so series do not
churn at each renewal.  A state is a label value with 1 for the current one (never "good
is 0").  The textfile carries no sample timestamps (node_exporter would refuse it).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from prometheus_client import write_to_textfile
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from ..core.model import Record
from ..core.ocsp import CertStatus
from ..core.policy import State
from ..core.revocation import CrlView
from ..core.urls import redacted
from ..errors import ListenError, StoreError
from .tally import FETCH_BUCKETS, Counts, Tally

log = logging.getLogger("stapled")

STATUSES = (*(str(s) for s in CertStatus), "none")


@dataclass(frozen=True)
class Snapshot:
    """What a scrape reads: records as last published, and whether the fleet is up."""

    records: tuple[Record, ...] = ()
    now: datetime | None = None
    fleet_up: bool | None = None  # None: not in fleet mode
    # What each name's CRL says, for the names whose CRL is checked.
    crl: Mapping[str, CrlView] = field(default_factory=dict)


class Metrics:
    def __init__(self, version: str, tally: Tally, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(version, tally, snapshot))
        self._server: object | None = None

    def write_textfile(self, path: Path) -> None:
        """Rewrite ``path`` atomically (a temporary file renamed over it), creating its
        directory when missing (a directory of its own under /var/lib/stapled).

        Raises StoreError naming the path.
        """
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_to_textfile(str(path), self.registry)
        except OSError as e:
            raise StoreError(str(path), f"cannot write the metrics file ({e.strerror})") from e

    def serve(self, host: str, port: int) -> None:
        """Prometheus text at http://host:port/metrics, from a thread of its own.

        Raises ListenError when the address cannot be bound.
        """
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            where = f"{host}:{port}"
            raise ListenError(where, f"cannot listen for metrics ({e.strerror})") from e
        self._server = server

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]


class _Collector(Collector):
    def __init__(self, version: str, tally: Tally, snapshot: Callable[[], Snapshot]) -> None:
        self.version, self.tally, self.snapshot = version, tally, snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        counts = self.tally.counts()
        build = InfoMetricFamily("stapled_build", "stapled's version")
        build.add_metric([], {"version": self.version})
        yield build
        yield from _certificates(snap.records, snap.now)
        yield from _revoked(snap.records, snap.crl)
        yield from _crls(snap.crl, counts)
        yield from _counted(counts)
        yield from _probes(counts)
        if snap.fleet_up is not None:
            up = GaugeMetricFamily("stapled_fleet_up", "1 while the fleet store answers")
            up.add_metric([], 1.0 if snap.fleet_up else 0.0)
            yield up
            yield from _rejected(counts)


def _certificates(records: Iterable[Record], now: datetime | None) -> Iterator[Metric]:
    info = InfoMetricFamily(
        "stapled_certificate",
        "A certificate stapled looks after (serial and fingerprint change at renewal)",
        labels=["cert"],
    )
    valid = GaugeMetricFamily(
        "stapled_staple_valid", "1 while a valid staple is on disk to serve", labels=["cert"]
    )
    status = GaugeMetricFamily(
        "stapled_staple_cert_status",
        "The certStatus of the staple on disk: 1 for the current one ('none': no staple)",
        labels=["cert", "status"],
    )
    this_update = GaugeMetricFamily(
        "stapled_staple_this_update_timestamp_seconds",
        "thisUpdate of the staple on disk",
        labels=["cert"],
    )
    next_update = GaugeMetricFamily(
        "stapled_staple_next_update_timestamp_seconds",
        "nextUpdate of the staple on disk",
        labels=["cert"],
    )
    for r in records:
        if not r.files:
            continue
        info.add_metric(
            [r.name],
            {
                "serial": r.serial or "",
                "fingerprint": r.fingerprint or "",
                "state": str(r.state),
                "must_staple": str(r.must_staple).lower(),
            },
        )
        if r.ocsp_url is None:
            continue  # nothing to staple (no OCSP URL, or an unusable file): no staple series
        staple = r.servable
        usable = staple is not None and (now is None or staple.valid_at(now))
        valid.add_metric([r.name], 1.0 if usable else 0.0)
        current = str(staple.cert_status) if staple is not None else "none"
        for s in STATUSES:
            status.add_metric([r.name, s], 1.0 if s == current else 0.0)
        if r.this_update is not None and r.next_update is not None:
            this_update.add_metric([r.name], r.this_update.timestamp())
            next_update.add_metric([r.name], r.next_update.timestamp())
    yield from (info, valid, status, this_update, next_update)


def _revoked(records: Iterable[Record], crl: Mapping[str, CrlView]) -> Iterator[Metric]:
    revoked = GaugeMetricFamily(
        "stapled_certificate_revoked",
        "1 when a source says the certificate is revoked, 0 when it says good "
        "(no series while the source gives no valid answer)",
        labels=["cert", "source"],
    )
    for r in records:
        staple = r.servable
        if staple is not None:
            revoked.add_metric([r.name, "ocsp"], 1.0 if r.state is State.REVOKED else 0.0)
        view = crl.get(r.name)
        if view is not None and view.status is not None:
            revoked.add_metric([r.name, "crl"], 1.0 if view.revoked else 0.0)
    yield revoked


def _crls(crl: Mapping[str, CrlView], counts: Counts) -> Iterator[Metric]:
    next_update = GaugeMetricFamily(
        "stapled_crl_next_update_timestamp_seconds",
        "nextUpdate of the valid CRL held for each distribution point",
        labels=["url"],
    )
    held = {v.url: v.next_update for v in crl.values() if v.next_update is not None}
    for url, when in sorted(held.items()):
        next_update.add_metric([redacted(url)], when.timestamp())
    yield next_update
    fetches = CounterMetricFamily(
        "stapled_crl_fetch",
        "CRL fetches, by result ('success', 'not_modified', 'failure')",
        labels=["result"],
    )
    for result in ("success", "not_modified", "failure"):
        fetches.add_metric([result], counts.crl_fetches[result])
    yield fetches
    size = CounterMetricFamily("stapled_crl_bytes", "Bytes of CRLs received")
    size.add_metric([], counts.crl_bytes)
    yield size


def _counted(counts: Counts) -> Iterator[Metric]:
    fetches = CounterMetricFamily(
        "stapled_ocsp_fetch",
        "Requests to the certificate's OCSP responders, by result",
        labels=["cert", "result"],
    )
    for name, result, n in _by_name(counts.fetches):
        fetches.add_metric([name, result], n)
    yield fetches
    durations = HistogramMetricFamily(
        "stapled_ocsp_fetch_duration_seconds",
        "How long a certificate's OCSP fetch took, by responder host",
        labels=["responder"],
    )
    for responder, d in sorted(counts.durations.items()):
        running, buckets = 0, []
        for bound, n in zip(FETCH_BUCKETS, d.buckets, strict=True):
            running += n
            buckets.append((_le(bound), running))
        buckets.append(("+Inf", d.count))
        durations.add_metric([responder], buckets, d.total)
    yield durations
    last = GaugeMetricFamily(
        "stapled_last_successful_fetch_timestamp_seconds",
        "When a new staple was last obtained (from the CA or the fleet)",
        labels=["cert"],
    )
    for name, when in sorted(counts.last_success.items()):
        last.add_metric([name], when)
    yield last
    reloads = CounterMetricFamily(
        "stapled_reload", "Reloads of the web server, by result", labels=["result"]
    )
    for result in ("success", "failure"):
        reloads.add_metric([result], counts.reloads[result])
    yield reloads
    updates = CounterMetricFamily(
        "stapled_staple_updates",
        "New staples written, by where they came from ('ca' or 'fleet')",
        labels=["cert", "source"],
    )
    for name, source, n in _by_name(counts.updates):
        updates.add_metric([name, source], n)
    yield updates


def _by_name(counted: dict[str, Counter[str]]) -> list[tuple[str, str, int]]:
    """(name, label, count), sorted by name then label."""
    return sorted((name, label, n) for label, names in counted.items() for name, n in names.items())


def _probes(counts: Counts) -> Iterator[Metric]:
    labels = ["target", "servername"]
    families = {
        "success": GaugeMetricFamily(
            "stapled_probe_success", "1 when the last probe reached the server", labels=labels
        ),
        "present": GaugeMetricFamily(
            "stapled_probe_staple_present", "1 when the server stapled something", labels=labels
        ),
        "valid": GaugeMetricFamily(
            "stapled_probe_staple_valid",
            "1 when the staple served is valid and good for the certificate served",
            labels=labels,
        ),
        "matches": GaugeMetricFamily(
            "stapled_probe_staple_matches_disk",
            "1 when the staple served is byte-identical to stapled's file",
            labels=labels,
        ),
    }
    for (target, name), judged in sorted(counts.probes.items()):
        reached = judged.verdict.name != "UNKNOWN"
        values = {
            "success": reached,
            "present": judged.present,
            "valid": judged.valid and judged.verdict.name != "CRITICAL",
            "matches": judged.matches_disk,
        }
        for key, family in families.items():
            family.add_metric([target, name], 1.0 if values[key] else 0.0)
    yield from families.values()


def _rejected(counts: Counts) -> Iterator[Metric]:
    rejected = CounterMetricFamily(
        "stapled_fleet_rejected",
        "Staples read from the fleet store and refused by this host's validation",
        labels=["cert", "reason"],
    )
    for (name, reason), n in sorted(counts.rejected.items()):
        rejected.add_metric([name, reason], n)
    yield rejected


def _le(bound: float) -> str:
    return repr(float(bound))
