"""``python -m bench soak``'s pure parts: the least-squares slope, the per-worker summary
(a changed PID is flagged and never fitted together with another process), the tables, and
the shared exchange counter against a canned local server (no sts, no timed assertions)."""

from __future__ import annotations

import os

import pytest

from bench import soak
from bench.loadgen import LoadSpec, Progress, build_request, run_load
from bench.soak import Sample, slope, summarize
from tests.bench.test_loadgen import canned_server

MIB = 1024


def sample(elapsed: float, exchanges: int, workers: dict[int, int], errors: int = 0) -> Sample:
    return Sample(elapsed, exchanges, errors, workers, master=80 * MIB)


def test_slope_is_least_squares() -> None:
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([0, 1, 2, 3], [0, 1, 1, 0]) == pytest.approx(0.0)
    assert slope([0, 10, 20], [5, 5, 5]) == 0.0
    assert slope([1], [1]) is None  # one point
    assert slope([4, 4, 4], [1, 2, 3]) is None  # no spread in x


def test_summary_of_steady_workers() -> None:
    # w 101 grows 2 KiB per 1000 exchanges (20 KiB per 10k), w 102 is flat.
    samples = [
        sample(10.0 * i, 1000 * i, {101: 70 * MIB + 2 * i, 102: 72 * MIB}) for i in range(11)
    ]
    summary = summarize(samples)
    first, second = summary["workers"]
    assert (first["pid"], first["worker"], second["pid"]) == (101, "w1", 102)
    assert first["rss_start_kib"] == 70 * MIB
    assert first["rss_end_kib"] == 70 * MIB + 20
    assert first["delta_kib"] == 20
    assert first["slope_kib_per_10k"] == pytest.approx(20.0)
    assert first["slope_2nd_half_kib_per_10k"] == pytest.approx(20.0)
    assert second["slope_kib_per_10k"] == 0.0
    assert first["status"] == "same PID throughout"
    total = summary["all_workers"]
    assert total["rss_start_kib"] == 142 * MIB
    assert total["delta_kib"] == 20
    assert total["slope_kib_per_10k"] == pytest.approx(20.0)
    assert summary["pids_changed"] == []
    assert (summary["exchanges"], summary["elapsed_s"], summary["samples"]) == (10000, 100.0, 11)


def test_second_half_slope_separates_early_growth_from_a_leak() -> None:
    # +1 MiB in the first two samples (warming caches), flat afterwards.
    rss = [70 * MIB, 70 * MIB + 512, *([71 * MIB] * 9)]
    summary = summarize([sample(10.0 * i, 1000 * i, {7: kib}) for i, kib in enumerate(rss)])
    (worker,) = summary["workers"]
    assert worker["slope_kib_per_10k"] > 0
    assert worker["slope_2nd_half_kib_per_10k"] == 0.0


def test_a_replaced_worker_is_flagged_and_not_mixed_into_any_slope() -> None:
    samples = [
        sample(0.0, 0, {101: 70 * MIB, 102: 70 * MIB}),
        sample(10.0, 1000, {101: 70 * MIB + 4, 102: 70 * MIB}),
        sample(20.0, 2000, {102: 70 * MIB, 103: 60 * MIB}),  # 101 died, 103 forked
        sample(30.0, 3000, {102: 70 * MIB, 103: 60 * MIB + 8}, errors=1),
    ]
    summary = summarize(samples)
    by_pid = {w["pid"]: w for w in summary["workers"]}
    assert by_pid[101]["status"] == "gone after 10 s"
    assert by_pid[101]["samples"] == 2
    assert by_pid[101]["slope_kib_per_10k"] == pytest.approx(40.0)  # its own two samples
    assert by_pid[103]["status"] == "appeared at 20 s"
    assert by_pid[103]["rss_start_kib"] == 60 * MIB
    assert by_pid[103]["slope_kib_per_10k"] == pytest.approx(80.0)
    assert by_pid[102]["status"] == "same PID throughout"
    assert summary["all_workers"]["slope_kib_per_10k"] is None
    assert summary["pids_changed"] == [
        "w1 pid 101: gone after 10 s",
        "w3 pid 103: appeared at 20 s",
    ]
    assert summary["errors"] == 1

    table = soak.samples_table(samples)
    assert "w3 103 MiB" in table.splitlines()[0]
    assert table.splitlines()[2].split("|")[6].strip() == "-"  # 103 not yet there at 0 s
    assert "not fitted: a PID changed" in soak.summary_table(summary)


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: fork with threads
def test_progress_counts_what_the_load_result_counts() -> None:
    with canned_server("close") as (port, _accepted):
        spec = LoadSpec(
            port=port,
            requests=[build_request(port, "/token", [("a", "b")])],
            duration=1.0,
            warmup=0.2,
            concurrency=2,
            processes=2,
        )
        progress = Progress(spec.concurrency)
        samples: list[Sample] = []
        monitor = soak.sampler(os.getpid(), progress, 0.5, samples)
        result = run_load(spec, progress=progress, monitor=monitor)
    assert result.ok > 0
    assert progress.counts() == (result.ok, sum(result.errors.values()))
    assert len(samples) == 3  # at 0, 0.5 and 1.0 s: the schedule, not the timing, decides
    assert [s.exchanges for s in samples] == sorted(s.exchanges for s in samples)
    assert samples[-1].exchanges <= result.ok


def test_progress_needs_a_slot_per_connection() -> None:
    spec = LoadSpec(port=1, requests=[b""], concurrency=4)
    with pytest.raises(ValueError, match="4 slots"):
        run_load(spec, progress=Progress(2))
