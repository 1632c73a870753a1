"""Smoke-run the PostgreSQL benchmark with tiny n: every row is there, nothing is lost.

No assertion on speed (STYLE.md): this proves the benchmark runs, both systems do every
job, W4 loses and repeats nothing, and the run's schemas are dropped afterwards.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# ``benchmarks`` is not an installed package: put the repository root on sys.path.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import pg_bench  # noqa: E402

pytestmark = [pytest.mark.pg, pytest.mark.multiprocess]


def _bench_schemas(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'")
        return {r[0] for r in rows}


def test_every_configuration_runs_on_both_systems_and_w4_loses_nothing(
        pg_server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _bench_schemas(pg_server_url)
    out = tmp_path / "rows.json"
    assert pg_bench.main(["--n", "30", "--url", pg_server_url, "--json", str(out)]) == 0

    rows = json.loads(out.read_text())["rows"]
    got = {(r["workload"], r["system"], r["level"]) for r in rows}
    want = {(w, "localq", ours) for w, ours, _ in pg_bench.CONFIGS}
    want |= {(w, "psycopg", theirs) for w, _, theirs in pg_bench.CONFIGS}
    assert got == want
    for r in rows:
        assert r["done"] == r["n"], r
        assert r["n"] == (300 if r["workload"] == "W2" else 30)
        assert r["ops_per_s"] > 0
    for r in (r for r in rows if r["workload"] == "W4"):
        assert r["lost"] == 0 and r["completed_twice"] == 0, r

    printed = capsys.readouterr().out.splitlines()
    assert sum(1 for line in printed if line.startswith("{\"completed_twice\"")
               or line.startswith("{\"done\"")) == len(rows)
    assert any(line.startswith("W4") for line in printed)  # the table
    assert _bench_schemas(pg_server_url) == before
