"""fo.lion against the Lion update of Chen et al. 2023 (Algorithm 2) written out in float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from tests.reference.harness import (
    assert_follows_reference,
    assert_hparam_edit_does_not_retrace,
    make_grads,
    make_params,
    precision,
    run_funcopt,
)

STEPS = 30
DTYPES = [np.float32, np.float64]


def lion_reference(params, grads, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
    beta1, beta2 = betas
    p = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    m = [np.zeros_like(x) for x in p]
    trajectory = []
    for grad_tree in grads:
        for i, g in enumerate(jax.tree.leaves(grad_tree)):
            g = np.asarray(g, np.float64)
            update = np.sign(beta1 * m[i] + (1 - beta1) * g)
            p[i] = p[i] - lr * (update + weight_decay * p[i])
            m[i] = beta2 * m[i] + (1 - beta2) * g
        trajectory.append([x.copy() for x in p])
    return trajectory, m


CASES = [
    dict(),
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.5),
    dict(lr=0.003, betas=(0.5, 0.9), weight_decay=1.0),
    dict(lr=0.01, betas=(0.0, 0.0)),  # plain signSGD
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", CASES, ids=str)
def test_lion_matches_reference(kw, dtype):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(fo.lion(**kw), params, grads)
        theirs, exp_avg = lion_reference(params, grads, **kw)
        assert_follows_reference(ours, theirs, dtype, state, {"exp_avg": exp_avg})


def test_zero_direction_gives_zero_step():
    tx = fo.lion(lr=0.1)
    params = {"w": jnp.array([1.0, 2.0])}
    u, state = tx.update({"w": jnp.array([0.0, 1.0])}, tx.init(params), params)
    np.testing.assert_allclose(u["w"], [0.0, -0.1], rtol=1e-6)
    # the interpolation uses the old momentum, the stored momentum uses beta2
    u, state = tx.update({"w": jnp.array([-0.5, 0.0])}, state, params)
    np.testing.assert_allclose(state.slots["exp_avg"]["w"], [0.99 * 0.0 + 0.01 * -0.5, 0.99 * 0.01],
                               rtol=1e-6)
    np.testing.assert_allclose(u["w"], [0.1, -0.1], rtol=1e-6)


def test_hparams_live_in_state_without_retracing():
    params = {"w": jnp.ones((2, 3))}
    grads = {"w": jnp.full((2, 3), 0.5)}
    assert_hparam_edit_does_not_retrace(fo.lion(lr=0.1, weight_decay=0.5), params, grads, {"lr": 0.05}, scale=0.5)


@pytest.mark.parametrize("kw, message", [
    (dict(lr=-1.0), "Invalid learning rate: -1.0"),
    (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    (dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
    (dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
])
def test_validation_errors(kw, message):
    with pytest.raises(ValueError) as e:
        fo.lion(**kw)
    assert str(e.value) == message


def test_types_and_params_requirements():
    with pytest.raises(TypeError):
        fo.lion(lr="fast")
    with pytest.raises(ValueError):
        fo.lion(betas=(0.9,))
    params = {"w": jnp.ones(2)}
    tx = fo.lion(weight_decay=0.1)
    with pytest.raises(ValueError, match="params must be given"):
        tx.update(params, tx.init(params))
    tx = fo.lion()
    u, _ = tx.update(params, tx.init(params))
    np.testing.assert_allclose(u["w"], [-1e-4, -1e-4], rtol=1e-6)
