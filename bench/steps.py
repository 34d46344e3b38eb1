"""CPU time per step of an exchange, in process, kernel and cache misses included.

``bench.profile`` samples wall time, and ``bench.instructions`` counts user-space
instructions; neither shows what a step costs in the kernel (SQLite's WAL writes) or in
the cache misses it leaves for the steps after it. This times named functions with the
calling thread's CPU clock (``time.thread_time_ns``) around each call, on the real app in
process (built as ``bench.profile`` builds it), and prints µs per exchange; with
``--governance`` also with governance OFF (bench only: ``bench.no_governance``'s stand-ins)
beside it::

    python -m bench.steps --database sqlite --scenario peer-shape --governance

The wrappers are MONKEYPATCHED in this process for the run only and cost a few hundred
nanoseconds each. A step's figure includes the steps nested in it (indented). "other
threads" is the process's CPU beyond the request's thread: on SQLite, the WAL checkpoint
thread.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy import Engine, text

from bench import minimal_record, no_governance
from bench.procfs import cpu_seconds, postgres_backends
from bench.profile import app_in_process, drive, in_process_parser

# (label, module, attribute path). Indented labels run inside the step above them.
STEPS: list[tuple[str, str, str]] = [
    ("whole request", "sts.endpoints.token", "handle_token_request"),
    ("verify the subject token", "sts.grants.token_exchange", "present"),
    ("write transaction", "sts.db.exchange_store", "ExchangeStore.run_write"),
    (
        "  BEGIN (+ write gate or connection)",
        "sts.db.exchange_store",
        "ExchangeTransaction.__enter__",
    ),
    ("  governance lock", "sts.db.exchange_store", "ExchangeTransaction.hold_governance_shared"),
    ("  resolve subject/actor", "sts.grants.token_exchange", "resolve"),
    ("  rules", "sts.grants.token_exchange", "evaluate"),
    ("  status-list index", "sts.grants.token_exchange", "allocate_token_status"),
    ("  block check + lineage + audit", "sts.grants.token_exchange", "_record_issued"),
    ("  COMMIT", "sts.db.exchange_store", "ExchangeTransaction.commit"),
    ("  end of transaction", "sts.db.exchange_store", "ExchangeTransaction.__exit__"),
    ("sign", "sts.grants.token_exchange", "mint_access_token"),
]
OTHER_THREADS = "other threads"

# PostgreSQL's side, per exchange: (label, format). "µs" rows are CPU time.
DATABASE_ROWS: list[tuple[str, str]] = [
    ("database backends (µs)", "{:.1f}"),
    ("WAL records", "{:.2f}"),
    ("WAL bytes", "{:.0f}"),
    ("WAL full-page images", "{:.3f}"),
    ("WAL flushes (fsync)", "{:.2f}"),
]
# A backend hands its WAL statistics to pg_stat_wal at most once a second (PostgreSQL 15,
# PGSTAT_MIN_INTERVAL), and within a second of going idle: wait that long before reading.
STATS_SETTLE_SECONDS = 1.2


@contextmanager
def replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name = value`` until the block ends."""
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _timed(function: Callable[..., Any], label: str, totals: Counter[str]) -> Callable[..., Any]:
    clock = time.thread_time_ns

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            totals[label] += clock() - started

    return timed


@contextmanager
def timing(totals: Counter[str]) -> Iterator[None]:
    """Every step of STEPS adds its thread CPU (ns) to ``totals[label]`` until the end."""
    with ExitStack() as stack:
        for label, module_name, path in STEPS:
            owner: Any = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            function = getattr(owner, name)
            stack.enter_context(replaced(owner, name, _timed(function, label, totals)))
        yield


@contextmanager
def recording_replaced(record: Callable[..., Any]) -> Iterator[None]:
    """BENCH ONLY, this process, this block: ``record`` stands in for ``_record_issued``
    (``bench.no_governance``'s or ``bench.minimal_record``'s), and no status-list index."""
    import bench.no_governance as off
    import sts.grants.token_exchange as exchange

    with (
        replaced(exchange, "_record_issued", record),
        replaced(exchange, "allocate_token_status", off._no_status),
    ):
        yield


