"""The train-step workloads of the benchmark harness run end to end on the tiny model (timings not checked)."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import run  # noqa: E402
import workloads  # noqa: E402
from benchmark_runs import tiny_runs  # noqa: E402


@pytest.fixture(scope="module")
def train_rows():
    # the worker's runs of all contenders in one process (start-up dominates)
    rows = list(tiny_runs(tuple(run.TRAIN_CONTENDERS)).values())
    for contender, out in zip(run.TRAIN_CONTENDERS, rows):
        assert "error" not in out, (contender, out)
    return rows


def test_each_train_contender_reports_a_step_and_a_compile(train_rows):
    assert [r["contender"] for r in train_rows] == run.TRAIN_CONTENDERS
    for r in train_rows:
        assert r["workload"] == "tiny" and r["leaves"] == 2 and r["step_ms"] > 0 and r["compile_s"] >= 0


def test_train_table_gives_ratios_to_optax_and_the_targets(train_rows):
    text = "\n".join(run.train_table(train_rows))
    ref = train_rows[0]["step_ms"]
    assert "| tiny | 2 | 0.0M | optax-train |" in text and "| 1.00 |" in text
    ours = train_rows[1]
    assert f"| {ours['step_ms'] / ref:.2f} |" in text
    assert "| tiny: functional per leaf step <= 1.0x optax |" in text
    assert "| tiny: stateful backward + step <= 1.1x optax's train step |" in text
    assert "| tiny: packed train step <= 1.0x optax's train step |" in text
    broken = [dict(train_rows[0]), {"contender": "funcopt-train", "workload": "tiny", "error": "boom"}]
    assert "| tiny | | | funcopt-train | error: boom |" in "\n".join(run.train_table(broken))


def test_matmul_loss_multiplies_each_matrix_by_a_batch():
    shapes = [(3, 2, 2), (3,), (5, 4)]
    loss, inputs = workloads.matmul_loss(shapes, batch=7)
    assert sorted(inputs) == [3, 4] and inputs[4].shape == (7, 4)
    params = [jnp.full(s, 0.1, jnp.float32) for s in shapes]
    expected = sum(float(jnp.mean(jnp.tanh(y) ** 2)) for y in (
        inputs[4] @ params[0].reshape(3, 4).T, inputs[3] * params[1], inputs[4] @ params[2].T))
    np.testing.assert_allclose(float(jax.jit(loss)(params, inputs)), expected, rtol=1e-6)
    assert len(workloads.many_matrices()) == 1000
    assert workloads.TRAIN_WORKLOADS["1000-leaves"]() == workloads.many_matrices()
    assert workloads.TRAIN_WORKLOADS["30-leaves"]() == workloads.many_matrices(30)
    with pytest.raises(KeyError):
        workloads.TRAIN_WORKLOADS["many-leaves"]
    assert all(200 <= r * c <= 1000 for r, c in workloads.many_matrices())
