"""``python -m bench.steps``: CPU time per step of an exchange, in process."""

from __future__ import annotations

import importlib

import pytest

from bench import steps


def originals() -> list[object]:
    found = []
    for _label, module_name, path in steps.STEPS:
        owner: object = importlib.import_module(module_name)
        for part in path.split("."):
            owner = getattr(owner, part)
        found.append(owner)
    return found


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_steps_are_timed_with_and_without_governance_and_put_back(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = originals()
    argv = ["--database", database, "--requests", "40", "--rounds", "1", "--pool", "40"]
    assert steps.main([*argv, "--governance", "--minimal-record"]) == 0
    rows = {}
    output = capsys.readouterr().out
    assert "| governance on | governance OFF (bench only) | one narrow row (bench only) |" in output
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1].replace(".", "").lstrip("-").isdigit():
            rows[cells[0]] = (float(cells[1]), float(cells[2]), float(cells[3]))
    labels = [label.strip() for label, _, _ in steps.STEPS]
    assert set(labels) <= set(rows)
    for on_off in (0, 1, 2):
        # Each step is timed on the request's thread, inside the one above it.
        whole = rows["whole request"][on_off]
        parts = ["verify the subject token", "write transaction", "sign"]
        assert all(rows[label][on_off] > 0 for label in parts)
        assert sum(rows[label][on_off] for label in parts) <= whole
        assert rows["COMMIT"][on_off] <= rows["write transaction"][on_off]
        assert rows["process"][on_off] >= whole
    # The wrappers and the stand-ins (governance OFF, one narrow row) are gone again.
    assert originals() == before
    database_rows = [label for label, _ in steps.DATABASE_ROWS]
    if database == "sqlite":
        assert not set(database_rows) & set(rows)
        return
    # PostgreSQL's side: governance writes two rows (and their index entries) per exchange
    # and makes the commit flush the WAL; the OFF path writes neither.
    assert set(database_rows) <= set(rows)
    on, off, narrow = (
        {label: rows[label][column] for label in database_rows} for column in (0, 1, 2)
    )
    assert on["WAL records"] >= 2 > off["WAL records"]
    assert on["WAL bytes"] > off["WAL bytes"]
    assert on["WAL flushes (fsync)"] > off["WAL flushes (fsync)"]
    # One narrow row: still a WAL record and a flush per exchange. (Not "fewer bytes than
    # governance on": pg_stat_wal counts the whole server, and a checkpoint's full-page
    # images or autovacuum can only add to a column, here to the narrow row's.)
    assert narrow["WAL records"] >= 1 and narrow["WAL flushes (fsync)"] > off["WAL flushes (fsync)"]
    # (The backends' CPU is counted in 10 ms clock ticks: 40 exchanges are too few for a
    # comparison; the bench's own runs use 3,000.)


def test_database_counters_are_reported_per_exchange() -> None:
    before = {"WAL records": 100.0, "WAL bytes": 5000.0}
    after = {"WAL records": 280.0, "WAL bytes": 27000.0}
    assert steps.per_exchange(before, after, 20) == {"WAL records": 9.0, "WAL bytes": 1100.0}
    assert steps.per_exchange({}, {}, 20) == {}  # SQLite: nothing counted


def test_report_shows_the_database_rows_only_when_every_column_has_them() -> None:
    timed = {label: 1.0 for label, _, _ in steps.STEPS} | {steps.OTHER_THREADS: 0.0, "process": 2.0}
    database = {label: 0.5 for label, _ in steps.DATABASE_ROWS}
    assert "WAL bytes" not in steps.report({"on": timed})
    assert "WAL bytes" not in steps.report({"on": timed | database, "off": timed})
    both = steps.report({"on": timed | database, "off": timed | database})
    assert "| WAL records | 0.50 | 0.50 |" in both
    assert "| whole request | 1.0 | 1.0 |" in both
