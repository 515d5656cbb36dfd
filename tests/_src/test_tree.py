"""Names, masks, partitions and tree math."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt import tree_utils as tu


def _model():
    return {"layers": [{"weight": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
                       {"weight": jnp.ones((1, 2)), "bias": jnp.zeros(1)}],
            "norm": {"gamma": jnp.ones(2), "beta": jnp.zeros(2)}}


def test_param_names_are_torch_style_dotted_paths():
    assert fo.param_names(_model()) == [
        "layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight", "norm.beta", "norm.gamma"]


def test_names_of_dataclass_pytree_use_attribute_names():
    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Linear:
        weight: jax.Array
        bias: jax.Array

    assert fo.param_names({"fc": Linear(jnp.ones(2), jnp.ones(1))}) == ["fc.weight", "fc.bias"]


def test_name_mask_by_patterns_and_predicate():
    m = fo.name_mask(_model(), "*.bias")
    assert jax.tree.leaves(m) == [True, False, True, False, False, False]
    m2 = fo.name_mask(_model(), lambda name, leaf: leaf.ndim == 2)
    assert jax.tree.leaves(m2) == [False, True, False, True, False, False]
    with pytest.raises(TypeError):
        fo.name_mask(_model(), [1, 2])


def test_masked_leaves_unselected_updates_untouched_and_state_small():
    params = _model()
    tx = fo.masked(fo.adam(lr=0.1), ["*.weight"])
    state = tx.init(params)
    assert len(jax.tree.leaves(state.inner_state.slots["exp_avg"])) == 2
    grads = jax.tree.map(jnp.ones_like, params)
    u, _ = tx.update(grads, state, params)
    for name, leaf in fo.named_leaves(u):
        if name.endswith("weight"):
            np.testing.assert_allclose(leaf, -0.1, rtol=1e-5)
        else:
            np.testing.assert_array_equal(leaf, 1.0)


def test_partition_gives_groups_their_own_hparams_and_returns_one_tree():
    params = _model()
    labels = fo.label_fn_from_names({"*.bias": "no_decay", "norm.*": "no_decay"}, default="decay")
    tx = fo.partition({"decay": fo.sgd(lr=0.1, weight_decay=0.5), "no_decay": fo.sgd(lr=0.01)}, labels)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    u, state = jax.jit(tx.update)(grads, state, params)
    assert jax.tree.structure(u) == jax.tree.structure(params)
    for name, leaf in fo.named_leaves(u):
        p = dict(fo.named_leaves(params))[name]
        expected = -0.1 * (1 + 0.5 * p) if name.endswith("weight") else -0.01 * jnp.ones_like(p)
        np.testing.assert_allclose(leaf, expected, rtol=1e-6)
    state = fo.set_hparams(state, lr=1.0)  # reaches both groups
    assert float(state.inner_states["decay"].hparams["lr"]) == 1.0


def test_partition_missing_label_raises():
    with pytest.raises(ValueError, match="have no transform"):
        fo.partition({"a": fo.sgd()}, {"w": "b"}).init({"w": jnp.ones(1)})


def test_tree_math():
    a = {"x": jnp.array([3.0]), "y": jnp.array([4.0, 0.0])}
    b = {"x": jnp.array([1.0]), "y": jnp.array([1.0, 2.0])}
    np.testing.assert_allclose(tu.tree_norm(a), 5.0)
    np.testing.assert_allclose(tu.tree_norm(a, 1), 7.0)
    np.testing.assert_allclose(tu.tree_norm(b, float("inf")), 2.0)
    np.testing.assert_allclose(tu.tree_norm(b, 3), (1 + 1 + 8) ** (1 / 3), rtol=1e-6)
    np.testing.assert_allclose(tu.tree_vdot(a, b), 7.0)
    np.testing.assert_allclose(tu.tree_sum(b), 4.0)
    np.testing.assert_allclose(tu.tree_add_scaled(a, 2.0, b)["y"], [6.0, 4.0])
    assert not bool(tu.tree_all_finite({"a": jnp.array([jnp.nan])}))
    assert tu.tree_cast({"a": jnp.ones(1), "i": jnp.ones(1, jnp.int32)}, jnp.float16)["i"].dtype == jnp.int32


def test_jitted_init_lowers_to_the_same_text_each_trace_on_one_device():
    """On one device shard_like adds nothing to the program: a fresh jit of the same init lowers to the same
    text, so the compilation cache serves it (shard_alike numbers its pairs from a process-wide counter)."""
    import funcopt as fo

    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2)), "c": jnp.ones((2, 1))}
    for make in (lambda: fo.adam(1e-3), lambda: fo.adafactor(1e-3), lambda: fo.sgd(0.1, momentum=0.9)):
        first, second = (jax.jit(make().init).lower(params).as_text() for _ in range(2))  # two fresh functions
        assert first == second
