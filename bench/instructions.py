"""Instructions per exchange, counted by valgrind's callgrind: a figure this box's drift
cannot blur.

Throughput and CPU time here drift by ±10-25 % within minutes (see bench/README), so a
change of a few percent cannot be seen in them. The number of instructions an exchange
executes does not drift: the same code on the same inputs counts the same to within
~0.5 %. This runs the real app in process (as ``bench.profile`` does: built as ``sts
serve`` builds it, on a seeded throw-away database, WSGI environs sent straight in) under
``valgrind --tool=callgrind``, counts only while the measured exchanges run, and prints
instructions per exchange, split by the library they ran in::

    python -m bench.instructions --database postgresql --scenario ci-deploy
    python -m bench.instructions --base /tmp/base     # also on another checkout, and the ratio
    python -m bench.instructions --governance         # also with governance OFF (bench only)

What it does not count: the kernel (system calls: SQLite's WAL writes, the sockets),
PostgreSQL's backend, and time spent waiting; nor contention between processes. It judges
what a change does to the work of the process itself; throughput stays ``python -m
bench``'s job. Each side runs from its own checkout directory, as in ``bench.compare``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.scenarios import REPEATABLE

HERE = Path(__file__).resolve().parents[1]

# Where an instruction ran, by the name of the object file (first match wins).
LIBRARIES: list[tuple[str, tuple[str, ...]]] = [
    ("SQLite", ("libsqlite3", "_sqlite3")),
    ("psycopg + libpq", ("psycopg", "libpq")),
    ("crypto", ("cryptography", "_rust", "libcrypto", "libssl", "_hashlib")),
    ("C library", ("libc.so", "libc-", "libm.so", "ld-linux")),
    ("Python", ("python3", "libpython", "lib-dynload", "site-packages")),
]
COLUMNS = [name for name, _ in LIBRARIES] + ["other"]


def library_of(object_file: str) -> str:
    for name, markers in LIBRARIES:
        if any(marker in object_file for marker in markers):
            return name
    return "other"


_NAMED = re.compile(r"\((\d+)\)(?: (.*))?")


def instructions_by_object(callgrind_out: str) -> Counter[str]:
    """Self cost (instructions) per object file of a callgrind output file (format of
    valgrind's "Callgrind Format Specification"): cost lines add to the object of the
    current function; the cost line after ``calls=`` is a call's inclusive cost and is
    skipped. Object names may be compressed as ``(id) name``, then ``(id)``."""
    names: dict[str, str] = {}
    totals: Counter[str] = Counter()
    current = "?"
    call_cost_next = False

    def name_of(spec: str) -> str:
        match = _NAMED.fullmatch(spec.strip())
        if match is None:
            return spec.strip()
        ident, name = match.groups()
        if name is not None:
            names[ident] = name
        return names.get(ident, f"({ident})")

    for line in callgrind_out.splitlines():
        if not line:
            continue
        first = line[0]
        if first.isdigit() or first in "+-*":
            if call_cost_next:
                call_cost_next = False
                continue
            fields = line.split()
            if len(fields) >= 2:
                totals[current] += int(fields[1])
        elif line.startswith("ob="):
            current = name_of(line[3:])
        elif line.startswith("cob="):
            name_of(line[4:])  # may define a name that a later ob= refers to
        elif line.startswith("calls="):
            call_cost_next = True
    return totals


def total_instructions(callgrind_out: str) -> int:
    # "totals:" is the sum of every cost line; "summary:" is what was dumped at start-up
    # (0 with --instr-atstart=no), so totals first.
    for key in ("totals", "summary"):
        match = re.search(rf"^{key}: (\d+)", callgrind_out, re.MULTILINE)
        if match is not None:
            return int(match.group(1))
    raise ValueError("no totals in the callgrind output")


@dataclass(frozen=True)
class Count:
    checkout: str
    governance: bool
    requests: int
    total: int
    by_library: dict[str, int]

    def per_exchange(self, library: str | None = None) -> float:
        value = self.total if library is None else self.by_library.get(library, 0)
        return value / self.requests


def measure(
    checkout: Path, database: str, scenario: str, requests: int, *, governance: bool
) -> Count:
    """One run under callgrind, from ``checkout``."""
    with tempfile.TemporaryDirectory(prefix="sts-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",  # switched on around the measured exchanges only
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            CHILD,
            database,
            scenario,
            str(requests),
            "keep" if governance else "skip",
        ]
        done = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run failed in {checkout}:\n{done.stderr[-2000:]}")
        text = out.read_text()
    total = total_instructions(text)
    if total == 0:
        raise RuntimeError("callgrind counted nothing (was callgrind_control found?)")
    libraries: Counter[str] = Counter()
    for object_file, cost in instructions_by_object(text).items():
        libraries[library_of(object_file)] += cost
    return Count(str(checkout), governance, requests, total, dict(libraries))


# Run in the measured checkout's directory with ``python -c``, so that it imports THAT
# checkout's ``sts`` and ``bench`` (the base need not have this module). Argv: database,
# scenario, requests, "skip" or "keep" governance.
CHILD = """
import os, subprocess, sys
from bench.profile import app_in_process, drive
from bench.world import DEFAULT_POSTGRES

def toggle(state):
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True,
                   capture_output=True)

