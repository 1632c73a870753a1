"""Smoke-run the benchmark suite with tiny n: every row is there, nothing is lost.

No assertion is made on speed (STYLE.md): these tests prove the suite runs, prints
what it promises, cleans up after itself, and that the raw baseline is correct.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

# ``benchmarks`` is not an installed package (setup.cfg excludes it) and pytest's
# default import mode puts tests/ on sys.path, not the repository root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import common, localq_bench, peers, run, scale  # noqa: E402

N = 50
#: Filled in once the whole run is done, so absent from the JSON lines printed as it goes.
_ANNOTATED = ("x_raw", "x_raw_full", "target", "target_met")


def _run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> list[dict[str, Any]]:
    """Run ``benchmarks.run.main`` under ``tmp_path``; return its JSON lines."""
    code = run.main(["--n", str(N), "--tmpdir", str(tmp_path), *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "x raw-full" in out  # the human table was printed
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for row in rows:
        if "figure" in row:  # a scale figure, not a workload row
            continue
        assert row["error"] is None, row
        assert row["journal_mode"] == "wal"
        assert row["ops_per_s"] > 0
        assert row["apsw_version"] and row["sqlite_version"]
    return rows


def _installed_peers() -> list[str]:
    found, _ = peers.backends()
    return [b.name for b in found]


def test_raw_prints_one_row_per_workload_and_sync_level_and_cleans_up(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path = tmp_path / "results.json"
    rows = _run(capsys, tmp_path, "--only", "raw", "--workloads", "W1,W2,W3",
                "--json", str(json_path))

    assert sorted((r["workload"], r["synchronous"]) for r in rows) == [
        ("W1", "FULL"), ("W1", "NORMAL"), ("W2", "FULL"), ("W2", "NORMAL"),
        ("W3", "FULL"), ("W3", "NORMAL")]
    assert {r["backend"] for r in rows} == {"raw"}
    assert all(r["pages_per_op"] > 0 for r in rows)
    assert all("drained" not in r["note"] for r in rows)  # W3 drained every job
    written = json.loads(json_path.read_text())
    assert [{k: v for k, v in r.items() if k not in _ANNOTATED}
            for r in written["results"]] == [{k: v for k, v in r.items() if k not in _ANNOTATED}
                                             for r in rows]
    assert all(r["x_raw"] is not None and r["x_raw_full"] is not None
               for r in written["results"])
    assert written["environment"]["apsw"]
    # The run's temporary directory is gone; only the --json file remains.
    assert os.listdir(tmp_path) == ["results.json"]


@pytest.mark.multiprocess
def test_raw_end_to_end_loses_no_job_and_completes_none_twice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _run(capsys, tmp_path, "--only", "raw", "--workloads", "W4")

    assert sorted(r["synchronous"] for r in rows) == ["FULL", "NORMAL"]
    for row in rows:
        assert row["concurrency"] == "1+2"
        assert row["n"] == N
        assert row["lost"] == 0
        assert row["completed_twice"] == 0
    assert os.listdir(tmp_path) == []


def test_installed_peers_each_print_a_row_per_single_process_workload(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = _installed_peers()
    if not names:
        pytest.skip("no peer installed (pip install -e '.[bench]')")
    rows = _run(capsys, tmp_path, "--only", "peers", "--workloads", "W1,W3",
                "--sync", "NORMAL")

    assert sorted((r["workload"], r["backend"]) for r in rows) == sorted(
        (w, name) for w in ("W1", "W3") for name in names)
    assert all(r["synchronous"] == "NORMAL" for r in rows)
    assert all("drained" not in r["note"] for r in rows)


@pytest.mark.multiprocess
def test_installed_peers_report_lost_and_twice_counts_end_to_end(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = _installed_peers()
    if not names:
        pytest.skip("no peer installed (pip install -e '.[bench]')")
    rows = _run(capsys, tmp_path, "--only", "peers", "--workloads", "W4", "--sync", "NORMAL")

    assert sorted(r["backend"] for r in rows) == sorted(names)
    for row in rows:
        # Counted, not asserted: persist-queue is known to process jobs twice.
        assert isinstance(row["lost"], int) and isinstance(row["completed_twice"], int)


def _localq_names(*workloads: str, level: str | None = None) -> list[str]:
    return sorted(b.name for b in localq_bench.BACKENDS
                  if any(b.runs(w, lvl) for w in workloads
                         for lvl in ([level] if level else common.SYNC_LEVELS)))


def test_localq_rows_beside_raw_with_ratios_and_targets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path = tmp_path / "results.json"
    rows = _run(capsys, tmp_path, "--only", "raw,localq", "--workloads", "W1,W2,W3",
                "--json", str(json_path))

    localq_rows = [r for r in rows if r["backend"].startswith("localq")]
    assert sorted({r["backend"] for r in localq_rows}) == _localq_names("W1", "W2", "W3")
    # Each durability mode reports the synchronous levels it ran its commits at.
    modes = {r["backend"]: r["synchronous"] for r in localq_rows}
    assert modes["localq"] == "SAFE" and modes["localq-full"] == "FULL"
    assert modes["localq-normal"] == "NORMAL"
    for r in localq_rows:
        assert r["pages_per_op"] > 0, r
        assert not re.search(r"(completed|drained) \d+ of \d+", r["note"]), r  # all drained
    written = {(r["workload"], r["backend"]): r
               for r in json.loads(json_path.read_text())["results"]}
    for workload in ("W1", "W2", "W3"):
        row = written[(workload, "localq")]
        assert row["target"] and row["target_met"] in (True, False)
        assert row["x_raw"] > 0 and row["x_raw_full"] > 0
    assert written[("W1", "localq-normal")]["target"] == ">= 0.7 x raw"
    assert written[("W3", "localq-manual")]["target"] is None


@pytest.mark.multiprocess
def test_localq_end_to_end_with_worker_processes_loses_no_job_and_completes_none_twice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _run(capsys, tmp_path, "--only", "localq", "--workloads", "W4")

    assert sorted(r["backend"] for r in rows) == _localq_names("W4")
    for row in rows:
        assert row["concurrency"] == "1+2"
        assert row["lost"] == 0 and row["completed_twice"] == 0, row


@pytest.mark.multiprocess
def test_scale_benchmark_prints_every_figure_with_its_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path = tmp_path / "scale.json"
    assert scale.main(["--big", "2000", "--jobs", "1000", "--tmpdir", str(tmp_path),
                       "--json", str(json_path)]) == 0

    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["figure"] for r in rows] == ["add_bulk", "get_job_counts", "claim",
                                           "worker_rss", "wal"]
    by_figure = {r["figure"]: r for r in rows}
    assert by_figure["get_job_counts"]["jobs"] >= 2000
    assert by_figure["worker_rss"]["completed"] == 1000
    assert by_figure["claim"]["ratio"] > 0
    assert "ratio <= 1.3" in out and "growth < 10 MB" in out
    assert json.loads(json_path.read_text())["scale"] == rows
    assert os.listdir(tmp_path) == ["scale.json"]


@pytest.mark.multiprocess
def test_run_with_scale_adds_its_figures_to_the_table_and_the_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "QUICK", (2000, 1000))
    json_path = tmp_path / "results.json"
    rows = _run(capsys, tmp_path, "--only", "raw", "--workloads", "W1", "--sync", "NORMAL",
                "--scale", "quick", "--json", str(json_path))

    assert [r["figure"] for r in rows if "figure" in r] == ["add_bulk", "get_job_counts",
                                                            "claim", "worker_rss", "wal"]
    written = json.loads(json_path.read_text())
    assert [r["figure"] for r in written["scale"]] == ["add_bulk", "get_job_counts", "claim",
                                                       "worker_rss", "wal"]
    assert written["environment"]["load average (start, end)"]


def test_tmpdir_env_var_chooses_where_the_run_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(common.TMPDIR_ENV, str(tmp_path))

    made = common.make_tempdir(None)

    assert Path(made).parent == tmp_path


@pytest.mark.parametrize("argv", [["--workloads", "W9"], ["--only", "redis"],
                                  ["--sync", "OFF"], ["--n", "0"]])
def test_bad_option_is_a_usage_error_before_anything_runs(tmp_path: Path,
                                                          argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run.main([*argv, "--tmpdir", str(tmp_path)])
    assert exc.value.code == 2
    assert os.listdir(tmp_path) == []


def _result(ops: float, error: str | None = None, twice: int | None = 0) -> common.Result:
    return common.Result(workload="W4", backend="b", n=10, synchronous="NORMAL",
                         journal_mode="wal", concurrency="1+2", ops_per_s=ops, seconds=1.0,
                         completed_twice=twice, error=error)


def test_repeats_keep_the_median_run_and_show_failures_and_worst_twice_count() -> None:
    runs = [_result(300.0, twice=0), _result(0.0, error="OperationalError: locked"),
            _result(100.0, twice=4), _result(200.0, twice=1)]

    row = run._median(runs)

    assert row.ops_per_s == 200.0
    assert row.completed_twice == 4
    assert row.failed_runs == 1
    assert "1 of 4 runs FAILED: OperationalError: locked" in row.note


def test_repeats_that_all_fail_make_an_error_row() -> None:
    row = run._median([_result(0.0, error="boom"), _result(0.0, error="bang")])

    assert row.error == "boom"
