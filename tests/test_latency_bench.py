"""Smoke run of benchmarks/latency.py: it prints its four figures (never asserted on speed)."""

from __future__ import annotations

import json

import pytest

from benchmarks import latency

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_latency_benchmark_prints_one_json_line_per_figure(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    assert latency.main(["--quick"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["figure"] for row in lines] == ["recovery", "pickup", "delayed_lag", "idle_cpu"]
    assert lines[1]["n"] == 10 and lines[2]["n"] == 5
    assert all("sqlite" in row for row in lines)
