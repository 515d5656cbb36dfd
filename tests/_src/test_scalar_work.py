"""The functional core does an update's scalar work once per step, not once per leaf.

Structural checks (jaxpr equations), independent of the machine's load: a per-leaf optimizer's
update costs at most optax's equations per leaf, and its scalar equations (hyperparameter casts,
bias corrections, functions of the step) do not grow with the number of leaves.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcopt as fo
from funcopt._src.scalar_work import merge_scalar_equations, once_per_step


def _tree(n):
    return {f"p{i}": jnp.full((3 + i % 4,), 0.5 + i, jnp.float32) for i in range(n)}


def _equations(tx, n):
    """(all equations, scalar-output equations) of ``tx.update(grads, state, params)`` on ``n`` leaves."""
    params = _tree(n)
    jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params), params).jaxpr
    scalar = [e for e in jaxpr.eqns if all(v.aval.shape == () for v in e.outvars)]
    return len(jaxpr.eqns), len(scalar)


PAIRS = {
    "adam": (lambda: fo.adam(1e-3), lambda: optax.adam(1e-3)),
    "adamw": (lambda: fo.adamw(1e-3, weight_decay=1e-2), lambda: optax.adamw(1e-3, weight_decay=1e-2)),
    "lion": (lambda: fo.lion(1e-4), lambda: optax.lion(1e-4)),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_equations_per_leaf_at_most_optax(name):
    ours, theirs = (make() for make in PAIRS[name])
    (o8, _), (o16, _) = _equations(ours, 8), _equations(ours, 16)
    (t8, _), (t16, _) = _equations(theirs, 8), _equations(theirs, 16)
    per_leaf, optax_per_leaf = (o16 - o8) / 8, (t16 - t8) / 8
    assert per_leaf <= optax_per_leaf, (per_leaf, optax_per_leaf)
    # what does not grow with the leaves (the step count, hyperparameters): a small constant
    assert o8 - 8 * per_leaf <= t8 - 8 * optax_per_leaf + 16


@pytest.mark.parametrize("make", [
    lambda: fo.adam(1e-3), lambda: fo.adamw(1e-3), lambda: fo.adam(1e-3, amsgrad=True),
    lambda: fo.sgd(1e-2, momentum=0.9), lambda: fo.sgd(1e-2, momentum=0.9, nesterov=True),
    lambda: fo.lion(1e-4), lambda: fo.radam(1e-3), lambda: fo.adam(lambda step: 1e-3 / (1 + step)),
], ids=["adam", "adamw", "amsgrad", "sgd-momentum", "nesterov", "lion", "radam", "scheduled-adam"])
def test_scalar_work_does_not_grow_with_leaves(make):
    # (NAdam is not here: like torch it keeps a scalar state per leaf, mu_product, whose arithmetic is per leaf)
    tx = make()
    _, s4 = _equations(tx, 4)
    _, s12 = _equations(tx, 12)
    assert s12 == s4


def test_mixed_dtypes_share_the_scalar_work_of_their_dtype():
    tx = fo.adam(1e-3)
    def scalars(n):
        params = {**{f"f{i}": jnp.ones(3) for i in range(n)}, **{f"h{i}": jnp.ones(3, jnp.bfloat16) for i in range(n)}}
        jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params), params).jaxpr
        return sum(all(v.aval.shape == () for v in e.outvars) for e in jaxpr.eqns)
    assert scalars(2) == scalars(6)


def test_merged_update_matches_optax_numbers():
    params = _tree(5)
    grads = jax.tree.map(lambda p: jnp.sin(p) * 0.1, params)
    ours, theirs = fo.adam(1e-2), optax.adam(1e-2)
    s1, s2 = ours.init(params), theirs.init(params)
    for _ in range(3):
        u1, s1 = jax.jit(ours.update)(grads, s1, params)
        u2, s2 = theirs.update(grads, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


def test_merge_keeps_array_and_effectful_equations():
    def f(s, x):
        jax.debug.print("{}", s)
        jax.debug.print("{}", s)
        return x * (1 - s), x * (1 - s), (1 - s) + (1 - s)
    closed = jax.make_jaxpr(f)(jnp.float32(0.25), jnp.ones(3))
    merged = merge_scalar_equations(closed.jaxpr)
    prims = [e.primitive.name for e in merged.eqns]
    assert prims.count("debug_print") == 2  # effects are never merged
    assert prims.count("mul") == 2  # array equations are left alone
    assert prims.count("sub") == 1
    out = once_per_step(f)(jnp.float32(0.25), jnp.ones(3))
    np.testing.assert_allclose(out[0], 0.75)
    np.testing.assert_allclose(out[2], 1.5)
