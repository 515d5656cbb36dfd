"""LARS and LAMB on zero norms: the trust ratio is 1, so zero-initialized leaves (biases) train.

References: TensorFlow's LARSOptimizer and apex's LARC (ratio 1 where the weight or gradient norm is 0),
optax's scale_by_trust_ratio (ratio 1 where the weight or update norm is 0), written out in float64 NumPy,
and optax.lars itself where its formula and funcopt's coincide (no weight decay).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcopt as fo
from funcopt.compat import megengine as mge
from funcopt.compat import mindspore as ms
from tests.reference.harness import precision

STEPS = 5


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((3, 4)), "b": np.zeros(4)}  # the bias starts at zero
    grads = [{"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)} for _ in range(STEPS)]
    return params, grads


def _run(tx, params, grads):
    params = jax.tree.map(jnp.asarray, params)
    state = tx.init(params)
    step = jax.jit(tx.update)
    out = []
    for g in grads:
        updates, state = step(jax.tree.map(jnp.asarray, g), state, params)
        params = fo.apply_updates(params, updates)
        out.append(jax.tree.map(np.asarray, params))
    return out


def lars_reference(params, grads, lr, momentum, weight_decay, trust_coefficient, eps):
    """TensorFlow's LARSOptimizer / MindSpore's LARSUpdate with the zero-norm guard, then momentum; float64."""
    p = {k: np.array(v, np.float64) for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for g in grads:
        for k in p:
            w_norm, g_norm = np.linalg.norm(p[k]), np.linalg.norm(g[k])
            trust = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)
            if w_norm == 0 or g_norm == 0:
                trust = 1.0
            buf[k] = momentum * buf[k] + trust * (g[k] + weight_decay * p[k])
            p[k] = p[k] - lr * buf[k]
        out.append({k: v.copy() for k, v in p.items()})
    return out


def lamb_reference(params, grads, lr, betas, eps, weight_decay):
    """LAMB with the trust ratio always on, 1 where a norm is 0; float64."""
    b1, b2 = betas
    p = {k: np.array(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for t, g in enumerate(grads, start=1):
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
            r = (m[k] / (1 - b1**t)) / (np.sqrt(v2[k] / (1 - b2**t)) + eps) + weight_decay * p[k]
            p_norm, r_norm = np.linalg.norm(p[k]), np.linalg.norm(r)
            trust = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
            p[k] = p[k] - lr * trust * r
        out.append({k: v.copy() for k, v in p.items()})
    return out


def _assert_trajectory(ours, theirs):
    for a, b in zip(ours, theirs):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", [
    dict(lr=0.5, momentum=0.9, weight_decay=0.0, trust_coefficient=0.01, eps=1e-5),
    dict(lr=0.5, momentum=0.0, weight_decay=0.1, trust_coefficient=0.02, eps=0.0),
])
def test_lars_zero_initialized_leaf_trains(kw):
    params, grads = _problem()
    with precision(np.float64):
        ours = _run(fo.lars(**kw), params, grads)
    theirs = lars_reference(params, grads, **kw)
    _assert_trajectory(ours, theirs)
    # the first step moves the bias by the plain momentum step on its gradient
    np.testing.assert_allclose(ours[0]["b"], -kw["lr"] * grads[0]["b"], rtol=1e-12)
    assert np.all(ours[-1]["b"] != 0)


def test_lars_matches_optax_with_a_zero_leaf():
    # Without weight decay optax.lars computes the same ratio (||g|| + eps in the denominator).
    params, grads = _problem(1)
    with precision(np.float64):
        ours = _run(fo.lars(lr=0.3, momentum=0.9, trust_coefficient=0.05, eps=1e-6), params, grads)
        theirs = _run(optax.lars(0.3, weight_decay=0.0, trust_coefficient=0.05, eps=1e-6, momentum=0.9),
                      params, grads)
    _assert_trajectory(ours, theirs)
    assert np.all(ours[0]["b"] != 0)


def test_lars_zero_gradient_takes_the_decay_step():
    # A zero gradient gives no scale either: ratio 1, the step is lr * weight_decay * w (TensorFlow's rule).
    params = {"w": jnp.array([[3.0, 4.0]])}
    tx = fo.lars(lr=0.5, momentum=0.0, weight_decay=0.1)
    updates, _ = tx.update({"w": jnp.zeros((1, 2))}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [[-0.15, -0.2]], rtol=1e-6)


@pytest.mark.parametrize("use_clip", [False, True])
def test_lars_all_zero_is_finite(use_clip):
    # Both norms zero and eps 0: no 0 / 0 anywhere.
    params = {"w": jnp.zeros((2, 2))}
    tx = fo.lars(lr=0.1, eps=0.0, use_clip=use_clip)
    updates, state = tx.update({"w": jnp.zeros((2, 2))}, tx.init(params), params)
    assert np.all(np.asarray(updates["w"]) == 0)
    assert np.all(np.isfinite(np.asarray(state.slots["momentum_buffer"]["w"])))


def test_lamb_zero_initialized_leaf_trains():
    params, grads = _problem(2)
    kw = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01)
    with precision(np.float64):
        ours = _run(fo.lamb(**kw, always_adapt=True), params, grads)
    theirs = lamb_reference(params, grads, **kw)
    _assert_trajectory(ours, theirs)
    assert np.all(ours[0]["b"] != 0)


def test_compat_variants_train_a_zero_bias():
    grads = {"fc": {"weight": jnp.array([[1.0, -2.0]]), "bias": jnp.array([0.5])}}

    def net():
        return {"fc": {"weight": jnp.array([[3.0, 4.0]]), "bias": jnp.zeros(1)}}

    # MindSpore LARS with a filter that keeps the bias in LARS: ratio 1 on the zero bias
    opt = ms.LARS(ms.Momentum(net(), 0.1, 0.0), coefficient=0.01, lars_filter=lambda p: True)
    opt(grads)
    np.testing.assert_allclose(opt.parameters["fc"]["bias"], [-0.05], rtol=1e-6)
    # MegEngine LAMB and MindSpore Lamb: the first step of the zero bias is lr * sign(g) (Adam's, ratio 1)
    opt = mge.LAMB(net(), lr=0.1, always_adapt=True)
    np.testing.assert_allclose(opt(grads).params["fc"]["bias"], [-0.1], rtol=1e-5)
    opt = ms.Lamb(net(), learning_rate=0.1)
    opt(grads)
    np.testing.assert_allclose(opt.parameters["fc"]["bias"], [-0.1], rtol=1e-5)
