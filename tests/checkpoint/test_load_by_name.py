"""fo.load(path, target, strict=False) for functional states: leaves matched by name, shape and dtype.

A model that gained a head and lost a layer between save and load (flax nnx, equinox, a dict), with
funcopt's and optax's optimizer states: matched leaves are loaded and continue bit for bit as an
uninterrupted run; the new leaves keep the template's fresh values; the report names the rest.
``strict=True`` (the default) still refuses a changed structure, with its error, changing nothing.
"""

from __future__ import annotations

import functools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import funcopt as fo
from funcopt import checkpoint as ckpt

X = jax.random.normal(jax.random.key(0), (8, 4))
Y = jax.random.normal(jax.random.key(1), (8, 3))


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ckpt.npz")


class Old(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(4, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 8, rngs=rngs)
        self.l3 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.l3(jnp.tanh(self.l2(jnp.tanh(self.l1(x)))))


class New(nnx.Module):
    """Old without its middle layer, with a new head."""

    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(4, 8, rngs=rngs)
        self.l3 = nnx.Linear(8, 3, rngs=rngs)
        self.head = nnx.Linear(3, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.l3(jnp.tanh(self.l1(x)))))


@functools.cache
def _split(cls, seed):
    """(graphdef, params) of a model, built once per module: eager initialisation compiles op by op."""
    return nnx.split(cls(nnx.Rngs(seed)), nnx.Param)


def _trainer(graphdef, tx):
    def loss(params):
        return jnp.mean((nnx.merge(graphdef, params)(X) - Y) ** 2)

    @jax.jit
    def step(params, state, grads=None):
        if grads is None:
            grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return fo.apply_updates(params, updates), state

    return step, jax.jit(jax.grad(loss))


def _numpy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _names(prefixes, layers):
    return sorted(f"{p}.{layer}.{leaf}" for p in prefixes for layer in layers for leaf in ("bias", "kernel"))


SLOTS = ("1.slots.exp_avg", "1.slots.exp_avg_sq")


def _in_old_structure(new_grads, old_params):
    """The new model's gradients for the shared layers, zeros for the removed one, in the old structure."""
    by_path = {jax.tree_util.keystr(p): g for p, g in jax.tree_util.tree_flatten_with_path(new_grads)[0]}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(old_params)
    return treedef.unflatten([by_path.get(jax.tree_util.keystr(p), jnp.zeros_like(x)) for p, x in leaves])


def test_nnx_model_that_gained_a_head_and_lost_a_layer(path):
    tx = fo.adam(lr=1e-2, weight_decay=1e-3)
    graphdef, params = _split(Old, 0)
    step, _ = _trainer(graphdef, tx)
    state = tx.init(params)
    for _ in range(3):
        params, state = step(params, state)
    fo.save(path, (params, state))

    new_graphdef, fresh = _split(New, 1)
    template = (fresh, tx.init(fresh))
    before = _numpy(template)
    (loaded, loaded_state), keys = fo.load(path, template, strict=False)
    _equal(template, before)  # the template is not modified

    assert isinstance(keys, fo.IncompatibleKeys)
    assert keys.missing_keys == _names(("0",) + SLOTS, ["head"])
    assert keys.unexpected_keys == _names(("0",) + SLOTS, ["l2"])
    assert keys.mismatched_keys == []
    # matched: the saved values; new: the template's; global entries: the saved step and hyperparameters
    for layer in ("l1", "l3"):
        _equal(loaded[layer], params[layer])
        for slot in ("exp_avg", "exp_avg_sq"):
            _equal(loaded_state.slots[slot][layer], state.slots[slot][layer])
    _equal(loaded["head"], fresh["head"])
    for slot in ("exp_avg", "exp_avg_sq"):
        assert all(not np.asarray(x).any() for x in jax.tree.leaves(loaded_state.slots[slot]["head"]))
    assert int(loaded_state.step) == 3
    _equal(loaded_state.hparams, state.hparams)
    assert jax.tree.structure(loaded_state) == jax.tree.structure(template[1])

    # the matched leaves continue exactly as the uninterrupted run would with the same gradients
    new_step, new_grad = _trainer(new_graphdef, tx)
    ref_params, ref_state = params, state
    for _ in range(3):
        grads = new_grad(loaded)
        ref_params, ref_state = step(ref_params, ref_state, _in_old_structure(grads, params))
        loaded, loaded_state = new_step(loaded, loaded_state, grads)
        for layer in ("l1", "l3"):
            _equal(loaded[layer], ref_params[layer])
            _equal(loaded_state.slots["exp_avg_sq"][layer], ref_state.slots["exp_avg_sq"][layer])
    assert int(loaded_state.step) == int(ref_state.step) == 6


def test_strict_true_still_refuses_a_changed_structure_and_changes_nothing(path):
    tx = fo.adam(lr=1e-2)
    _, params = _split(Old, 0)
    fo.save(path, (params, tx.init(params)))
    _, fresh = _split(New, 1)
    template = (fresh, tx.init(fresh))
    before = _numpy(template)
    with pytest.raises(fo.CheckpointError, match="the structures differ"):
        fo.load(path, template)
    with pytest.raises(fo.CheckpointError, match="the structures differ"):
        fo.load(path, template, strict=True)
    _equal(template, before)


