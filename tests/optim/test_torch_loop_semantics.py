"""torch.optim's loop semantics found by torch's own test database, one regression test each.

What the user hands in stays theirs (no donation of hyperparameters, parameters or gradients),
parameters keep the user's order (named or not), steps without gradients do nothing and a
parameter without a gradient is skipped, and torch's state_dicts load with tensor learning
rates and named parameters. Parity is against real torch.optim.
"""

from __future__ import annotations

from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import funcopt as fo

RTOL = dict(rtol=1e-5, atol=1e-6)  # float32 runs of the same formulas


def _w():
    return np.arange(6, dtype=np.float32).reshape(3, 2) / 7 - 0.3


def _b():
    return np.array([0.5, -0.25, 1.0], np.float32)


def _grads(step):
    rng = np.random.default_rng(step)
    return rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(3).astype(np.float32)


def _closure(opt, loss_fn):
    def closure():
        opt.zero_grad()
        return opt.backward(loss_fn)
    return closure


# ------------------------------------------------------------------ what the user hands in stays theirs


@pytest.mark.parametrize("make", [
    lambda lr: fo.optim.SGD([jnp.ones(2)], lr=lr, momentum=0.9),
    lambda lr: fo.optim.Adam([jnp.ones(2)], lr=lr),
    lambda lr: fo.optim.Muon([jnp.ones((2, 2))], lr=lr),
    lambda lr: fo.optim.Adafactor([jnp.ones((2, 2))], lr=lr),
], ids=["SGD", "Adam", "Muon", "Adafactor"])
def test_a_0d_learning_rate_of_the_parameters_dtype_survives_steps(make):
    lr = jnp.asarray(0.1, jnp.float32)
    opt = make(lr)
    grads = jax.tree.map(jnp.ones_like, opt.params)
    for _ in range(3):
        opt(grads)
    assert not lr.is_deleted() and float(lr) == pytest.approx(0.1)
    assert not any(g.is_deleted() for g in jax.tree.leaves(grads))


def test_array_betas_survive_steps_and_follow_float_betas():
    betas = (jnp.float32(0.9), jnp.float32(0.99))
    ours = fo.optim.Adam([jnp.asarray(_w())], lr=0.01, betas=betas)
    ref = fo.optim.Adam([jnp.asarray(_w())], lr=0.01, betas=(0.9, 0.99))
    for s in range(3):
        ours([jnp.asarray(_grads(s)[0])])
        ref([jnp.asarray(_grads(s)[0])])
    assert not any(b.is_deleted() for b in betas)
    np.testing.assert_allclose(ours.params[0], ref.params[0], **RTOL)


def test_lbfgs_array_learning_rate_survives_steps():
    lr = jnp.asarray(0.5, jnp.float32)
    opt = fo.optim.LBFGS([jnp.ones(2)], lr=lr, max_iter=3)
    closure = _closure(opt, lambda p: jnp.sum((p[0] - 2.0) ** 2))
    opt.step(closure)
    opt.step(closure)
    assert not lr.is_deleted()


def test_hyperparameter_arrays_set_later_are_not_donated():
    opt = fo.optim.SGD([jnp.ones(2)], lr=0.1)
    opt([jnp.ones(2)])
    lr = jnp.asarray(0.2, jnp.float32)
    opt.param_groups[0]["lr"] = lr
    opt([jnp.ones(2)])
    opt([jnp.ones(2)])
    assert not lr.is_deleted()
    tx = fo.sgd(lr=0.1)
    state = fo.set_hparams(tx.init({"w": jnp.ones(2)}), lr=lr)
    assert fo.get_hparams(state)["lr"] is not lr


def test_parameters_given_are_copied_not_donated():
    for cls in (fo.optim.SGD, fo.optim.Adafactor):  # packed and per-leaf storage
        w = jnp.ones((2, 2))
        opt = cls([w], lr=0.1)
        opt([jnp.ones((2, 2))])
        assert not w.is_deleted()
        np.testing.assert_array_equal(w, 1.0)


# ------------------------------------------------------------------ 1-element hyperparameters, as torch accepts them


def test_one_element_lr_and_betas_are_accepted_as_torch_accepts_them():
    tw = torch.nn.Parameter(torch.tensor(_w()))
    topt = torch.optim.Adam([tw], lr=torch.tensor([0.01]), betas=(torch.tensor([[0.9]]), torch.tensor([0.99])))
    opt = fo.optim.Adam([jnp.asarray(_w())], lr=jnp.asarray([0.01]),
                        betas=(jnp.asarray([[0.9]]), jnp.asarray([0.99])))
    for s in range(3):
        g = _grads(s)[0]
        tw.grad = torch.tensor(g)
        topt.step()
        opt([jnp.asarray(g)])
    np.testing.assert_allclose(opt.params[0], tw.detach().numpy(), **RTOL)
    with pytest.raises(ValueError, match="^Tensor lr must be 1-element$"):
        fo.optim.SGD([jnp.ones(2)], lr=jnp.asarray([0.1, 0.1]))


