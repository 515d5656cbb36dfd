"""Stateful optimizers over models: mixed pytrees, nnx and equinox modules, with the optimizer's utilities.

state_dict, the params setter, opt(grads) with nnx's own gradients, lr schedulers, clip_grad,
fo.save / fo.load, LBFGS, compile counts and errors; the training runs against optax live in
tests/ecosystem/test_nnx_stateful.py and tests/ecosystem/test_equinox_stateful.py.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import funcopt as fo


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.l2 = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.dropout(self.bn(self.l1(x))))


def _net():
    return Net(nnx.Rngs(0, dropout=1))


def _data():
    x = jax.random.normal(jax.random.key(1), (8, 3))
    return x, jnp.tanh(x[:, :2])


def _loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def _mixed():
    return {"w": jnp.full((2, 3), 0.5), "b": jnp.zeros(3), "steps": jnp.array(4), "key": jax.random.key(0),
            "act": jnp.tanh, "mask": np.array([True, False, True]), "nothing": None}


def _mixed_loss(model, x):
    h = model["act"](x @ model["w"] + model["b"]) * model["mask"]
    return jnp.sum(h ** 2) * model["steps"]


def test_mixed_pytree_backward_sees_the_whole_model_and_params_are_the_trainable_part():
    model = _mixed()
    opt = fo.optim.Adam(model, lr=0.1)
    assert opt.param_names == ["b", "w"]
    loss = opt.backward(_mixed_loss, jnp.ones((1, 2)))
    np.testing.assert_allclose(loss, float(_mixed_loss(model, jnp.ones((1, 2)))), rtol=1e-6)
    assert opt.params["steps"] is None and opt.params["act"] is None and opt.grad["key"] is None
    assert opt.grad["w"].shape == (2, 3)
    opt.step()
    new = opt.model
    for k in ("steps", "key", "act", "mask"):
        assert new[k] is model[k]
    assert not np.allclose(new["w"], model["w"])
    assert opt.model is new  # rebuilt once per step, not per read
    # the direct path for plain float pytrees is unchanged: opt.model is opt.params
    plain = fo.optim.SGD({"w": jnp.ones(2)}, lr=0.1)
    assert plain.model is plain.params


def test_wrt_predicate_on_a_pytree_and_empty_models():
    model = _mixed()
    opt = fo.optim.SGD(model, lr=0.1, wrt=lambda x: eqx.is_inexact_array(x) and x.ndim == 2)
    assert opt.param_names == ["w"]
    # no trainable leaf: a pytree names its first leaf, a wrt that selects nothing is an empty list
    with pytest.raises(ValueError, match="floating point or complex arrays, but parameter 'key' has dtype key"):
        fo.optim.SGD({"steps": jnp.array(1), "key": jax.random.key(0)})
    with pytest.raises(ValueError, match="empty parameter list"):
        fo.optim.SGD(model, wrt=lambda x: False)
    with pytest.raises(ValueError, match="floating point or complex arrays, but parameter 'key' has dtype key<fry>"):
        fo.optim.SGD(model, wrt=lambda x: isinstance(x, jax.Array))
    with pytest.raises(TypeError, match="can only optimize arrays, but parameter 'act'"):
        fo.optim.SGD(model, wrt=lambda x: x is not None and not isinstance(x, np.ndarray))


def test_nnx_grads_from_nnx_grad_and_params_setter_update_the_module():
    model = _net()
    opt = fo.optim.SGD(model, lr=0.5)
    x, y = _data()
    grads = nnx.grad(_loss)(model, x, y)  # an nnx.State of Params
    before = np.asarray(model.l1.kernel[...])
    opt(grads)
    np.testing.assert_allclose(np.asarray(model.l1.kernel[...]), before - 0.5 * np.asarray(grads["l1"]["kernel"][...]),
                               rtol=1e-6)
    new = jax.tree.map(jnp.zeros_like, opt.params)
    opt.params = new
    np.testing.assert_array_equal(np.asarray(model.l2.kernel[...]), 0.0)
    with pytest.raises(ValueError, match="missing"):
        opt.params = {"l1": opt.params["l1"]}
    np.testing.assert_array_equal(np.asarray(model.l2.kernel[...]), 0.0)


def test_nnx_module_never_holds_arrays_a_step_deletes():
    # Adafactor keeps one array per leaf (no packing): the module must get copies, never its buffers
    model = _net()
    opt = fo.optim.Adafactor(model, lr=0.1)
    x, y = _data()
    snapshot = nnx.state(model)  # a user's reference to the module's arrays
    for _ in range(3):
        opt.backward(_loss, x, y)
        opt.step().clear_grad()
        kept = nnx.state(model)
    assert all(not leaf.is_deleted() for leaf in jax.tree.leaves(snapshot))
    assert all(not leaf.is_deleted() for leaf in jax.tree.leaves(kept))


def test_one_compile_per_loss_function_for_an_nnx_module(compiles):
    model = _net()
    opt = fo.optim.AdamW(model, lr=1e-2)
    x, y = _data()
    opt.backward(_loss, x, y)
    opt.step().clear_grad()
    opt.backward(_loss, x, y)
    opt.step().clear_grad()
    count = len(compiles)
    for _ in range(3):
        opt.backward(_loss, x, y)
        opt.step().clear_grad()
    assert len(compiles) == count
    opt.param_groups[0]["lr"] = 1e-3  # a new lr: no recompile
    opt.backward(_loss, x, y)
    opt.step().clear_grad()
    assert len(compiles) == count


def test_lr_scheduler_and_clip_grad_on_a_model_optimizer():
    model = _net()
    opt = fo.optim.SGD(model, lr=1.0)
    sched = fo.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = _data()
    opt.backward(_loss, x, y)
    total = float(fo.optim.clip_grad_norm_(opt, max_norm=1e-3))
    assert total > 1e-3
    norm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(opt.grad))))
    np.testing.assert_allclose(norm, 1e-3, rtol=1e-4)
    before = np.asarray(model.l2.bias[...])
    grad = np.asarray(opt.grad["l2"]["bias"])
    opt.step().clear_grad()
    np.testing.assert_allclose(np.asarray(model.l2.bias[...]), before - grad, rtol=1e-5, atol=1e-7)
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5


def test_state_dict_save_and_load_with_an_equinox_model(tmp_path):
    mlp = eqx.nn.MLP(3, 2, 8, 1, activation=jax.nn.relu, key=jax.random.key(0))
    x, y = _data()

    def loss(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    opt = fo.optim.Adam(mlp, lr=1e-2)
    for _ in range(3):
        opt.backward(loss, x, y)
        opt.step().clear_grad()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["layers.0.weight", "layers.0.bias", "layers.1.weight",
                                                    "layers.1.bias"]
    path = tmp_path / "opt.npz"
    fo.save(path, opt, params=True)
    resumed = fo.optim.Adam(eqx.nn.MLP(3, 2, 8, 1, activation=jax.nn.relu, key=jax.random.key(5)), lr=0.5)
    fo.load(path, resumed)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(opt.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    opt.backward(loss, x, y)
    opt.step()
    resumed.backward(loss, x, y)
    resumed.step()
    for a, b in zip(jax.tree.leaves(resumed.model), jax.tree.leaves(opt.model)):
        if isinstance(a, jax.Array):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.model.activation is jax.nn.relu


def test_lbfgs_on_an_equinox_model_with_a_closure():
    model = {"lin": eqx.nn.Linear(3, 2, key=jax.random.key(0)), "act": jnp.tanh, "steps": jnp.array(2)}
    x, y = _data()

    def loss(m, x, y):
        return jnp.mean((jax.vmap(m["lin"])(x) - y) ** 2)

    opt = fo.optim.LBFGS(model, lr=1, max_iter=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        return opt.backward(loss, x, y)

    first = float(opt.step(closure))
    assert float(loss(opt.model, x, y)) < 0.5 * first
    assert opt.model["steps"] is model["steps"] and opt.model["act"] is jnp.tanh


def test_groups_of_a_model_and_foreign_groups_raise_and_change_nothing():
    model = _net()
    opt = fo.optim.SGD(fo.optim.param_groups(model, {"l1.*": {"lr": 0.5}}), lr=0.1)
    assert opt.model is model and [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    with pytest.raises(ValueError, match="trains a model"):
        opt.add_param_group({"params": [jnp.ones(2)]})
    with pytest.raises(ValueError, match="another model"):
        opt.add_param_group(fo.optim.param_groups(_net(), {"l1.*": {}})[0])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group(fo.optim.param_groups(model, {"l1.*": {}})[0])
    assert len(opt.param_groups) == 2
    plain = fo.optim.SGD([jnp.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="plain parameters"):
        plain.add_param_group(fo.optim.param_groups(model, {"l1.*": {}})[0])
    assert len(plain.param_groups) == 1


def test_nnx_state_of_variables_keeps_working_with_clean_names():
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = fo.optim.Adam(params, lr=1e-2)  # a pytree of nnx Variables: names without '.value'
    assert opt.param_names == ["layers.0.bias", "layers.0.kernel", "layers.1.bias", "layers.1.kernel"]
    x, y = _data()
    opt.backward(lambda p, x, y: _loss(nnx.merge(graphdef, p), x, y), x, y)
    opt.step()
    nnx.update(model, opt.params)
    np.testing.assert_array_equal(np.asarray(model.layers[0].kernel[...]),
                                  np.asarray(opt.params["layers"][0]["kernel"][...]))


def test_model_setter_replaces_an_immutable_model_and_refuses_a_new_structure():
    mlp = eqx.nn.MLP(3, 2, 8, 1, activation=jax.nn.relu, key=jax.random.key(0))
    x, y = _data()

    def loss(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    opt = fo.optim.Adam(mlp, lr=1e-2)
    opt.backward(loss, x, y)
    opt.step().clear_grad()
    swapped = eqx.tree_at(lambda m: m.activation, opt.model, jnp.tanh)
    opt.model = swapped
    assert opt.model.activation is jnp.tanh
    np.testing.assert_allclose(opt.backward(loss, x, y), loss(swapped, x, y), rtol=1e-6)  # a new static leaf: retraced
    with pytest.raises(ValueError, match="structure"):
        opt.model = eqx.nn.MLP(3, 2, 8, 2, key=jax.random.key(0))
    assert opt.model.activation is jnp.tanh
    net = _net()
    nnx_opt = fo.optim.SGD(net)
    nnx_opt.model = net  # the same module: nothing to do
    with pytest.raises(ValueError, match="in place"):
        nnx_opt.model = _net()


def test_param_groups_on_an_nnx_state_match_names_without_value():
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
    groups = fo.optim.param_groups(nnx.state(model, nnx.Param), {"*.bias": {"weight_decay": 0.0}})
    assert [g["params"].names for g in groups] == [["layers.0.bias", "layers.1.bias"],
                                                   ["layers.0.kernel", "layers.1.kernel"]]
    opt = fo.optim.AdamW(groups, weight_decay=0.5)
    assert sorted(opt.params["layers"][0]) == ["bias", "kernel"]
    with pytest.raises(ValueError, match=r"'\*\.bais' matches no trainable parameter; .*'layers\.0\.bias'"):
        fo.optim.param_groups(model, {"*.bais": {}})


def test_a_kept_equinox_model_survives_later_steps():
    # LAMB keeps one array per leaf (no packing) and donates it at each step: opt.model holds copies
    mlp = eqx.nn.MLP(3, 2, 8, 1, activation=jax.nn.relu, key=jax.random.key(0))
    x, y = _data()

    def loss(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    opt = fo.optim.LAMB(mlp, lr=1e-2)
    opt.backward(loss, x, y)
    opt.step().clear_grad()
    best = opt.model
    for _ in range(2):
        opt.backward(loss, x, y)
        opt.step().clear_grad()
    assert all(not leaf.is_deleted() for leaf in jax.tree.leaves(best) if isinstance(leaf, jax.Array))
    assert float(loss(best, x, y)) > 0.0
