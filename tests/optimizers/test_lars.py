"""fo.lars against MindSpore's LARS (LARSUpdate followed by ApplyMomentum) written out in float64 NumPy."""

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
# matrix: its norm is 0, so its trust ratio is 1 on the first step (TensorFlow's and apex's guard) and it moves.
SHAPES = {"dense": {"weight": (4, 3), "bias": (4,)}, "conv": (2, 3, 2), "scalar": (), "one": (1,),
          "zero": (2, 2)}


def _params(dtype):
    params = make_params(dtype, shapes=SHAPES)
    params["zero"] = np.zeros((2, 2), dtype)
    return params


def lars_reference(params, grads, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001, eps=1e-5,
                   nesterov=False, use_clip=False, exclude_1d=False, clip_counts=None):
    """MindSpore: g <- LARSUpdate(w, g) for LARS leaves, then ApplyMomentum; float64.

    ``clip_counts``, a dict, receives how often the clip bound and did not.
    """
    p = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    moments = [np.zeros_like(x) for x in p]
    trajectory = []
    for grad_tree in grads:
        for i, g in enumerate(jax.tree.leaves(grad_tree)):
            g = np.asarray(g, np.float64)
            if not (exclude_1d and p[i].ndim <= 1):
                w_norm = np.sqrt(np.sum(p[i] ** 2))
                g_norm = np.sqrt(np.sum(g ** 2))
                coeff = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)
                if use_clip:
                    if clip_counts is not None:
                        key = "bound" if coeff / lr > 1 else "free"
                        clip_counts[key] = clip_counts.get(key, 0) + 1
                    coeff = max(min(coeff / lr, 1.0), 0.0)
                if w_norm == 0 or g_norm == 0:
                    coeff = 1.0
                g = coeff * (g + weight_decay * p[i])
            moments[i] = moments[i] * momentum + g
            if nesterov:
                p[i] = p[i] - (g * lr + moments[i] * momentum * lr)
            else:
                p[i] = p[i] - lr * moments[i]
        trajectory.append([x.copy() for x in p])
    return trajectory, moments


CASES = [
    dict(lr=0.5),
    dict(lr=0.5, momentum=0.0),
    dict(lr=0.5, nesterov=True),
    dict(lr=0.5, weight_decay=0.05),
    dict(lr=0.5, trust_coefficient=0.5, use_clip=True),  # trust / lr crosses 1: the clip binds at times
    dict(lr=0.5, trust_coefficient=0.02, exclude_1d=True, weight_decay=0.01),
    dict(lr=0.3, momentum=0.5, weight_decay=0.1, trust_coefficient=0.5, eps=0.1, nesterov=True,
         use_clip=True, exclude_1d=True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", CASES, ids=str)
def test_lars_matches_reference(kw, dtype):
    with precision(dtype):
        params = _params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(fo.lars(**kw), params, grads)
        theirs, moments = lars_reference(params, grads, **kw)
        assert_follows_reference(ours, theirs, dtype, state, {"momentum_buffer": moments})


def test_clip_binds_in_the_clip_cases():
    # Guard for the table above: the clipped cases must clip at some steps and leaves, and not at others.
    params = _params(np.float64)
    grads = make_grads(params, STEPS)
    for kw in CASES:
        if kw.get("use_clip"):
            counts = {}
            lars_reference(params, grads, **kw, clip_counts=counts)
            assert counts.get("bound", 0) > 0 and counts.get("free", 0) > 0, (kw, counts)


def test_excluded_leaves_take_plain_momentum_steps():
    params = {"w": jnp.ones((2, 2)), "b": jnp.full((2,), 3.0)}
    grads = {"w": jnp.ones((2, 2)), "b": jnp.array([1.0, -1.0])}
    tx = fo.lars(lr=0.1, weight_decay=0.5, exclude_1d=True)
    u, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(u["b"], [-0.1, 0.1], rtol=1e-6)
    trust = 0.001 * 2.0 / (2.0 + 0.5 * 2.0 + 1e-5)
    np.testing.assert_allclose(u["w"], -0.1 * trust * (1.0 + 0.5) * np.ones((2, 2)), rtol=1e-6)


def test_hparams_live_in_state_without_retracing():
    params = {"w": jnp.ones((2, 3))}
    grads = {"w": jnp.full((2, 3), 0.5)}
    assert_hparam_edit_does_not_retrace(fo.lars(lr=0.1), params, grads, {"trust_coefficient": 0.002}, scale=2,
                                        rtol=1e-5)


@pytest.mark.parametrize("kw, message", [
    (dict(lr=-1.0), "Invalid learning rate: -1.0"),
    (dict(lr=0.1, momentum=-0.9), "Invalid momentum value: -0.9"),
    (dict(lr=0.1, weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    (dict(lr=0.1, trust_coefficient=-1.0), "Invalid trust_coefficient value: -1.0"),
    (dict(lr=0.1, eps=-1e-5), "Invalid epsilon value: -1e-05"),
])
def test_validation_errors(kw, message):
    with pytest.raises(ValueError) as e:
        fo.lars(**kw)
    assert str(e.value) == message


def test_lr_is_required_and_params_are_needed():
    with pytest.raises(TypeError):
        fo.lars()
    with pytest.raises(TypeError):
        fo.lars(lr=[0.1])
    tx = fo.lars(lr=0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="params must be given"):
        tx.update(params, tx.init(params))
