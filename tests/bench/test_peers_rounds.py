"""``python -m bench peers --rounds N``: each ratio is taken within one round (its two rows
ran minutes apart), then summarised as median (lowest-highest); a round where a target
failed contributes no ratio for it. ``--peer-workers`` sets the peers' processes only."""

from __future__ import annotations

import pytest

from bench.__main__ import Row, parse_args, ratios_by_round, rounds_summary
from bench.loadgen import LoadResult


def measured(target: str, round_: int, rate: float, cpu_ms: float | None) -> Row:
    ok = int(rate * 10)
    server_cpu = None if cpu_ms is None else cpu_ms * ok / 1000
    result = LoadResult(
        duration=10.0,
        ok=ok,
        errors={},
        error_samples=[],
        latencies_ms={"p50": 1.0, "p90": 2.0, "p99": 3.0},
        connects_per_request=0.0,
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=1.0,
        run_seconds=12.0,
    )
    server, database = ("granian", "sqlite") if target == "sts" else ("-", "-")
    return Row(target, server, database, "peer-shape", result=result, round=round_)


def three_rounds() -> list[Row]:
    # sts ÷ oidc-provider: 0.50, 0.75, 0.60 (exch/s); 2.0, 1.5, 1.25 (CPU).
    return [
        measured("oidc-provider", 1, 2000, 0.5),
        measured("idpyoidc", 1, 500, 2.0),
        measured("sts", 1, 1000, 1.0),
        measured("sts", 2, 1500, 0.9),
        measured("oidc-provider", 2, 2000, 0.6),
        measured("idpyoidc", 2, 600, 1.8),
        measured("oidc-provider", 3, 2500, 0.8),
        measured("idpyoidc", 3, 400, 2.5),
        measured("sts", 3, 1500, 1.0),
    ]


def test_each_ratio_pairs_rows_of_the_same_round() -> None:
    ratios = ratios_by_round(three_rounds())
    label = "sts (granian, sqlite)"
    assert ratios[(label, "exch/s ÷ oidc-provider")] == pytest.approx([0.5, 0.75, 0.6])
    assert ratios[(label, "CPU/exch ÷ oidc-provider")] == pytest.approx([2.0, 1.5, 1.25])
    assert ratios[(label, "exch/s ÷ idpyoidc")] == pytest.approx([2.0, 2.5, 3.75])
    assert ratios[(label, "CPU/exch ÷ idpyoidc")] == pytest.approx([0.5, 0.5, 0.4])


def test_the_summary_gives_median_and_range() -> None:
    line = next(li for li in rounds_summary(three_rounds()).splitlines() if "sts (" in li)
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells == [
        "sts (granian, sqlite)",
        "0.60 (0.50-0.75)",
        "1.50 (1.25-2.00)",
        "2.50 (2.00-3.75)",
        "0.50 (0.40-0.50)",
    ]


def test_a_failed_row_gives_no_ratio_for_its_round() -> None:
    rows = three_rounds()
    rows[5] = Row("idpyoidc", "-", "-", "peer-shape", failure="peer did not start", round=2)
    ratios = ratios_by_round(rows)
    assert ratios[("sts (granian, sqlite)", "exch/s ÷ idpyoidc")] == pytest.approx([2.0, 3.75])
    assert len(ratios[("sts (granian, sqlite)", "exch/s ÷ oidc-provider")]) == 3


def test_rounds_are_for_the_peers_mode() -> None:
    assert parse_args(["peers", "--rounds", "3"]).rounds == 3
    assert parse_args(["peers"]).rounds == 1
    for argv in (["run", "--rounds", "2"], ["peers", "--rounds", "0"]):
        with pytest.raises(SystemExit):
            parse_args(argv)


def test_peer_workers_default_to_the_servers_workers() -> None:
    assert parse_args(["peers"]).peer_workers is None  # run_peer falls back to --workers
    assert parse_args(["peers", "--peer-workers", "1"]).peer_workers == 1
