"""Where an exchange's time goes: pyinstrument, in process, on the real WSGI app.

The app is built exactly as ``sts serve`` builds it (``create_app``) on a seeded
throw-away database; each request is a hand-made WSGI environ (as an HTTP server would
pass) sent straight into the app, so no test client and no HTTP server are in the
profile. Samples are attributed to the pipeline's steps by the innermost step frame on
their stack; any SQLAlchemy / DB-driver frame counts as "database" wherever it is::

    python -m bench.profile --database sqlite --scenario ci-deploy --requests 2000
    python -m bench.profile --database postgresql --html /tmp/profile.html

Single-threaded and uncontended: the numbers are the cost of one exchange, not the
throughput under load (see ``python -m bench`` for that). Sampling measures wall time;
the database share therefore includes waiting for PostgreSQL or for SQLite's file I/O.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.scenarios import REPEATABLE, SCENARIOS
from bench.world import DEFAULT_POSTGRES, database_url, peer_tokens, seed

# (category, test on (file path, function name)) in priority order: the first match of a
# frame wins; frames that match nothing inherit their caller's category.
DATABASE_MARKERS = ("/sqlalchemy/", "/psycopg/", "/psycopg_binary/", "sqlite3", "/sts/db/")
STEP_RULES: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "parse",
        lambda f, fn: f.endswith("sts/protocol/exchange.py") or fn in ("form_items", "parse_form"),
    ),
    ("client auth", lambda f, fn: f.endswith("sts/grants/client_auth.py")),
    ("verify", lambda f, fn: fn in ("present", "verify_jwt") or fn == "parse_api_key"),
    ("policy", lambda f, fn: "/sts/policy/" in f or f.endswith("sts/trust.py")),
    ("sign", lambda f, fn: fn in ("mint_access_token", "build_claims", "compute_lifetime")),
    ("audit+lineage", lambda f, fn: fn in ("_record_issued", "record")),
    (
        "response",
        lambda f, fn: (
            fn in ("to_flask", "_respond", "json_bytes")
            or f.endswith(("/json/encoder.py", "flask/json/provider.py"))
        ),
    ),
    ("logging", lambda f, fn: "/logging/" in f),
]
CATEGORIES = [
    "parse",
    "client auth",
    "verify",
    "policy",
    "sign",
    "database",
    "audit+lineage",
    "response",
    "logging",
    "framework",
]


def categorize(path: str, function: str, inherited: str) -> str:
    if any(marker in path for marker in DATABASE_MARKERS) or (
        function in ("begin_write", "resolve") and path.endswith("token_exchange.py")
    ):
        return "database"
    for category, test in STEP_RULES:
        if test(path, function):
            return category
    return inherited


def attribute(
    frame: Any,
    inherited: str,
    totals: Counter[str],
    database: Counter[str],
    caller: str = "?",
    entry: str = "",
) -> None:
    """Add each frame's own time to its category; database time is also split by the sts
    function that called into SQLAlchemy and the first SQLAlchemy function it called."""
    path, function = frame.file_path or "", frame.function or ""
    category = categorize(path, function, inherited)
    if category == "database" and not entry and "/sts/" not in path:
        entry = f"{caller} -> {function}"
    elif "/sts/" in path and "/sts/db/engine.py" not in path:
        caller, entry = function, ""
    children = list(frame.children)
    own = frame.time - sum(child.time for child in children)
    if own > 0:
        totals[category] += own
        if category == "database":
            database[entry or caller] += own
    for child in children:
        attribute(child, category, totals, database, caller, entry)


def make_environ(port: int, raw: bytes) -> Callable[[], dict[str, Any]]:
    """A WSGI environ factory from one pre-built HTTP request (what a server would parse)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    method, path, _ = lines[0].split(" ")
    base: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            base[key] = value
        else:
            base["HTTP_" + key] = value

    def environ() -> dict[str, Any]:
        return {**base, "wsgi.input": io.BytesIO(body)}

    return environ


def drive(app: Any, environs: Iterable[Callable[[], dict[str, Any]]]) -> int:
    ok = 0
    status_holder: list[str] = []

    def start_response(status: str, _headers: Any, _exc: Any = None) -> None:
        status_holder.append(status)

    for environ in environs:
        status_holder.clear()
        body = b"".join(app(environ(), start_response))
        if status_holder[0].startswith("200") and b'"access_token"' in body:
            ok += 1
    return ok


@contextmanager
def app_in_process(
    database: str, postgres_url: str, pool: int, scenario: str
) -> Iterator[tuple[Any, list[Callable[[], dict[str, Any]]]]]:
    """The real app (built as ``sts serve`` builds it) on a seeded throw-away database, and
    one WSGI environ factory per pre-built request of ``scenario``; disposed at the end."""
    from sts.app import create_app
    from sts.settings import Settings

    if scenario not in REPEATABLE:
        # Their callers send the pool more than once: a single-use request would be refused.
        raise ValueError(
            f"{scenario} sends each request once and cannot be driven in process here; "
            "python -m bench.dpop measures what a DPoP proof costs in process"
        )
    with tempfile.TemporaryDirectory(prefix="sts-bench-") as tmp:
        workdir = Path(tmp)
        with database_url(database, workdir, postgres_url) as url:
            world = seed(database, workdir, url, pool, peer_tokens(None, pool))
            app = create_app(Settings.from_env(world.env))
            try:
                if scenario == "re-exchange":
                    _premint_in_process(app, world)
                requests = SCENARIOS[scenario].build(world, 8080)
                yield app, [make_environ(8080, raw) for raw in requests]
            finally:
                app.extensions["sts"].engine.dispose()


