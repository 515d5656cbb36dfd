"""fo.compat.megengine against MegEngine's documented examples and the update rules of its optimizers.

The references are MegEngine's ``_updates`` written out in float64 NumPy (their
arithmetic, step by step), with several leaves of different shapes, a 0-d and a
1-element one, and a new gradient at every step.
"""

from __future__ import annotations

import bisect
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import megengine as mge
from funcopt.optimizers.adagrad import adagrad_megengine
from tests.reference.harness import make_grads, make_params, precision, run_funcopt, tolerance

STEPS = 25
DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------------------------------ references


def sgd_ref(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    def rule(p, g, s, t):
        if weight_decay != 0.0:
            g = g + p * weight_decay
        if momentum != 0.0:
            v = s.get("momentum_buffer", np.zeros_like(p)) * momentum + g
            s = {"momentum_buffer": v}
            g = g + v * momentum if nesterov else v
        return p - lr * g, s
    return rule


def adam_ref(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    beta0, beta1 = betas

    def rule(p, g, s, t):
        if weight_decay != 0.0 and not decoupled:
            g = g + p * weight_decay
        m = s.get("exp_avg", 0.0) * beta0 + g * (1 - beta0)
        v = s.get("exp_avg_sq", 0.0) * beta1 + (1 - beta1) * (g * g)
        delta = (m / (1 - beta0**t)) / ((v / (1 - beta1**t)) ** 0.5 + eps)
        if decoupled and weight_decay != 0.0:
            delta = delta + p * weight_decay
        return p - lr * delta, {"exp_avg": m, "exp_avg_sq": v}
    return rule


def adagrad_ref(lr=1e-2, lr_decay=0.0, eps=1e-10, weight_decay=0.0):
    def rule(p, g, s, t):
        if weight_decay != 0.0:
            g = g + p * weight_decay
        square_avg = s.get("square_avg", 0.0) + g**2
        delta = g / (square_avg + eps) ** 0.5
        clr = lr / (1 + (t - 1) * lr_decay)
        return p - clr * delta, {"square_avg": square_avg}
    return rule


def adadelta_ref(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    def rule(p, g, s, t):
        if weight_decay != 0.0:
            g = g + p * weight_decay
        square_avg = rho * s.get("square_avg", 0.0) + (1 - rho) * g**2
        acc_delta = s.get("acc_delta", 0.0)
        delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta**2
        return p - lr * delta, {"square_avg": square_avg, "acc_delta": acc_delta}
    return rule


def lamb_ref(lr, betas=(0.9, 0.999), eps=1e-8, bias_correction=True, weight_decay=0.0, always_adapt=False):
    beta0, beta1 = betas

    def rule(p, g, s, t):
        m = beta0 * s.get("exp_avg", 0.0) + (1 - beta0) * g
        v = beta1 * s.get("exp_avg_sq", 0.0) + (1 - beta1) * g * g
        m_hat, v_hat = (m / (1 - beta0**t), v / (1 - beta1**t)) if bias_correction else (m, v)
        r = m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p
        p_norm, r_norm = np.linalg.norm(p.ravel()), np.linalg.norm(r.ravel())
        adapt = weight_decay > 0 or always_adapt
        trust = p_norm / r_norm if adapt and p_norm > 0 and r_norm > 0 else 1.0
        return p - lr * trust * r, {"exp_avg": m, "exp_avg_sq": v}
    return rule


def run_reference(rule, params, grads):
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    treedef = jax.tree.structure(params)
    states = [{} for _ in leaves]
    history = []
    for t, grad_tree in enumerate(grads, start=1):
        for k, g in enumerate(jax.tree.leaves(grad_tree)):
            leaves[k], states[k] = rule(leaves[k], np.asarray(g, np.float64), states[k], t)
        history.append(treedef.unflatten([p.copy() for p in leaves]))
    return history, states


CASES = {
    "SGD": (lambda p: mge.SGD(p, lr=0.05), sgd_ref(0.05)),
    "SGD-momentum-wd": (lambda p: mge.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
                        sgd_ref(0.05, 0.9, weight_decay=0.01)),
    "SGD-nesterov": (lambda p: mge.SGD(p, 0.05, 0.8, True, 0.02), sgd_ref(0.05, 0.8, True, 0.02)),
    "Adam": (lambda p: mge.Adam(p, lr=0.01, weight_decay=0.01), adam_ref(0.01, weight_decay=0.01)),
    "Adam-betas": (lambda p: mge.Adam(p, 0.01, (0.8, 0.9), 1e-4), adam_ref(0.01, (0.8, 0.9), 1e-4)),
    "AdamW": (lambda p: mge.AdamW(p, lr=0.01), adam_ref(0.01, weight_decay=1e-2, decoupled=True)),
    "AdamW-wd": (lambda p: mge.AdamW(p, 0.02, (0.85, 0.95), 1e-6, 0.1),
                 adam_ref(0.02, (0.85, 0.95), 1e-6, 0.1, decoupled=True)),
    "Adagrad": (lambda p: mge.Adagrad(p), adagrad_ref()),
    "Adagrad-eps-decay": (lambda p: mge.Adagrad(p, lr=0.1, lr_decay=0.05, eps=0.5, weight_decay=0.01),
                          adagrad_ref(0.1, 0.05, 0.5, 0.01)),
    "Adadelta": (lambda p: mge.Adadelta(p), adadelta_ref()),
    "Adadelta-args": (lambda p: mge.Adadelta(p, lr=0.5, rho=0.7, eps=1e-3, weight_decay=0.02),
                      adadelta_ref(0.5, 0.7, 1e-3, 0.02)),
    "LAMB": (lambda p: mge.LAMB(p, lr=0.01, weight_decay=0.01), lamb_ref(0.01, weight_decay=0.01)),
    "LAMB-no-decay": (lambda p: mge.LAMB(p, lr=0.01), lamb_ref(0.01)),
    "LAMB-always-adapt": (lambda p: mge.LAMB(p, 0.01, (0.8, 0.9), 1e-6, False, 0.0, True),
                          lamb_ref(0.01, (0.8, 0.9), 1e-6, False, 0.0, True)),
}


def dot(params, grads):
    """A loss whose gradient is ``grads``."""
    return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(grads)))


def assert_close(ours, ref, dtype, what):
    tol = tolerance(dtype)
    for (name, x), y in zip(fo.named_leaves(ours), jax.tree.leaves(ref)):
        assert x.dtype == np.dtype(dtype), (what, name, x.dtype)
        np.testing.assert_allclose(np.asarray(x, np.float64), y, err_msg=f"{what} {name}", **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_update_rule_matches_megengine(name, dtype):
    make, rule = CASES[name]
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ref_history, ref_states = run_reference(rule, params, grads)
        opt = make(jax.tree.map(jnp.asarray, params))
        for step, (g, ref) in enumerate(zip(grads, ref_history)):
            opt.backward(dot, jax.tree.map(jnp.asarray, g))
            assert opt.step() is opt
            opt.clear_grad()
            assert opt.grad is None
            assert_close(opt.params, ref, dtype, f"{name} step {step + 1}")
        # the state, field by field, under MegEngine's names (and its float 'step')
        sd = opt.state_dict()
        tol = tolerance(dtype)
        for i, ref_state in enumerate(ref_states):
            entry = sd["state"].get(i, {})  # MegEngine's SGD without momentum keeps no state
            expected = set(ref_state) | ({"step"} if not name.startswith("SGD") else set())
            assert set(entry) == expected, (name, set(entry))
            if "step" in entry:
                assert float(entry["step"]) == STEPS
            for key, value in ref_state.items():
                np.testing.assert_allclose(np.asarray(entry[key], np.float64),
                                           np.broadcast_to(value, entry[key].shape), err_msg=f"{name} {key}", **tol)


def test_adagrad_puts_eps_inside_the_square_root():
    opt = mge.Adagrad({"w": jnp.array([1.0])}, lr=1.0, eps=16.0)
    opt({"w": jnp.array([3.0])})
    np.testing.assert_allclose(opt.params["w"], [1.0 - 3.0 / math.sqrt(9.0 + 16.0)], rtol=1e-6)
    assert set(opt.state_dict()["state"][0]) == {"square_avg", "step"}


# ------------------------------------------------------------------------------------------ documented example


def test_documented_state_dict_example():
    # model = megengine.module.Linear(3, 2); optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    linear = {"weight": jnp.zeros((2, 3)), "bias": jnp.zeros(2)}
    optimizer = mge.SGD(linear, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    sd = optimizer.state_dict()
    group = sd["param_groups"][0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["params"]) == (0.001, 0.9, 0.0001, [0, 1])
    assert set(sd["state"]) == {0, 1}
    assert set(sd["state"][0]) == {"momentum_buffer"} and set(sd["state"][1]) == {"momentum_buffer"}
    np.testing.assert_array_equal(sd["state"][0]["momentum_buffer"], np.zeros(2, np.float32))
    np.testing.assert_array_equal(sd["state"][1]["momentum_buffer"], np.zeros((2, 3), np.float32))
    assert sd["state"][0]["momentum_buffer"].dtype == np.float32
    # the optimizer guide's loop: with gm: ... gm.backward(); optimizer.step().clear_grad()
    gm = mge.GradManager().attach(optimizer)
    x, y = jnp.ones((4, 3)), jnp.ones((4, 2))
    for _ in range(2):
        with gm:
            gm.backward(lambda p, x, y: jnp.mean((x @ p["weight"].T + p["bias"] - y) ** 2), x, y)
            optimizer.step().clear_grad()
    assert optimizer.grad is None
    assert np.any(np.asarray(optimizer.state_dict()["state"][0]["momentum_buffer"]) != 0)


def test_state_dict_round_trip_continues_the_trajectory():
    with precision(np.float64):
        params = make_params(np.float64)
        grads = make_grads(params, 10)
        a = mge.Adam(jax.tree.map(jnp.asarray, params), lr=0.01)
        for g in grads[:4]:
            a(g)
        b = mge.Adam(a.params, lr=0.5)
        b.load_state_dict(a.state_dict())
        assert b.param_groups[0]["lr"] == 0.01
        for g in grads[4:]:
            a(g)
            b(g)
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------ signatures, errors


SIGNATURES = {
    mge.SGD: "params, lr, momentum=0.0, nesterov=False, weight_decay=0.0",
    mge.Adam: "params, lr, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0",
    mge.AdamW: "params, lr, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01",
    mge.Adagrad: "params, lr=0.01, lr_decay=0.0, eps=1e-10, weight_decay=0.0",
    mge.Adadelta: "params, lr=1.0, rho=0.9, eps=1e-06, weight_decay=0.0",
    mge.LAMB: "params, lr, betas=(0.9, 0.999), eps=1e-08, bias_correction=True, weight_decay=0.0, "
              "always_adapt=False",
    mge.MultiStepLR: "optimizer, milestones, gamma=0.1, current_epoch=-1",
    mge.clip_grad_norm: "tensors, max_norm, ord=2.0",
    mge.clip_grad_value: "tensors, lower, upper",
    mge.GradScaler: "init_scale=16.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000",
}


@pytest.mark.parametrize("obj", list(SIGNATURES), ids=lambda o: o.__name__)
def test_signature_is_megengine(obj):
    parts = []
    for p in inspect.signature(obj).parameters.values():
        parts.append(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}")
    assert ", ".join(parts) == SIGNATURES[obj]


P = {"w": jnp.ones(2)}


@pytest.mark.parametrize("make, error, match", [
    (lambda: mge.SGD(P), TypeError, "lr"),  # lr has no default
    (lambda: mge.SGD(P, lr=-0.1), ValueError, "Invalid learning rate"),
    (lambda: mge.SGD(P, lr=0.1, momentum=-0.9), ValueError, "Invalid momentum value"),
    (lambda: mge.SGD(P, lr=0.1, weight_decay=-1.0), ValueError, "Invalid weight_decay value"),
    (lambda: mge.SGD(P, lr=0.1, nesterov=True), ValueError, "Nesterov momentum requires a momentum"),
    (lambda: mge.Adam(P, lr=0.1, betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0"),
    (lambda: mge.Adam(P, lr=0.1, betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1"),
    (lambda: mge.AdamW(P, lr=-1.0), ValueError, "Invalid learning rate"),
    (lambda: mge.Adagrad(P, lr_decay=-0.1), ValueError, "Invalid learning rate decay"),
    (lambda: mge.Adagrad(P, eps=-1.0), ValueError, "Invalid epsilon value"),
    (lambda: mge.Adadelta(P, rho=1.5), ValueError, "Invalid rho value"),
    (lambda: mge.LAMB(P, lr=0.1, weight_decay=-0.1), ValueError, "Invalid weight_decay value"),
    (lambda: mge.SGD({}, lr=0.1), ValueError, "empty parameter list"),
])
def test_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_step_returns_the_optimizer_and_without_gradients_steps_nothing():
    opt = mge.SGD({"w": jnp.ones(2)}, lr=0.5)
    assert opt.step() is opt  # MegEngine skips parameters without gradients
    np.testing.assert_array_equal(opt.params["w"], 1.0)
    opt.backward(lambda p: jnp.sum(p["w"]))
    assert opt.step().clear_grad() is opt
    np.testing.assert_allclose(opt.params["w"], 0.5)


# ------------------------------------------------------------------------------------------ MultiStepLR


def test_multistep_lr_follows_megengine():
    opt = mge.SGD([{"params": {"a": jnp.zeros(1)}}, {"params": {"b": jnp.zeros(1)}, "lr": 0.5}], lr=1.0)
    sched = mge.MultiStepLR(opt, milestones=[3, 6], gamma=0.1)
    assert [g["initial_lr"] for g in opt.param_groups] == [1.0, 0.5]
    assert sched.current_epoch == 0  # the constructor takes the first step
    got = []
    for _ in range(10):
        got.append([g["lr"] for g in opt.param_groups])
        opt([{"a": jnp.ones(1)}, {"b": jnp.ones(1)}])
        sched.step()
    expected = [[base * 0.1 ** bisect.bisect_right([3, 6], e) for base in (1.0, 0.5)] for e in range(10)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # the new rates reached the updates
    np.testing.assert_allclose(opt.params[0]["a"], -sum(row[0] for row in expected), rtol=1e-5)
    np.testing.assert_allclose(opt.params[1]["b"], -sum(row[1] for row in expected), rtol=1e-5)
    sched.step(epoch=1)
    assert opt.param_groups[0]["lr"] == 1.0
    assert sched.get_lr() == [1.0, 0.5]


def test_multistep_lr_state_dict_and_resume():
    opt = mge.SGD({"w": jnp.zeros(1)}, lr=1.0)
    sched = mge.MultiStepLR(opt, [2, 4], gamma=0.5)
    for _ in range(3):
        sched.step()
    sd = sched.state_dict()
    assert sd == {"milestones": [2, 4], "gamma": 0.5, "current_epoch": 3}
    fresh = mge.SGD({"w": jnp.zeros(1)}, lr=1.0)
    resumed = mge.MultiStepLR(fresh, [2, 4], gamma=0.5)
    resumed.load_state_dict(sd)
    resumed.step()
    sched.step()
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.25
    with pytest.raises(KeyError):
        resumed.load_state_dict({"milestones": [1], "gamma": 0.5})
    assert resumed.milestones == [2, 4]  # unchanged by the failed load
    # resuming with current_epoch needs initial_lr in every group
    with pytest.raises(KeyError):
        mge.MultiStepLR(mge.SGD({"w": jnp.zeros(1)}, lr=1.0), [2], current_epoch=3)
    again = mge.MultiStepLR(opt, [2, 4], gamma=0.5, current_epoch=4)
    assert again.current_epoch == 5 and opt.param_groups[0]["lr"] == 0.25


def test_multistep_lr_errors():
    opt = mge.SGD({"w": jnp.zeros(1)}, lr=1.0)
    with pytest.raises(ValueError):
        mge.MultiStepLR(opt, [5, 2])
    with pytest.raises(TypeError):
        mge.MultiStepLR(object(), [2])


# ------------------------------------------------------------------------------------------ clipping


def grads_tree():
    return {"a": jnp.array([3.0, -4.0]), "b": jnp.array(12.0), "c": jnp.array([[1.0, -2.0], [0.5, 0.0]])}


@pytest.mark.parametrize("ord", [2.0, 1.0, float("inf"), "inf", 3.0])
@pytest.mark.parametrize("max_norm", [1.0, 100.0])
def test_clip_grad_norm(ord, max_norm):
    g = grads_tree()
    flat = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(g)])
    p = float(ord)
    total = np.max(np.abs(flat)) if math.isinf(p) else np.sum(np.abs(flat) ** p) ** (1 / p)
    scale = min(max_norm / (total + 1e-6), 1.0)
    # a pytree of gradients: (clipped, total norm)
    clipped, norm = mge.clip_grad_norm(g, max_norm, ord=ord)
    np.testing.assert_allclose(float(norm), total, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(clipped), jax.tree.leaves(g)):
        np.testing.assert_allclose(x, np.asarray(y) * scale, rtol=1e-6)
    # an optimizer's accumulated gradients, in place; the total norm is returned
    opt = mge.SGD(jax.tree.map(jnp.zeros_like, g), lr=0.1)
    opt.backward(dot, g)
    gm = mge.GradManager().attach(opt)
    norm = mge.clip_grad_norm(gm if max_norm == 1.0 else opt, max_norm, ord)
    np.testing.assert_allclose(float(norm), total, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(opt.grad), jax.tree.leaves(g)):
        np.testing.assert_allclose(x, np.asarray(y) * scale, rtol=1e-6)


def test_clip_grad_norm_without_gradients_is_zero():
    opt = mge.SGD({"w": jnp.ones(2)}, lr=0.1)
    assert float(mge.clip_grad_norm(opt, 1.0)) == 0.0
    assert opt.grad is None


def test_clip_grad_value():
    g = grads_tree()
    out = mge.clip_grad_value(g, -1.0, 2.0)
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(g)):
        np.testing.assert_array_equal(x, np.clip(np.asarray(y), -1.0, 2.0))
    opt = mge.SGD(jax.tree.map(jnp.zeros_like, g), lr=0.1)
    opt.backward(dot, g)
    assert mge.clip_grad_value([opt], -0.5, 0.25) is None
    for x, y in zip(jax.tree.leaves(opt.grad), jax.tree.leaves(g)):
        np.testing.assert_array_equal(x, np.clip(np.asarray(y), -0.5, 0.25))
    assert mge.clip_grad_value(mge.SGD({"w": jnp.ones(1)}, lr=0.1), -1.0, 1.0) is None  # no gradients: nothing


# ------------------------------------------------------------------------------------------ GradManager


def loss_fn(p, x):
    return jnp.sum(jnp.tanh(p["w"] * x) ** 2) + jnp.sum(p["b"] * x[:2])


def test_grad_manager_accumulates_like_megengine():
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([0.1, 0.2])}
    xs = [jnp.array([1.0, 2.0, -1.0]), jnp.array([0.5, -0.5, 3.0])]
    opt = mge.SGD(params, lr=0.1)
    gm = mge.GradManager()
    assert gm.attach(opt) is gm and gm.attached_tensors() == [opt]
    losses = []
    for x in xs:
        with gm:
            losses.append(gm.backward(loss_fn, x))
    expected = jax.tree.map(lambda a, b: a + b, *[jax.grad(loss_fn)(params, x) for x in xs])
    for x, y in zip(jax.tree.leaves(opt.grad), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    np.testing.assert_allclose(losses, [loss_fn(params, x) for x in xs], rtol=1e-6)


def test_grad_manager_callbacks():
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([0.1, 0.2])}
    x = jnp.array([1.0, 2.0, -1.0])
    opt = mge.SGD(params, lr=0.1)
    gm = mge.GradManager().attach(opt, callbacks=[lambda p, g: g + p])
    gm.attach(opt, callbacks=lambda p, g: 3.0 * g)  # attaching again appends: f then g
    for _ in range(2):
        with gm:
            gm.backward(loss_fn, x)
    raw = jax.grad(loss_fn)(params, x)
    for got, r, p in zip(jax.tree.leaves(opt.grad), jax.tree.leaves(raw), jax.tree.leaves(params)):
        np.testing.assert_allclose(got, 2 * 3.0 * (np.asarray(r) + np.asarray(p)), rtol=1e-6)


def test_grad_manager_dy_and_aux():
    params = {"w": jnp.array([1.0, 2.0])}
    opt = mge.SGD(params, lr=0.1)
    gm = mge.GradManager().attach(opt)
    with gm:
        y = gm.backward(lambda p: p["w"] ** 2, dy=jnp.array([1.0, -3.0]))  # a vector y: the vector-Jacobian product
    np.testing.assert_allclose(y, [1.0, 4.0])
    np.testing.assert_allclose(opt.grad["w"], [2.0, -12.0])
    opt.clear_grad()
    with gm:
        loss, aux = gm.backward(lambda p, s: (s * jnp.sum(p["w"]), p["w"] * 10), 2.0, dy=0.5, has_aux=True)
    np.testing.assert_allclose(aux, [10.0, 20.0])
    assert float(loss) == 6.0
    np.testing.assert_allclose(opt.grad["w"], [1.0, 1.0])


def test_grad_manager_record_release_and_errors():
    opt = mge.SGD({"w": jnp.ones(2)}, lr=0.1)
    gm = mge.GradManager()
    with pytest.raises(RuntimeError):
        gm.backward(lambda p: jnp.sum(p["w"]))  # nothing attached
    gm.attach(opt)
    with pytest.raises(RuntimeError, match="no computation history"):
        gm.backward(lambda p: jnp.sum(p["w"]))
    gm.record()
    with pytest.raises(RuntimeError, match="already recording"):
        gm.record()
    gm.backward(lambda p: jnp.sum(p["w"]))
    with pytest.raises(RuntimeError):
        gm.backward(lambda p: jnp.sum(p["w"]))  # backward() ends the recording
    gm.record()
    gm.release()
    with pytest.raises(RuntimeError):
        gm.backward(lambda p: jnp.sum(p["w"]))
    np.testing.assert_allclose(opt.grad["w"], [1.0, 1.0])
    with pytest.raises(TypeError):
        gm.attach({"w": jnp.ones(2)})
    with pytest.raises(ValueError):
        gm.attach(mge.SGD({"v": jnp.ones(2)}, lr=0.1))
    with pytest.raises(TypeError):
        mge.GradManager().attach(opt, callbacks=[3])


# ------------------------------------------------------------------------------------------ GradScaler


def megengine_scaler(finite_steps, init_scale, growth_factor, backoff_factor, growth_interval):
    """GradScaler.update as MegEngine writes it."""
    scale, tracker, out = init_scale, 0, []
    for finite in finite_steps:
        if not finite:
            scale *= backoff_factor
            tracker = 0
        else:
            tracker += 1
            if tracker >= growth_interval:
                scale *= growth_factor
                tracker = 0
        out.append((scale, tracker))
    return out


def test_grad_scaler_scale_sequence_with_overflows():
    # the gradient 1e37 is finite, but times the scale it overflows float32 once the scale reaches 64
    opt = mge.SGD({"w": jnp.zeros(1)}, lr=0.0)
    gm = mge.GradManager().attach(opt)
    scaler = mge.GradScaler(init_scale=8.0, growth_factor=2.0, backoff_factor=0.25, growth_interval=2)

    def linear(p, c):
        return c * jnp.sum(p["w"])

    finite_steps, got = [], []
    for step in range(20):
        big = step % 3 == 2
        with gm:
            scaler.backward(gm, linear, jnp.float32(1e37 if big else 1.0))
        finite_steps.append(opt.grad is not None)  # unscale() dropped the gradients on an overflow
        if opt.grad is not None:
            np.testing.assert_allclose(opt.grad["w"], [1e37 if big else 1.0], rtol=1e-6)  # unscaled
            opt.step().clear_grad()
        got.append((scaler.scale_factor, scaler.state_dict()["_growth_tracker"]))
    assert not all(finite_steps) and any(finite_steps)
    assert got == megengine_scaler(finite_steps, 8.0, 2.0, 0.25, 2)


def test_grad_scaler_split_backward_unscale_update():
    params = {"w": jnp.array([1.0, -2.0])}
    opt = mge.SGD(params, lr=0.1)
    gm = mge.GradManager().attach(opt)
    scaler = mge.GradScaler()
    assert scaler.scale_factor == 16.0
    for _ in range(2):  # accumulate two scaled micro-batches, then unscale once
        with gm:
            loss = scaler.backward(gm, lambda p: jnp.sum(p["w"] ** 2), unscale_grad=False)
    assert float(loss) == 5.0
    np.testing.assert_allclose(opt.grad["w"], 2 * 16.0 * np.array([2.0, -4.0]))
    assert scaler.unscale(gm) is scaler
    np.testing.assert_allclose(opt.grad["w"], 2 * np.array([2.0, -4.0]))
    scaler.update()
    assert scaler.state_dict()["_growth_tracker"] == 1
    scaler.update(new_scale=4.0)
    assert scaler.scale_factor == 4.0


def test_grad_scaler_fixed_scale_and_state_dict():
    scaler = mge.GradScaler(init_scale=4.0, growth_interval=0)
    opt = mge.SGD({"w": jnp.zeros(1)}, lr=0.1)
    opt.backward(lambda p: 4.0 * jnp.sum(p["w"]) * jnp.inf)
    scaler.unscale(opt)  # growth_interval=0: no finiteness check, the gradients are only divided
    assert opt.grad is not None
    scaler.update()
    assert scaler.scale_factor == 4.0
    sd = mge.GradScaler(init_scale=32.0, growth_interval=3).state_dict()
    assert sd == {"scale_factor": 32.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 3,
                  "_growth_tracker": 0}
    other = mge.GradScaler()
    other.load_state_dict({**sd, "_growth_tracker": 2})
    assert other.scale_factor == 32.0 and other.growth_interval == 3
    other.update()
    assert other.scale_factor == 64.0 and other.state_dict()["_growth_tracker"] == 0
    with pytest.raises(TypeError):
        scaler.unscale({"w": jnp.ones(1)})


def test_megengine_training_loop_matches_reference():
    """GradManager + SGD + clip_grad_norm + MultiStepLR, against the same loop written with jax.grad."""
    with precision(np.float64):
        rng = np.random.default_rng(0)
        params = {"w": jnp.asarray(rng.standard_normal((3, 2))), "b": jnp.zeros(2)}
        data = [(jnp.asarray(rng.standard_normal((4, 3))), jnp.asarray(rng.standard_normal((4, 2))))
                for _ in range(12)]

        def mse(p, x, y):
            return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

        opt = mge.SGD(params, lr=0.2, momentum=0.9)
        gm = mge.GradManager().attach(opt)
        sched = mge.MultiStepLR(opt, [4, 8], gamma=0.5)
        ref_p, ref_v = params, jax.tree.map(jnp.zeros_like, params)
        for epoch, (x, y) in enumerate(data):
            with gm:
                gm.backward(mse, x, y)
            mge.clip_grad_norm(opt, 0.5)
            opt.step().clear_grad()
            sched.step()
            g = jax.grad(mse)(ref_p, x, y)
            total = float(fo.global_norm(g))
            coef = min(0.5 / (total + 1e-6), 1.0)
            g = jax.tree.map(lambda a, c=coef: a * c, g)
            lr = 0.2 * 0.5 ** bisect.bisect_right([4, 8], epoch)
            ref_v = jax.tree.map(lambda v, a: 0.9 * v + a, ref_v, g)
            ref_p = jax.tree.map(lambda p, v, lr=lr: p - lr * v, ref_p, ref_v)
        for x, y in zip(jax.tree.leaves(opt.params), jax.tree.leaves(ref_p)):
            np.testing.assert_allclose(x, y, rtol=1e-10)


def test_grad_scaler_backoff_has_no_lower_bound():
    # MegEngine multiplies by backoff_factor on every overflow (MindSpore's manager would stop at 1)
    opt = mge.SGD({"w": jnp.zeros(1)}, lr=0.1)
    gm = mge.GradManager().attach(opt)
    scaler = mge.GradScaler(init_scale=2.0, growth_interval=100)

    def overflowing(p, c):
        return c * jnp.sum(p["w"])

    scales = []
    for _ in range(3):
        with gm:
            scaler.backward(gm, overflowing, jnp.float32(jnp.inf))
        assert opt.grad is None
        scales.append(scaler.scale_factor)
    assert scales == [1.0, 0.5, 0.25]


def test_migration_guide_code_runs():
    """The python blocks of docs/migration_megengine.md, in order, in one namespace."""
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[2] / "docs" / "migration_megengine.md"
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "migration_megengine"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"migration_megengine.md block {i + 1}", "exec"), namespace)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_megengine_functional(dtype):
    """The functional rule behind mge.Adagrad, jitted, with a scheduled learning rate."""
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, 30)
        tx = adagrad_megengine(lr=fo.schedules.step(0.1, step_size=10, gamma=0.5), lr_decay=0.02, eps=0.3,
                               weight_decay=0.01)
        ours, state = run_funcopt(tx, params, grads)

        def rule(p, g, s, t):
            lr = 0.1 * 0.5 ** ((t - 1) // 10)
            return adagrad_ref(lr, 0.02, 0.3, 0.01)(p, g, s, t)

        ref, ref_states = run_reference(rule, params, grads)
        for step, (a, b) in enumerate(zip(ours, ref)):
            assert_close(a, b, dtype, f"step {step + 1}")
        for x, s in zip(jax.tree.leaves(state.slots["square_avg"]), ref_states):
            np.testing.assert_allclose(np.asarray(x, np.float64), s["square_avg"], **tolerance(dtype))


def test_grad_scaler_arguments():
    assert mge.GradScaler(init_scale=0.25).scale_factor == 0.25
    for kwargs in [dict(growth_factor=0.0), dict(growth_interval=-1), dict(growth_interval=2.5)]:
        with pytest.raises(ValueError):
            mge.GradScaler(**kwargs)
