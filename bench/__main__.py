"""``python -m bench``: the scenario runner. See bench/README.md.

python -m bench                  # sts scenarios x SQLite/PostgreSQL, governance off, floor
python -m bench peers            # sts vs floor vs oidc-provider vs idpyoidc, with ratios
python -m bench --servers granian,gunicorn   # the same, once per HTTP server
python -m bench soak --duration 300          # worker RSS over a 5-minute closed loop
python -m bench latency --servers granian,gunicorn   # p50/p99 at half of the peak (open loop)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench import latency, procfs, pyspy, servers, soak
from bench.loadgen import LoadResult, LoadSpec, Progress, run_load
from bench.scenarios import (
    CEILING_PER_SECOND,
    SCENARIOS,
    Scenario,
    peer_requests,
    single_use_pool,
)
from bench.servers import RunningServer
from bench.world import (
    DEFAULT_POSTGRES,
    DPOP_PROOF_MAX_AGE,
    PeerTokens,
    World,
    database_url,
    peer_tokens,
    seed,
)
from sts.cli.serve import SERVERS

RESULTS = Path(__file__).resolve().parent / "results"
PEERS = ("oidc-provider", "idpyoidc")
GOVERNANCE_OFF = "sts, audit+lineage OFF (bench only)"
GOVERNANCE_MINIMAL = "sts, one narrow row per token (bench only)"
FLOOR = "floor (verify+sign, no DB)"
# The latency mode's targets: --targets name -> the server kind (servers.command_for).
LATENCY_TARGETS = {"sts": "sts", "governance-off": "sts-nogov", "floor": "floor"}
# Between signing a single-use pool's first proof and sending its last, beyond the quiet
# wait and the load: the signing itself (up to ~30 s for the largest pool), the load's
# start and the last answer's socket timeout.
POOL_OVERHEAD_SECONDS = 60.0


@dataclass
class Row:
    target: str  # sts | sts (no audit/lineage) | floor | oidc-provider | idpyoidc
    server: str
    database: str
    scenario: str
    result: LoadResult | None = None
    failure: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    round: int = 1  # --rounds: which round measured it

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "target": self.target,
            "server": self.server,
            "database": self.database,
            "scenario": self.scenario,
            "failure": self.failure,
            **(self.result.as_dict() if self.result else {}),
            **self.notes,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "mode", nargs="?", choices=("run", "peers", "soak", "latency"), default="run"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="measured seconds per row (default 6); soak: of the whole run (default 300); "
        "latency: of the open loop (default 30)",
    )
    parser.add_argument(
        "--warmup", type=float, help="unmeasured seconds first (default 2; soak: 10)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="connections in total (default 8; latency: 16, for the open loop)",
    )
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated, of {','.join(SCENARIOS)} (default: all; not for soak)",
    )
    parser.add_argument("--databases", help="sqlite,postgresql (default: both; not for soak)")
    parser.add_argument(
        "--scenario",
        choices=tuple(SCENARIOS),
        help="soak, latency (default ci-deploy; soak: not ci-deploy-dpop)",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        help="soak, latency (default sqlite)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=0.5,
        help="latency only: the open loop's rate as a fraction of the measured peak",
    )
    parser.add_argument(
        "--rate",
        type=float,
        metavar="PER_SECOND",
        help="latency only: this open-loop rate (requests/s in total); skips the peak",
    )
    parser.add_argument(
        "--targets",
        default="sts",
        help=f"latency only: comma-separated, of {','.join(LATENCY_TARGETS)} (default sts): "
        "each at the fraction of its own peak, on each of --servers; the floor answers the "
        "peers' contract (peer-shape) whatever --scenario is",
    )
    parser.add_argument(
        "--peak-duration",
        type=float,
        default=6.0,
        metavar="SECONDS",
        help="latency only: measured seconds of the closed loop that finds the peak",
    )
    parser.add_argument(
        "--peak-concurrency",
        type=int,
        default=8,
        help="latency only: connections of the closed loop that finds the peak",
    )
    parser.add_argument(
        "--sample-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="soak only: seconds between worker RSS samples",
    )
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument(
        "--peer-workers",
        type=int,
        help="peers only: the peers' processes (default: --workers, the same as sts; issue "
        "7's reference table ran each peer as 1 process)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run and peers: measure every row this many times, in reverse order every other "
        "round, and add the median and range of each round's ratios (peers) or governance "
        "cost (run)",
    )
    parser.add_argument(
        "--servers",
        default=SERVERS[0],
        help="comma-separated: granian,gunicorn (sts and floor; default: sts serve's)",
    )
    parser.add_argument("--threads", type=int, default=2, help="granian WSGI threads/worker")
    parser.add_argument("--pool", type=int, default=1000, help="subject tokens per pool")
    parser.add_argument("--no-floor", dest="floor", action="store_false")
    parser.add_argument("--no-governance-off", dest="governance_off", action="store_false")
    parser.add_argument(
        "--minimal-record",
        action="store_true",
        help="run: also measure the least a durable record could cost (bench.minimal_record: "
        "one narrow row per token, committed), next to governance OFF",
    )
    parser.add_argument("--peers-dir", type=Path, default=Path("/tmp/peers"))
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES, help="admin URL")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each row, wait up to this long for the machine to be idle (<0.25 cores "
        "busy): other jobs on a shared box skew exch/s",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="PATH",
        help="record the server with py-spy during the first row (collapsed stacks to PATH)",
    )
    args = parser.parse_args(argv)
    soaking = args.mode == "soak"
    timing = args.mode == "latency"
    if args.duration is None:
        args.duration = 300.0 if soaking else 30.0 if timing else 6.0
    if args.warmup is None:
        args.warmup = 10.0 if soaking else 2.0
    if args.concurrency is None:
        args.concurrency = 16 if timing else 8
    args.servers = _split(args.servers, SERVERS)
    if args.rounds < 1 or (args.rounds > 1 and args.mode not in ("run", "peers")):
        parser.error("--rounds is for the run and peers modes, and at least 1")
    if args.peer_workers is not None and (args.mode != "peers" or args.peer_workers < 1):
        parser.error("--peer-workers is for the peers mode, and at least 1")
    if not timing and (args.rate is not None or args.fraction != 0.5 or args.targets != "sts"):
        parser.error("--rate, --fraction and --targets are for the latency mode")
    args.targets = _split(args.targets, LATENCY_TARGETS)
    if not args.targets:
        parser.error(f"--targets names at least one of {','.join(LATENCY_TARGETS)}")
    if soaking or timing:
        if args.scenarios is not None or args.databases is not None:
            parser.error(f"{args.mode} runs one --scenario on one --database")
        if soaking and len(args.servers) != 1:
            parser.error("soak runs one server: --servers granian or --servers gunicorn")
        if args.py_spy is not None:
            parser.error(f"--py-spy is not supported in {args.mode} mode")
        if args.sample_every <= 0 or args.duration <= 0:
            parser.error("--duration and --sample-every must be positive")
        if args.fraction <= 0 or args.peak_duration <= 0 or (args.rate or 1) <= 0:
            parser.error("--fraction, --peak-duration and --rate must be positive")
        args.scenario = args.scenario or "ci-deploy"
        args.database = args.database or "sqlite"
        args.scenarios, args.databases = [args.scenario], [args.database]
    else:
        if args.scenario is not None or args.database is not None:
            parser.error(
                "--scenario/--database are for soak and latency; use --scenarios/--databases"
            )
        args.scenarios = _split(args.scenarios or ",".join(SCENARIOS), SCENARIOS)
        args.databases = _split(args.databases or "sqlite,postgresql", ("sqlite", "postgresql"))
    problem = single_use_problem(args)
    if problem is not None:
        parser.error(problem)
    return args


def single_use_problem(args: argparse.Namespace) -> str | None:
    """Why a selected single-use scenario (a DPoP proof per request) cannot run as asked.
    Its pool is made before each load and must last it: a request for every exchange of
    the load (``single_use_pool``), and proofs still fresh at its end (the bench server's
    STS_DPOP_PROOF_MAX_AGE): a replayed or stale proof would count as an error."""
    names = [name for name in args.scenarios if SCENARIOS[name].single_use]
    if not names or args.mode == "peers":  # peers runs peer-shape only
        return None
    if args.mode == "soak":
        return (
            f"soak cannot run {names[0]}: a DPoP proof is good once, so the pool would need "
            "a request for every exchange of the whole soak; use the run or latency mode"
        )
    for seconds, connections, rate in pooled_loads(args):
        try:
            single_use_pool(seconds, connections, rate)
        except ValueError as exc:
            return f"{names[0]}: {exc} (or leave {names[0]} out)"
        if args.quiet_wait + seconds + POOL_OVERHEAD_SECONDS > DPOP_PROOF_MAX_AGE:
            return (
                f"{names[0]}: its DPoP proofs, made before the quiet wait, would be older than "
                f"the bench server's STS_DPOP_PROOF_MAX_AGE ({DPOP_PROOF_MAX_AGE} s) by the "
                "end of the load: shorten --quiet-wait or the run"
            )
    return None


def pooled_loads(args: argparse.Namespace) -> list[tuple[float, int, float]]:
    """(seconds, connections, exchanges/s at most) of each load that gets a pool of its own
    (``requests_for``): a row of the run mode; the latency mode's peak and open loop."""
    ceiling = float(CEILING_PER_SECOND)
    if args.mode != "latency":
        return [(args.warmup + args.duration, args.concurrency, ceiling)]
    # The open loop runs at --rate, or at --fraction of a peak that is below the ceiling.
    open_loop = (
        args.warmup + args.duration,
        args.concurrency,
        args.rate or args.fraction * ceiling,
    )
    if args.rate is not None:
        return [open_loop]
    return [(args.warmup + args.peak_duration, args.peak_concurrency, ceiling), open_loop]


