"""The stateful wrapper: loop semantics, groups, state_dict, hooks, compile and donation guarantees."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from tests.optim import internals


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return {"fc": {"weight": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
                   "bias": jnp.asarray(rng.standard_normal(3), jnp.float32)},
            "head": jnp.asarray(rng.standard_normal(3), jnp.float32)}


def _loss(params, x, y):
    h = jnp.tanh(x @ params["fc"]["weight"].T + params["fc"]["bias"])
    return jnp.mean((h @ params["head"] - y) ** 2)


def _data(seed=1, n=8):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((n, 4)), jnp.float32), jnp.asarray(rng.standard_normal(n), jnp.float32)


def test_backward_step_clear_grad_loop_matches_functional():
    x, y = _data()
    opt = fo.optim.SGD(_model(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    tx = fo.sgd(lr=0.1, momentum=0.9, weight_decay=1e-3)
    params = _model()
    state = tx.init(params)
    for _ in range(5):
        loss = opt.backward(_loss, x, y)
        assert opt.step().clear_grad() is opt
        ref_loss, g = jax.value_and_grad(_loss)(params, x, y)
        u, state = tx.update(g, state, params)
        params = fo.apply_updates(params, u)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), opt.params, params)


def test_backward_accumulates_until_cleared():
    x, y = _data()
    opt = fo.optim.Adam(_model())
    opt.backward(_loss, x, y)
    once = jax.tree.map(np.asarray, opt.grad)
    opt.backward(_loss, x, y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 2 * b, rtol=1e-6), opt.grad, once)
    opt.zero_grad(set_to_none=False)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(opt.grad))
    opt.zero_grad()
    assert opt.grad is None


def test_backward_has_aux_and_kwargs():
    x, y = _data()
    opt = fo.optim.SGD(_model())
    loss, aux = opt.backward(lambda p, x, y, scale=1.0: (scale * _loss(p, x, y), {"n": x.shape[0]}),
                             x, y, has_aux=True, scale=jnp.asarray(2.0))
    np.testing.assert_allclose(loss, 2 * _loss(_model(), x, y), rtol=1e-6)
    assert int(aux["n"]) == 8


def test_step_with_closure_returns_first_loss_and_step_returns_self():
    x, y = _data()
    opt = fo.optim.Adam(_model(), lr=0.01)

    def closure():
        opt.zero_grad()
        return opt.backward(_loss, x, y)

    first = _loss(_model(), x, y)
    np.testing.assert_allclose(opt.step(closure), first, rtol=1e-6)
    assert float(_loss(opt.params, x, y)) < float(first)


def test_step_without_gradients_does_nothing_as_torch():
    opt = fo.optim.SGD(_model(), lr=0.1, momentum=0.9)
    before = jax.tree.map(np.asarray, opt.params)
    sd = opt.state_dict()
    assert opt.step() is opt  # torch.optim and MegEngine step nothing; the call still chains
    jax.tree.map(np.testing.assert_array_equal, opt.params, before)
    jax.tree.map(np.testing.assert_array_equal, opt.state_dict()["state"], sd["state"])


def test_call_with_grads_mindspore_style_leaves_grad_alone():
    opt = fo.optim.SGD({"w": jnp.ones(2)}, lr=0.5)
    assert opt({"w": jnp.ones(2)}) is opt
    np.testing.assert_allclose(opt.params["w"], 0.5)
    assert opt.grad is None
    with pytest.raises(ValueError, match="shape"):
        opt({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="structure"):
        opt({"v": jnp.ones(2)})


def test_list_of_group_dicts_fall_back_to_defaults_and_apply_their_own_lr():
    a, b = jnp.ones(2), jnp.ones(3)
    opt = fo.optim.SGD([{"params": {"a": a}}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.9]
    opt([{"a": jnp.ones(2)}, [jnp.ones(3)]])
    np.testing.assert_allclose(opt.params[0]["a"], 0.9)
    np.testing.assert_allclose(opt.params[1][0], 0.5)
    assert opt.param_names == ["a", "0"]


def test_groups_cut_from_one_model_read_back_one_tree():
    model = _model()
    groups = fo.optim.param_groups(model, {"*.bias": {"weight_decay": 0.0, "lr": 0.0}})
    opt = fo.optim.AdamW(groups, lr=0.1, weight_decay=0.5)
    assert jax.tree.structure(opt.params) == jax.tree.structure(model)
    x, y = _data()
    opt.backward(_loss, x, y)  # the loss function sees the whole model
    opt.step()
    np.testing.assert_array_equal(opt.params["fc"]["bias"], model["fc"]["bias"])  # lr 0 group
    assert not np.allclose(opt.params["fc"]["weight"], model["fc"]["weight"])
    assert opt.param_names == ["fc.bias", "fc.weight", "head"]


def test_add_param_group_duplicate_raises_and_changes_nothing():
    w = jnp.ones(2)
    opt = fo.optim.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        opt.add_param_group({"params": [w]})
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        fo.optim.SGD([{"params": [w]}, {"params": [w]}])
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.add_param_group({"params": [jnp.ones(1)], "lr": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("params, exc, msg", [
    ([], ValueError, "optimizer got an empty parameter list"),
    ({}, ValueError, "optimizer got an empty parameter list"),
    ({jnp.ones(1).item()}, TypeError, "ordering of tensors in sets"),
    (jnp.ones(2), TypeError, "should be an iterable of Tensors or dicts"),
    ({"i": jnp.ones(2, jnp.int32)}, ValueError, "floating point or complex"),
    ({"s": "text"}, TypeError, "can only optimize arrays"),
])
def test_bad_params(params, exc, msg):
    with pytest.raises(exc, match=msg):
        fo.optim.SGD(params)


def test_unknown_constructor_keyword_raises_typeerror():
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        fo.optim.Adam({"w": jnp.ones(1)}, learning_rate=0.1)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        fo.optim.Adam({"w": jnp.ones(1)}, betas=(0.9, 1.5))


def test_no_recompile_when_hparams_change_over_100_steps(compiles):
    opt = fo.optim.SGD(_model(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    grads = jax.tree.map(jnp.ones_like, _model())
    opt(grads)
    traces = []
    for i in range(100):
        for g in opt.param_groups:
            g["lr"] = 0.1 / (i + 1)
            g["momentum"] = 0.5 + i * 1e-3
            g["weight_decay"] = 1e-4 * (i + 1)
        before = len(compiles)
        opt(grads)
        traces.append(len(compiles) - before)
    assert set(traces) == {0}
    assert float(fo.get_hparams(internals.group_state(opt))["lr"]) == pytest.approx(0.1 / 100)


def test_backward_compiles_once_for_the_same_loss_function():
    x, y = _data()
    opt = fo.optim.Adam(_model())
    counted = chex.assert_max_traces(_loss, n=2)  # once without and once with accumulated grads
    for _ in range(10):
        opt.backward(counted, x, y)
        opt.step().clear_grad()
        opt.backward(counted, x, y)
        opt.backward(counted, x, y)
        opt.step().clear_grad()


def test_step_donates_old_buffers():
    opt = fo.optim.Adam(_model())
    opt.backward(_loss, *_data())
    # the arrays the optimizer holds (packed buffers; opt.params is a view of them)
    old_params = internals.storage(opt)
    old_state = jax.tree.leaves(internals.group_state(opt).slots)
    old_grads = [b for group in opt.grad_storage() for b in group]
    opt.step()
    assert all(p.is_deleted() for p in old_params)
    assert all(s.is_deleted() for s in old_state)
    assert not any(g.is_deleted() for g in old_grads)  # gradients stay until cleared, as torch
    # the caller's arrays are copied at construction, never donated
    model = _model()
    opt = fo.optim.SGD(model)
    opt(jax.tree.map(jnp.ones_like, model))
    assert not any(p.is_deleted() for p in jax.tree.leaves(model))


def test_structural_change_momentum_from_zero_rebuilds():
    opt = fo.optim.SGD({"w": jnp.ones(2)}, lr=0.1)
    opt({"w": jnp.ones(2)})
    assert opt.state_dict()["state"] == {}
    opt.param_groups[0]["momentum"] = 0.9
    opt({"w": jnp.ones(2)})
    opt({"w": jnp.ones(2)})
    # momentum buffer created on the first step with momentum: b = g, then 0.9 b + g
    np.testing.assert_allclose(opt.state_dict()["state"][0]["momentum_buffer"], 1.9, rtol=1e-6)
    np.testing.assert_allclose(opt.params["w"], 1 - 0.1 - 0.1 - 0.19, rtol=1e-6)


def test_hooks_run_and_handles_remove_them():
    opt = fo.optim.SGD({"w": jnp.ones(1)})
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    h2 = opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt({"w": jnp.ones(1)})
    assert calls == ["pre", "post"]
    h1.remove()
    h2.remove()
    opt({"w": jnp.ones(1)})
    assert calls == ["pre", "post"]
    seen = []
    opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: seen.append("load-post"))
    opt.register_state_dict_pre_hook(lambda o: seen.append("sd-pre"))
    opt.load_state_dict(opt.state_dict())
    assert seen == ["sd-pre", "load-pre", "load-post"]


def test_repr_like_torch():
    text = repr(fo.optim.SGD({"w": jnp.ones(1)}, lr=0.5, momentum=0.9))
    assert text.startswith("SGD (\nParameter Group 0\n")
    assert "    lr: 0.5\n" in text and "    momentum: 0.9\n" in text and text.endswith(")")


def test_state_dict_megengine_docs_example_has_zero_buffers_before_any_step():
    weight, bias = jnp.zeros((2, 3)), jnp.zeros(2)  # Linear(3, 2)
    opt = fo.optim.SGD([weight, bias], lr=1e-3, momentum=0.9, weight_decay=1e-4)
    sd = opt.state_dict()
    assert set(sd["state"]) == {0, 1}
    np.testing.assert_array_equal(sd["state"][0]["momentum_buffer"], np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(sd["state"][1]["momentum_buffer"], np.zeros(2, np.float32))
    group = sd["param_groups"][0]
    assert group["params"] == [0, 1] and group["lr"] == 1e-3 and group["momentum"] == 0.9
    assert isinstance(sd["state"][0]["momentum_buffer"], np.ndarray)


def test_state_dict_round_trip_continues_the_same_trajectory():
    x, y = _data()
    a = fo.optim.Adam(_model(), lr=0.05, amsgrad=True)
    for _ in range(3):
        a.backward(_loss, x, y)
        a.step().clear_grad()
    b = fo.optim.Adam(jax.tree.map(jnp.copy, a.params), lr=0.05, amsgrad=True)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        for o in (a, b):
            o.backward(_loss, x, y)
            o.step().clear_grad()
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def _snapshot(opt):
    sd = opt.state_dict()
    return (jax.tree.map(np.asarray, opt.params), jax.tree.map(np.asarray, sd["state"]),
            [dict(g) for g in sd["param_groups"]])


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a[0], b[0])
    jax.tree.map(np.testing.assert_array_equal, a[1], b[1])
    assert a[2] == b[2]


@pytest.mark.parametrize("mutate, exc, msg", [
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])), ValueError,
     "different number of parameter groups"),
    (lambda sd: sd["param_groups"][0]["params"].pop(), ValueError, "doesn't match the size"),
    (lambda sd: sd["state"][1].__setitem__("exp_avg", np.zeros((7, 7), np.float32)), ValueError, "has shape"),
    (lambda sd: sd["state"][1].__setitem__("exp_avg_sq", np.zeros((3, 4), np.int32)), ValueError, "dtype"),
    (lambda sd: sd.pop("state"), KeyError, "state"),
    (lambda sd: sd.pop("param_groups"), KeyError, "param_groups"),
    (lambda sd: sd["state"][0].__setitem__("step", np.array(-3.0)), ValueError, "step"),
    (lambda sd: sd["param_groups"][0].__setitem__("lr", -1.0), ValueError, "Invalid learning rate"),
])
def test_failed_load_leaves_optimizer_untouched(mutate, exc, msg):
    opt = fo.optim.Adam(_model(), lr=0.01)
    opt.backward(_loss, *_data())
    opt.step()
    before = _snapshot(opt)
    sd = opt.state_dict()
    mutate(sd)
    with pytest.raises(exc, match=msg):
        opt.load_state_dict(sd)
    _assert_same(_snapshot(opt), before)
    opt.step()  # still usable


def test_load_by_name_after_structure_changed():
    old = fo.optim.Adam({"encoder": {"w": jnp.ones(2)}, "decoder": {"w": jnp.ones(3)}}, lr=0.1)
    old({"encoder": {"w": jnp.ones(2)}, "decoder": {"w": jnp.full(3, 2.0)}})
    sd = old.state_dict()
    # the new model nests things differently and adds nothing: names still match
    new = fo.optim.Adam([{"params": {"decoder": {"w": jnp.ones(3)}}},
                         {"params": {"encoder": {"w": jnp.ones(2)}}}], lr=0.1)
    with pytest.raises(ValueError):
        new.load_state_dict(sd)  # positional loading sees 2 groups vs 1
    new.load_state_dict(sd, by_name=True)
    np.testing.assert_allclose(new.state["decoder.w"]["exp_avg"], old.state["decoder.w"]["exp_avg"])
    np.testing.assert_allclose(new.state["encoder.w"]["exp_avg_sq"], old.state["encoder.w"]["exp_avg_sq"])
    missing = fo.optim.Adam({"other": jnp.ones(1)})
    with pytest.raises(KeyError, match="no state for parameters"):
        missing.load_state_dict(sd, by_name=True)


def test_not_picklable():
    import pickle

    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(fo.optim.SGD({"w": jnp.ones(1)}))


def test_backward_non_array_arguments_are_constants():
    opt = fo.optim.SGD({"w": jnp.ones(3)})
    labels = jnp.array([0, 2])

    def loss(p, y, num_classes, activation):
        return jnp.sum(activation(p["w"]) * jax.nn.one_hot(y, num_classes))

    np.testing.assert_allclose(opt.backward(loss, labels, 3, jnp.tanh), 2 * np.tanh(1.0), rtol=1e-6)
    np.testing.assert_allclose(opt.grad["w"], [1 - np.tanh(1.0) ** 2, 0, 1 - np.tanh(1.0) ** 2], rtol=1e-6)


def test_params_setter_validates_then_replaces_values_and_keeps_state():
    opt = fo.optim.Adam(_model(), lr=0.1)
    opt(jax.tree.map(jnp.ones_like, _model()))
    state = jax.tree.map(np.asarray, opt.state_dict()["state"])
    with pytest.raises(ValueError, match="shape"):
        opt.params = {**_model(), "head": jnp.ones(5)}
    np.testing.assert_array_equal(opt.params["head"], fo.optim.Adam(_model(), lr=0.1)(
        jax.tree.map(jnp.ones_like, _model())).params["head"])
    new = jax.tree.map(lambda x: x * 0 + 2.0, _model())
    opt.params = new
    jax.tree.map(np.testing.assert_array_equal, opt.params, new)
    jax.tree.map(np.testing.assert_array_equal, opt.state_dict()["state"], state)
