"""Every notebook in examples/ runs from top to bottom, within a time limit, in a fresh kernel.

The notebooks are committed without outputs; each one asserts what it demonstrates (accuracy reached,
numbers matching torch, a resumed run matching an uninterrupted one), so running it is a test.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))

# Seconds for one whole notebook, kernel start included. Each is written to finish in well under a minute
# on 2 CPU cores; the margin absorbs a loaded machine.
NOTEBOOK_TIMEOUT = 180


def test_the_example_notebooks_are_there() -> None:
    expected = {"quickstart_functional.ipynb", "stateful_api.ipynb", "schedules_gallery.ipynb",
                "migrating_from_pytorch.ipynb", "lbfgs.ipynb", "mixed_precision.ipynb", "sharding.ipynb",
                "nnx_cnn.ipynb"}
    assert expected <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name} has outputs saved"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    # The kernel is a child process: it must find this interpreter (the "python3" kernel runs `python`
    # from PATH) and this checkout of funcopt, and run JAX on the CPU.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures as outputs
    client = NotebookClient(nb, timeout=NOTEBOOK_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}})
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{name} ran past {NOTEBOOK_TIMEOUT} s (stopped before cell {index})")
            client.timeout = max(1, int(remaining))
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                pytest.fail(f"{name} ran past {NOTEBOOK_TIMEOUT} s (in cell {index})")
            except CellExecutionError as e:
                pytest.fail(f"{name}, cell {index} failed:\n{e}")
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
    assert figures, f"{name} drew no plot"
