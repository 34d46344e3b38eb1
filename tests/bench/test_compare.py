"""``python -m bench.compare``: alternating before/after runs, summarized per row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import compare


def row(exchanges: float, cpu: float | None = 0.5, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "target": "sts",
        "server": "gunicorn",
        "database": "sqlite",
        "scenario": "ci-deploy",
        "failure": None,
        "exchanges_per_s": exchanges,
        "server_cpu_ms_per_exchange": cpu,
    }
    values.update(overrides)
    return values


def test_medians_and_their_ratio_per_row() -> None:
    base = [[row(1000, 0.6)], [row(1200, 0.5)], [row(1100, 0.55)]]
    head = [[row(1300, 0.45)], [row(1500, 0.4)], [row(1400, 0.42)]]
    (item,) = compare.compare(base, head)
    assert item.key == ("sts", "gunicorn", "sqlite", "ci-deploy")
    assert item.base.exchanges_per_s == [1000, 1200, 1100]
    assert item.ratio() == pytest.approx(1400 / 1100)
    table = compare.format_table([item])
    assert "1000 / 1200 / 1100 (median 1100)" in table
    assert "1300 / 1500 / 1400 (median 1400)" in table
    assert "| 1.27 |" in table
    assert "0.60 / 0.50 / 0.55 (median 0.55)" in table


def test_failed_rows_and_one_sided_rows_are_kept_apart() -> None:
    base = [[row(1000), row(0, failure="server did not start", server="granian")]]
    head = [[row(900), row(2000, server="granian")]]
    by_server = {item.key[1]: item for item in compare.compare(base, head)}
    assert by_server["gunicorn"].ratio() == pytest.approx(0.9)
    assert by_server["granian"].base.exchanges_per_s == []  # the failure is not a zero
    assert by_server["granian"].ratio() is None
    assert "| - |" in compare.format_table(list(by_server.values()))


def test_a_real_round_against_this_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    """One round each side (this checkout against itself): the runs happen, from their
    own directory, and every row of both is in the table."""
    here = Path(compare.__file__).resolve().parents[1]
    bench_args = [
        *("--databases", "sqlite", "--scenarios", "ci-deploy", "--servers", "gunicorn"),
        *("--no-floor", "--no-governance-off", "--duration", "1", "--warmup", "0.5"),
        *("--pool", "40", "--concurrency", "2", "--processes", "1"),
    ]
    assert compare.main(["--base", str(here), "--rounds", "1", "--", *bench_args]) == 0
    out = capsys.readouterr().out
    assert "1 alternating round(s)" in out
    (line,) = [line for line in out.splitlines() if line.startswith("| sts | gunicorn")]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[4] != "-" and cells[5] != "-"  # both sides measured
    assert float(cells[6]) > 0


def test_the_base_must_be_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        compare.main(["--base", str(tmp_path), "--", "--no-floor"])