database, scenario, requests, governance = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with app_in_process(database, DEFAULT_POSTGRES, 1000, scenario) as (app, environs):
    if governance == "skip":
        import bench.no_governance, sts.grants.token_exchange
        # BENCH-ONLY MONKEYPATCH, in this measuring process only (bench.no_governance).
        sts.grants.token_exchange._record_issued = bench.no_governance._skip_recording
    drive(app, environs[:50])  # caches, compiled SQL, prepared statements, JWKS
    cycle = [environs[i % len(environs)] for i in range(requests)]
    toggle("on")
    ok = drive(app, cycle)
    toggle("off")
if ok != requests:
    sys.exit(f"only {ok}/{requests} exchanges succeeded")
"""


def table(counts: Sequence[Count]) -> str:
    head = "| checkout | governance | instructions / exchange | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(COLUMNS)]
    for count in counts:
        shares = " | ".join(f"{count.per_exchange(name) / 1e3:,.0f} k" for name in COLUMNS)
        state = "on" if count.governance else "OFF (bench only)"
        lines.append(
            f"| {count.checkout} | {state} | {count.per_exchange() / 1e3:,.0f} k | {shares} |"
        )
    return "\n".join(lines)


def ratios(counts: Iterable[Count]) -> list[str]:
    """head ÷ base at equal governance, and on ÷ off per checkout."""
    by = {(count.checkout, count.governance): count for count in counts}
    checkouts = list(dict.fromkeys(checkout for checkout, _ in by))
    lines = []
    if len(checkouts) == 2:
        base, head = checkouts
        for governance in (True, False):
            if (base, governance) in by and (head, governance) in by:
                before, after = by[base, governance], by[head, governance]
                lines.append(
                    f"after ÷ before, governance {'on' if governance else 'off'}: "
                    f"{after.per_exchange() / before.per_exchange():.3f}"
                )
    for checkout in checkouts:
        if (checkout, True) in by and (checkout, False) in by:
            on, off = by[checkout, True], by[checkout, False]
            extra = on.per_exchange() - off.per_exchange()
            lines.append(
                f"governance in {checkout}: +{extra / 1e3:,.0f} k instructions per exchange "
                f"(+{extra / off.per_exchange() * 100:.1f} %)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scenario", choices=REPEATABLE, default="ci-deploy")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--base", type=Path, help="another checkout to count as well")
    parser.add_argument(
        "--governance", action="store_true", help="also count with governance OFF (bench only)"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    checkouts = [HERE]
    if args.base is not None:
        if not (args.base / "sts" / "__init__.py").is_file():
            print(f"{args.base} is not an sts checkout", file=sys.stderr)
            return 2
        checkouts.insert(0, args.base.resolve())
    counts = [
        measure(checkout, args.database, args.scenario, args.requests, governance=governance)
        for checkout in checkouts
        for governance in ((True, False) if args.governance else (True,))
    ]
    print(
        f"{args.scenario} on {args.database}, {args.requests} exchanges in process, "
        "instructions per exchange (callgrind; user space of this process only)"
    )
    print(table(counts))
    for line in ratios(counts):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
