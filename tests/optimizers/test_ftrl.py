"""fo.ftrl against MindSpore's nn.FTRL / TensorFlow's ApplyFtrl rule written out in float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from tests.reference.harness import assert_close_to_reference, make_grads, make_params, precision, run_funcopt

STEPS = 30
DTYPES = [np.float32, np.float64]


def reference_ftrl(params, grads, lr=1e-3, initial_accum=0.1, lr_power=-0.5, l1=0.0, l2=0.0,
                   weight_decay=0.0):
    """ApplyFtrl, coordinate by coordinate, after MindSpore's decay_weight (g += wd * w)."""
    weights = [np.asarray(p, np.float64).copy() for p in jax.tree.leaves(params)]
    treedef = jax.tree.structure(params)
    accums = [np.full(w.shape, initial_accum, np.float64) for w in weights]
    linears = [np.zeros(w.shape, np.float64) for w in weights]
    history = []
    for grad_tree in grads:
        for i, g in enumerate(jax.tree.leaves(grad_tree)):
            w, m, u = weights[i].reshape(-1), accums[i].reshape(-1), linears[i].reshape(-1)
            g = np.asarray(g, np.float64).reshape(-1)
            for j in range(w.size):
                gj = g[j] + weight_decay * w[j]
                m_new = m[j] + gj * gj
                u[j] += gj - (m_new ** -lr_power - m[j] ** -lr_power) / lr * w[j]
                if abs(u[j]) > l1:
                    w[j] = (np.sign(u[j]) * l1 - u[j]) / (m_new ** -lr_power / lr + 2 * l2)
                else:
                    w[j] = 0.0
                m[j] = m_new
        history.append(treedef.unflatten([w.copy() for w in weights]))
    return history, treedef.unflatten(accums), treedef.unflatten(linears)


CASES = [
    dict(lr=0.1),
    dict(lr=0.2, initial_accum=0.5, l1=0.3, l2=0.1),
    dict(lr=0.1, lr_power=-0.3, l1=0.05, weight_decay=0.02),
    dict(lr=0.05, lr_power=0.0, initial_accum=0.0, l2=0.5),
    dict(lr=0.3, initial_accum=0.0, l1=1.5, l2=0.0, weight_decay=0.1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", CASES, ids=str)
def test_matches_ftrl_rule(kw, dtype):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(fo.ftrl(**kw), params, grads)
        ref, ref_accum, ref_linear = reference_ftrl(params, grads, **kw)
        for step, (a, b) in enumerate(zip(ours, ref)):
            assert_close_to_reference(a, b, dtype, f"step {step + 1}")
        assert set(state.slots) == {"accum", "linear"}
        assert_close_to_reference(state.slots["accum"], ref_accum, dtype, "accum")
        assert_close_to_reference(state.slots["linear"], ref_linear, dtype, "linear")
        assert int(state.step) == STEPS


def test_l1_gives_exact_zeros_where_the_rule_does():
    kw = dict(lr=0.3, initial_accum=0.0, l1=1.5, weight_decay=0.1)
    with precision(np.float64):
        params = make_params(np.float64)
        grads = make_grads(params, STEPS)
        ours, _ = run_funcopt(fo.ftrl(**kw), params, grads)
        ref, _, _ = reference_ftrl(params, grads, **kw)
        zeros_ours = np.concatenate([np.ravel(x) == 0 for x in jax.tree.leaves(ours[-1])])
        zeros_ref = np.concatenate([np.ravel(x) == 0 for x in jax.tree.leaves(ref[-1])])
        np.testing.assert_array_equal(zeros_ours, zeros_ref)
        assert 0 < zeros_ref.sum() < zeros_ref.size  # both branches of the rule are exercised


def test_defaults_and_state_init():
    tx = fo.ftrl()
    hp = fo.get_hparams(tx.init({"w": jnp.zeros(1)}))
    assert {k: float(v) for k, v in hp.items()} == pytest.approx(
        dict(lr=1e-3, initial_accum=0.1, lr_power=-0.5, l1=0.0, l2=0.0, weight_decay=0.0))
    state = fo.ftrl(initial_accum=0.25).init({"w": jnp.zeros((2, 3)), "s": jnp.zeros(())})
    np.testing.assert_array_equal(state.slots["accum"]["w"], np.full((2, 3), 0.25, np.float32))
    np.testing.assert_array_equal(state.slots["linear"]["s"], 0.0)
    assert state.slots["accum"]["s"].shape == ()


def test_set_hparams_changes_l1_without_retrace():
    tx = fo.ftrl(lr=0.5, initial_accum=0.0)
    params = {"w": jnp.array([0.0, 0.0])}
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    u, _ = step(params, state, {"w": jnp.array([0.3, -2.0])})
    assert float(u["w"][0]) != 0.0
    u, _ = step(params, fo.set_hparams(state, l1=0.5), {"w": jnp.array([0.3, -2.0])})
    assert float(u["w"][0]) == 0.0 and float(u["w"][1]) != 0.0
    assert step._cache_size() == 1


def test_validation_errors():
    with pytest.raises(ValueError, match="Invalid learning rate: 0.0"):
        fo.ftrl(lr=0.0)
    with pytest.raises(ValueError, match="For 'FTRL', the 'initial_accum' must be >= 0.0, but got -0.1"):
        fo.ftrl(initial_accum=-0.1)
    with pytest.raises(ValueError, match="For 'FTRL', the 'lr_power' must be <= 0.0, but got 0.5"):
        fo.ftrl(lr_power=0.5)
    with pytest.raises(ValueError, match="For 'FTRL', the 'l1' must be >= 0.0, but got -1"):
        fo.ftrl(l1=-1.0)
    with pytest.raises(ValueError, match="For 'FTRL', the 'l2' must be >= 0.0, but got -1"):
        fo.ftrl(l2=-1.0)
    with pytest.raises(ValueError, match="Invalid weight_decay value"):
        fo.ftrl(weight_decay=-1.0)
    with pytest.raises(TypeError, match="l1 must be a number"):
        fo.ftrl(l1=None)
    tx = fo.ftrl()
    with pytest.raises(ValueError, match="params must be given"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