def requests_for(
    scenario: Scenario,
    world: World,
    port: int,
    seconds: float,
    connections: int,
    rate: float = CEILING_PER_SECOND,
) -> list[bytes]:
    """The scenario's pool for one load of ``seconds`` (warmup included) over
    ``connections`` at up to ``rate`` exchanges/s. A single-use scenario's pool is made
    for that load only, sized by ``single_use_pool``: no request in it is sent twice."""
    if not scenario.single_use:
        return scenario.build(world, port)
    size = single_use_pool(seconds, connections, rate)
    return scenario.build(replace(world, proof_pool=size), port)


def _split(value: str, allowed: Any) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise SystemExit(f"unknown {unknown}; choose from {list(allowed)}")
    return items


class Runner:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rows: list[Row] = []
        self.profiled = False
        self.round = 1

    def requests(self, name: str, world: World, port: int) -> list[bytes]:
        """Scenario ``name``'s pool for one row of this run."""
        seconds = self.args.warmup + self.args.duration
        return requests_for(SCENARIOS[name], world, port, seconds, self.args.concurrency)

    def spec(self, port: int, requests: list[bytes]) -> LoadSpec:
        return LoadSpec(
            port=port,
            requests=requests,
            duration=self.args.duration,
            warmup=self.args.warmup,
            concurrency=self.args.concurrency,
            processes=self.args.processes,
        )

    def measure(
        self,
        row: Row,
        port: int,
        pid: int,
        build: Callable[[], list[bytes]],
        world: World | None = None,
    ) -> Row:
        label = f"{row.target} / {row.server} / {row.database} / {row.scenario}"
        print(f"  measuring {label} ...", file=sys.stderr, flush=True)
        spy = None
        try:
            spec = self.spec(port, build())
            row.notes["idle_before_s"] = wait_for_quiet(self.args.quiet_wait)
            if self.args.py_spy and not self.profiled:
                self.profiled = True
                row.notes["py_spy"] = str(self.args.py_spy)
                # Starts now, so it covers the warmup too; the run is long enough to matter.
                spy = pyspy.record(pid, self.args.py_spy, spec.warmup + spec.duration)
            row.result = run_load(spec, server_pid=pid, database_pids=database_pids(world))
        except Exception as exc:  # one failed row must not lose the others
            row.failure = f"{type(exc).__name__}: {exc}"
        finally:
            if spy is not None:
                try:
                    spy.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
        row.round = self.round
        self.rows.append(row)
        return row

    def failed(self, row: Row, exc: Exception) -> None:
        row.failure = f"{type(exc).__name__}: {str(exc)[-600:]}"
        print(f"  FAILED {row.target}/{row.server}/{row.database}: {row.failure}", file=sys.stderr)
        row.round = self.round
        self.rows.append(row)

    def sts(self, kind: str, world: World, server: str) -> AbstractContextManager[RunningServer]:
        port = servers.free_port()
        command = servers.command_for(kind, port, self.args.workers, server, self.args.threads)
        log = self.workdir / f"{kind}-{world.database}-{server}.log"
        return servers.running(command, kind, port, world.env, log, "/readyz")

    def floor(self, jwks_path: Path, server: str) -> AbstractContextManager[RunningServer]:
        port = servers.free_port()
        command = servers.command_for("floor", port, self.args.workers, server, self.args.threads)
        env = {"BENCH_FLOOR_JWKS": str(jwks_path)}
        log = self.workdir / f"floor-{server}.log"
        return servers.running(command, "floor", port, env, log, "/healthz")

    # ---- modes --------------------------------------------------------------------------

    def run_sts(self, world: World, scenarios: list[str]) -> None:
        for server in self.args.servers:
            try:
                with self.sts("sts", world, server) as running:
                    for name in scenarios:
                        row = Row("sts", server, world.database, name)
                        self.measure(
                            row,
                            running.port,
                            running.pid,
                            lambda n=name, p=running.port: self.requests(n, world, p),  # type: ignore[misc]
                            world,
                        )
            except Exception as exc:
                self.failed(Row("sts", server, world.database, ",".join(scenarios)), exc)
            if not self.args.governance_off or "ci-deploy" not in scenarios:
                continue
            variants = [("sts-nogov", GOVERNANCE_OFF)]
            if self.args.minimal_record:
                variants.append(("sts-minimal", GOVERNANCE_MINIMAL))
            for kind, target in variants:
                try:
                    with self.sts(kind, world, server) as running:
                        row = Row(target, server, world.database, "ci-deploy")
                        self.measure(
                            row,
                            running.port,
                            running.pid,
                            lambda p=running.port: SCENARIOS["ci-deploy"].build(world, p),  # type: ignore[misc]
                            world,
                        )
                except Exception as exc:
                    self.failed(Row(target, server, world.database, "ci-deploy"), exc)

    def run_floor(self, peer: PeerTokens, jwks_path: Path) -> None:
        for server in self.args.servers:
            try:
                with self.floor(jwks_path, server) as running:
                    row = Row(FLOOR, server, "-", "peer-shape")
                    self.measure(
                        row,
                        running.port,
                        running.pid,
                        lambda p=running.port: peer_requests(peer.tokens, p),  # type: ignore[misc]
                    )
            except Exception as exc:
                self.failed(Row(FLOOR, server, "-", "peer-shape"), exc)

    def run_peer(self, name: str, peer: PeerTokens) -> None:
        directory = self.args.peers_dir / name
        port = servers.free_port()
        workers = self.args.peer_workers or self.args.workers
        row = Row(name, f"{workers} process(es)", "in-memory", "peer-shape")
        try:
            with peer_server(directory, port, workers) as pid:
                self.measure(row, port, pid, lambda: peer_requests(peer.tokens, port))
        except Exception as exc:
            self.failed(row, exc)


