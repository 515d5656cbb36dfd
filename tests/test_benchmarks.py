"""The benchmark harness runs end to end on the tiny workload (timings are not checked, only that it works)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import run  # noqa: E402


@pytest.fixture(scope="module")
def tiny_rows():
    rows = {}
    for contender in run.CONTENDERS:
        out = run.measure([os.path.join(ROOT, "benchmarks", "_worker.py"), contender, "tiny", "adam", "3"])
        assert "error" not in out, (contender, out)
        rows[contender] = out
    return rows


def test_each_contender_reports_time_compile_and_memory(tiny_rows):
    for contender, r in tiny_rows.items():
        assert r["contender"] == contender and r["leaves"] == 2 and r["params"] == 20
        assert r["step_ms"] > 0 and r["compile_s"] >= 0 and r["step_extra_mb"] >= 0
        # between steps the process holds at least parameters + gradients + Adam's two moments
        assert r["live_mb"] >= r["state_mb"] > 0


def test_interleaved_rounds_report_the_median_process(monkeypatch):
    calls = []

    def fake(args):
        calls.append(args[0])
        return {"step_ms": {"a": [30.0, 10.0, 20.0], "b": [50.0, 50.0, 50.0]}[args[0]][calls.count(args[0]) - 1],
                "compile_s": 0.1}

    monkeypatch.setattr(run, "measure", fake)
    cells = run.measure_interleaved(["a", "b"], lambda c: [c], 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]  # the order alternates between rounds
    assert cells["a"]["step_ms"] == 20.0 and cells["a"]["runs"] == 3
    assert cells["a"]["spread"] == pytest.approx((30.0 - 10.0) / 20.0)


def test_fast_cells_get_more_processes_and_slow_compiles_one(monkeypatch):
    calls = []

    def fake(args):
        calls.append(args[0])
        return {"step_ms": {"fast": 1.0, "slow": 50.0, "compiles": 50.0}[args[0]],
                "compile_s": 20.0 if args[0] == "compiles" else 0.1}

    monkeypatch.setattr(run, "measure", fake)
    cells = run.measure_interleaved(["fast", "slow", "compiles"], lambda c: [c], 2)
    assert [cells[c]["runs"] for c in ("fast", "slow", "compiles")] == [6, 2, 1]


def test_report_has_a_row_per_contender_and_the_dispatch_table(tiny_rows, tmp_path):
    rows = [dict(r, workload="resnet50", optimizer="adam") for r in tiny_rows.values()]
    out = tmp_path / "benchmarks.md"
    run.write_report(str(out), rows, tiny_rows, {"triad_gbs": 10.0}, 3, 1)
    text = out.read_text()
    for contender in run.CONTENDERS:
        assert f"| resnet50 | 2 | 0.0M | {contender} |" in text
    assert "## Dispatch overhead" in text and "What bounds Adam" in text
    assert "## Targets of the stateful step" in text and "| 3000 leaves: compile under 3 s | n/a s | n/a |" in text
    json.dumps(rows)  # rows stay plain data
    assert subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--help"],
                          capture_output=True).returncode == 0
