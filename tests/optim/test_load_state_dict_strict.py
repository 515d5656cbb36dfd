"""``load_state_dict(sd, strict=False)``: a model that gained a head and lost a layer resumes.

The parameters found in the state_dict (same name, shape and dtype) must continue exactly as an
uninterrupted run; the new ones start exactly as a fresh optimizer; the result names the rest.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import funcopt as fo
from funcopt.compat import mindspore as ms


class Before(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.body = nnx.Linear(3, 4, rngs=rngs)
        self.extra = nnx.Linear(4, 4, rngs=rngs)  # removed in After
        self.out = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.extra(jax.nn.relu(self.body(x)))))


class After(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.body = nnx.Linear(3, 4, rngs=rngs)
        self.out = nnx.Linear(4, 2, rngs=rngs)
        self.head = nnx.Linear(2, 3, rngs=rngs)  # new

    def __call__(self, x):
        return self.head(jax.nn.tanh(self.out(jax.nn.relu(self.body(x)))))


def _loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


X = jax.random.normal(jax.random.key(0), (8, 3))
Y2 = jax.random.normal(jax.random.key(1), (8, 2))
Y3 = jax.random.normal(jax.random.key(2), (8, 3))


def _copy(x):
    return jnp.array(x, copy=True)


def _trained_before():
    before = Before(nnx.Rngs(0))
    opt = fo.optim.Adam(before, lr=1e-2, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        opt.backward(_loss, X, Y2)
        opt.step()
    return before, opt


@functools.cache
def _saved():
    """The state_dict of the trained Before model (the tests below only read it)."""
    return _trained_before()[1].state_dict()


def _snapshot(opt):
    return jax.tree.map(np.array, opt.params), opt.state_dict()


def _assert_same(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_gained_head_lost_layer_resumes_exactly():
    before, uninterrupted = _trained_before()
    sd = uninterrupted.state_dict()

    after = After(nnx.Rngs(1))
    for layer in ("body", "out"):  # the model checkpoint restores the kept layers' values
        for name in ("kernel", "bias"):
            getattr(getattr(after, layer), name)[...] = _copy(uninterrupted.params[layer][name])
    # the new head in a group of its own, so that its step count starts at 0 as well
    opt = fo.optim.Adam(fo.optim.param_groups(after, {"head.*": {"lr": 1e-2}}), lr=1e-3, weight_decay=1e-3)
    keys = opt.load_state_dict(sd, strict=False)

    assert isinstance(keys, fo.optim.IncompatibleKeys)
    assert keys.missing_keys == ["head.bias", "head.kernel"]
    assert keys.unexpected_keys == ["extra.bias", "extra.kernel"]
    assert keys.mismatched_keys == []
    assert opt.param_groups[1]["lr"] == 1e-2  # the loaded group takes the saved hyperparameters
    assert opt.step_count(1) == 3 and opt.step_count(0) == 0
    np.testing.assert_array_equal(opt.state["body.kernel"]["exp_avg"], sd["state"][
        sd["param_groups"][0]["param_names"].index("body.kernel")]["exp_avg"])

    head = {"kernel": _copy(after.head.kernel[...]), "bias": _copy(after.head.bias[...])}
    fresh_head = fo.optim.Adam(head, lr=1e-2, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        opt.backward(_loss, X, Y3)
        g = jax.tree.map(_copy, opt.grad)
        opt.step()
        # the same gradients into the optimizer that never stopped, and into a fresh one for the head
        uninterrupted({"body": g["body"], "out": g["out"],
                       "extra": jax.tree.map(jnp.zeros_like, uninterrupted.params["extra"])})
        fresh_head(g["head"])
        for layer in ("body", "out"):
            _assert_same(opt.params[layer], uninterrupted.params[layer])
        _assert_same(opt.params["head"], fresh_head.params)
    np.testing.assert_array_equal(after.head.kernel[...], fresh_head.params["kernel"])  # the module follows


def test_strict_refuses_and_changes_nothing():
    sd = _saved()
    opt = fo.optim.Adam(After(nnx.Rngs(1)), lr=1e-3)
    opt({"body": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}, "out": {"kernel": jnp.ones((4, 2)),
         "bias": jnp.ones(2)}, "head": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}})
    before = _snapshot(opt)
    with pytest.raises(ValueError, match="names parameter 2 of group 0 'extra.bias', but it is 'head.bias'"):
        opt.load_state_dict(sd)
    with pytest.raises(KeyError, match="no state for parameters"):
        opt.load_state_dict(sd, by_name=True)
    _assert_same(_snapshot(opt), before)
    assert opt.step_count() == 1


def test_strict_load_returns_empty_keys():
    again = fo.optim.Adam(Before(nnx.Rngs(0)), lr=1e-3)
    assert again.load_state_dict(_saved()) == fo.optim.IncompatibleKeys([], [], [])
    assert again.step_count() == 3


def test_mismatched_shape_and_dtype_start_fresh():
    old = fo.optim.Adam([("w", jnp.ones(3)), ("b", jnp.ones(2)), ("h", jnp.ones(2))], lr=0.1)
    old({"w": jnp.ones(3), "b": jnp.ones(2), "h": jnp.ones(2)})
    # 'b' grew, 'h' is bfloat16 now: their state starts fresh; 'w' continues
    new = fo.optim.Adam([("w", jnp.zeros(3)), ("b", jnp.zeros(4)), ("h", jnp.zeros(2, jnp.bfloat16))], lr=0.1)
    keys = new.load_state_dict(old.state_dict(), strict=False)
    assert keys == ([], [], ["b", "h"])
    np.testing.assert_array_equal(new.state["w"]["exp_avg"], old.state["w"]["exp_avg"])
    np.testing.assert_array_equal(new.state["b"]["exp_avg"], np.zeros(4, np.float32))
    assert new.state["h"]["exp_avg"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(new.state["h"]["exp_avg"], np.zeros(2))
    # strict=True casts the float32 state into bfloat16 but refuses the shape
    strict = fo.optim.Adam([("w", jnp.zeros(3)), ("b", jnp.zeros(4)), ("h", jnp.zeros(2, jnp.bfloat16))])
    with pytest.raises(ValueError, match="'b' has shape"):
        strict.load_state_dict(old.state_dict())


def test_strict_false_needs_names():
    old = fo.optim.SGD([jnp.ones(2)], lr=0.1, momentum=0.9)
    sd = old.state_dict()
    del sd["param_groups"][0]["param_names"]
    with pytest.raises(ValueError, match=r"strict=False\) needs 'param_names'"):
        fo.optim.SGD([jnp.ones(2)], lr=0.1, momentum=0.9).load_state_dict(sd, strict=False)


def test_lbfgs_and_mindspore_forward_strict():
    old = fo.optim.LBFGS({"w": jnp.ones(2)}, lr=0.5, max_iter=2)
    old.step(lambda: (old.zero_grad(), old.backward(lambda p: jnp.sum(p["w"] ** 2)))[1])
    grown = fo.optim.LBFGS({"w": jnp.ones(2), "head": jnp.ones(1)}, lr=1.0, max_iter=2)
    keys = grown.load_state_dict(old.state_dict(), strict=False)
    assert keys == (["head"], [], [])
    assert grown.param_groups[0]["lr"] == 0.5 and grown.state["head"] == {"func_evals": 0, "n_iter": 0}
    same = fo.optim.LBFGS({"w": jnp.ones(2)}, max_iter=2)
    assert same.load_state_dict(old.state_dict(), strict=False) == ([], [], [])
    assert same.state["w"]["n_iter"] == old.state["w"]["n_iter"] > 0

    net = ms.Adam({"w": jnp.ones(2)}, learning_rate=0.1)
    net({"w": jnp.ones(2)})
    bigger = ms.Adam({"w": jnp.ones(2), "b": jnp.ones(1)}, learning_rate=0.1)
    assert bigger.load_state_dict(net.state_dict(), strict=False) == (["b"], [], [])
    np.testing.assert_array_equal(bigger.state["w"]["exp_avg"], net.state["w"]["exp_avg"])