# ------------------------------------------------------------------ parameter order and names


def test_named_parameters_keep_the_users_order_as_torch_numbers_them():
    w, b = jnp.asarray(_w()), jnp.asarray(_b())
    opt = fo.optim.SGD([("weight", w), ("bias", b)], lr=0.1, momentum=0.9)
    tw, tb = torch.nn.Parameter(torch.tensor(_w())), torch.nn.Parameter(torch.tensor(_b()))
    topt = torch.optim.SGD([("weight", tw), ("bias", tb)], lr=0.1, momentum=0.9)
    assert opt.param_names == ["weight", "bias"]
    assert list(opt.params) == ["weight", "bias"] and isinstance(opt.params, OrderedDict)
    for s in range(2):
        gw, gb = _grads(s)
        opt({"bias": jnp.asarray(gb), "weight": jnp.asarray(gw)})  # a plain dict, in any key order
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["param_groups"][0]["param_names"] == tsd["param_groups"][0]["param_names"] == ["weight", "bias"]
    assert sd["param_groups"][0]["params"] == tsd["param_groups"][0]["params"] == [0, 1]
    for i, tp in enumerate((tw, tb)):
        np.testing.assert_allclose(sd["state"][i]["momentum_buffer"], tsd["state"][i]["momentum_buffer"], **RTOL)
        np.testing.assert_allclose(list(opt.params.values())[i], tp.detach().numpy(), **RTOL)
    # a list without names keeps its order too
    assert fo.optim.SGD([b, w]).state_dict()["state"] == {}
    assert [p.shape for p in fo.optim.SGD([b, w]).params] == [(3,), (3, 2)]


def test_named_parameters_inside_a_group_dict():
    w, b = jnp.asarray(_w()), jnp.asarray(_b())
    opt = fo.optim.Adam([{"params": [("weight", w), ("bias", b)], "lr": 0.5}])
    assert opt.param_names == ["weight", "bias"]
    assert opt.param_groups[0]["lr"] == 0.5
    opt.add_param_group({"params": [("head", jnp.ones(2))]})
    assert opt.param_names == ["weight", "bias", "head"]


@pytest.mark.parametrize("params, message", [
    ([("weight", jnp.ones(2)), jnp.ones(3)],
     "all optimizer params should be with/without names. Some param names are missing"),
    ([{"params": [jnp.ones(2)]}, {"params": [("weight", jnp.ones(3))]}],
     "all optimizer param groups should be with/without names. cannot add param group with names to the optimizer"),
    ([{"params": [("weight", jnp.ones(3))]}, {"params": [jnp.ones(2)]}],
     "all optimizer param groups should be with/without names. cannot add param group without names to the "
     "optimizer"),
])
def test_mixing_named_and_unnamed_parameters_raises_torchs_error(params, message):
    def as_torch(x):
        if isinstance(x, dict):
            return {k: as_torch(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)) and not (isinstance(x, tuple) and isinstance(x[0], str)):
            return [as_torch(v) for v in x]
        if isinstance(x, tuple):
            return (x[0], as_torch(x[1]))
        return torch.nn.Parameter(torch.tensor(np.asarray(x)))

    torch_params = as_torch(params)
    with pytest.raises(ValueError) as theirs:
        torch.optim.SGD(torch_params, lr=0.1)
    with pytest.raises(ValueError) as ours:
        fo.optim.SGD(params, lr=0.1)
    assert str(ours.value) == str(theirs.value) == message


def test_repeated_names_raise():
    with pytest.raises(ValueError, match="'w' names more than one parameter"):
        fo.optim.SGD([("w", jnp.ones(2)), ("w", jnp.ones(3))])


def test_load_by_index_checks_names_and_by_name_reorders():
    w, b = jnp.asarray(_w()), jnp.asarray(_b())
    src = fo.optim.Adam([("weight", w), ("bias", b)], lr=0.1)
    src({"weight": jnp.ones((3, 2)), "bias": jnp.full(3, 2.0)})
    sd = src.state_dict()
    dst = fo.optim.Adam({"weight": w, "bias": b}, lr=0.1)  # a dict: 'bias' is parameter 0 here
    before = dst.state_dict()
    with pytest.raises(ValueError, match="by_name=True") as err:
        dst.load_state_dict(sd)
    assert "'weight'" in str(err.value) and "'bias'" in str(err.value)
    jax.tree.map(np.testing.assert_array_equal, dst.state_dict()["state"], before["state"])
    dst.load_state_dict(sd, by_name=True)
    np.testing.assert_allclose(dst.state["bias"]["exp_avg"], src.state["bias"]["exp_avg"])
    # positions of a plain list say nothing: loading by index into names works
    plain = fo.optim.Adam([w, b], lr=0.1)
    plain.load_state_dict(sd)
    src.load_state_dict(plain.state_dict())
    # LBFGS checks the same
    lb = fo.optim.LBFGS([("weight", w), ("bias", b)])
    with pytest.raises(ValueError, match="by_name=True"):
        fo.optim.LBFGS({"weight": w, "bias": b}).load_state_dict(lb.state_dict())


