"""``python -m bench [peers] --rounds N``: each ratio (sts ÷ a peer; governance on ÷ off) is
taken within one round (its two rows ran minutes apart), then summarised as median
(lowest-highest); a round where a row failed contributes no ratio for it.
``--peer-workers`` sets the peers' processes only."""

from __future__ import annotations

import pytest

from bench.__main__ import (
    GOVERNANCE_MINIMAL,
    GOVERNANCE_OFF,
    Row,
    governance_costs,
    governance_summary,
    parse_args,
    ratios_by_round,
    rounds_summary,
)
from bench.loadgen import LoadResult


def measured(
    target: str,
    round_: int,
    rate: float,
    cpu_ms: float | None,
    where: tuple[str, str] = ("granian", "sqlite"),
    scenario: str = "peer-shape",
) -> Row:
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
    server, database = where if target.startswith("sts") else ("-", "-")
    return Row(target, server, database, scenario, result=result, round=round_)


def three_rounds() -> list[Row]:
    # sts ÷ oidc-provider: 0.50, 0.75, 0.60 (exch/s); 2.0, 1.5, 1.25 (CPU).
    rows = [
        measured("oidc-provider", 1, 2000, 0.5),
        measured("idpyoidc", 1, 500, 2.0),
        measured("sts", 1, 1000, 1.0),
        measured("sts", 2, 1500, 0.9),
        measured("oidc-provider", 2, 2000, 0.6),
        measured("idpyoidc", 2, 600, 1.8),
        measured("oidc-provider", 3, 2500, 0.8),
        measured("idpyoidc", 3, 400, 2.5),
        measured("sts", 3, 1500, 1.0),
        # The floor on granian (sts's server) in rounds 1 and 3; on gunicorn in round 2.
        Row("floor", "granian", "-", "peer-shape", result=measured("x", 1, 3000, 0.8).result),
        Row("floor", "gunicorn", "-", "peer-shape", result=measured("x", 2, 3000, 0.5).result),
        Row("floor", "granian", "-", "peer-shape", result=measured("x", 3, 3000, 0.5).result),
    ]
    for row, round_ in zip(rows[-3:], (1, 2, 3), strict=True):
        row.round = round_
    return rows


def test_each_ratio_pairs_rows_of_the_same_round() -> None:
    ratios = ratios_by_round(three_rounds())
    label = "sts (granian, sqlite)"
    assert ratios[(label, "exch/s ÷ oidc-provider")] == pytest.approx([0.5, 0.75, 0.6])
    assert ratios[(label, "CPU/exch ÷ oidc-provider")] == pytest.approx([2.0, 1.5, 1.25])
    assert ratios[(label, "exch/s ÷ idpyoidc")] == pytest.approx([2.0, 2.5, 3.75])
    assert ratios[(label, "CPU/exch ÷ idpyoidc")] == pytest.approx([0.5, 0.5, 0.4])
    # Only against the floor on sts's own server: none on granian in round 2.
    assert ratios[(label, "CPU/exch ÷ floor")] == pytest.approx([1.25, 2.0])


def test_the_summary_gives_median_and_range() -> None:
    line = next(li for li in rounds_summary(three_rounds()).splitlines() if "sts (" in li)
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells == [
        "sts (granian, sqlite)",
        "0.60 (0.50-0.75)",
        "1.50 (1.25-2.00)",
        "2.50 (2.00-3.75)",
        "0.50 (0.40-0.50)",
        "1.62 (1.25-2.00)",
    ]


def test_a_failed_row_gives_no_ratio_for_its_round() -> None:
    rows = three_rounds()
    rows[5] = Row("idpyoidc", "-", "-", "peer-shape", failure="peer did not start", round=2)
    ratios = ratios_by_round(rows)
    assert ratios[("sts (granian, sqlite)", "exch/s ÷ idpyoidc")] == pytest.approx([2.0, 3.75])
    assert len(ratios[("sts (granian, sqlite)", "exch/s ÷ oidc-provider")]) == 3


def governance_rows() -> list[Row]:
    rows = []
    # granian/sqlite: 1 - 800/1000, 1 - 900/1000, 1 - 850/1000 (the third round's OFF row
    # failed on postgresql); postgresql: 1 - 600/1000 in round 1 only.
    for round_, on, off in ((1, 800, 1000), (2, 900, 1000), (3, 850, 1000)):
        rows.append(measured("sts", round_, on, 1.0, scenario="ci-deploy"))
        rows.append(measured("sts", round_, on * 2, 1.0, scenario="peer-shape"))
        rows.append(measured(GOVERNANCE_OFF, round_, off, 0.8, scenario="ci-deploy"))
    pg = ("granian", "postgresql")
    rows.append(measured("sts", 1, 600, 1.0, where=pg, scenario="ci-deploy"))
    rows.append(measured(GOVERNANCE_OFF, 1, 1000, 0.8, where=pg, scenario="ci-deploy"))
    rows.append(measured("sts", 3, 700, 1.0, where=pg, scenario="ci-deploy"))
    rows.append(Row(GOVERNANCE_OFF, *pg, "ci-deploy", failure="did not start", round=3))
    return rows


def test_governance_cost_pairs_on_and_off_of_one_round_and_server() -> None:
    costs = governance_costs(governance_rows())
    assert costs[("granian", "sqlite")] == pytest.approx([0.2, 0.1, 0.15])
    assert costs[("granian", "postgresql")] == pytest.approx([0.4])


def test_the_governance_summary_gives_median_and_range() -> None:
    lines = governance_summary(governance_rows()).splitlines()[2:]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert cells == [
        ["granian, sqlite", "15% (10% to 20%)", "20% 10% 15%"],
        ["granian, postgresql", "40% (40% to 40%)", "40%"],
    ]


def test_the_minimal_record_is_costed_against_governance_off_of_its_round() -> None:
    """``--minimal-record``: 1 - (one narrow row ÷ OFF), paired like governance's own
    cost, and summarised on a line of its own below it."""
    rows = governance_rows()
    rows.append(measured(GOVERNANCE_MINIMAL, 1, 950, 0.85, scenario="ci-deploy"))
    rows.append(measured(GOVERNANCE_MINIMAL, 2, 700, 0.85, scenario="ci-deploy"))

    assert governance_costs(rows, GOVERNANCE_MINIMAL) == {
        ("granian", "sqlite"): pytest.approx([0.05, 0.3])
    }
    assert governance_costs(rows) == governance_costs(governance_rows())
    last = governance_summary(rows).splitlines()[-1]
    assert [cell.strip() for cell in last.strip("|").split("|")] == [
        "granian, sqlite, one narrow row",
        "18% (5% to 30%)",
        "5% 30%",
    ]
    assert parse_args(["run", "--minimal-record"]).minimal_record
    assert not parse_args(["run"]).minimal_record


def test_rounds_are_for_the_run_and_peers_modes() -> None:
    assert parse_args(["peers", "--rounds", "3"]).rounds == 3
    assert parse_args(["run", "--rounds", "2"]).rounds == 2
    assert parse_args(["peers"]).rounds == 1
    for argv in (["soak", "--rounds", "2"], ["peers", "--rounds", "0"]):
        with pytest.raises(SystemExit):
            parse_args(argv)


def test_peer_workers_default_to_the_servers_workers() -> None:
    assert parse_args(["peers"]).peer_workers is None  # run_peer falls back to --workers
    assert parse_args(["peers", "--peer-workers", "1"]).peer_workers == 1
    for argv in (["run", "--peer-workers", "1"], ["peers", "--peer-workers", "0"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
