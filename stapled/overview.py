"""What stapled holds, read without asking any responder or writing a staple: the
records ``status`` shows, the staples ``probe`` compares with, whether the fleet store
answers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .core import plan
from .core.certs import CertChain
from .core.model import NOT_DUE, Due, PassResult
from .core.ocsp import Staple
from .errors import StapledError
from .files import state
from .net import client

if TYPE_CHECKING:
    from .passes import Stapler

log = logging.getLogger("stapled")


def status(stapler: Stapler) -> PassResult:
    """Every certificate's record, from disk and the state file (and one ping of the
    fleet store, in fleet mode).  Raises StoreError when the state file is unreadable."""
    saved = state.entries(state.load(stapler.config.state_path, must_read=True))
    stapler.remember(saved)
    records, groups = stapler.scan()
    now = stapler.clock()
    for members in groups.values():
        try:
            _, current = stapler.on_disk(members, now)
        except StapledError:
            current = None
        for member in members:
            rec = stapler.record_of(member, current)
            entry = saved.get(member.name, {})
            rec.last_error = state.recorded_error(entry)
            rec.source = stapler.sources.of(rec.current)
            records.append(rec)
    result = PassResult(sorted(records, key=lambda r: r.name), now)
    result.crl = stapler.revocations.views(stapler.found, now)
    planned = plan.due(records, stapler.config.refresh_at)
    for rec in records:
        recorded = state.recorded_due(saved.get(rec.name, {}))
        # The daemon's own schedule (with jitter) wins over the computed one.
        due = Due(recorded.refresh or planned.get(rec.name, NOT_DUE).refresh, recorded.retry)
        if due != NOT_DUE:
            result.due[rec.name] = due
    if stapler.fleet is not None:
        result.fleet = stapler.fleet.state(connected=client.run(stapler.fleet.ping()))
    return result


def held(stapler: Stapler) -> dict[str, tuple[CertChain | None, Staple | None]]:
    """By leaf fingerprint: each certificate's chain (with its issuer when known) and
    its valid staple on disk; (None, None) for one stapled fetches nothing for."""
    records, groups = stapler.scan()
    now = stapler.clock()
    found: dict[str, tuple[CertChain | None, Staple | None]] = {
        r.fingerprint: (None, None) for r in records if r.fingerprint is not None
    }
    for fp, members in groups.items():
        try:
            found[fp] = stapler.on_disk(members, now)
        except StapledError:
            continue
    return found
