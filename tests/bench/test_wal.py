"""``python -m bench.wal`` runs end to end on a small pre-filled database of each kind."""

from __future__ import annotations

import pytest

import sts.grants.token_exchange
from bench import wal
from sts.tokens.claims import new_token_id


@pytest.mark.parametrize("ids", ["ordered", "random"])
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_wal_bench_reports_every_exchange(
    database: str, ids: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--database", database, "--ids", ids, "--prefill", "200", "--requests", "20"]
    assert wal.main([*argv, "--pool", "40"]) == 0
    out = capsys.readouterr().out
    assert f"{database}, {ids} ids, 200 tokens on record: 20/20 ok" in out
    assert ("WAL" in out) is (database == "postgresql")
    # The bench's "random" ids were swapped in for that run only.
    assert getattr(sts.grants.token_exchange, "new_token_id") is new_token_id  # noqa: B009
