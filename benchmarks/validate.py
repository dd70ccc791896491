"""CPU per OCSP response validated: answers signed by the issuer and by a delegated
responder (whose certificate comes embedded in every answer), N of each.

    .venv/bin/python benchmarks/validate.py [--count N]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from stapled.core import certs, ocsp
from stapled.demo.ca import CA


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    ca = CA()
    responder = ca.responder()
    leaves = [
        ca.issue(f"l{i}.example", ocsp_urls=["http://127.0.0.1:9/"]) for i in range(args.count)
    ]
    chains = [certs.build_chain([leaf.cert, ca.cert], "bench") for leaf in leaves]
    now = datetime.now(UTC)
    for label, signer in (("issuer", None), ("delegated responder", responder)):
        ders = [ca.sign_response(leaf.cert, signer=signer) for leaf in leaves]
        started = time.process_time()
        for der, chain in zip(ders, chains, strict=True):
            ocsp.validate(der, chain, now)
        each = (time.process_time() - started) / len(ders)
        print(f"{label:>20}: {each * 1e6:6.0f} us of CPU per response ({len(ders)} responses)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