class EqxMLP(eqx.Module):
    layers: list
    head: eqx.nn.Linear | None

    def __init__(self, widths, head, key):
        keys = jax.random.split(key, len(widths))
        self.layers = [eqx.nn.Linear(a, b, key=k) for (a, b), k in zip(zip(widths, widths[1:]), keys)]
        self.head = eqx.nn.Linear(widths[-1], head, key=keys[-1]) if head else None


def _eqx_params(widths, head, seed):
    # built in one compiled call: eager initialisation compiles every small op on its own
    return jax.jit(lambda key: eqx.filter(EqxMLP(widths, head, key), eqx.is_array))(jax.random.key(seed))


def test_equinox_model_through_names(path):
    tx = optax.adamw(1e-2)
    old = _eqx_params([4, 8, 8], 0, 0)
    state = tx.init(old)
    grads = jax.tree.map(jnp.ones_like, old)
    updates, state = jax.jit(tx.update)(grads, state, old)
    old = optax.apply_updates(old, updates)
    fo.save(path, (old, state))

    # one layer fewer (layers.1 gone), and a head
    new = _eqx_params([4, 8], 2, 1)
    (params, new_state), keys = fo.load(path, (new, tx.init(new)), strict=False)
    mu, nu = "1.0.mu", "1.0.nu"
    assert keys.missing_keys == sorted(f"{p}.head.{w}" for p in ("0", mu, nu) for w in ("bias", "weight"))
    assert keys.unexpected_keys == sorted(f"{p}.layers.1.{w}" for p in ("0", mu, nu) for w in ("bias", "weight"))
    assert keys.mismatched_keys == []
    _equal(params.layers[0], old.layers[0])
    _equal(new_state[0].mu.layers[0], state[0].mu.layers[0])
    _equal(params.head, new.head)
    assert int(new_state[0].count) == 1


def test_mismatched_shapes_and_dtypes_keep_the_template_values(path):
    tx = optax.adam(0.1)
    old = {"a": jnp.ones(3), "b": jnp.ones(2), "c": jnp.ones(2)}
    state = tx.update(old, tx.init(old), old)[1]
    fo.save(path, (old, state))
    new = {"a": jnp.zeros(3), "b": jnp.zeros(4), "c": jnp.zeros(2, jnp.bfloat16)}
    (params, new_state), keys = fo.load(path, (new, tx.init(new)), strict=False)
    assert keys == fo.IncompatibleKeys([], [], ["0.b", "0.c", "1.0.mu.b", "1.0.mu.c", "1.0.nu.b", "1.0.nu.c"])
    _equal(params, {"a": old["a"], "b": new["b"], "c": new["c"]})
    assert params["c"].dtype == jnp.bfloat16
    _equal(new_state[0].mu["a"], state[0].mu["a"])
    assert not np.asarray(new_state[0].mu["b"]).any()
    assert int(new_state[0].count) == 1


def test_leaves_of_every_kind_match_by_name(path):
    saved = {"key": jax.random.key(3), "n": 3, "lr": 0.5, "w": np.arange(3.0), "gone": jnp.ones(1)}
    fo.save(path, saved)
    target = {"key": jax.random.key(0), "n": 0, "lr": 1, "w": np.zeros(3), "new": jnp.zeros(1)}
    out, keys = fo.load(path, target, strict=False)
    assert keys == fo.IncompatibleKeys(["new"], ["gone"], ["lr"])  # a Python float does not fit an int
    assert out["n"] == 3 and out["lr"] == 1
    assert isinstance(out["w"], np.ndarray)
    np.testing.assert_array_equal(out["w"], saved["w"])
    np.testing.assert_array_equal(jax.random.key_data(out["key"]), jax.random.key_data(saved["key"]))
    assert out["new"] is target["new"]


def test_identical_structure_loads_everything(path):
    tx = fo.adam(lr=0.1)
    params = {"w": jnp.arange(3.0)}
    state = tx.update(params, tx.init(params), params)[1]
    fo.save(path, (params, state))
    restored, keys = fo.load(path, (params, tx.init(params)), strict=False)
    assert keys == fo.IncompatibleKeys([], [], [])
    _equal(restored, (params, state))


def _rewrite_meta(path, edit):
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    meta = json.loads(entries[ckpt._META_KEY].tobytes().decode())
    edit(meta)
    entries[ckpt._META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=False, **entries)


def test_refusals(path):
    fo.save(path, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="pass target="):
        fo.load(path, strict=False)
    with pytest.raises(TypeError, match="strict must be a bool"):
        fo.load(path, {"w": jnp.ones(2)}, strict="no")
    with pytest.raises(fo.CheckpointError, match=r"several leaves named \['a.b'\]"):
        fo.load(path, {"a.b": jnp.ones(1), "a": {"b": jnp.ones(1)}}, strict=False)

    _rewrite_meta(path, lambda meta: meta["pytree"].pop("names"))  # as written before leaves were named
    with pytest.raises(fo.CheckpointError, match="strict=True"):
        fo.load(path, {"w": jnp.ones(2)}, strict=False)
    np.testing.assert_array_equal(fo.load(path, {"w": jnp.zeros(2)})["w"], np.ones(2))  # strict still loads

    _rewrite_meta(path, lambda meta: meta["pytree"].update(names=[1]))
    with pytest.raises(fo.CheckpointError, match="malformed leaf names"):
        fo.load(path)

    opt = fo.optim.SGD({"w": jnp.ones(2)}, lr=0.1)
    fo.save(path, opt)
    with pytest.raises(fo.CheckpointError, match="pass that optimizer as the target"):
        fo.load(path, {"w": jnp.ones(2)}, strict=False)