def wait_for_quiet(limit: float, threshold: float = 0.25, step: float = 0.5) -> float | None:
    """Wait (at most ``limit`` seconds) until the machine's busy cores over ``step`` drop
    below ``threshold``; return how long it took, or None if it never did."""
    waited = 0.0
    while waited < limit:
        before = procfs.machine_busy_seconds()
        time.sleep(step)
        waited += step
        if (procfs.machine_busy_seconds() - before) / step < threshold:
            return waited
    return None if limit > 0 else 0.0


def database_pids(world: World | None) -> Callable[[], list[int]] | None:
    """PostgreSQL backends serving the world's database (their process title names it)."""
    if world is None or world.database != "postgresql":
        return None
    name = make_url(world.env["STS_DATABASE_URL"]).database or ""
    return lambda: procfs.postgres_backends(name)


@contextmanager
def peer_server(directory: Path, port: int, workers: int) -> Iterator[int]:
    """A peer via its own start.sh / stop.sh (the peers folder must be a writable copy)."""
    if not (directory / "start.sh").exists():
        raise RuntimeError(f"{directory}/start.sh not found (copy the peers folder first)")
    started = subprocess.run(
        [str(directory / "start.sh"), str(port), str(workers)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(f"  {started.stdout.strip()}", file=sys.stderr)
    if started.returncode != 0:
        raise RuntimeError(f"{directory.name} did not start: {started.stdout}{started.stderr}")
    try:
        yield int((directory / "run/server.pid").read_text())
    finally:
        subprocess.run([str(directory / "stop.sh")], capture_output=True, timeout=30, check=False)


def found_peers_dir(args: argparse.Namespace) -> Path | None:
    return args.peers_dir if (args.peers_dir / "common").exists() else None


def subject_tokens(args: argparse.Namespace, lifetime: int = 7200) -> PeerTokens:
    """The upstream issuer's key and subject tokens (the peers' own when present)."""
    print(f"minting {args.pool} subject tokens of each kind ...", file=sys.stderr)
    return peer_tokens(found_peers_dir(args), args.pool, lifetime)


@contextmanager
def seeded_world(
    args: argparse.Namespace,
    workdir: Path,
    database: str,
    peer: PeerTokens,
    lifetime: int = 7200,
) -> Iterator[World]:
    """A throw-away database of ``database``'s kind, migrated and seeded, with the token
    pools; the database is dropped on exit (even on failure)."""
    dbdir = workdir / database
    dbdir.mkdir()
    with database_url(database, dbdir, args.postgres_url) as url:
        print(f"seeding {database} ...", file=sys.stderr)
        yield seed(database, dbdir, url, args.pool, peer, lifetime)


# ---- output ------------------------------------------------------------------------------


def _mib(rss: dict[str, int], workers_only: bool = True) -> float:
    values = [v for k, v in rss.items() if not workers_only or k != "master"]
    return sum(values) / 1024


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


HEADERS = (
    "target",
    "server",
    "db",
    "scenario",
    "exch/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "errors",
    "conn/req",
    "srv cores",
    "srv CPU ms/exch",
    "PG CPU ms/exch",
    "other cores",
    "worker RSS MiB start→end",
)


def row_cells(row: Row) -> list[str]:
    head = [row.target, row.server, row.database, row.scenario]
    result = row.result
    if result is None:
        return [*head, "FAILED", "", "", "", (row.failure or "")[:60], "", "", "", "", "", ""]
    return [
        *head,
        f"{result.rate:.0f}",
        _fmt(result.latencies_ms["p50"], 2),
        _fmt(result.latencies_ms["p90"], 2),
        _fmt(result.latencies_ms["p99"], 2),
        str(sum(result.errors.values())),
        f"{result.connects_per_request:.2f}",
        _fmt(result.server_cores, 2),
        _fmt(result.server_cpu_ms_per_exchange, 2),
        _fmt(result.database_cpu_ms_per_exchange, 2),
        _fmt(result.foreign_cores, 2),
        f"{_mib(dict(result.rss_start)):.0f}→{_mib(dict(result.rss_end)):.0f}",
    ]


def markdown_table(headers: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    numeric = [i >= 4 for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=False)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if n else "-" * (w + 2)
            for w, n in zip(widths, numeric, strict=False)
        )
        + "|"
    )
    return "\n".join([line(list(headers)), rule, *(line(r) for r in rows)])


def ratio_table(rows: list[Row]) -> str:
    """sts (each database) vs the peers: exchanges/s and server CPU per exchange."""

    def find(target: str) -> Row | None:
        return next((r for r in rows if r.target == target and r.result), None)

    peers = {name: find(name) for name in PEERS}
    lines = []
    for row in rows:
        if not row.target.startswith(("sts", "floor")) or row.result is None:
            continue
        cells = [f"{row.target} ({row.server}, {row.database})"]
        for name in PEERS:
            peer = peers[name]
            if peer is None or peer.result is None:
                cells += ["n/a", "n/a"]
                continue
            rate = row.result.rate / peer.result.rate if peer.result.rate else None
            ours, theirs = (
                row.result.server_cpu_ms_per_exchange,
                peer.result.server_cpu_ms_per_exchange,
            )
            cpu = ours / theirs if ours and theirs else None
            cells += [_fmt(rate, 2), _fmt(cpu, 2)]
        lines.append(cells)
    headers = [
        "ratio",
        "exch/s ÷ oidc-provider",
        "CPU/exch ÷ oidc-provider",
        "exch/s ÷ idpyoidc",
        "CPU/exch ÷ idpyoidc",
    ]
    widths = [
        max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(headers)
    ]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"
        for cells in lines
    ]
    return "\n".join(out)


