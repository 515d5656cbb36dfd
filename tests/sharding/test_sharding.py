"""Sharded parameters and optimizer state (functional API, ZeRO-1, stateful API) on 8 simulated devices.

jax fixes its device count when it starts, so the checks in ``sharding_checks.py`` run in a fresh
process with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``: every check in float32, and the
numerical comparisons again in float64 (jax's x64 mode switched on around them, in the same process).
Each check is a test of its own; all of them share one process (started by the first of them that runs,
in each pytest process), which saves jax starts and the small programs every check would compile again
in a process of its own. A failing check reports its traceback, and a crashed process the end of its
output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
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
# float64 repeats the checks that compare numbers (at rtol 1e-10); placement alone is the same in both
X64_NAMES = [n for n in NAMES if n.startswith(("functional_follows[", "zero1["))] + [
    "functional_inside_shard_map", "zero1_data_parallel_training"]
CHECKS = {"float32": NAMES, "float64": X64_NAMES}
CASES = [(precision, name) for precision, names in CHECKS.items() for name in names]

# (results by precision and check name, the process's output), once per pytest process
_RUN: list[tuple[dict, str]] = []


def _run() -> tuple[dict, str]:
    if not _RUN:
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=8"])
        env["JAX_PLATFORMS"] = "cpu"
        env["JAX_ENABLE_X64"] = "0"  # the float64 checks switch x64 on around themselves
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "results.json"
            proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out), *[f"{p}:{n}" for p, n in CASES]],
                                  env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
            results = json.loads(out.read_text()) if out.exists() else {}
        _RUN.append((results, f"the check process exited with status {proc.returncode}; its output ends "
                              f"with:\n{(proc.stdout + proc.stderr)[-6000:]}"))
    return _RUN[0]


def test_every_check_is_run():
    assert len(set(NAMES)) == len(NAMES) and set(X64_NAMES) <= set(NAMES)
    assert sorted(name for precision, name in CASES if precision == "float32") == sorted(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("precision, name", CASES, ids=[f"{p}-{n}" for p, n in CASES])
def test_sharded(precision, name):
    results, output = _run()
    results = results.get(precision, {})
    if name not in results:
        pytest.fail(f"{name} ({precision}, 8 simulated devices) did not report: {output}", pytrace=False)
    if not results[name]["ok"]:
        pytest.fail(f"{name} ({precision}, 8 simulated devices) failed:\n{results[name]['error']}", pytrace=False)


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
