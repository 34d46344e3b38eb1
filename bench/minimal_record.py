"""BENCH ONLY, NEVER PRODUCTION: sts recording the least any durable governance could.

Governance's cost (audit + lineage + status-list index, against ``bench.no_governance``)
is what issue 7 bounds at 20 %. Whatever design records a token, the invariant "no token
before its record is durable" leaves one write per exchange, committed (on PostgreSQL
with its WAL flush) before the response. This server measures that floor: it builds the
real app exactly as ``sts serve`` does, then MONKEYPATCHES, in THIS PROCESS ONLY,
``_record_issued`` to write one narrow row per granted exchange (the token's ``jti``, in a
bench-only table with no index beyond SQLite's rowid) instead of the lineage and audit
rows, and skips the status-list index as ``bench.no_governance`` does. A governance cost
that this floor already exceeds cannot be met by moving or batching the other writes.

    STS_...=... python -m bench.minimal_record --bind 127.0.0.1:8092 --workers 2
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from bench.no_governance import serve_recording_with

TABLE = "bench_minimal_record"
_INSERT = text(f"INSERT INTO {TABLE} (jti) VALUES (:jti)")


def _minimal_recording(
    transaction: Any,
    _decision: Any,
    _subject: Any,
    _actor: Any,
    claims: Any,
    *_args: Any,
    identities: Any,
    **_kwargs: Any,
) -> Any:
    """BENCH ONLY: stands in for ``_record_issued``: the same block check, then one row."""
    blocks = transaction.check_blocks(identities)
    store = transaction.store
    prepared = store.__dict__.get("bench_minimal_insert")
    if prepared is None:
        prepared = store.bench_minimal_insert = store._prepare(_INSERT)
    transaction._execute(prepared, {"jti": claims["jti"]})
    return blocks


def create_table(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE IF NOT EXISTS {TABLE} (jti VARCHAR(64) NOT NULL)"))


def main() -> None:
    serve_recording_with(
        _minimal_recording,
        description="BENCH ONLY: sts with a minimal record",
        bind="127.0.0.1:8092",
        banner="BENCH ONLY: one narrow row per token instead of audit and lineage",
        prepare=lambda app: create_table(app.extensions["sts"].engine),
    )


if __name__ == "__main__":
    main()