def ratios_by_round(rows: list[Row]) -> dict[tuple[str, str], list[float]]:
    """(sts or floor row's label, "exch/s ÷ peer", "CPU/exch ÷ peer" or, for sts, "CPU/exch
    ÷ floor" on the same server) -> the ratio in each round where both were measured. A
    ratio is taken within one round only: its two rows ran minutes apart on the same
    machine, not an hour."""
    ratios: dict[tuple[str, str], list[float]] = {}
    for number in sorted({r.round for r in rows}):
        measured = [r for r in rows if r.round == number and r.result is not None]
        peers = {r.target: r.result for r in measured if r.target in PEERS}
        floors = {r.server: r.result for r in measured if r.target.startswith("floor")}
        for row in measured:
            if not row.target.startswith(("sts", "floor")):
                continue
            assert row.result is not None
            label = f"{row.target} ({row.server}, {row.database})"
            floor = floors.get(row.server) if row.target.startswith("sts") else None
            if floor is not None:
                ours, theirs = (
                    row.result.server_cpu_ms_per_exchange,
                    floor.server_cpu_ms_per_exchange,
                )
                if ours and theirs:
                    ratios.setdefault((label, "CPU/exch ÷ floor"), []).append(ours / theirs)
            for name, peer in peers.items():
                assert peer is not None
                if peer.rate:
                    ratios.setdefault((label, f"exch/s ÷ {name}"), []).append(
                        row.result.rate / peer.rate
                    )
                ours = row.result.server_cpu_ms_per_exchange
                theirs = peer.server_cpu_ms_per_exchange
                if ours and theirs:
                    ratios.setdefault((label, f"CPU/exch ÷ {name}"), []).append(ours / theirs)
    return ratios