def test_torch_state_dict_with_a_tensor_lr_loads():
    for lr in (torch.tensor(0.01), torch.tensor([0.01])):
        tw = torch.nn.Parameter(torch.tensor(_w()))
        topt = torch.optim.Adam([tw], lr=lr)
        tw.grad = torch.tensor(_grads(0)[0])
        topt.step()
        opt = fo.optim.Adam([jnp.asarray(tw.detach().numpy())])
        opt.load_state_dict(topt.state_dict())
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
        for s in (1, 2):
            tw.grad = torch.tensor(_grads(s)[0])
            topt.step()
            opt([jnp.asarray(_grads(s)[0])])
        np.testing.assert_allclose(opt.params[0], tw.detach().numpy(), **RTOL)


# ------------------------------------------------------------------ steps without gradients


def test_step_without_any_gradient_does_nothing_and_chains():
    opt = fo.optim.Adam([jnp.ones(2)], lr=0.1)
    assert opt.step().clear_grad() is opt
    assert int(opt.state_dict()["state"][0]["step"]) == 0
    np.testing.assert_array_equal(opt.params[0], 1.0)
    assert opt([None]) is opt
    assert int(opt.state_dict()["state"][0]["step"]) == 0


def _torch_twin(cls, kw, arrays):
    tps = [torch.nn.Parameter(torch.tensor(np.asarray(a))) for a in arrays]
    return tps, cls(tps, **kw)


@pytest.mark.parametrize("name, kw", [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    ("Adam", dict(lr=0.1, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
])
def test_a_group_without_gradients_is_skipped_as_torch(name, kw):
    arrays = [_w(), _b()]
    opt = getattr(fo.optim, name)([{"params": [jnp.asarray(arrays[0])]}, {"params": [jnp.asarray(arrays[1])]}],
                                  **kw)
    tps = [torch.nn.Parameter(torch.tensor(a)) for a in arrays]
    topt = getattr(torch.optim, name)([{"params": [tps[0]]}, {"params": [tps[1]]}], **kw)
    for s in range(6):
        gw, gb = _grads(s)
        bias_has_grad = s in (1, 4)
        opt([[jnp.asarray(gw)], [jnp.asarray(gb)] if bias_has_grad else None])
        tps[0].grad = torch.tensor(gw)
        tps[1].grad = torch.tensor(gb) if bias_has_grad else None
        topt.step()
        for ours, theirs in zip((opt.params[0][0], opt.params[1][0]), tps):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), err_msg=f"step {s}", **RTOL)
    sd, tsd = opt.state_dict(), topt.state_dict()
    for i in (0, 1):
        for k, v in tsd["state"][i].items():
            np.testing.assert_allclose(sd["state"][i][k], v.numpy(), err_msg=k, **RTOL)


def test_a_parameter_without_a_gradient_keeps_its_value_and_state():
    w, b = jnp.asarray(_w()), jnp.asarray(_b())
    for cls, kw in ((fo.optim.Adam, dict(lr=0.1, weight_decay=0.1)),  # packed storage
                    (fo.optim.Adafactor, dict(lr=0.1, weight_decay=0.1))):  # per-leaf storage
        opt = cls({"w": w, "b": b}, **kw)
        opt({"w": jnp.ones((3, 2)), "b": jnp.ones(3)})
        before = opt.state_dict()["state"]
        b_before, w_before = np.asarray(opt.params["b"]), np.asarray(opt.params["w"])
        opt({"w": jnp.ones((3, 2)), "b": None})
        assert not np.allclose(opt.params["w"], w_before)
        after = opt.state_dict()["state"]
        np.testing.assert_array_equal(opt.params["b"], b_before)
        for k, v in before[0].items():  # parameter 0 is 'b' (sorted keys of a dict)
            if k != "step":
                np.testing.assert_array_equal(after[0][k], v, err_msg=k)
        assert int(after[1]["step"]) == 2  # the group's count advanced with 'w'


