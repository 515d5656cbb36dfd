"""fo.load(path, opt, strict=False) for stateful optimizers: parameters and their state matched by name.

An nnx model that gained a head and lost a layer: the optimizer's ``load_state_dict(sd, strict=False)``
loads the state of the parameters whose name, shape and dtype match and starts the others fresh, the
checkpoint restores their values the same way, and the result names what was missing, unexpected or
mismatched. The matched parameters then follow the uninterrupted run bit for bit. ``strict=True`` (the
default) refuses as before and leaves the optimizer bit-identical.
"""

from __future__ import annotations

import functools
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import funcopt as fo
from funcopt import checkpoint as ckpt
from tests.checkpoint.test_load_by_name import New, Old

X = jax.random.normal(jax.random.key(0), (8, 4))
Y = jax.random.normal(jax.random.key(1), (8, 3))


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "opt.npz")


def _loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@functools.cache
def _model_values(cls, seed):
    # eager initialisation compiles op by op: build each model's values once and copy them into new modules
    return nnx.state(cls(nnx.Rngs(seed)))


def _model(cls, seed):
    model = nnx.eval_shape(lambda: cls(nnx.Rngs(seed)))
    nnx.update(model, jax.tree.map(jnp.array, _model_values(cls, seed)))
    return model


def _trained(path, steps=3, **save_kw):
    model = _model(Old, 0)
    opt = fo.optim.Adam(model, lr=1e-2)
    for _ in range(steps):
        opt.backward(_loss, X, Y)
        opt.step().clear_grad()
    fo.save(path, opt, **save_kw)
    return opt


def _snapshot(opt):
    sd = opt.state_dict()
    return (jax.tree.map(np.array, opt.params), {k: jax.tree.map(np.array, v) for k, v in sd["state"].items()},
            [{k: v for k, v in g.items()} for g in sd["param_groups"]])


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert jax.tree.structure(a) == jax.tree.structure(b)


def test_model_that_gained_a_head_and_lost_a_layer(path):
    old = _trained(path)
    model = _model(New, 1)
    opt = fo.optim.Adam(model, lr=1e-2)
    fresh_head = jax.tree.map(np.array, opt.params["head"])

    result, keys = fo.load(path, opt, strict=False)
    assert result is opt
    assert isinstance(keys, fo.IncompatibleKeys) and isinstance(keys, fo.optim.IncompatibleKeys)
    assert keys == fo.IncompatibleKeys(["head.bias", "head.kernel"], ["l2.bias", "l2.kernel"], [])
    for layer in ("l1", "l3"):
        _assert_same(opt.params[layer], old.params[layer])
        for leaf in ("bias", "kernel"):
            name = f"{layer}.{leaf}"
            _assert_same(opt.state[name], old.state[name])
    np.testing.assert_array_equal(np.asarray(model.l1.kernel[...]), np.asarray(old.params["l1"]["kernel"]))
    _assert_same(opt.params["head"], fresh_head)  # new parameters keep their values and start fresh
    for leaf in ("bias", "kernel"):
        for slot in ("exp_avg", "exp_avg_sq"):
            assert not np.asarray(opt.state[f"head.{leaf}"][slot]).any()

    # the matched parameters continue exactly as the uninterrupted run with the same gradients
    for _ in range(3):
        opt.backward(_loss, X, Y)
        grads = opt.grad
        old({"l1": grads["l1"], "l2": jax.tree.map(jnp.zeros_like, old.params["l2"]), "l3": grads["l3"]})
        opt.step().clear_grad()
        for layer in ("l1", "l3"):
            _assert_same(opt.params[layer], old.params[layer])


def test_strict_true_refuses_and_leaves_the_optimizer_bit_identical(path):
    _trained(path)
    opt = fo.optim.Adam(_model(New, 1), lr=1e-2)
    before = _snapshot(opt)
    with pytest.raises(fo.CheckpointError, match="do not fit this optimizer"):
        fo.load(path, opt)
    _assert_same(_snapshot(opt)[:2], before[:2])
    assert _snapshot(opt)[2] == before[2]


def test_mismatched_shapes_start_fresh(path):
    old = fo.optim.Adam({"a": jnp.ones(3), "b": jnp.ones(2)}, lr=0.1)
    old({"a": jnp.ones(3), "b": jnp.ones(2)})
    fo.save(path, old)
    opt = fo.optim.Adam({"a": jnp.zeros(3), "b": jnp.zeros(4), "c": jnp.zeros(1)}, lr=0.1)
    _, keys = fo.load(path, opt, strict=False)
    assert keys == fo.IncompatibleKeys(["c"], [], ["b"])
    _assert_same(opt.params, {"a": old.params["a"], "b": jnp.zeros(4), "c": jnp.zeros(1)})
    _assert_same(opt.state["a"], old.state["a"])
    assert not np.asarray(opt.state["b"]["exp_avg"]).any()


def test_state_only_checkpoint_keeps_the_weights(path):
    old = _trained(path, params=False)
    opt = fo.optim.Adam(_model(New, 1), lr=1e-2)
    weights = jax.tree.map(np.array, opt.params)
    _, keys = fo.load(path, opt, strict=False)
    assert keys == fo.IncompatibleKeys(["head.bias", "head.kernel"], ["l2.bias", "l2.kernel"], [])
    _assert_same(opt.params, weights)
    _assert_same(opt.state["l1.kernel"], old.state["l1.kernel"])


def test_a_failing_state_load_puts_the_parameters_back(path):
    _trained(path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    meta = json.loads(entries[ckpt._META_KEY].tobytes().decode())
    part = meta["optimizer"]["state_dict"]
    steps = [part["leaves"][j]["array"] for j, p in enumerate(part["paths"]) if p.endswith("['step']")]
    assert len(steps) == 6
    for i in steps:  # a negative step count: refused by load_state_dict
        bad = np.full_like(entries[f"a{i}"], -1.0)
        entries[f"a{i}"] = bad
        meta["arrays"][i]["sha256"] = hashlib.sha256(bad.reshape(-1).view(np.uint8)).hexdigest()
    entries[ckpt._META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=False, **entries)

    opt = fo.optim.Adam(_model(New, 1), lr=1e-2)
    before = _snapshot(opt)
    with pytest.raises(fo.CheckpointError, match="step"):
        fo.load(path, opt, strict=False)
    _assert_same(_snapshot(opt)[:2], before[:2])


def test_groups_given_as_a_list_cannot_match_parameter_values_by_name(path):
    def make():
        return fo.optim.Adam([{"params": [("w", jnp.ones(2))]}, {"params": [("b", jnp.ones(3))], "lr": 0.1}])

    fo.save(path, make())
    opt = make()
    before = _snapshot(opt)
    with pytest.raises(fo.CheckpointError, match="params=False"):
        fo.load(path, opt, strict=False)
    _assert_same(_snapshot(opt)[:2], before[:2])
    fo.save(path, make(), params=False)  # the state alone is matched by name
    _, keys = fo.load(path, opt, strict=False)
    assert keys == fo.IncompatibleKeys([], [], [])