def rounds_summary(rows: list[Row]) -> str:
    """One line per sts or floor row: each ratio as median (lowest-highest) over rounds."""
    ratios = ratios_by_round(rows)
    columns = [f"{what} ÷ {name}" for name in PEERS for what in ("exch/s", "CPU/exch")]
    columns.append("CPU/exch ÷ floor")
    labels = list(dict.fromkeys(label for label, _ in ratios))
    lines = []
    for label in labels:
        cells = [label]
        for column in columns:
            values = ratios.get((label, column))
            cells.append(
                f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
                if values
                else "n/a"
            )
        lines.append(cells)
    return markdown_table(["ratio", *columns], lines)


def governance_costs(rows: list[Row], on_target: str = "sts") -> dict[tuple[str, str], list[float]]:
    """(server, database) -> 1 - (exch/s with governance ÷ without), CI JWT, in each round
    where both rows were measured; with ``on_target`` GOVERNANCE_MINIMAL, what the least
    durable record costs instead of governance."""
    costs: dict[tuple[str, str], list[float]] = {}
    for number in sorted({r.round for r in rows}):
        measured = [r for r in rows if r.round == number and r.scenario == "ci-deploy"]
        for off in (r for r in measured if r.target == GOVERNANCE_OFF and r.result):
            on = next(
                (
                    r
                    for r in measured
                    if r.target == on_target
                    and (r.server, r.database) == (off.server, off.database)
                ),
                None,
            )
            if on is not None and on.result is not None and off.result and off.result.rate:
                costs.setdefault((off.server, off.database), []).append(
                    1 - on.result.rate / off.result.rate
                )
    return costs


