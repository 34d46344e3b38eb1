"""Before and after, alternating: the same bench run on two checkouts, turn by turn.

This box's speed drifts by ±10-20 % within minutes, so a change is only measured against
its "before" run in the same minutes, several times. This runs ``python -m bench ARGS``
alternately from the other checkout (``--base``) and from this one, ``--rounds`` times
each, and prints every row's exchanges/s and server CPU per exchange per round, their
medians and the ratio of the medians::

    git worktree add /tmp/base HEAD~1
    python -m bench.compare --base /tmp/base --rounds 3 -- \\
        --databases sqlite --scenarios ci-deploy --servers granian,gunicorn --no-floor

Each side runs from its own directory (``cwd``), so ``python -m`` imports that
checkout's ``sts`` and ``bench``, and the servers it starts do too (setting PYTHONPATH
instead would not: ``python -m`` puts the current directory first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
RowKey = tuple[str, str, str, str]  # target, server, database, scenario


@dataclass
class Side:
    """One row's figures on one side, a value per round."""

    exchanges_per_s: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


@dataclass
class Comparison:
    key: RowKey
    base: Side
    head: Side

    def ratio(self) -> float | None:
        """Median exchanges/s after ÷ before (None when a side has no figure)."""
        if not self.base.exchanges_per_s or not self.head.exchanges_per_s:
            return None
        before = statistics.median(self.base.exchanges_per_s)
        return statistics.median(self.head.exchanges_per_s) / before if before else None


def row_key(row: dict[str, Any]) -> RowKey:
    return (row["target"], row["server"], row["database"], row["scenario"])


def collect(runs: Sequence[Sequence[dict[str, Any]]]) -> dict[RowKey, Side]:
    """Every run's rows, by row: the figures of the rows that completed."""
    sides: dict[RowKey, Side] = {}
    for rows in runs:
        for row in rows:
            if row.get("failure"):
                continue
            side = sides.setdefault(row_key(row), Side())
            side.exchanges_per_s.append(float(row["exchanges_per_s"]))
            cpu = row.get("server_cpu_ms_per_exchange")
            if cpu is not None:
                side.cpu_ms.append(float(cpu))
    return sides


def compare(
    base_runs: Sequence[Sequence[dict[str, Any]]], head_runs: Sequence[Sequence[dict[str, Any]]]
) -> list[Comparison]:
    base, head = collect(base_runs), collect(head_runs)
    keys = list(dict.fromkeys([*base, *head]))
    return [Comparison(key, base.get(key, Side()), head.get(key, Side())) for key in keys]


def _figures(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    each = " / ".join(f"{value:.{digits}f}" for value in values)
    return f"{each} (median {statistics.median(values):.{digits}f})"


def format_table(comparisons: Sequence[Comparison]) -> str:
    lines = [
        "| target | server | db | scenario | before exch/s | after exch/s | after ÷ before "
        "| before CPU ms | after CPU ms |",
        "|---|---|---|---|---|---|---:|---|---|",
    ]
    for item in comparisons:
        ratio = item.ratio()
        cells = [
            *item.key,
            _figures(item.base.exchanges_per_s, 0),
            _figures(item.head.exchanges_per_s, 0),
            f"{ratio:.2f}" if ratio is not None else "-",
            _figures(item.base.cpu_ms, 2),
            _figures(item.head.cpu_ms, 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_bench(checkout: Path, bench_args: Sequence[str], output: Path) -> list[dict[str, Any]]:
    """``python -m bench ARGS --json OUTPUT`` from ``checkout``; its rows."""
    command = [sys.executable, "-m", "bench", *bench_args, "--json", str(output)]
    print(f"  {checkout}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=checkout, check=True, stdout=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = json.loads(output.read_text())["rows"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="the 'before' checkout")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then python -m bench's")
    args = parser.parse_args(argv)
    bench_args = [arg for arg in args.bench_args if arg != "--"]
    if not (args.base / "bench" / "__main__.py").exists():
        parser.error(f"{args.base} is not a checkout of this repository (no bench/)")
    base_runs: list[list[dict[str, Any]]] = []
    head_runs: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="sts-compare-") as tmp:
        for round_number in range(args.rounds):
            print(f"round {round_number + 1} of {args.rounds}", flush=True)
            base_runs.append(run_bench(args.base.resolve(), bench_args, Path(tmp) / "base.json"))
            head_runs.append(run_bench(HERE, bench_args, Path(tmp) / "head.json"))
    print(f"\nbefore = {args.base}, after = {HERE}; {args.rounds} alternating round(s)")
    print(format_table(compare(base_runs, head_runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
