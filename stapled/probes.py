"""``stapled probe``: what live servers staple, against what stapled wrote.

Several handshakes per target (nginx workers hold staples apart); the worst counts.  The
served certificate is matched to a managed one by its fingerprint, and validated with the
issuer from the served chain, else from disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .core import certs, verdicts
from .core.certs import CertChain
from .core.ocsp import Staple
from .core.times import iso
from .core.verdicts import Judged, Known, Served, Verdict
from .errors import CertificateError
from .observe import handshake
from .observe.handshake import Handshake, ProbeError

# What stapled holds, by leaf fingerprint: the chain (with its issuer; None for one it
# fetches nothing for, without an OCSP URL) and the staple.
Held = dict[str, tuple[CertChain | None, Staple | None]]
Shake = Callable[[str, str, float], Handshake]


@dataclass(frozen=True, slots=True)
class Target:
    target: str
    servername: str


@dataclass(frozen=True, slots=True)
class Probed:
    target: Target
    judged: Judged

    @property
    def line(self) -> str:
        t = self.target
        return f"{self.judged.verdict.name} - {t.target} ({t.servername}): {self.judged.why}"

    def as_json(self) -> dict[str, object]:
        j = self.judged
        return {
            "target": self.target.target,
            "servername": self.target.servername,
            "status": j.verdict.name,
            "code": int(j.verdict),
            "reason": j.why,
            "staple_present": j.present,
            "staple_valid": j.valid,
            "staple_matches_disk": j.matches_disk,
            "this_update": iso(j.this_update) if j.this_update else None,
        }


def probe_target(
    target: Target,
    held: Held | None,
    now: datetime,
    *,
    timeout: float,
    connections: int = verdicts.CONNECTIONS,
    shake: Shake = handshake.handshake,
) -> Probed:
    """``connections`` handshakes with one endpoint, judged; the worst is reported.

    ``held`` is None when no configuration was read: staples are judged on their own."""
    results: list[Judged] = []
    for _ in range(connections):
        try:
            hs = shake(target.target, target.servername, timeout)
        except ProbeError as e:
            results.append(Judged(Verdict.UNKNOWN, e.reason))
            continue
        results.append(_judge(hs, held, now, target.target))
    return Probed(target, verdicts.worst(results))


def _judge(hs: Handshake, held: Held | None, now: datetime, where: str) -> Judged:
    if not hs.chain:
        return verdicts.judge(Served(None, hs.staple), None, now)
    try:
        chain = certs.build_chain(hs.chain, where)
    except CertificateError as e:
        return Judged(Verdict.UNKNOWN, f"the served certificate cannot be used ({e.reason})")
    mine = held.get(chain.fingerprint) if held is not None else None
    if mine is None:
        known = Known.NOTHING if held is None else Known.UNMANAGED
        return verdicts.judge(Served(chain, hs.staple), None, now, known)
    disk_chain, disk = mine
    if chain.issuer is None and disk_chain is not None:
        chain = disk_chain
    return verdicts.judge(Served(chain, hs.staple), disk, now)


def exit_code(results: list[Probed]) -> int:
    return max((int(p.judged.verdict) for p in results), default=0)
