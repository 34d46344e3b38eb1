"""What a token id costs the database once many tokens are on record: sts's time-ordered
``jti`` against a random one (what sts used before), in process, on a pre-filled database.

Both lineage (``issued_tokens``, keyed by ``jti``) and the audit log (``issued_jti``)
index the id. A random id lands on a random page of those indexes; on PostgreSQL that page
is usually touched for the first time since the last checkpoint, and logged whole in the
WAL (``full_page_writes``). The tables are pre-filled with ``--prefill`` rows of the same
id scheme (a service's steady state), a CHECKPOINT is taken, then ``--requests`` exchanges
(ci-deploy) run straight into the WSGI app::

    python -m bench.wal --database postgresql --prefill 1000000
    python -m bench.wal --database sqlite --prefill 1000000 --ids random

Prints CPU and wall per exchange and, on PostgreSQL, WAL bytes per exchange
(``pg_current_wal_lsn()`` before and after). ``--ids random`` MONKEYPATCHES
``sts.grants.token_exchange.new_token_id`` in this process only (BENCH ONLY).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import datetime

from sqlalchemy import Engine, text

from bench.profile import app_in_process, drive
from bench.world import DEFAULT_POSTGRES

DAY_MS = 86_400_000


def random_token_id(_now: datetime) -> str:
    """BENCH ONLY: the id sts issued before ``new_token_id`` (24 random base64url chars)."""
    return secrets.token_urlsafe(18)


def _prefill_sql(dialect: str, ids: str, rows: int) -> list[str]:
    """Rows of lineage and audit whose ids follow the chosen scheme (ordered: a day old)."""
    past = time.time_ns() // 1_000_000 - DAY_MS
    if dialect == "postgresql":
        source, counter = f"generate_series(1, {rows}) AS g(i)", "g.i"
        rand = (
            "substr(translate(encode(decode(md5(random()::text) || md5(random()::text),"
            " 'hex'), 'base64'), '+/', '-_'), 1, {n})"
        )
        ordered = f"lpad(to_hex({past} + {counter}), 12, '0') || " + rand.format(n=16)
        moment = "now()"
    else:
        source = (
            "(WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g"
            f" WHERE i < {rows}) SELECT i FROM g) AS g"
        )
        counter = "g.i"
        rand = (
            "substr(replace(replace(hex(randomblob(12)) || lower(hex(randomblob(12))),"
            " 'A', '-'), 'b', '_'), 1, {n})"
        )
        ordered = f"printf('%012x', {past} + {counter}) || " + rand.format(n=16)
        moment = "'2026-01-01 00:00:00'"
    token_id = ordered if ids == "ordered" else rand.format(n=24)
    return [
        "INSERT INTO issued_tokens (jti, subject, subject_issuer, client_id, rule_id,"
        " rule_version, audience, scope, kid, issued_at, expires_at)"
        f" SELECT {token_id}, 'bench', 'bench', 'bench', 1, 1, '[]', '', 'bench', {moment},"
        f" {moment} FROM {source}",
        "INSERT INTO audit_log (at, event, decision, reason, issued_jti)"
        f" SELECT {moment}, 'token_exchange', 'allow', 'granted', {token_id} FROM {source}",
    ]


def _wal_position(engine: Engine, *, checkpoint: bool) -> str | None:
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if checkpoint:
            connection.execute(text("VACUUM ANALYZE"))
            connection.execute(text("CHECKPOINT"))
        return str(connection.execute(text("SELECT pg_current_wal_lsn()")).scalar())


def _wal_bytes(engine: Engine, start: str, end: str) -> float:
    with engine.connect() as connection:
        diff = text("SELECT pg_wal_lsn_diff(CAST(:end AS pg_lsn), CAST(:start AS pg_lsn))")
        return float(connection.execute(diff, {"start": start, "end": end}).scalar() or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wal")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--ids", choices=("ordered", "random"), default="ordered")
    parser.add_argument("--prefill", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--pool", type=int, default=1000, help="subject tokens minted")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    args = parser.parse_args(argv)
    import sts.grants.token_exchange as exchange

    issued_ids = getattr(exchange, "new_token_id")  # noqa: B009
    if args.ids == "random":
        # BENCH-ONLY MONKEYPATCH, in this process and for this run only: the old scheme.
        setattr(exchange, "new_token_id", random_token_id)  # noqa: B010
    try:
        report = _run(args)
    finally:
        setattr(exchange, "new_token_id", issued_ids)  # noqa: B010
    print(report)
    return 0


def _run(args: argparse.Namespace) -> str:
    with app_in_process(args.database, args.postgres_url, args.pool, "ci-deploy") as (
        app,
        environs,
    ):
        engine = app.extensions["sts"].engine
        drive(app, environs[:10])  # the first status list and block, warm caches
        with engine.begin() as connection:
            for statement in _prefill_sql(engine.dialect.name, args.ids, args.prefill):
                connection.execute(text(statement))
        start = _wal_position(engine, checkpoint=True)
        # (A subject token may be presented again: ci-deploy tokens are not one-time.)
        cycle = [environs[10 + i % (len(environs) - 10)] for i in range(args.requests)]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        ok = drive(app, cycle)
        cpu = (time.process_time() - cpu0) / args.requests * 1000
        wall = (time.perf_counter() - wall0) / args.requests * 1000
        end = _wal_position(engine, checkpoint=False)
        wal = ""
        if start is not None and end is not None:
            wal = f", WAL {_wal_bytes(engine, start, end) / args.requests:.0f} B per exchange"
    return (
        f"{args.database}, {args.ids} ids, {args.prefill} tokens on record: {ok}/{args.requests}"
        f" ok; {cpu:.3f} ms CPU, {wall:.3f} ms wall per exchange{wal}"
    )


if __name__ == "__main__":
    sys.exit(main())
