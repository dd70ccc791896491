"""The output directory's staple files: reading what a certificate already has, and
writing an outcome everywhere its staple goes (``NAME.der``, ``CERT.ocsp`` beside
HAProxy's certificate file, ``NAME.nginx.conf``).

The daemon's single refreshes write each file at once; a pass hands a
:class:`store.Batch` so that thousands of writes are made durable together.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from pathlib import Path

from ..core import ocsp, plan, snippet
from ..core.certs import CertChain
from ..core.model import Found, Record, staple_file
from ..core.ocsp import Staple
from ..core.policy import State
from ..core.validated import Validated
from ..errors import InvalidResponseError, OCSPStatusError, StoreError
from . import store

log = logging.getLogger("stapled")

# What was read of each name's staple file (None: no file), so it is not read again.
Seen = dict[str, bytes | None]


class Publisher:
    def __init__(self, output_dir: Path, *, nginx_snippets: bool, validated: Validated) -> None:
        self.nginx_snippets = nginx_snippets
        # Staples validated before: the same bytes are not checked in full again.
        self.validated = validated
        # The files' paths are text: a pass makes thousands, a Path costs microseconds
        # where formatting one costs a fraction of that, and it interns each part of its
        # name for good.  ("/" must not give "//x.der".)
        self._output = str(output_dir).rstrip("/")

    def staple_path(self, item: Found) -> str:
        return staple_file(self._output, item.name)

    def record(self, item: Found, current: Staple | None, *, unknown: bool = False) -> Record:
        return plan.record(
            item,
            current,
            output=self._output,
            unknown=unknown,
        )

    def current(
        self, members: list[Found], now: datetime, chain: CertChain, seen: Seen | None = None
    ) -> Staple | None:
        """The newest valid staple already on disk under any of the certificate's names.

        ``chain`` must hold the issuer.  ``seen`` collects what was read for each name.
        """
        valid: list[Staple] = []
        for member in members:
            try:
                der = store.read(self.staple_path(member))
            except StoreError:
                continue
            if seen is not None:
                seen[member.name] = der
            if der is None:
                continue
            try:
                staple = self.validated.recall(der, chain, now)
                if staple is None:
                    staple = ocsp.validate(der, chain, now)
                    self.validated.note(staple)
                valid.append(staple)
            except (InvalidResponseError, OCSPStatusError) as e:
                log.debug("%s: the staple on disk is not usable: %s", member.name, e)
        return plan.newest(valid)

    def publish(
        self,
        member: Found,
        current: Staple | None,
        now: datetime,
        chain: CertChain,
        *,
        unknown: bool,
        batch: store.Batch | None,
        existing: bytes | object | None = store.UNREAD,
    ) -> Record:
        """Write ``current`` everywhere this name's staple goes; the record of the result."""
        rec = self.record(member, current, unknown=unknown)
        if current is not None:
            try:
                rec.changed = _write(
                    batch,
                    self.staple_path(member),
                    current.der,
                    existing=existing,
                    lost=partial(self._lost, rec, member, now, chain),
                )
            except StoreError as e:
                # Report what this name really has on disk, not what failed to land.
                rec = self.record(member, self.current([member], now, chain))
                rec.failed(str(e))
        haproxy = member.haproxy_staple_path
        if haproxy is not None and rec.current is not None:
            problem = rec.current.haproxy_problem
            if problem is not None:
                rec.failed(f"{haproxy}: not written: {problem}")
            else:
                try:
                    rec.haproxy_changed = _write(
                        batch, haproxy, rec.current.der, lost=partial(_note_lost, rec)
                    )
                except StoreError as e:
                    rec.failed(str(e))
                rec.changed |= rec.haproxy_changed
        self.snippet(rec, batch)
        return rec

    def failed(
        self,
        item: Found,
        error: str,
        current: Staple | None,
        state: State,
        batch: store.Batch | None = None,
    ) -> Record:
        """The record of a name that could not be refreshed, and its snippet."""
        rec = self.record(item, current)
        rec.state = state
        rec.failed(error)
        # An nginx include must never name a missing file.
        self.snippet(rec, batch)
        return rec

    def snippet(self, rec: Record, batch: store.Batch | None = None) -> None:
        """The nginx snippet for ``rec``: stapling on only while its staple is valid."""
        if not self.nginx_snippets or not rec.files:
            return
        text = snippet.render(rec.path, rec.staple_path if rec.servable else None, rec.state)
        path = f"{self._output}/{rec.name}{snippet.SUFFIX}"
        try:
            rec.changed |= _write(batch, path, text, lost=partial(_note_lost, rec))
        except StoreError as e:
            rec.failed(str(e))

    def _lost(
        self, rec: Record, member: Found, now: datetime, chain: CertChain, error: StoreError
    ) -> None:
        """A batched staple that did not land: the record tells what is on disk instead."""
        on_disk = self.record(member, self.current([member], now, chain))
        rec.state, rec.current = on_disk.state, on_disk.current
        rec.this_update, rec.next_update = on_disk.this_update, on_disk.next_update
        _note_lost(rec, error)


def _write(
    batch: store.Batch | None,
    path: str | Path,
    data: bytes,
    *,
    existing: bytes | object | None = store.UNREAD,
    lost: store.Lost,
) -> bool:
    """Write a file of the pass's batch, or at once outside a pass."""
    if batch is None:
        return store.write_atomic(path, data, existing=existing)
    return batch.write(path, data, existing=existing, lost=lost)


def _note_lost(rec: Record, error: StoreError) -> None:
    rec.failed(str(error))
