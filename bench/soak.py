"""``python -m bench soak``: is worker memory flat over a long closed-loop run?

One scenario is driven against one real ``sts serve`` for ``--duration`` seconds (after a
warmup) by the usual load generator, which counts exchanges into shared memory
(``loadgen.Progress``) as they complete. Meanwhile this process reads every worker's RSS
from ``/proc`` every ``--sample-every`` seconds, together with the exchange count at that
moment. This module holds the sampling and the arithmetic; the run itself is wired up in
``bench/__main__.py``.

Workers are identified by PID. ``sts serve`` does not set gunicorn's ``max_requests`` (and
granian does not respawn), so a PID should never change; if one does (a worker died or
was recycled), the old and the new PID are separate series, flagged, and the all-workers
total is not fitted.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from bench import procfs
from bench.loadgen import Progress

PER = 10_000  # slopes are in KiB per this many exchanges


@dataclass(frozen=True)
class Sample:
    elapsed: float  # seconds since the measured window began (the end of the warmup)
    exchanges: int  # successful exchanges counted so far in the measured window
    errors: int
    workers: dict[int, int]  # worker pid -> RSS KiB
    master: int  # RSS KiB of the server's main process

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.elapsed,
            "exchanges": self.exchanges,
            "errors": self.errors,
            "workers_rss_kib": {str(pid): kib for pid, kib in self.workers.items()},
            "master_rss_kib": self.master,
        }


def take_sample(server_pid: int, since: float, progress: Progress) -> Sample:
    """RSS of the server's main process and of every descendant, and the count so far."""
    exchanges, errors = progress.counts()
    rss = procfs.tree_rss_kib(server_pid)
    workers = {
        int(name.removeprefix("worker-")): kib
        for name, kib in rss.items()
        if name != "master" and kib > 0  # 0: exited between listing /proc and reading it
    }
    return Sample(
        elapsed=round(time.time() - since, 1),
        exchanges=exchanges,
        errors=errors,
        workers=dict(sorted(workers.items())),
        master=rss.get("master", 0),
    )


def sampler(
    server_pid: int,
    progress: Progress,
    every: float,
    into: list[Sample],
    echo: Callable[[Sample], None] | None = None,
) -> Callable[[float, float], None]:
    """A ``run_load`` monitor: a sample at the start of the measured window, every
    ``every`` seconds, and at its end (wall-clock schedule, so no drift)."""

    def monitor(measure_from: float, end: float) -> None:
        number = 0
        while True:
            due = min(measure_from + number * every, end)
            time.sleep(max(0.0, due - time.time()))
            sample = take_sample(server_pid, measure_from, progress)
            into.append(sample)
            if echo is not None:
                echo(sample)
            if due >= end:
                return
            number += 1

    return monitor


def echo_stderr(sample: Sample) -> None:
    rss = " ".join(f"{pid}:{kib / 1024:.1f}" for pid, kib in sample.workers.items())
    print(
        f"  {sample.elapsed:6.1f} s  {sample.exchanges:8d} exchanges  {sample.errors} errors"
        f"  worker RSS MiB {rss}",
        file=sys.stderr,
        flush=True,
    )