def database_counters(engine: Engine) -> dict[str, float]:
    """PostgreSQL: the totals behind DATABASE_ROWS so far (empty on SQLite). The CPU is
    the bench database's backends'; ``pg_stat_wal`` counts the whole server's WAL, so the
    WAL rows are only this bench's on a server nothing else writes to meanwhile."""
    if engine.dialect.name != "postgresql":
        return {}
    time.sleep(STATS_SETTLE_SECONDS)
    with engine.connect() as connection:
        records, images, size, flushes = connection.execute(
            text("SELECT wal_records, wal_fpi, wal_bytes, wal_sync FROM pg_stat_wal")
        ).one()
    backends = postgres_backends(engine.url.database or "")
    labels = [label for label, _ in DATABASE_ROWS]
    cpu_us = sum(cpu_seconds(pid) for pid in backends) * 1e6
    return dict(zip(labels, (cpu_us, records, size, images, flushes), strict=True))


def per_exchange(
    before: dict[str, float], after: dict[str, float], exchanges: int
) -> dict[str, float]:
    """What each counter grew by, per exchange."""
    return {label: (after[label] - before[label]) / exchanges for label in before}


def measure(
    app: Any, cycle: list[Callable[[], dict[str, Any]]], rounds: int, engine: Engine
) -> dict[str, float]:
    """µs per exchange of each step (and, on PostgreSQL, the database's side), from the
    round whose whole process CPU was lowest."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        totals: Counter[str] = Counter()
        database_before = database_counters(engine)
        with timing(totals):
            process, thread = time.process_time_ns(), time.thread_time_ns()
            ok = drive(app, cycle)
            process, thread = time.process_time_ns() - process, time.thread_time_ns() - thread
        if ok != len(cycle):
            raise RuntimeError(f"{len(cycle) - ok} of {len(cycle)} exchanges failed")
        per = {label: totals[label] / len(cycle) / 1000 for label, _, _ in STEPS}
        per[OTHER_THREADS] = (process - thread) / len(cycle) / 1000
        per["process"] = process / len(cycle) / 1000
        per.update(per_exchange(database_before, database_counters(engine), len(cycle)))
        if not best or per["process"] < best["process"]:
            best = per
    return best


def report(columns: dict[str, dict[str, float]]) -> str:
    names = list(columns)
    lines = [
        "| µs per exchange | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]

    def row(label: str, form: str) -> str:
        return f"| {label} | " + " | ".join(form.format(columns[n][label]) for n in names) + " |"

    for label in [label for label, _, _ in STEPS] + [OTHER_THREADS, "process"]:
        lines.append(row(label, "{:.1f}"))
    if all(label in columns[name] for name in names for label, _ in DATABASE_ROWS):
        lines.append("| **the database server, per exchange** |" + " |" * len(names))
        lines.extend(row(label, form) for label, form in DATABASE_ROWS)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = in_process_parser("python -m bench.steps", requests=3000)
    parser.add_argument("--rounds", type=int, default=3, help="the lowest-CPU round is shown")
    parser.add_argument("--pool", type=int, default=1000, help="subject tokens minted")
    parser.add_argument(
        "--governance", action="store_true", help="also with governance OFF (bench only)"
    )
    parser.add_argument(
        "--minimal-record",
        action="store_true",
        help="also with one narrow row per token instead (bench only: bench.minimal_record)",
    )
    args = parser.parse_args(argv)
    with app_in_process(args.database, args.postgres_url, args.pool, args.scenario) as (
        app,
        environs,
    ):
        cycle = [environs[i % len(environs)] for i in range(args.requests)]
        drive(app, environs[: min(200, len(environs))])  # warm caches
        engine = app.extensions["sts"].engine
        columns = {"governance on": measure(app, cycle, args.rounds, engine)}
        if args.governance:
            with recording_replaced(no_governance._skip_recording):
                drive(app, environs[: min(200, len(environs))])
                columns["governance OFF (bench only)"] = measure(app, cycle, args.rounds, engine)
        if args.minimal_record:
            minimal_record.create_table(engine)
            with recording_replaced(minimal_record._minimal_recording):
                drive(app, environs[: min(200, len(environs))])
                columns["one narrow row (bench only)"] = measure(app, cycle, args.rounds, engine)
    print(f"{args.scenario} on {args.database}, {args.requests} exchanges, best of {args.rounds}")
    print(report(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