def governance_summary(rows: list[Row]) -> str:
    lines = [
        [
            f"{server}, {database}{label}",
            f"{statistics.median(values):.0%} ({min(values):.0%} to {max(values):.0%})",
            " ".join(f"{value:.0%}" for value in values),
        ]
        for on_target, label in (("sts", ""), (GOVERNANCE_MINIMAL, ", one narrow row"))
        for (server, database), values in governance_costs(rows, on_target).items()
    ]
    return markdown_table(["server, database", "1 - on ÷ off (CI JWT)", "rounds"], lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "soak":
        return run_soak(args)
    if args.mode == "latency":
        return run_latency(args)
    started = time.time()
    peers_dir = found_peers_dir(args)
    with tempfile.TemporaryDirectory(prefix="sts-bench-") as tmp:
        workdir = Path(tmp)
        runner = Runner(args, workdir)
        peer = subject_tokens(args)
        scenarios = args.scenarios if args.mode == "run" else ["peer-shape"]
        jwks_path = workdir / "upstream_public.jwks.json"
        jwks_path.write_text(json.dumps(peer.jwks))

        def run_peers() -> None:
            for name in PEERS:
                if peers_dir is None:
                    runner.failed(
                        Row(name, "-", "-", "peer-shape"),
                        RuntimeError(f"peers folder not found at {args.peers_dir}"),
                    )
                else:
                    runner.run_peer(name, peer)

        def run_sts() -> None:
            # A fresh database every round: each starts from the same seeded state.
            round_dir = workdir / f"round-{runner.round}"
            round_dir.mkdir()
            for database in args.databases:
                try:
                    with seeded_world(args, round_dir, database, peer) as world:
                        runner.run_sts(world, scenarios)
                except Exception as exc:
                    runner.failed(Row("sts", "-", database, ",".join(scenarios)), exc)

        def run_floor() -> None:
            if args.floor:
                runner.run_floor(peer, jwks_path)

        order = [*([run_peers] if args.mode == "peers" else []), run_sts, run_floor]
        for number in range(1, args.rounds + 1):
            runner.round = number
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}", file=sys.stderr, flush=True)
            # Every other round in reverse: a machine that drifts during the run favours
            # no target in the median.
            for step in order if number % 2 else reversed(order):
                step()
        rows = runner.rows

    table = "\n\n".join(
        (f"round {number}:\n" if args.rounds > 1 else "")
        + markdown_table(HEADERS, [row_cells(r) for r in rows if r.round == number])
        for number in range(1, args.rounds + 1)
    )
    print()
    print(
        f"sts bench ({args.mode}): {args.concurrency} connections from {args.processes} "
        f"processes, {args.warmup:g} s warmup + {args.duration:g} s measured per row, "
        f"{args.workers} server workers; subject tokens: pools of {args.pool}"
        + (f" from {peer.source}" if args.mode == "peers" else "")
    )
    print(table)
    if args.mode == "peers":
        for number in range(1, args.rounds + 1):
            print()
            if args.rounds > 1:
                print(f"round {number}:")
            print(ratio_table([r for r in rows if r.round == number]))
        if args.rounds > 1:
            print()
            print(f"each round's ratio over {args.rounds} rounds: median (lowest-highest)")
            print(rounds_summary(rows))
    elif args.rounds > 1 and any(r.target == GOVERNANCE_OFF for r in rows):
        print()
        print(f"governance's cost over {args.rounds} rounds: median (lowest-highest)")
        print(governance_summary(rows))
    for row in rows:
        if row.result and row.result.errors:
            print(
                f"errors in {row.target}/{row.database}/{row.scenario}: {row.result.error_samples}"
            )
        if row.failure:
            print(f"FAILED {row.target}/{row.server}/{row.database}: {row.failure}")
    if args.py_spy and args.py_spy.exists():
        profiled = next((r for r in rows if "py_spy" in r.notes), None)
        cpu = profiled.result.server_cpu_ms_per_exchange if profiled and profiled.result else None
        totals, samples = pyspy.summarize(args.py_spy)
        if profiled:
            print(
                f"\npy-spy, {profiled.target}/{profiled.server}/{profiled.database}/"
                f"{profiled.scenario} ({samples} CPU samples; the run was slowed by py-spy):"
            )
        print(pyspy.render(totals, samples, cpu))
    save_results(args, started, {"rows": [row.as_dict() for row in rows], "table": table})
    return 0 if all(r.result for r in rows) else 1