# ---- arithmetic ----------------------------------------------------------------------------


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys over xs; None with fewer than two distinct xs."""
    n = len(xs)
    if n != len(ys) or n < 2:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx


def _per(value: float | None) -> float | None:
    return None if value is None else round(value * PER, 1)


def _fit(samples: Sequence[Sample], rss: Callable[[Sample], int]) -> dict[str, Any]:
    """Start, end, delta and the slopes (whole run; second half only) of one series."""
    half = samples[0].elapsed + (samples[-1].elapsed - samples[0].elapsed) / 2
    late = [s for s in samples if s.elapsed >= half]
    return {
        "rss_start_kib": rss(samples[0]),
        "rss_end_kib": rss(samples[-1]),
        "delta_kib": rss(samples[-1]) - rss(samples[0]),
        "slope_kib_per_10k": _per(slope([s.exchanges for s in samples], [rss(s) for s in samples])),
        "slope_2nd_half_kib_per_10k": _per(
            slope([s.exchanges for s in late], [rss(s) for s in late])
        ),
    }


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """Per worker PID: RSS at its first and last sample, the delta, and the least-squares
    slope of its RSS over the exchanges counted (all workers together), in KiB per 10,000
    exchanges; also over the second half of the run only. A PID not present in every
    sample was replaced (or is a replacement): it is flagged and fitted on its own samples
    only, and the all-workers total is then not fitted (it would mix processes)."""
    if not samples:
        raise ValueError("no samples")
    pids: list[int] = []
    for sample in samples:
        pids += [pid for pid in sample.workers if pid not in pids]
    workers = []
    replaced = []
    for number, pid in enumerate(pids, 1):
        present = [s for s in samples if pid in s.workers]
        entry: dict[str, Any] = {
            "worker": f"w{number}",
            "pid": pid,
            "first_s": present[0].elapsed,
            "last_s": present[-1].elapsed,
            "samples": len(present),
            **_fit(present, lambda s, p=pid: s.workers[p]),  # type: ignore[misc]
        }
        notes = []
        if present[0] is not samples[0]:
            notes.append(f"appeared at {present[0].elapsed:g} s")
        if present[-1] is not samples[-1]:
            notes.append(f"gone after {present[-1].elapsed:g} s")
        if len(present) != len(samples) and not notes:
            notes.append("missing from some samples")
        entry["status"] = "; ".join(notes) or "same PID throughout"
        if notes:
            replaced.append(f"w{number} pid {pid}: {entry['status']}")
        workers.append(entry)
    first, last = samples[0], samples[-1]
    total: dict[str, Any] = {
        "rss_start_kib": sum(first.workers.values()),
        "rss_end_kib": sum(last.workers.values()),
        "delta_kib": sum(last.workers.values()) - sum(first.workers.values()),
        "slope_kib_per_10k": None,
        "slope_2nd_half_kib_per_10k": None,
    }
    if not replaced:
        total = _fit(samples, lambda s: sum(s.workers.values()))
    return {
        "samples": len(samples),
        "elapsed_s": last.elapsed - first.elapsed,
        "exchanges": last.exchanges - first.exchanges,
        "errors": last.errors - first.errors,
        "workers": workers,
        "all_workers": total,
        "master": {"rss_start_kib": first.master, "rss_end_kib": last.master},
        "pids_changed": replaced,
    }


# ---- output --------------------------------------------------------------------------------


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], left: Collection[int] = ()
) -> str:
    """Markdown; the columns numbered in ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 2) if i in left else "-" * (w + 1) + ":" for i, w in enumerate(widths)
    )
    return "\n".join([line(headers), rule + "|", *(line(r) for r in rows)])


def samples_table(samples: Sequence[Sample]) -> str:
    """One line per sample: elapsed, exchanges so far, errors, each worker's RSS (a column
    per PID; "-" where that PID did not exist), their total, the master's."""
    pids: list[int] = []
    for sample in samples:
        pids += [pid for pid in sample.workers if pid not in pids]
    headers = [
        "elapsed s",
        "exchanges",
        "errors",
        *(f"w{n} {pid} MiB" for n, pid in enumerate(pids, 1)),
        "workers MiB",
        "master MiB",
    ]
    rows = [
        [
            f"{s.elapsed:.1f}",
            str(s.exchanges),
            str(s.errors),
            *(_mib(s.workers.get(pid)) for pid in pids),
            _mib(sum(s.workers.values())),
            _mib(s.master),
        ]
        for s in samples
    ]
    return _table(headers, rows)


def summary_table(summary: dict[str, Any]) -> str:
    headers = [
        "worker",
        "pid",
        "RSS start MiB",
        "RSS end MiB",
        "delta KiB",
        "slope KiB/10k exch",
        "2nd half KiB/10k exch",
        "status",
    ]

    def cells(name: str, pid: str, fit: dict[str, Any], status: str) -> list[str]:
        return [
            name,
            pid,
            _mib(fit["rss_start_kib"]),
            _mib(fit["rss_end_kib"]),
            f"{fit['delta_kib']:+d}",
            _num(fit["slope_kib_per_10k"]),
            _num(fit["slope_2nd_half_kib_per_10k"]),
            status,
        ]

    rows = [
        cells(w["worker"], str(w["pid"]), w, f"{w['status']} ({w['samples']} samples)")
        for w in summary["workers"]
    ]
    total = summary["all_workers"]
    rows.append(
        cells(
            "all workers",
            "",
            total,
            "not fitted: a PID changed" if summary["pids_changed"] else "sum",
        )
    )
    master = summary["master"]
    rows.append(
        [
            "master",
            "",
            _mib(master["rss_start_kib"]),
            _mib(master["rss_end_kib"]),
            f"{master['rss_end_kib'] - master['rss_start_kib']:+d}",
            "",
            "",
            "",
        ]
    )
    return _table(headers, rows, left={0, 1, 7})
