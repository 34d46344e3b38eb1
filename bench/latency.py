"""``python -m bench latency``: latency at a fixed offered load.

The performance target is "p99 under 10 ms at half of peak throughput". A closed loop
cannot measure that (its load is whatever the server lets through, and a stalled server
stops the clock), so this mode measures the peak with the usual closed loop, then drives
an open loop (``LoadSpec.rate``) at ``--fraction`` of it and reports the latency from each
request's intended send time. This module holds the row and its table cells; the run
itself is wired up in ``bench/__main__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import LoadResult

HEADERS = (
    "target",
    "server",
    "db",
    "scenario",
    "load",
    "peak exch/s",
    "offered/s",
    "achieved/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "late",
    "unsent",
    "errors",
    "srv CPU ms/exch",
    "other cores",
)

# Above this share of its time, a connection is busy often enough that a slow answer
# holds up its next scheduled sends (rate per connection * median latency).
BUSY_WARNING = 0.25


@dataclass
class LatencyRow:
    target: str  # a --targets name: sts | governance-off | floor
    server: str
    database: str
    scenario: str
    fraction: float | None  # of the peak; None: a fixed --rate
    peak: LoadResult | None = None  # the closed loop (None with --rate)
    result: LoadResult | None = None  # the open loop
    failure: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def load(self) -> str:
        return "--rate" if self.fraction is None else f"{self.fraction:g} x peak"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "server": self.server,
            "database": self.database,
            "scenario": self.scenario,
            "fraction_of_peak": self.fraction,
            "failure": self.failure,
            "peak": self.peak.as_dict() if self.peak else None,
            "open_loop": self.result.as_dict() if self.result else None,
            **self.notes,
        }


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cells(row: LatencyRow) -> list[str]:
    head = [row.target, row.server, row.database, row.scenario, row.load]
    peak = _num(row.peak.rate, 0) if row.peak else "-"
    result = row.result
    if result is None:
        return [*head, peak, "FAILED", (row.failure or "")[:60], *[""] * 9]
    latency = result.latencies_ms
    return [
        *head,
        peak,
        _num(result.offered_rate, 0),
        _num(result.rate, 0),
        _num(latency["p50"], 2),
        _num(latency["p90"], 2),
        _num(latency["p99"], 2),
        _num(latency["max"], 2),
        str(result.late),
        str(result.unsent),
        str(sum(result.errors.values())),
        _num(result.server_cpu_ms_per_exchange, 2),
        _num(result.foreign_cores, 2),
    ]


def warnings(row: LatencyRow, connections: int) -> list[str]:
    """What makes a row's figures say less than they seem to."""
    result, label = row.result, f"{row.server}/{row.database}/{row.scenario}"
    if result is None or result.offered_rate is None:
        return []
    found = []
    if result.unsent or result.late > 0.01 * max(1, result.scheduled):
        found.append(
            f"{label}: the generator fell behind its schedule ({result.late} late, "
            f"{result.unsent} unsent of {result.scheduled}): the offered rate was not held"
        )
    busy = result.offered_rate / connections * result.latencies_ms["p50"] / 1000
    if busy > BUSY_WARNING:
        found.append(
            f"{label}: each connection is busy {busy:.0%} of the time at the median latency; "
            "use more --concurrency so that a slow answer does not hold up the schedule"
        )
    if result.foreign_cores is not None and result.foreign_cores > 0.3:
        found.append(
            f"{label}: other work used {result.foreign_cores:.2f} cores during the window "
            "(shared machine): the latencies are inflated"
        )
    return found
