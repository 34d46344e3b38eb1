"""How long an identity's revocation holds every exchange back, by how many tokens it sweeps.

``sts revoke --subject`` (offboarding, and likewise a client, credential, issuer, actor or
DPoP key) first revokes the identity's live tokens in passes that hold no exchange back
(sts.revocation.sweep_ahead), then takes the governance lock exclusively, revokes what
is left of its lineage and stores its block; every exchange waits until that commits
(README: Revocation). This times both, in process on a seeded throw-away database, for a
subject holding N tokens on record (copies of one real exchange's lineage row, inserted
in bulk), of which ``--live`` (a share) are still live and the rest expired an hour ago,
as most of an identity's tokens on record are until ``sts gc`` deletes them:

    python -m bench.sweep [--database postgresql] [--tokens 1000,10000,70000] [--live 1.0]
                          [--stale-statistics] [--no-passes]

``--no-passes`` times the revocation as one transaction under the lock, as before the
passes (the same transaction with nothing swept ahead).

On PostgreSQL the table is analysed after the bulk insert, as autovacuum would have done
by then; ``--stale-statistics`` analyses it before instead, so the planner sees the
table as it was (a handful of rows), as it does in the minute after a burst of
exchanges: a plan that only holds up with fresh statistics shows here (one such plan
took 316 s instead of 7 for 70,000 tokens; sts.db.queries._lineage).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import insert, select

from bench.profile import app_in_process, drive
from bench.world import DEFAULT_POSTGRES
from sts import revocation
from sts.db.locks import write_transaction
from sts.db.models import IssuedToken
from sts.revocation import revoke_by_operator, sweep_passes


def add_tokens(
    app: Any, subject: str, count: int, live: float = 1.0, *, stale_statistics: bool = False
) -> None:
    """``count`` tokens of ``subject`` (the last exchange's lineage row, copied), of which
    the share ``live`` is live and the rest expired an hour ago. On PostgreSQL the table
    is analysed after the insert, or before it with ``stale_statistics``."""
    table = IssuedToken.__table__
    engine = app.extensions["sts"].engine
    analyse = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        if analyse and stale_statistics:
            connection.exec_driver_sql("ANALYZE issued_tokens")
        newest = select(table).order_by(table.c.issued_at.desc()).limit(1)
        template = {**connection.execute(newest).mappings().one()}
        template.update(subject=subject, parent_jti=None, status_list_id=None, status_idx=None)
        expired = {
            "issued_at": template["issued_at"] - timedelta(hours=1, minutes=5),
            "expires_at": template["issued_at"] - timedelta(hours=1),
        }
        live_count = round(count * live)
        rows = [
            {**template, **({} if i < live_count else expired), "jti": f"{subject}-{i:07d}"}
            for i in range(count)
        ]
        connection.execute(insert(IssuedToken), rows)
        if analyse and not stale_statistics:
            connection.exec_driver_sql("ANALYZE issued_tokens")


class Timings(NamedTuple):
    ahead: float  # seconds of the passes ahead of the block (exchanges go on)
    longest_pass: float  # the longest pass's write transaction (on SQLite writers wait)
    held: float  # the blocking transaction, start to commit (every exchange waits)
    revoked: int
    passes: int = 0


@contextmanager
def pass_writes_timed(took: list[float]) -> Iterator[None]:
    """BENCH ONLY, this process, this block: each pass's write transaction timed (the
    passes' reads hold no writer back, so they are left out)."""
    original = revocation._revoke_a_pass

    def timed(*args: Any, **kwargs: Any) -> int:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            took.append(time.perf_counter() - began)

    revocation._revoke_a_pass = timed
    try:
        yield
    finally:
        revocation._revoke_a_pass = original


def timed_revocation(app: Any, subject: str, passes: bool = True) -> Timings:
    """An identity's revocation, timed: the passes ahead of its block, then the block."""
    services = app.extensions["sts"]
    now = services.clock()
    started = time.perf_counter()
    swept = None
    writes: list[float] = []
    if passes:
        with pass_writes_timed(writes):
            swept = sum(
                sweep_passes(services.session_factory, "subject", subject, reason="x", now=now)
            )
    locked = time.perf_counter()
    with write_transaction(services.session_factory) as session:
        outcome = revoke_by_operator(
            session, "subject", subject, reason="bench.sweep", now=now, swept=swept
        )
    held = time.perf_counter() - locked
    return Timings(locked - started, max(writes, default=0.0), held, outcome.revoked, len(writes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--tokens", default="1000,10000,70000", help="comma-separated")
    parser.add_argument(
        "--live", type=float, default=1.0, help="the share of them still live (default 1.0)"
    )
    parser.add_argument(
        "--stale-statistics",
        action="store_true",
        help="PostgreSQL: analyse the table before the bulk insert instead of after",
    )
    parser.add_argument(
        "--no-passes",
        action="store_true",
        help="revoke in one transaction under the lock, with nothing swept ahead",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.live <= 1:
        parser.error("--live is a share: from 0 to 1")
    counts = [int(count) for count in args.tokens.split(",")]
    print(
        f"an identity's revocation on {args.database}: the transaction every exchange waits "
        f"for; {args.live:.0%} of the subject's tokens live"
        + ("; statistics from before they were added" if args.stale_statistics else "")
    )
    print(
        "| tokens of the subject | passes ahead, s | passes | longest pass's write, s "
        "| exchanges held back, s | revoked |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    with app_in_process(args.database, args.postgres_url, 10, "ci-deploy") as (app, environs):
        drive(app, environs[:1])  # one real exchange: the lineage row to copy
        for count in counts:
            subject = f"bench-sweep-{count}"
            add_tokens(app, subject, count, args.live, stale_statistics=args.stale_statistics)
            took = timed_revocation(app, subject, not args.no_passes)
            print(
                f"| {count:,} | {took.ahead:.3f} | {took.passes} | {took.longest_pass:.3f} "
                f"| {took.held:.3f} "
                f"| {took.revoked:,} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