def in_process_parser(prog: str, *, requests: int) -> argparse.ArgumentParser:
    """The options of every tool that drives the app in process (``app_in_process``)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scenario", choices=REPEATABLE, default="ci-deploy")
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pyinstrument import Profiler

    parser = in_process_parser("python -m bench.profile", requests=2000)
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling, seconds")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML here")
    parser.add_argument(
        "--skip-governance",
        action="store_true",
        help="BENCH ONLY: monkeypatch _record_issued to a no-op (as bench.no_governance)",
    )
    args = parser.parse_args(argv)
    with app_in_process(args.database, args.postgres_url, 1000, args.scenario) as (app, environs):
        if args.skip_governance:
            import bench.no_governance
            import sts.grants.token_exchange

            # BENCH-ONLY MONKEYPATCH, in this profiling process only.
            sts.grants.token_exchange._record_issued = bench.no_governance._skip_recording
        cycle = [environs[i % len(environs)] for i in range(args.requests)]
        drive(app, environs[:100])  # warm caches (rules, JWKS, compiled SQL)
        profiler = Profiler(interval=args.interval, async_mode="disabled")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        profiler.start()
        ok = drive(app, cycle)
        profiler.stop()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        # The same loop without the profiler, best of 3: the cost per exchange.
        plain_wall = plain_cpu = float("inf")
        for _ in range(3):
            cpu1, wall1 = time.process_time(), time.perf_counter()
            drive(app, cycle)
            plain_cpu = min(plain_cpu, (time.process_time() - cpu1) / len(cycle) * 1000)
            plain_wall = min(plain_wall, (time.perf_counter() - wall1) / len(cycle) * 1000)
        # Each exchange timed on its own: the tail a single caller sees (a checkpoint
        # or any other stall inside one request shows up here, not in the means).
        tail = latency_percentiles(single_exchange_times(app, cycle))
    session = profiler.last_session
    root = session.root_frame() if session else None
    totals: Counter[str] = Counter()
    database: Counter[str] = Counter()
    if root is not None:
        attribute(root, "framework", totals, database)
    sampled = sum(totals.values()) or 1.0
    variant = " (governance OFF, bench only)" if args.skip_governance else ""
    print(
        f"{args.scenario} on {args.database}{variant}: "
        f"{ok}/{args.requests} ok; unprofiled: {plain_wall:.2f} ms wall, {plain_cpu:.2f} ms CPU "
        f"per exchange; profiled: {wall / args.requests * 1000:.2f} ms wall, "
        f"{cpu / args.requests * 1000:.2f} ms CPU"
    )
    print(
        "single exchanges, back to back, wall ms: "
        + ", ".join(f"{name} {value:.2f}" for name, value in tail.items())
    )
    print("| step | share | ms / exchange |\n|---|---:|---:|")
    for category in CATEGORIES:
        share = totals[category] / sampled
        per = share * plain_wall
        print(f"| {category} | {share * 100:.1f}% | {per:.3f} |")
    print("\ndatabase time by call site (sts caller -> first SQLAlchemy/driver function):")
    print("| call site | share of exchange | ms / exchange |\n|---|---:|---:|")
    for site, seconds in database.most_common(12):
        share = seconds / sampled
        print(f"| {site} | {share * 100:.1f}% | {share * plain_wall:.3f} |")
    if args.html and session is not None:
        args.html.write_text(profiler.output_html())
        print(f"HTML profile: {args.html}")
    return 0


def single_exchange_times(app: Any, environs: list[Callable[[], dict[str, Any]]]) -> list[float]:
    """Wall milliseconds of each exchange, one after the other."""
    times = []
    for environ in environs:
        started = time.perf_counter()
        drive(app, [environ])
        times.append((time.perf_counter() - started) * 1000)
    return times


def latency_percentiles(times: list[float]) -> dict[str, float]:
    """p50, p99, p99.9 (nearest rank) and max of ``times``."""
    ordered = sorted(times)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": rank(0.5), "p99": rank(0.99), "p99.9": rank(0.999), "max": ordered[-1]}


def _premint_in_process(app: Any, world: Any) -> None:
    import json

    from bench.loadgen import build_request
    from bench.scenarios import TOKEN_PATH, _exchange
    from bench.world import CI_CLIENT, DEPLOY, VAULT
    from sts.protocol import TOKEN_TYPE_JWT

    tokens = []
    for token in world.ci_tokens:
        raw = build_request(
            8080,
            TOKEN_PATH,
            [
                *_exchange(token, TOKEN_TYPE_JWT, audience=DEPLOY),
                ("audience", VAULT),
                ("scope", "deploy:write deploy:read secrets:read"),
            ],
            CI_CLIENT,
        )
        environ = make_environ(8080, raw)()
        body = b"".join(app(environ, lambda *_args: None))
        tokens.append(json.loads(body)["access_token"])
    world.sts_tokens = tokens


if __name__ == "__main__":
    sys.exit(main())
