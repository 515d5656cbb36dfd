"""fo.lamb against MegEngine's LAMB update rule written out in float64 NumPy."""

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
# The harness's leaves (a matrix, a vector, a 3-d tensor, a 0-d and a 1-element leaf) plus an all-zero
# vector, whose zero norm exercises the trust ratio's guard on the first step.
SHAPES = {"dense": {"weight": (4, 3), "bias": (4,)}, "conv": (2, 3, 2), "scalar": (), "one": (1,),
          "zero": (3,)}


def _params(dtype):
    params = make_params(dtype, shapes=SHAPES)
    params["zero"] = np.zeros(3, dtype)
    return params


def lamb_reference(params, grads, lr, betas=(0.9, 0.999), eps=1e-8, bias_correction=True,
                   weight_decay=0.0, always_adapt=False):
    """MegEngine's LAMBUpdate, leaf by leaf, in float64."""
    beta1, beta2 = betas
    p = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    exp_avg = [np.zeros_like(x) for x in p]
    exp_avg_sq = [np.zeros_like(x) for x in p]
    trajectory = []
    for step, grad_tree in enumerate(grads, start=1):
        for i, g in enumerate(jax.tree.leaves(grad_tree)):
            g = np.asarray(g, np.float64)
            exp_avg[i] = beta1 * exp_avg[i] + (1 - beta1) * g
            exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1 - beta2) * g ** 2
            bc1 = 1 - beta1 ** step if bias_correction else 1.0
            bc2 = 1 - beta2 ** step if bias_correction else 1.0
            r = (exp_avg[i] / bc1) / (np.sqrt(exp_avg_sq[i] / bc2) + eps)
            if weight_decay != 0:
                r = r + weight_decay * p[i]
            p_norm = np.sqrt(np.sum(p[i] ** 2))
            r_norm = np.sqrt(np.sum(r ** 2))
            trust = 1.0
            if (always_adapt or weight_decay > 0) and p_norm > 0 and r_norm > 0:
                trust = p_norm / r_norm
            p[i] = p[i] - lr * trust * r
        trajectory.append([x.copy() for x in p])
    return trajectory, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


CASES = [
    dict(lr=0.01),
    dict(lr=0.01, bias_correction=False),
    dict(lr=0.02, weight_decay=0.1),
    dict(lr=0.02, always_adapt=True),
    dict(lr=0.05, weight_decay=0.01, always_adapt=True, betas=(0.8, 0.95), eps=1e-3),
    dict(lr=0.03, weight_decay=0.2, bias_correction=False, eps=1e-6),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", CASES, ids=str)
def test_lamb_matches_reference(kw, dtype):
    with precision(dtype):
        params = _params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(fo.lamb(**kw), params, grads)
        theirs, ref_state = lamb_reference(params, grads, **kw)
        assert_follows_reference(ours, theirs, dtype, state, ref_state)
        assert int(state.step) == STEPS


def test_trust_ratio_applies_only_with_weight_decay_or_always_adapt():
    params = {"w": jnp.array([3.0, 4.0])}
    grads = {"w": jnp.array([1.0, -1.0])}
    plain = fo.lamb(lr=0.1)
    u_plain, _ = plain.update(grads, plain.init(params), params)
    # without adaptation the first step is lr * sign(g) (Adam's first step), whatever ||w||
    np.testing.assert_allclose(u_plain["w"], [-0.1, 0.1], rtol=1e-6)
    adapt = fo.lamb(lr=0.1, always_adapt=True)
    u_adapt, _ = adapt.update(grads, adapt.init(params), params)
    np.testing.assert_allclose(np.linalg.norm(u_adapt["w"]), 0.1 * 5.0, rtol=1e-6)


def test_weight_decay_as_schedule_switches_adaptation_on_and_off():
    # A scheduled weight decay is traced: the "weight_decay > 0" rule must be decided per step.
    params = {"w": jnp.array([3.0, 4.0])}
    grads = {"w": jnp.array([1.0, -1.0])}
    tx = fo.lamb(lr=0.1, weight_decay=lambda count: jnp.where(count == 0, 0.0, 0.1))
    state = tx.init(params)
    u1, state = tx.update(grads, state, params)
    np.testing.assert_allclose(u1["w"], [-0.1, 0.1], rtol=1e-6)
    u2, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(np.linalg.norm(u2["w"]), 0.1 * 5.0, rtol=1e-6)


def test_hparams_live_in_state_without_retracing():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(())}
    grads = jax.tree.map(lambda x: 0.5 * x, params)
    assert_hparam_edit_does_not_retrace(fo.lamb(lr=0.1, weight_decay=0.01), params, grads, {"lr": 0.05}, scale=0.5)


@pytest.mark.parametrize("kw, message", [
    (dict(lr=-1.0), "Invalid learning rate: -1.0"),
    (dict(lr=0.1, weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    (dict(lr=0.1, betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
    (dict(lr=0.1, betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (dict(lr=0.1, eps=-1e-8), "Invalid epsilon value: -1e-08"),
])
def test_validation_errors(kw, message):
    with pytest.raises(ValueError) as e:
        fo.lamb(**kw)
    assert str(e.value) == message


def test_lr_is_required_and_params_are_needed_when_adapting():
    with pytest.raises(TypeError):
        fo.lamb()  # MegEngine's LAMB has no default learning rate
    with pytest.raises(TypeError):
        fo.lamb(lr="0.1")
    params = {"w": jnp.ones(2)}
    for tx in (fo.lamb(lr=0.1, weight_decay=0.1), fo.lamb(lr=0.1, always_adapt=True)):
        with pytest.raises(ValueError, match="params must be given"):
            tx.update(params, tx.init(params))
    tx = fo.lamb(lr=0.1)
    u, _ = tx.update(params, tx.init(params))  # plain Adam-like step: params optional
    np.testing.assert_allclose(u["w"], [-0.1, -0.1], rtol=1e-6)
