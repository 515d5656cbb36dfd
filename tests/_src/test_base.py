"""GradientTransformation, chain, apply_updates and optax interop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcopt as fo


def _params():
    return {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3), "s": jnp.array(2.0)}


def test_chain_applies_in_order_and_keeps_states():
    tx = fo.chain(fo.stateless_with_tree_map(lambda u, p: 2 * u), fo.sgd(lr=0.5, momentum=0.9))
    params = _params()
    state = tx.init(params)
    assert isinstance(state, tuple) and len(state) == 2
    updates, state = tx.update(params, state, params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
        np.testing.assert_allclose(u, -0.5 * 2 * p)
    assert int(state[1].step) == 1


def test_chain_rejects_state_of_wrong_length():
    tx = fo.chain(fo.identity(), fo.identity())
    with pytest.raises(ValueError, match="chain of 2 transforms"):
        tx.update({"a": 1.0}, (fo.EmptyState(),))


def test_unknown_extra_args_are_ignored_everywhere():
    tx = fo.chain(fo.adam(lr=0.1), fo.identity(), fo.with_extra_args_support(optax.scale(1.0)))
    params = _params()
    updates, _ = tx.update(params, tx.init(params), params, value=jnp.array(1.0), value_fn=lambda p: 0.0)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_apply_updates_keeps_dtype_and_skips_none():
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
    out = fo.apply_updates(params, {"a": jnp.full(2, 0.25, jnp.float32), "b": None})
    assert out["a"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out["a"], np.float32), 1.25)
    assert out["b"] is params["b"]


def test_funcopt_optimizer_inside_optax_chain_matches_alone():
    params = _params()
    grads = jax.tree.map(lambda p: jnp.sin(p) + 0.1, params)
    ours = fo.adam(lr=0.01)
    mixed = optax.chain(optax.identity(), ours)
    u1, _ = ours.update(grads, ours.init(params), params)
    u2, _ = mixed.update(grads, mixed.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, u1, u2)


def test_optax_transform_inside_funcopt_chain():
    params = _params()
    grads = jax.tree.map(lambda p: jnp.cos(p), params)
    tx = fo.chain(optax.clip_by_global_norm(0.1), fo.sgd(lr=1.0))
    u, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(float(optax.tree.norm(u)), 0.1, rtol=1e-6)


def test_optax_apply_updates_and_jit_with_funcopt_optimizer():
    params = _params()
    tx = fo.sgd(lr=0.1, momentum=0.9)

    @jax.jit
    def step(p, s):
        g = jax.grad(lambda q: sum(jnp.sum(x**2) for x in jax.tree.leaves(q)))(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, tx.init(params)
    for _ in range(3):
        p, s = step(p, s)
    # same as three steps of the plain formula, written out
    expected = {k: np.asarray(v) for k, v in params.items()}
    buf = None
    for _ in range(3):
        g = {k: 2 * v for k, v in expected.items()}
        buf = g if buf is None else {k: 0.9 * buf[k] + g[k] for k in g}
        expected = {k: expected[k] - 0.1 * buf[k] for k in g}
    for k in expected:
        np.testing.assert_allclose(p[k], expected[k], rtol=1e-6)


def test_pure_under_vmap_grad_and_scan():
    tx = fo.adam(lr=0.1)
    params = {"w": jnp.ones(3)}

    def run(scale):
        def body(carry, _):
            p, s = carry
            g = jax.tree.map(lambda x: scale * x, p)
            u, s = tx.update(g, s, p)
            return (fo.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=4)
        return jnp.sum(p["w"])

    batched = jax.vmap(run)(jnp.array([1.0, 2.0]))
    assert batched.shape == (2,)
    assert bool(jnp.all(jnp.isfinite(jax.grad(run)(1.0))))


def test_works_on_namedtuple_and_list_pytrees():
    from typing import NamedTuple

    class Layer(NamedTuple):
        weight: jax.Array
        bias: jax.Array

    params = [Layer(jnp.ones((2, 2)), jnp.zeros(2)), Layer(jnp.ones((2, 1)), jnp.zeros(1))]
    tx = fo.adamw()
    u, _ = tx.update(params, tx.init(params), params)
    assert jax.tree.structure(u) == jax.tree.structure(params)
    assert fo.param_names(params) == ["0.weight", "0.bias", "1.weight", "1.bias"]