def save_results(args: argparse.Namespace, started: float, content: dict[str, Any]) -> None:
    """``bench/results/<mode>-<UTC time>.json``, and ``--json`` when given: the mode, when it
    started, how long it took and its settings, then ``content``; prints where it went."""
    document = {
        "mode": args.mode,
        "started": started,
        "elapsed_s": round(time.time() - started, 1),
        "settings": settings_of(args),
        **content,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    paths = [RESULTS / f"{args.mode}-{stamp}.json", *([args.json] if args.json else [])]
    for path in paths:
        path.write_text(json.dumps(document, indent=2, default=str))
    print(f"\n{time.time() - started:.0f} s; results: {', '.join(map(str, paths))}")


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


# ---- soak ----------------------------------------------------------------------------------


def run_soak(args: argparse.Namespace) -> int:
    """One scenario, one database, one real ``sts serve``, closed loop for ``--duration``
    after ``--warmup``; every worker's RSS and the exchange count every ``--sample-every``
    seconds (see bench/soak.py)."""
    started = time.time()
    server = args.servers[0]
    # Subject tokens must outlive the run (pre-minted sts tokens are capped by the server's
    # STS_MAX_TOKEN_TTL, 3600 s, which bounds a re-exchange soak).
    lifetime = max(7200, int(args.warmup + args.duration) + 3600)
    samples: list[soak.Sample] = []
    result: LoadResult | None = None
    failure: str | None = None
    notes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sts-bench-") as tmp:
        workdir = Path(tmp)
        runner = Runner(args, workdir)
        try:
            peer = subject_tokens(args, lifetime)
            with (
                seeded_world(args, workdir, args.database, peer, lifetime) as world,
                runner.sts("sts", world, server) as running,
            ):
                spec = runner.spec(
                    running.port, SCENARIOS[args.scenario].build(world, running.port)
                )
                idle = wait_for_quiet(args.quiet_wait)
                notes = {
                    "server_pid": running.pid,
                    "workers_at_start": sorted(procfs.tree(running.pid)[1:]),
                }
                print(
                    f"soaking {args.scenario} / {args.database} / {server}: server pid "
                    f"{running.pid}, workers {notes['workers_at_start']}; "
                    f"{args.warmup:g} s warmup + {args.duration:g} s, a sample every "
                    f"{args.sample_every:g} s ...",
                    file=sys.stderr,
                    flush=True,
                )
                progress = Progress(args.concurrency)
                result = run_load(
                    spec,
                    server_pid=running.pid,
                    database_pids=database_pids(world),
                    progress=progress,
                    monitor=soak.sampler(
                        running.pid, progress, args.sample_every, samples, soak.echo_stderr
                    ),
                )
                notes["idle_before_s"] = idle
                notes["progress_final"] = progress.counts()
        except Exception as exc:
            failure = f"{type(exc).__name__}: {str(exc)[-600:]}"
    summary = soak.summarize(samples) if samples else None
    print()
    print(
        f"sts bench soak: {args.scenario} on {args.database}, {server} with {args.workers} "
        f"workers; {args.concurrency} connections from {args.processes} processes; "
        f"{args.warmup:g} s warmup + {args.duration:g} s, RSS every {args.sample_every:g} s"
    )
    if samples:
        print(soak.samples_table(samples))
    if summary is not None:
        print()
        print(soak.summary_table(summary))
    if result is not None:
        print(
            f"\n{result.ok} exchanges in {result.duration:g} s = {result.rate:.1f} exch/s; "
            f"errors {sum(result.errors.values())}; p50 {_fmt(result.latencies_ms['p50'], 2)} ms, "
            f"p99 {_fmt(result.latencies_ms['p99'], 2)} ms; server CPU "
            f"{_fmt(result.server_cpu_ms_per_exchange, 2)} ms/exch; other cores "
            f"{_fmt(result.foreign_cores, 2)}"
        )
        if result.errors:
            print(f"errors: {result.errors}; first: {result.error_samples}")
    if summary is not None:
        changed = summary["pids_changed"]
        print(
            "worker PIDs: "
            + ("CHANGED: " + "; ".join(changed) if changed else "the same throughout the run")
        )
    if failure:
        print(f"FAILED: {failure}")
    save_results(
        args,
        started,
        {
            **notes,
            "failure": failure,
            "summary": summary,
            "samples": [s.as_dict() for s in samples],
            "load": result.as_dict() if result else None,
        },
    )
    if failure or result is None or summary is None:
        return 1
    return 1 if result.errors or summary["pids_changed"] else 0


# ---- latency -------------------------------------------------------------------------------


def run_latency(args: argparse.Namespace) -> int:
    """One scenario on one database; per server in ``--servers`` and target in
    ``--targets``: one real server, the peak from the usual closed loop (unless ``--rate``),
    then the open loop at ``--fraction`` of it (or at ``--rate``) for ``--duration`` seconds
    (see bench/latency.py)."""
    started = time.time()
    each = args.warmup + args.duration + (0 if args.rate else args.warmup + args.peak_duration)
    lifetime = max(7200, int(each * len(args.servers) * len(args.targets)) + 3600)
    rows: list[latency.LatencyRow] = []
    failure: str | None = None
    with tempfile.TemporaryDirectory(prefix="sts-bench-") as tmp:
        workdir = Path(tmp)
        runner = Runner(args, workdir)
        try:
            peer = subject_tokens(args, lifetime)
            with seeded_world(args, workdir, args.database, peer, lifetime) as world:
                for server in args.servers:
                    for target in args.targets:
                        rows.append(
                            measure_latency(args, *latency_target(runner, world, server, target))
                        )
        except Exception as exc:
            failure = f"{type(exc).__name__}: {str(exc)[-600:]}"
    table = markdown_table(latency.HEADERS, [latency.cells(r) for r in rows])
    print()
    peak_how = (
        f"peak: closed loop, {args.peak_concurrency} connections, {args.warmup:g} s + "
        f"{args.peak_duration:g} s; "
        if args.rate is None
        else ""
    )
    print(
        f"sts bench latency: {args.scenario} on {args.database}, {args.workers} server "
        f"workers; {peak_how}open loop: {args.concurrency} connections from "
        f"{args.processes} processes, {args.warmup:g} s + {args.duration:g} s at "
        + (f"{args.rate:g}/s" if args.rate else f"{args.fraction:g} x peak")
        + "; latency from the intended send time"
    )
    print(table)
    for row in rows:
        label = f"{row.target}/{row.server}"
        if row.result and row.result.send_lag_ms:
            lag, naive = row.result.send_lag_ms, row.result.from_send_ms
            print(
                f"{label}: {row.result.scheduled} requests due in the window; send lag "
                f"(actual - intended send time) p50 {lag['p50']:.2f}, p99 {lag['p99']:.2f}, max "
                f"{lag['max']:.2f} ms; latency from the actual send (coordinated omission) "
                f"p99 {naive['p99']:.2f}, max {naive['max']:.2f} ms"
            )
        for warning in latency.warnings(row, args.concurrency):
            print(f"warning: {warning}")
        if row.result and row.result.errors:
            print(f"errors in {label}: {row.result.errors}; first: {row.result.error_samples}")
        if row.failure:
            print(f"FAILED {label}: {row.failure}")
    if failure:
        print(f"FAILED: {failure}")
    save_results(
        args,
        started,
        {"failure": failure, "rows": [row.as_dict() for row in rows], "table": table},
    )
    return 0 if rows and not failure and all(r.result for r in rows) else 1


# What the latency mode measures for one target: its row, the server to start, the request
# pool for one load (port, seconds, connections, rate) and the database's backends.
LatencyTarget = tuple[
    latency.LatencyRow,
    Callable[[], AbstractContextManager[RunningServer]],
    Callable[[int, float, int, float], list[bytes]],
    Callable[[], list[int]] | None,
]


def latency_target(runner: Runner, world: World, server: str, target: str) -> LatencyTarget:
    """``target`` (a ``--targets`` name) on ``server``. The floor has no database and speaks
    only the peers' contract: it answers peer-shape requests, whatever ``--scenario`` is."""
    args = runner.args
    fraction = None if args.rate else args.fraction
    if target == "floor":
        return (
            latency.LatencyRow(target, server, "-", "peer-shape", fraction),
            lambda: runner.floor(world.upstream_jwks_path, server),
            lambda port, *_: peer_requests(world.peer.tokens, port),
            None,
        )
    scenario = SCENARIOS[args.scenario]
    return (
        latency.LatencyRow(target, server, world.database, args.scenario, fraction),
        lambda: runner.sts(LATENCY_TARGETS[target], world, server),
        lambda port, seconds, connections, rate: requests_for(
            scenario, world, port, seconds, connections, rate
        ),
        database_pids(world),
    )


def measure_latency(
    args: argparse.Namespace,
    row: latency.LatencyRow,
    start_server: Callable[[], AbstractContextManager[RunningServer]],
    pool: Callable[[int, float, int, float], list[bytes]],
    pids: Callable[[], list[int]] | None,
) -> latency.LatencyRow:
    label = f"{row.target}/{row.server}"
    try:
        with start_server() as running:
            rate = args.rate
            if rate is None:
                peak = LoadSpec(
                    port=running.port,
                    requests=pool(
                        running.port,
                        args.warmup + args.peak_duration,
                        args.peak_concurrency,
                        CEILING_PER_SECOND,
                    ),
                    duration=args.peak_duration,
                    warmup=args.warmup,
                    concurrency=args.peak_concurrency,
                    processes=args.processes,
                )
                row.notes["idle_before_peak_s"] = wait_for_quiet(args.quiet_wait)
                print(f"  {label}: peak (closed loop) ...", file=sys.stderr, flush=True)
                row.peak = run_load(peak, server_pid=running.pid, database_pids=pids)
                if not row.peak.ok:
                    raise RuntimeError(
                        f"no exchange succeeded in the peak run: {row.peak.error_samples}"
                    )
                rate = args.fraction * row.peak.rate
            # A pool of its own: a single-use scenario's peak spent its pool's requests, and
            # the open loop's is sized at the rate it runs at.
            spec = LoadSpec(
                port=running.port,
                requests=pool(running.port, args.warmup + args.duration, args.concurrency, rate),
                duration=args.duration,
                warmup=args.warmup,
                concurrency=args.concurrency,
                processes=args.processes,
                rate=rate,
            )
            row.notes["idle_before_s"] = wait_for_quiet(args.quiet_wait)
            print(
                f"  {label}: open loop at {rate:.0f}/s over {args.concurrency} connections ...",
                file=sys.stderr,
                flush=True,
            )
            row.result = run_load(spec, server_pid=running.pid, database_pids=pids)
    except Exception as exc:  # one failed target must not lose the others
        row.failure = f"{type(exc).__name__}: {str(exc)[-600:]}"
        print(f"  FAILED {label}: {row.failure}", file=sys.stderr)
    return row


if __name__ == "__main__":
    sys.exit(main())
