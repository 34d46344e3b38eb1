"""``python -m bench.sweep``: an identity's revocation, timed by the tokens it sweeps."""

from __future__ import annotations

import pytest

from bench import sweep


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_each_subject_is_revoked_whole_and_timed(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sweep.main(["--database", database, "--tokens", "5,300"]) == 0
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ]
    assert [(row[0], row[2]) for row in rows] == [("5", "5"), ("300", "300")]
    assert all(float(row[1]) > 0 for row in rows)


def test_only_the_live_share_is_revoked(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["--tokens", "300", "--live", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "10% of the subject's tokens live" in out
    assert "| 300 | " in out and out.rstrip().endswith("| 30 |")
