"""Sharded parameters and optimizer state (functional API, ZeRO-1, stateful API) on 8 simulated devices.

jax fixes its device count when it starts, so the checks in ``sharding_checks.py`` run in a fresh
process with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``: once in float32 (every check) and
once with ``JAX_ENABLE_X64=1`` (the numerical comparisons). Each family of checks is one test item (one
process); a failing item lists every failed check with its traceback, and a crashed process the end of
its output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPT = HERE / "sharding_checks.py"


def _check_names() -> list[str]:
    spec = importlib.util.spec_from_file_location("_sharding_checks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.CHECKS)


NAMES = _check_names()
# one test item (one process) per family of checks, so that pytest-xdist spreads them over its workers
FAMILIES = {
    "functional": [n for n in NAMES if n.startswith("functional_follows[")],
    "stateful": [n for n in NAMES if n.startswith("stateful")],
    "zero1": [n for n in NAMES if n.startswith("zero1[")],
    "placement": [n for n in NAMES if not n.startswith(("functional_follows[", "stateful", "zero1["))],
}
X64_FAMILIES = {
    "functional": FAMILIES["functional"],
    "zero1": FAMILIES["zero1"],
    "placement": ["functional_inside_shard_map", "zero1_data_parallel_training"],
}
CASES = [("float32", f) for f in FAMILIES] + [("float64", f) for f in X64_FAMILIES]


def _run(names: list[str], x64: bool, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=8"])
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1" if x64 else "0"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, str(SCRIPT), "--json", str(out), *names], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=1800)


def test_every_check_is_run():
    assert sorted(n for names in FAMILIES.values() for n in names) == sorted(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("precision, family", CASES, ids=[f"{p}-{f}" for p, f in CASES])
def test_sharded(precision, family, tmp_path):
    names = (FAMILIES if precision == "float32" else X64_FAMILIES)[family]
    out = tmp_path / "results.json"
    proc = _run(names, precision == "float64", out)
    results = json.loads(out.read_text()) if out.exists() else {}
    missing = [n for n in names if n not in results]
    failed = {n: r["error"] for n, r in results.items() if not r["ok"]}
    report = [f"{len(failed)} of {len(names)} checks failed ({precision}, 8 simulated devices):"]
    report += [f"--- {name}\n{error}" for name, error in failed.items()]
    if missing:
        report.append(f"--- the check process exited with status {proc.returncode} before reporting "
                      f"{missing}; its output ends with:\n{(proc.stdout + proc.stderr)[-6000:]}")
    if failed or missing:
        pytest.fail("\n".join(report), pytrace=False)


@pytest.mark.slow
def test_example_script_trains_on_8_devices():
    """examples/sharding.py (data parallel + ZeRO-1, model parallel, stateful) trains to > 90% accuracy."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "0"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "sharding.py")], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count("test accuracy") == 9
    assert "max |difference| = 0.0" in proc.stdout
