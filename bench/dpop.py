"""What a DPoP proof (RFC 9449) costs an exchange, in process.

The same CI-token exchange (scenario ``ci-deploy``) on the real app, as ``sts serve``
builds it, without a ``DPoP`` header and with a fresh proof each (a new ``jti``, ``iat``
now, one ES256 key), in alternating blocks; the CPU time of the request's thread inside
the app only (the proofs are made before each block, outside the timed calls). What a
proof adds: its checks (one more ES256 verify and a thumbprint), its ``jti``'s insert
(on PostgreSQL part of the statement that records the token), the ``cnf`` claim, and the
lineage's key column::

    python -m bench.dpop --database sqlite|postgresql [--requests 1000] [--rounds 5]

Through a real server, the HTTP benchmark's scenario ``ci-deploy-dpop`` (``python -m
bench --scenarios ci-deploy,ci-deploy-dpop``) sends the same exchange with a proof each
from a pool sized so that none is sent twice (``bench.scenarios.single_use_pool``); its
throughput includes the server's HTTP and the machine's drift, which this leaves out.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import proofs as dpop_proofs
from bench.profile import app_in_process, in_process_parser
from bench.world import STS_ISSUER

Environ = Callable[[], dict[str, Any]]
TOKEN_URI = STS_ISSUER + "/token"


def timed_block(app: Any, environs: list[Environ], proofs: list[str] | None) -> tuple[float, int]:
    """µs of the thread's CPU per request inside the app, and how many answered 200 with
    a token (of the expected type)."""
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc: Any = None) -> None:
        statuses.append(status)

    expected = b'"token_type":"DPoP"' if proofs is not None else b'"token_type":"Bearer"'
    spent = ok = 0
    for index, make in enumerate(environs):
        environ = make()
        if proofs is not None:
            environ["HTTP_DPOP"] = proofs[index]
        statuses.clear()
        start = time.thread_time_ns()
        body = b"".join(app(environ, start_response))
        spent += time.thread_time_ns() - start
        ok += statuses[0].startswith("200") and expected in body.replace(b" ", b"")
    return spent / len(environs) / 1000, ok


def main(argv: list[str] | None = None) -> int:
    parser = in_process_parser("python -m bench.dpop", requests=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    key = dpop_proofs.generate_key()

    def make_proofs(count: int) -> list[str]:  # made now: each block's are fresh
        return dpop_proofs.make_proofs(key, count, TOKEN_URI)

    with app_in_process(args.database, args.postgres_url, 1000, "ci-deploy") as (app, environs):
        cycle = [environs[i % len(environs)] for i in range(args.requests)]
        timed_block(app, cycle[:100], None)  # warm caches (rules, JWKS, compiled SQL)
        timed_block(app, cycle[:100], make_proofs(100))
        bearer: list[float] = []
        bound: list[float] = []
        for _ in range(args.rounds):
            cost, ok = timed_block(app, cycle, None)
            assert ok == len(cycle), f"{len(cycle) - ok} bearer exchanges failed"
            bearer.append(cost)
            cost, ok = timed_block(app, cycle, make_proofs(len(cycle)))
            assert ok == len(cycle), f"{len(cycle) - ok} DPoP exchanges failed"
            bound.append(cost)
    without, with_proof = statistics.median(bearer), statistics.median(bound)
    print(
        f"ci-deploy on {args.database}, {args.requests} exchanges x {args.rounds} rounds, "
        "median (range) of the request thread's CPU per exchange inside the app:"
    )
    print(f"  without DPoP: {without:.1f} µs ({min(bearer):.1f}-{max(bearer):.1f})")
    print(f"  with a proof: {with_proof:.1f} µs ({min(bound):.1f}-{max(bound):.1f})")
    print(f"  a proof adds {with_proof - without:.1f} µs ({with_proof / without:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
