"""Profile the real server under load with py-spy, and split its CPU samples by step.

``python -m bench --py-spy /tmp/sts.txt ...`` records the server's whole process tree
(``py-spy record --subprocesses --format raw``, idle threads excluded: CPU samples only)
during the first measured row, then prints the breakdown. The raw file is the collapsed
stack format that flamegraph tools read; ``--format speedscope`` is the other useful one
(see bench/README.md). py-spy takes CPU itself: rows measured while it runs are slower.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.profile import CATEGORIES, categorize

FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*?)(?::\d+)?\)$")
SERVER_MARKERS = ("/gunicorn/", "/granian/")


def record(pid: int, output: Path, duration: float, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` and its children; it stops by itself after ``duration``."""
    executable = Path(sys.executable).with_name("py-spy")
    command = [str(executable), "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    command += ["--rate", str(rate), "--duration", str(max(1, int(duration)))]
    command += ["--format", "raw", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize(collapsed: Path) -> tuple[Counter[str], int]:
    """Samples per step from a collapsed-stack file (``a (f.py:1);b (g.py:2) COUNT``)."""
    totals: Counter[str] = Counter()
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        category = "framework"
        for frame in stack.split(";"):
            match = FRAME.match(frame.strip())
            if match is None:
                continue
            # py-spy prints paths relative to sys.path ("sqlalchemy/engine/base.py").
            path, function = "/" + match["path"].lstrip("/"), match["function"]
            if any(marker in path for marker in SERVER_MARKERS) and category == "framework":
                category = "HTTP server"
                continue
            if category == "HTTP server" and ("/flask/" in path or "/werkzeug/" in path):
                category = "framework"
            category = categorize(path, function, category)
        totals[category] += int(count)
    return totals, sum(totals.values())


def render(totals: Counter[str], samples: int, cpu_ms_per_exchange: float | None) -> str:
    lines = ["| step | share of server CPU samples | ≈ ms CPU / exchange |", "|---|---:|---:|"]
    for category in [*CATEGORIES, "HTTP server"]:
        share = totals[category] / samples if samples else 0.0
        per = f"{share * cpu_ms_per_exchange:.3f}" if cpu_ms_per_exchange else "-"
        lines.append(f"| {category} | {share * 100:.1f}% | {per} |")
    return "\n".join(lines)
