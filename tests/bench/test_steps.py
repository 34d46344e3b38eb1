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
    argv = ["--database", database, "--requests", "20", "--rounds", "1", "--pool", "20"]
    assert steps.main([*argv, "--governance"]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[1].replace(".", "").lstrip("-").isdigit():
            rows[cells[0]] = (float(cells[1]), float(cells[2]))
    labels = [label.strip() for label, _, _ in steps.STEPS]
    assert set(labels) <= set(rows)
    for on_off in (0, 1):
        # Each step is timed on the request's thread, inside the one above it.
        whole = rows["whole request"][on_off]
        parts = ["verify the subject token", "write transaction", "sign"]
        assert all(rows[label][on_off] > 0 for label in parts)
        assert sum(rows[label][on_off] for label in parts) <= whole
        assert rows["COMMIT"][on_off] <= rows["write transaction"][on_off]
        assert rows["process"][on_off] >= whole
    # The wrappers and the governance-OFF stand-ins are gone again.
    assert originals() == before
