"""Every notebook in examples/ runs from top to bottom, within a time limit.

The notebooks are committed without outputs; each one asserts what it demonstrates (accuracy reached,
numbers matching torch, a resumed run matching an uninterrupted one), so running it is a test.

Starting a kernel and importing jax, flax, torch and scikit-learn in it costs about 3 s of CPU, a quarter of
a short notebook. So the notebooks that leave the process as they found it share one kernel: before each,
``%reset -f`` empties the namespace, so that a notebook that forgot an import or a definition still fails.
A notebook that changes a process-wide setting (``jax.config.update``, an environment variable read when
jax starts) gets a fresh kernel of its own (``OWN_KERNEL``). A failed notebook takes its kernel down with
it: the next one starts a fresh kernel.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
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

# Notebooks that change the process for whatever runs after them, with what they change.
OWN_KERNEL = {
    "lbfgs.ipynb": "switches on float64 (jax_enable_x64) for the whole process",
    "sharding.ipynb": "sets XLA_FLAGS (8 simulated devices) before jax starts",
}
# What a notebook's code does that reaches beyond it: such a notebook must be in OWN_KERNEL.
_PROCESS_WIDE = re.compile(r"jax\.config\.update|os\.environ|set_default_dtype|set_num_threads|os\.chdir")


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    # The kernel is a child process: it must find this interpreter (the "python3" kernel runs `python`
    # from PATH) and this checkout of funcopt, and run JAX on the CPU.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures as outputs
    # torch's and OpenBLAS's thread pools: on the few cores a test run has, a second thread spinning for
    # the tiny matrices of these notebooks costs several times the CPU of the work (torch's loop in
    # migrating_from_pytorch: 6.6 s of CPU with 2 threads, 1.6 s with 1). XLA's own pool is not affected.
    env["OMP_NUM_THREADS"] = "1"
    return env


class _Kernels:
    """Running kernels by key: "shared", or a notebook's name for one in OWN_KERNEL."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[NotebookClient, contextlib.ExitStack]] = {}

    def get(self, key: str) -> tuple[NotebookClient, bool]:
        """The key's kernel (as the client that started it), and whether it was started just now."""
        if key in self._running:
            return self._running[key][0], False
        starter = NotebookClient(nbformat.v4.new_notebook(), kernel_name="python3",
                                 resources={"metadata": {"path": str(EXAMPLES)}})
        stack = contextlib.ExitStack()
        stack.enter_context(starter.setup_kernel(env=_kernel_env()))  # shut down when the stack closes
        self._running[key] = starter, stack
        return starter, True

    def stop(self, key: str) -> None:
        if key in self._running:
            self._running.pop(key)[1].close()

    def stop_all(self) -> None:
        for key in list(self._running):
            self.stop(key)


@pytest.fixture(scope="module")
def kernels():
    pool = _Kernels()
    yield pool
    pool.stop_all()


def _code(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


def test_the_example_notebooks_are_there() -> None:
    expected = {"quickstart_functional.ipynb", "stateful_api.ipynb", "schedules_gallery.ipynb",
                "migrating_from_pytorch.ipynb", "lbfgs.ipynb", "mixed_precision.ipynb", "sharding.ipynb",
                "nnx_cnn.ipynb"}
    assert expected <= set(NOTEBOOKS)
    # a notebook that changes the process must not share its kernel with the others
    for name in NOTEBOOKS:
        if _PROCESS_WIDE.search(_code(nbformat.read(EXAMPLES / name, as_version=4))):
            assert name in OWN_KERNEL, f"{name} changes the process: give it a kernel of its own"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name} has outputs saved"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernels: _Kernels) -> None:
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT
    key = name if name in OWN_KERNEL else "shared"
    starter, fresh = kernels.get(key)
    client = NotebookClient(nb, km=starter.km, timeout=NOTEBOOK_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}})
    client.kc = starter.kc
    ok = False
    try:
        if not fresh:  # the namespace as a new kernel has it: names left by an earlier notebook are gone
            reset = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%reset -f")])
            resetter = NotebookClient(reset, km=starter.km, timeout=60, kernel_name="python3")
            resetter.kc = starter.kc
            resetter.execute_cell(reset.cells[0], 0)
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
        ok = True
    finally:
        if not ok or key != "shared":  # a notebook of its own, or a kernel left in an unknown state
            kernels.stop(key)
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
    assert figures, f"{name} drew no plot"
