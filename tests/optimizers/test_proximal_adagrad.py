"""fo.proximal_adagrad against the ApplyProximalAdagrad kernel rule written out in float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from tests.reference.harness import assert_close_to_reference, make_grads, make_params, precision, run_funcopt

STEPS = 30
DTYPES = [np.float32, np.float64]


def reference_proximal_adagrad(params, grads, lr=1e-3, accum=0.1, l1=0.0, l2=0.0, weight_decay=0.0):
    """The TensorFlow / MindSpore kernel, with MindSpore's decay_weight (g += wd * var) first.

    accum += g * g; rate = lr / sqrt(accum); prox_v = var - rate * g;
    var = sign(prox_v) * max(|prox_v| - rate * l1, 0) / (1 + rate * l2),
    or prox_v / (1 + rate * l2) when l1 == 0.
    """
    variables = [np.asarray(p, np.float64).copy() for p in jax.tree.leaves(params)]
    treedef = jax.tree.structure(params)
    accums = [np.full(v.shape, accum, np.float64) for v in variables]
    history = []
    for grad_tree in grads:
        for i, g in enumerate(jax.tree.leaves(grad_tree)):
            var = variables[i]
            g = np.asarray(g, np.float64) + weight_decay * var
            accums[i] = accums[i] + g * g
            rate = lr / np.sqrt(accums[i])
            prox_v = var - rate * g
            if l1 > 0:
                variables[i] = np.sign(prox_v) * np.maximum(np.abs(prox_v) - rate * l1, 0.0) / (1 + rate * l2)
            else:
                variables[i] = prox_v / (1 + rate * l2)
        history.append(treedef.unflatten([v.copy() for v in variables]))
    return history, treedef.unflatten(accums)


CASES = [
    dict(lr=0.1),
    dict(lr=0.2, accum=0.5, l2=0.3),
    dict(lr=0.3, accum=0.1, l1=0.05, l2=0.1),
    dict(lr=0.5, accum=0.0, l1=0.4, weight_decay=0.05),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", CASES, ids=str)
def test_matches_kernel_rule(kw, dtype):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(fo.proximal_adagrad(**kw), params, grads)
        ref, ref_accum = reference_proximal_adagrad(params, grads, **kw)
        for step, (a, b) in enumerate(zip(ours, ref)):
            assert_close_to_reference(a, b, dtype, f"step {step + 1}")
        assert set(state.slots) == {"accum"}
        assert_close_to_reference(state.slots["accum"], ref_accum, dtype, "accum")
        assert int(state.step) == STEPS


def test_l1_thresholds_to_exact_zeros():
    kw = dict(lr=0.5, accum=0.0, l1=0.4, weight_decay=0.05)
    with precision(np.float64):
        params = make_params(np.float64)
        grads = make_grads(params, STEPS)
        ours, _ = run_funcopt(fo.proximal_adagrad(**kw), params, grads)
        ref, _ = reference_proximal_adagrad(params, grads, **kw)
        for a, b in zip(ours, ref):
            zeros_ours = np.concatenate([np.ravel(x) == 0 for x in jax.tree.leaves(a)])
            zeros_ref = np.concatenate([np.ravel(x) == 0 for x in jax.tree.leaves(b)])
            np.testing.assert_array_equal(zeros_ours, zeros_ref)
        assert 0 < zeros_ref.sum() < zeros_ref.size


def test_shrinkage_uses_the_adagrad_rate_not_the_scalar_lr():
    # accum 0 + g^2 = 4 -> rate = 0.5 / 2 = 0.25; prox_v = 1 - 0.5 = 0.5;
    # kernel: (0.5 - 0.25 * 0.4) / (1 + 0.25 * 1) = 0.32 (the documented scalar-lr form would give 0.2).
    tx = fo.proximal_adagrad(lr=0.5, accum=0.0, l1=0.4, l2=1.0)
    params = {"w": jnp.array([1.0])}
    updates, _ = tx.update({"w": jnp.array([2.0])}, tx.init(params), params)
    np.testing.assert_allclose(fo.apply_updates(params, updates)["w"], [0.32], rtol=1e-6)


def test_defaults_state_init_and_hparams():
    state = fo.proximal_adagrad().init({"w": jnp.zeros((2, 2)), "s": jnp.zeros(())})
    hp = {k: float(v) for k, v in fo.get_hparams(state).items()}
    assert hp == pytest.approx(dict(lr=1e-3, accum=0.1, l1=0.0, l2=0.0, weight_decay=0.0))
    np.testing.assert_allclose(state.slots["accum"]["w"], np.full((2, 2), 0.1), rtol=1e-7)
    assert state.slots["accum"]["s"].shape == ()
    state = fo.set_hparams(state, lr=0.5, l1=0.1)
    assert float(fo.get_hparams(state)["l1"]) == pytest.approx(0.1)


def test_validation_errors():
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):
        fo.proximal_adagrad(lr=-0.1)
    with pytest.raises(ValueError, match="For 'ProximalAdagrad', the 'accum' must be >= 0.0, but got -0.1"):
        fo.proximal_adagrad(accum=-0.1)
    with pytest.raises(ValueError, match="For 'ProximalAdagrad', the 'l1' must be >= 0.0, but got -1"):
        fo.proximal_adagrad(l1=-1.0)
    with pytest.raises(ValueError, match="For 'ProximalAdagrad', the 'l2' must be >= 0.0, but got -1"):
        fo.proximal_adagrad(l2=-1.0)
    with pytest.raises(ValueError, match="Invalid weight_decay value"):
        fo.proximal_adagrad(weight_decay=-1.0)
    with pytest.raises(ValueError, match="Tensor l2 must be 1-element"):
        fo.proximal_adagrad(l2=np.ones(2))
    tx = fo.proximal_adagrad()
    with pytest.raises(ValueError, match="params must be given"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
