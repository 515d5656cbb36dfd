"""The benchmark harness runs end to end on the tiny workload (timings are not checked, only that it works)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import run  # noqa: E402
from benchmark_runs import tiny_runs  # noqa: E402


@pytest.fixture(scope="module")
def tiny_rows():
    # the worker's runs of all contenders in one process (start-up dominates); run.measure's own path,
    # one process per cell, runs in test_gpu_run_reports_what_cannot_run_and_the_bandwidth_target
    rows = tiny_runs(tuple(run.CONTENDERS))
    for contender, out in rows.items():
        assert "error" not in out, (contender, out)
    return rows


def test_each_contender_reports_time_compile_and_memory(tiny_rows):
    for contender, r in tiny_rows.items():
        assert r["contender"] == contender and r["leaves"] == 2 and r["params"] == 20
        assert r["step_ms"] > 0 and r["compile_s"] >= 0 and r["step_extra_mb"] >= 0
        # between steps the process holds at least parameters + gradients + Adam's two moments
        assert r["live_mb"] >= r["state_mb"] > 0


def test_interleaved_rounds_report_the_median_process(monkeypatch):
    calls = []

    def fake(args, device="cpu"):
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

    def fake(args, device="cpu"):
        calls.append(args[0])
        return {"step_ms": {"fast": 1.0, "slow": 50.0, "compiles": 50.0}[args[0]],
                "compile_s": 20.0 if args[0] == "compiles" else 0.1}

    monkeypatch.setattr(run, "measure", fake)
    cells = run.measure_interleaved(["fast", "slow", "compiles"], lambda c: [c], 2)
    assert [cells[c]["runs"] for c in ("fast", "slow", "compiles")] == [6, 2, 1]


def test_report_has_a_row_per_contender_and_the_dispatch_table(tiny_rows, tmp_path):
    rows = [dict(r, workload="resnet50", optimizer="adam") for r in tiny_rows.values()]
    out = tmp_path / "benchmarks.md"
    run.write_report(str(out), rows, tiny_rows, {"triad_gbs": 10.0, "inplace_gbs": 12.0}, 3, 1)
    text = out.read_text()
    for contender in run.CONTENDERS:
        assert f"| resnet50 | 2 | 0.0M | {contender} |" in text
    assert "## Dispatch overhead" in text and "What bounds Adam" in text
    assert "## Targets of the stateful step" in text and "| 3000 leaves: compile under 3 s | n/a | n/a |" in text
    assert "12.0 GB/s** updating an array in place" in text and "80% of the measured bandwidth" not in text
    json.dumps(rows)  # rows stay plain data
    assert subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--help"],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_bandwidth_kernels_report_both_figures(device, monkeypatch):
    # the GPU kernels are JAX programs: run them on the CPU here, so that the code a GPU run needs is exercised
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    out = run.measure([os.path.join(ROOT, "benchmarks", "_triad.py"), device, str(2**20)], device)
    assert out["triad_gbs"] > 0 and out["inplace_gbs"] > 0, out


def test_gpu_run_reports_what_cannot_run_and_the_bandwidth_target(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the GPU code paths of a JAX contender, on the CPU
    worker = os.path.join(ROOT, "benchmarks", "_worker.py")
    jax_cell = run.measure([worker, "funcopt-step", "tiny", "adam", "3", "gpu"], "gpu")
    assert jax_cell["device"] == "gpu" and jax_cell["step_ms"] > 0 and jax_cell["step_extra_mb"] >= 0
    import torch

    if not torch.cuda.is_available():  # a torch without CUDA: an error cell, not a crash of the whole run
        assert "error" in run.measure([worker, "torch-fused", "tiny", "adam", "3", "gpu"], "gpu")

    big = {"contender": "funcopt-step", "workload": "one-buffer", "optimizer": "adam", "step_ms": 1.0,
           "gbytes_per_s": 900.0, "compile_s": 0.1, "live_mb": 1.0, "state_mb": 1.0, "step_extra_mb": 0.0,
           "leaves": 1, "params": 1}
    out = tmp_path / "benchmarks_gpu.md"
    run.write_report(str(out), [big], {}, {"inplace_gbs": 1000.0, "device_kind": "H100"}, 3, 1, "gpu")
    text = out.read_text()
    assert text.startswith("# Benchmarks on a GPU") and "on H100" in text and "--device gpu" in text
    assert "| Adam on one 25.6M buffer >= 80% of the measured bandwidth | 90% | met |" in text
    assert "1.0x torch fused CUDA" in text and (tmp_path / "benchmarks_gpu.png").is_file()

