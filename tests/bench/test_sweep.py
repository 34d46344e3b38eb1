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
    # tokens, passes ahead (s), passes, longest pass's write (s), held back (s), revoked
    assert [(row[0], row[2], row[5]) for row in rows] == [("5", "1", "5"), ("300", "1", "300")]
    assert all(float(row[1]) >= float(row[3]) > 0 and float(row[4]) > 0 for row in rows)


@pytest.mark.parametrize("passes", [True, False])
def test_the_passes_ahead_or_one_transaction_under_the_lock(passes: bool) -> None:
    """With the passes, the blocking transaction finds nothing left to revoke; without
    them (``--no-passes``), it revokes every token itself."""
    from bench.profile import app_in_process, drive
    from bench.world import DEFAULT_POSTGRES
    from sts.db.models import AuditRecord

    with app_in_process("sqlite", DEFAULT_POSTGRES, 10, "ci-deploy") as (app, environs):
        drive(app, environs[:1])
        sweep.add_tokens(app, "bench-sweep-300", 300)
        took = sweep.timed_revocation(app, "bench-sweep-300", passes)
        with app.extensions["sts"].session_factory() as session:
            details = [
                record.detail
                for record in session.query(AuditRecord).order_by(AuditRecord.id)
                if record.reason.startswith("operator.")
            ]
    assert took.revoked == 300
    assert took.held > 0
    assert took.ahead >= took.longest_pass > 0 if passes else took.longest_pass == 0
    assert took.passes == (1 if passes else 0)
    if passes:
        assert len(details) == 2
        assert "revoked 300 token(s) ahead of the block" in details[0]
        assert "revoked 300 token(s) (300 of them ahead of the block)" in details[1]
    else:
        assert len(details) == 1
        assert "revoked 300 token(s); blocked" in details[0]


def test_only_the_live_share_is_revoked(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["--tokens", "300", "--live", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "10% of the subject's tokens live" in out
    assert "| 300 | " in out and out.rstrip().endswith("| 30 |")


@pytest.mark.parametrize("stale", [False, True])
def test_postgresql_statistics_are_taken_after_the_tokens_are_added_or_before(
    stale: bool,
) -> None:
    """What the planner believes ``issued_tokens`` holds: every row, or (stale) only what
    was there before the bulk insert."""
    from bench.profile import app_in_process, drive
    from bench.world import DEFAULT_POSTGRES

    with app_in_process("postgresql", DEFAULT_POSTGRES, 10, "ci-deploy") as (app, environs):
        drive(app, environs[:1])
        sweep.add_tokens(app, "bench-sweep-300", 300, stale_statistics=stale)
        with app.extensions["sts"].engine.connect() as connection:
            believed = connection.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE relname = 'issued_tokens'"
            ).scalar_one()
    assert believed == (1 if stale else 301)


def test_the_stale_statistics_run_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--database", "postgresql", "--tokens", "300", "--stale-statistics"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "statistics from before they were added" in out
    last = out.rstrip().splitlines()[-1]
    assert last.startswith("| 300 | ") and last.endswith(" | 300 |")
