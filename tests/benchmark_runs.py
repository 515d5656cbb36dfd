"""The benchmark worker's measurements for the harness tests, many in one process.

A tiny-workload run of ``benchmarks/_worker.py`` is almost all interpreter, JAX and torch start-up: one
process per contender made the harness tests spend about 90 s starting 11 interpreters. Here one process
runs ``_worker.main`` once per cell, exactly as the command line does, and prints its JSON line; the
command-line path itself (``run.measure`` starting ``_worker.py``) is run by tests/test_benchmarks.py.
Each test file asks for its own contenders, so that a parallel run (pytest -n) that sends the two files'
tests to different workers does not run the whole set twice.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")

_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import _worker

for cell in json.loads(sys.argv[2]):
    sys.argv = ["_worker.py", *cell]
    _worker.main()
"""


def measure_in_one_process(cells: list[list[str]]) -> list[dict]:
    """The worker's output for each cell (``[contender, workload, optimizer, steps]``), from one CPU process."""
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    out = subprocess.run([sys.executable, "-c", _DRIVER, BENCHMARKS, json.dumps(cells)], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-5000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(cells), out.stdout
    return rows


@functools.cache
def tiny_runs(contenders: tuple[str, ...]) -> dict[str, dict]:
    """contender -> its worker output on the tiny workload (Adam, 3 steps), all from one process."""
    rows = measure_in_one_process([[c, "tiny", "adam", "3"] for c in contenders])
    return dict(zip(contenders, rows))