def test_sgd_momentum_with_partly_missing_gradients_follows_torch():
    """SGD's update does not read the step count after the first step, so a parameter of a partly-skipped
    group follows torch exactly (Adam's bias corrections use the group's count: see the docs)."""
    kw = dict(lr=0.1, momentum=0.9, weight_decay=0.05)
    opt = fo.optim.SGD([jnp.asarray(_w()), jnp.asarray(_b())], **kw)
    tps, topt = _torch_twin(torch.optim.SGD, kw, [_w(), _b()])
    for s in range(6):
        gw, gb = _grads(s)
        has = s not in (0, 3)  # the bias misses the first step too
        opt([jnp.asarray(gw), jnp.asarray(gb) if has else None])
        tps[0].grad, tps[1].grad = torch.tensor(gw), (torch.tensor(gb) if has else None)
        topt.step()
        for ours, theirs in zip(opt.params, tps):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), err_msg=f"step {s}", **RTOL)


def test_patterns_of_missing_gradients_compile_once_each(compiles):
    opt = fo.optim.Adam({"a": jnp.ones(2), "b": jnp.ones(3)}, lr=0.1)
    patterns = [{"a": jnp.ones(2), "b": jnp.ones(3)}, {"a": jnp.ones(2), "b": None},
                {"a": None, "b": jnp.ones(3)}]
    for g in patterns:  # warm up: one program per pattern
        opt(g)
    before = len(compiles)
    for _ in range(3):
        for g in patterns:
            opt(g)
    assert len(compiles) == before


def test_step_skips_groups_without_gradients():
    opt = fo.optim.SGD({"a": jnp.ones(2)}, lr=0.5)
    opt.backward(lambda p: jnp.sum(p["a"]))
    opt.add_param_group({"params": {"b": jnp.ones(3)}})
    assert opt.step() is opt  # the new group has no gradient yet: torch skips it
    np.testing.assert_allclose(opt.params[0]["a"], 0.5)
    np.testing.assert_array_equal(opt.params[1]["b"], 1.0)


def test_lbfgs_reads_a_missing_gradient_as_zeros_as_torch():
    tps = [torch.nn.Parameter(torch.tensor(_w())), torch.nn.Parameter(torch.tensor(_b()))]
    topt = torch.optim.LBFGS(tps, lr=0.5, max_iter=1)
    opt = fo.optim.LBFGS([jnp.asarray(_w()), jnp.asarray(_b())], lr=0.5, max_iter=1)
    for s in range(3):
        gw, gb = _grads(s)
        has = s != 1
        tps[0].grad, tps[1].grad = torch.tensor(gw), (torch.tensor(gb) if has else None)
        topt.step(lambda: torch.tensor(0.0))
        opt([jnp.asarray(gw), jnp.asarray(gb) if has else None])
        for ours, theirs in zip(opt.params, tps):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), err_msg=f"step {s}", **RTOL)


def test_loading_a_state_dict_of_the_same_options_keeps_the_compiled_step(compiles):
    opt = fo.optim.Adam([jnp.asarray(_w())], lr=0.1, weight_decay=0.1)
    other = fo.optim.Adam([jnp.asarray(_w())], lr=0.5, weight_decay=0.1)
    opt([jnp.ones((3, 2))])
    other([jnp.ones((3, 2))])
    other([jnp.ones((3, 2))])
    opt.load_state_dict(other.state_dict())  # new values, same options: the step is not compiled again
    before = len(compiles)
    opt([jnp.ones((3, 2))])
    assert len(compiles) == before
    assert opt.param_groups[0]["lr"] == 0.5 and int(opt.state_dict()["state"][0]["step"]) == 3
    amsgrad = other.state_dict()
    amsgrad["param_groups"][0]["amsgrad"] = True
    amsgrad["state"][0]["max_exp_avg_sq"] = amsgrad["state"][0]["exp_avg_sq"]
    opt.load_state_dict(amsgrad)  # another option: the step compiles again, and uses it
    before = len(compiles)
    opt([jnp.ones((3, 2))])
    assert len(compiles) > before
    assert "max_exp_avg_sq" in opt.state_dict()["state"][0]


def test_backward_gives_torchs_gradient_of_complex_parameters():
    """torch's p.grad of a complex parameter is the conjugate of jax.grad's: opt.grad is torch's, and the step
    descends as torch's does."""
    z0 = np.array([1 + 1j, -0.5 + 2j], np.complex64)
    tz = torch.nn.Parameter(torch.tensor(z0))
    topt = torch.optim.Adam([tz], lr=0.1)
    opt = fo.optim.Adam([jnp.asarray(z0)], lr=0.1)
    target = np.array([0.3 - 1j, 2 + 0.5j], np.complex64)
    for _ in range(5):
        topt.zero_grad()
        ((tz - torch.tensor(target)).abs() ** 2).sum().backward()
        opt.zero_grad()
        opt.backward(lambda p: jnp.sum(jnp.abs(p[0] - target) ** 2))
        np.testing.assert_allclose(opt.grad[0], tz.grad.numpy(), **RTOL)
        topt.step()
        opt.step()
    np.testing.assert_allclose(opt.params[0], tz.detach().numpy(), **RTOL)
