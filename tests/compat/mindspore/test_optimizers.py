"""fo.compat.mindspore against MindSpore's documented formulas, examples and errors.

Each reference below is written out in NumPy from MindSpore's documentation (the
formula on the optimizer's page, or on the page of the kernel it runs where the two
differ, as noted), with the steps of MindSpore's ``construct``: the weight decay is
added to the loss-scaled gradients with ``weight_decay * loss_scale`` on the
parameters of ``decay_flags``, then the gradients are centralized, then multiplied
by ``1 / loss_scale``, then the rule runs with the learning rate of ``global_step``.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import mindspore as ms
from funcopt.optimizers.adam import adam_mindspore, adam_weight_decay
from funcopt.optimizers.adamax import adamax_mindspore
from funcopt.optimizers.rmsprop import rmsprop_mindspore
from tests.reference.harness import make_grads, make_params, precision, run_funcopt, tolerance

STEPS = 25
DTYPES = [np.float32, np.float64]

# a conv kernel whose second dimension is a multiple of 16 (MindSpore centralizes only those), a matrix
# and a 3-d tensor that are not, norm layer parameters the default decay filter skips, a 1-element and a
# 0-d leaf
SHAPES = {"conv": {"weight": (3, 16, 2)}, "bn": {"gamma": (3,), "beta": (3,)},
          "fc": {"weight": (4, 3), "bias": (1,)}, "cube": (2, 3, 2), "scale": ()}


def setup(dtype, seed=0, steps=STEPS, scale=1.0):
    params = make_params(dtype, seed=seed, shapes=SHAPES)
    grads = make_grads(params, steps, seed=seed + 1, scale=scale)
    return params, grads


def names_of(params):
    return fo.param_names(params)


# ------------------------------------------------------------------------------------------ references


def centralized(g):
    if g.ndim < 2 or g.shape[1] % 16 != 0:
        return g
    return g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True)


def reference(params, grads, rule, lr, *, weight_decay=0.0, loss_scale=1.0, decay_flags=None, gc_flags=None,
              pre_decay=True, init=None):
    """MindSpore's construct in float64 NumPy; ``rule(p, g, state, lr, t, k)`` returns (p, state)."""
    names = names_of(params)
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    treedef = jax.tree.structure(params)
    decay_flags = decay_flags or [True] * len(leaves)
    gc_flags = gc_flags or [False] * len(leaves)
    states = [init(p) if init else {} for p in leaves]
    history = []
    for t, grad_tree in enumerate(grads, start=1):
        lr_t = lr(t - 1)
        wd = weight_decay(t - 1) if callable(weight_decay) else weight_decay
        for k, g in enumerate(jax.tree.leaves(grad_tree)):
            g = np.asarray(g, np.float64)
            if pre_decay and decay_flags[k]:
                g = g + wd * loss_scale * leaves[k]
            if gc_flags[k]:
                g = centralized(g)
            g = g * (1.0 / loss_scale)
            leaves[k], states[k] = rule(leaves[k], g, states[k], lr_t, t, k, wd, decay_flags[k])
        history.append(treedef.unflatten([p.copy() for p in leaves]))
    return history, states, names


def filter_flags(params):
    return ["beta" not in n and "gamma" not in n for n in names_of(params)]


def momentum_rule(u, nesterov=False):
    # v_{t+1} = v_t * u + grad; p -= lr * v, or p -= grad * lr + v * u * lr
    def rule(p, g, s, lr, t, k, wd, flag):
        v = s.get("v", np.zeros_like(p)) * u + g
        p = p - (g * lr + v * u * lr) if nesterov else p - lr * v
        return p, {"v": v}
    return rule


def sgd_rule(u, dampening, nesterov):
    # the SGD kernel: the weight decay, then v = g at the first step, else u * v + (1 - dampening) * g
    def rule(p, g, s, lr, t, k, wd, flag):
        g = g + wd * p
        state = {}
        if u > 0:
            v = g if t == 1 else u * s["v"] + (1 - dampening) * g
            state = {"v": v}
            g = g + u * v if nesterov else v
        return p - lr * g, state
    return rule


def adam_kernel_rule(b1, b2, eps, nesterov=False, amsgrad=False):
    # ops.Adam / ops.ApplyAdamWithAmsgrad: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); p -= lr_t * m / (sqrt(v) + eps)
    def rule(p, g, s, lr, t, k, wd, flag):
        m = b1 * s.get("m", 0.0) + (1 - b1) * g
        v = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        state = {"m": m, "v": v}
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        if amsgrad:
            vhat = np.maximum(s.get("vhat", np.zeros_like(p)), v)
            state["vhat"] = vhat
            return p - lr_t * m / (np.sqrt(vhat) + eps), state
        num = m * b1 + (1 - b1) * g if nesterov else m
        return p - lr_t * num / (np.sqrt(v) + eps), state
    return rule


def adam_weight_decay_rule(b1, b2, eps):
    # update = m / (eps + sqrt(v)) (+ wd * p on decay_flags); p -= lr * update
    def rule(p, g, s, lr, t, k, wd, flag):
        m = b1 * s.get("m", 0.0) + (1 - b1) * g
        v = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        update = m / (eps + np.sqrt(v))
        if flag:
            update = update + wd * p
        return p - lr * update, {"m": m, "v": v}
    return rule


def adamax_rule(b1, b2, eps):
    # m = b1 m + (1 - b1) g; v = max(b2 v, |g|); w -= lr / (1 - b1^t) * m / (v + eps)
    def rule(p, g, s, lr, t, k, wd, flag):
        m = b1 * s.get("m", 0.0) + (1 - b1) * g
        v = np.maximum(b2 * s.get("v", np.zeros_like(p)), np.abs(g))
        return p - lr / (1 - b1**t) * m / (v + eps), {"m": m, "v": v}
    return rule


def adagrad_rule(accum, update_slots=True):
    # ops.ApplyAdagrad: accum += g * g (if update_slots); var -= lr * g / sqrt(accum)
    def rule(p, g, s, lr, t, k, wd, flag):
        h = s.get("h", np.full_like(p, accum))
        if update_slots:
            h = h + g * g
        return p - lr * g / np.sqrt(h), {"h": h}
    return rule


def adadelta_rule(rho, eps):
    # accum = rho accum + (1 - rho) g^2; update = sqrt(accum_update + eps) / sqrt(accum + eps) * g;
    # accum_update = rho accum_update + (1 - rho) update^2; var -= lr * update
    def rule(p, g, s, lr, t, k, wd, flag):
        a = rho * s.get("a", 0.0) + (1 - rho) * g * g
        upd = np.sqrt(s.get("d", 0.0) + eps) / np.sqrt(a + eps) * g
        d = rho * s.get("d", 0.0) + (1 - rho) * upd * upd
        return p - lr * upd, {"a": a, "d": d}
    return rule


def rmsprop_rule(decay, momentum, eps, centered):
    # s = decay s + (1 - decay) g^2 (s starts at ones); m = momentum m + lr g / sqrt(s [- mg^2] + eps); w -= m
    def rule(p, g, s, lr, t, k, wd, flag):
        ms_ = decay * s.get("ms", np.ones_like(p)) + (1 - decay) * g * g
        state = {"ms": ms_}
        denom = ms_ + eps
        if centered:
            mg = decay * s.get("mg", 0.0) + (1 - decay) * g
            state["mg"] = mg
            denom = ms_ - mg * mg + eps
        mom = momentum * s.get("mom", 0.0) + lr * g / np.sqrt(denom)
        state["mom"] = mom
        return p - mom, state
    return rule


def rprop_rule(etas, step_sizes):
    # nn.Rprop's construct: the step size starts at the learning rate of the first step
    etaminus, etaplus = etas

    def rule(p, g, s, lr, t, k, wd, flag):
        step_size = np.full_like(p, lr) if t == 1 else s["step_size"]
        prev = s.get("prev", np.zeros_like(p))
        sign = np.sign(g * prev)
        factor = np.where(sign > 0, etaplus, np.where(sign < 0, etaminus, 1.0))
        step_size = np.clip(step_size * factor, step_sizes[0], step_sizes[1])
        g = np.where(factor == etaminus, 0.0, g)
        return p - np.sign(g) * step_size, {"step_size": step_size, "prev": g}
    return rule


def asgd_rule(lambd, alpha, t0):
    # w = w (1 - lambd eta) - eta g; ax; eta = lr / (1 + lambd lr t)^alpha; mu = 1 / max(1, t - t0)
    def rule(p, g, s, lr, t, k, wd, flag):
        eta = lr if t == 1 else s["eta"]
        mu = s.get("mu", 1.0)
        p = p * (1 - lambd * eta) - eta * g
        ax = p.copy() if mu == 1 else s["ax"] + (p - s["ax"]) * mu
        return p, {"eta": lr / (1 + lambd * lr * t) ** alpha, "mu": 1 / max(1.0, t - t0), "ax": ax}
    return rule


def ftrl_rule(initial_accum, lr_power, l1, l2):
    # m_{t+1} = m_t + g^2; u_{t+1} = u_t + g - (m_{t+1}^-p - m_t^-p) / lr * w;
    # w = (sign(u) l1 - u) / (m_{t+1}^-p / lr + 2 l2) if |u| > l1 else 0
    def rule(p, g, s, lr, t, k, wd, flag):
        m = s.get("m", np.full_like(p, initial_accum))
        u = s.get("u", np.zeros_like(p))
        m_new = m + g * g
        u = u + g - (m_new ** -lr_power - m ** -lr_power) / lr * p
        p = np.where(np.abs(u) > l1, (np.sign(u) * l1 - u) / (m_new ** -lr_power / lr + 2 * l2), 0.0)
        return p, {"m": m_new, "u": u}
    return rule


def proximal_adagrad_rule(accum, l1, l2):
    # ops.ApplyProximalAdagrad's kernel: the Adagrad rate lr / sqrt(accum) also in the shrinkage (the page's
    # formula writes lr there; both kernels, TensorFlow's and MindSpore's, use the per-coordinate rate)
    def rule(p, g, s, lr, t, k, wd, flag):
        a = s.get("a", np.full_like(p, accum)) + g * g
        eta = lr / np.sqrt(a)
        prox = p - eta * g
        return np.sign(prox) / (1 + eta * l2) * np.maximum(np.abs(prox) - eta * l1, 0.0), {"a": a}
    return rule


def lamb_rule(b1, b2, eps):
    # r = m_hat / (sqrt(v_hat) + eps); w -= lr * ||w|| / ||r + wd w|| * (r + wd w)
    def rule(p, g, s, lr, t, k, wd, flag):
        m = b1 * s.get("m", 0.0) + (1 - b1) * g
        v = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        if flag:
            r = r + wd * p
        w_norm, r_norm = np.linalg.norm(p.ravel()), np.linalg.norm(r.ravel())
        trust = w_norm / r_norm if w_norm > 0 and r_norm > 0 else 1.0
        return p - lr * trust * r, {"m": m, "v": v}
    return rule


def lars_momentum_rule(u, coefficient, eps, lars_flags, nesterov=False, use_clip=False):
    # LARSUpdate: trust = coef ||w|| / (||g|| + wd ||w|| + eps); g = trust (g + wd w); then ApplyMomentum
    def rule(p, g, s, lr, t, k, wd, flag):
        if lars_flags[k]:
            wd_k = wd if flag else 0.0
            w_norm, g_norm = np.linalg.norm(p.ravel()), np.linalg.norm(g.ravel())
            trust = coefficient * w_norm / (g_norm + wd_k * w_norm + eps)
            if use_clip:
                trust = min(max(trust / lr, 0.0), 1.0)
            g = trust * (g + wd_k * p)
        v = s.get("v", np.zeros_like(p)) * u + g
        p = p - (g * lr + v * u * lr) if nesterov else p - lr * v
        return p, {"v": v}
    return rule


def assert_trajectory(opt, grads, ref_history, dtype, what=""):
    tol = tolerance(dtype)
    for step, (g, ref) in enumerate(zip(grads, ref_history)):
        out = opt(jax.tree.map(jnp.asarray, g))
        assert out == tuple(True for _ in jax.tree.leaves(ref)), out
        for (name, x), y in zip(fo.named_leaves(opt.parameters), jax.tree.leaves(ref)):
            assert x.dtype == np.dtype(dtype), (what, name, x.dtype)
            np.testing.assert_allclose(np.asarray(x, np.float64), y, err_msg=f"{what} step {step + 1} {name}", **tol)
    assert opt.global_step == len(grads)


def scaled(grads, loss_scale):
    return [jax.tree.map(lambda g: (g * loss_scale).astype(g.dtype), tree) for tree in grads]


def constant(value):
    return lambda t: value


# ------------------------------------------------------------------------------------------ update rules

LR_LIST = [0.05 * (0.9**i) for i in range(STEPS - 5)]  # shorter than the run: the last value is held


def list_lr(t):
    return LR_LIST[min(t, len(LR_LIST) - 1)]


RULE_CASES = {
    "Momentum": (lambda p: ms.Momentum(p, 0.05, 0.9, weight_decay=0.01, loss_scale=4.0),
                 dict(rule=momentum_rule(0.9), lr=constant(0.05), weight_decay=0.01, loss_scale=4.0)),
    "Momentum-nesterov-list-lr": (
        lambda p: ms.Momentum(p, LR_LIST, 0.8, weight_decay=0.02, use_nesterov=True),
        dict(rule=momentum_rule(0.8, nesterov=True), lr=list_lr, weight_decay=0.02)),
    "Momentum-schedule-wd": (
        lambda p: ms.Momentum(p, ms.ExponentialDecayLR(0.05, 0.9, 4), 0.9,
                              weight_decay=ms.WarmUpLR(0.02, 5)),
        dict(rule=momentum_rule(0.9), lr=lambda t: 0.05 * 0.9 ** (t / 4), weight_decay=lambda t: 0.02 * min(t, 5) / 5)),
    "SGD": (lambda p: ms.SGD(p, 0.05, momentum=0.9, dampening=0.3, weight_decay=0.01, loss_scale=8.0),
            dict(rule=sgd_rule(0.9, 0.3, False), lr=constant(0.05), weight_decay=0.01, loss_scale=8.0,
                 pre_decay=False, decay_flags="all")),
    "SGD-nesterov": (lambda p: ms.SGD(p, momentum=0.9, nesterov=True),
                     dict(rule=sgd_rule(0.9, 0.0, True), lr=constant(0.1), pre_decay=False)),
    "SGD-plain": (lambda p: ms.SGD(p, 0.03, weight_decay=0.1),
                  dict(rule=sgd_rule(0.0, 0.0, False), lr=constant(0.03), weight_decay=0.1, pre_decay=False,
                       decay_flags="all")),
    "Adam": (lambda p: ms.Adam(p, 0.01, weight_decay=0.01, loss_scale=2.0),
             dict(rule=adam_kernel_rule(0.9, 0.999, 1e-8), lr=constant(0.01), weight_decay=0.01, loss_scale=2.0)),
    "Adam-nesterov": (lambda p: ms.Adam(p, 0.01, beta1=0.8, beta2=0.95, eps=1e-3, use_nesterov=True),
                      dict(rule=adam_kernel_rule(0.8, 0.95, 1e-3, nesterov=True), lr=constant(0.01))),
    "Adam-amsgrad": (lambda p: ms.Adam(p, LR_LIST, eps=1e-6, use_amsgrad=True, weight_decay=0.05),
                     dict(rule=adam_kernel_rule(0.9, 0.999, 1e-6, amsgrad=True), lr=list_lr, weight_decay=0.05)),
    "AdamWeightDecay": (lambda p: ms.AdamWeightDecay(p, 0.01, beta1=0.8, beta2=0.9, weight_decay=0.1),
                        dict(rule=adam_weight_decay_rule(0.8, 0.9, 1e-6), lr=constant(0.01), weight_decay=0.1,
                             pre_decay=False)),
    "AdaMax": (lambda p: ms.AdaMax(p, 0.01, eps=1e-4, weight_decay=0.01, loss_scale=16.0),
               dict(rule=adamax_rule(0.9, 0.999, 1e-4), lr=constant(0.01), weight_decay=0.01, loss_scale=16.0)),
    "Adagrad": (lambda p: ms.Adagrad(p, accum=0.2, learning_rate=0.05, weight_decay=0.01),
                dict(rule=adagrad_rule(0.2), lr=constant(0.05), weight_decay=0.01)),
    "Adagrad-no-update-slots": (lambda p: ms.Adagrad(p, accum=0.5, learning_rate=0.05, update_slots=False),
                                dict(rule=adagrad_rule(0.5, update_slots=False), lr=constant(0.05))),
    "Adadelta": (lambda p: ms.Adadelta(p, 0.5, rho=0.8, epsilon=1e-4, weight_decay=0.01, loss_scale=2.0),
                 dict(rule=adadelta_rule(0.8, 1e-4), lr=constant(0.5), weight_decay=0.01, loss_scale=2.0)),
    "RMSProp": (lambda p: ms.RMSProp(p, 0.01, decay=0.8, momentum=0.5, epsilon=1e-6, weight_decay=0.01),
                dict(rule=rmsprop_rule(0.8, 0.5, 1e-6, False), lr=constant(0.01), weight_decay=0.01)),
    "RMSProp-centered": (lambda p: ms.RMSProp(p, LR_LIST, decay=0.9, centered=True, loss_scale=4.0),
                         dict(rule=rmsprop_rule(0.9, 0.0, 1e-10, True), lr=list_lr, loss_scale=4.0)),
    "Rprop": (lambda p: ms.Rprop(p, 0.01, etas=(0.4, 1.3), step_sizes=(1e-4, 0.02), weight_decay=0.01),
              dict(rule=rprop_rule((0.4, 1.3), (1e-4, 0.02)), lr=constant(0.01), weight_decay=0.01)),
    "ASGD": (lambda p: ms.ASGD(p, 0.05, lambd=0.01, alpha=0.75, t0=10.0, weight_decay=0.01),
             dict(rule=asgd_rule(0.01, 0.75, 10.0), lr=constant(0.05), weight_decay=0.01)),
    "FTRL": (lambda p: ms.FTRL(p, initial_accum=0.1, learning_rate=0.05, l1=0.01, l2=0.02, weight_decay=0.01),
             dict(rule=ftrl_rule(0.1, -0.5, 0.01, 0.02), lr=constant(0.05), weight_decay=0.01, decay_flags="all")),
    "FTRL-lr-power": (lambda p: ms.FTRL(p, initial_accum=0.5, learning_rate=0.1, lr_power=-0.25, loss_scale=2.0),
                      dict(rule=ftrl_rule(0.5, -0.25, 0.0, 0.0), lr=constant(0.1), loss_scale=2.0)),
    "ProximalAdagrad": (lambda p: ms.ProximalAdagrad(p, accum=0.1, learning_rate=0.05, l1=0.01, l2=0.05,
                                                     weight_decay=0.01),
                        dict(rule=proximal_adagrad_rule(0.1, 0.01, 0.05), lr=constant(0.05), weight_decay=0.01)),
    "Lamb": (lambda p: ms.Lamb(p, 0.01, beta1=0.8, beta2=0.95, weight_decay=0.1),
             dict(rule=lamb_rule(0.8, 0.95, 1e-6), lr=constant(0.01), weight_decay=0.1, pre_decay=False)),
}


def run_case(name, dtype):
    make, spec = RULE_CASES[name]
    spec = dict(spec)
    params, grads = setup(dtype)
    loss_scale = spec.get("loss_scale", 1.0)
    flags = spec.pop("decay_flags", None)
    spec["decay_flags"] = None if flags == "all" else filter_flags(params)
    ref_history, ref_states, _ = reference(params, scaled(grads, loss_scale), **spec)
    opt = make(jax.tree.map(jnp.asarray, params))
    assert_trajectory(opt, scaled(grads, loss_scale), ref_history, dtype, name)
    return opt, ref_states


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(RULE_CASES))
def test_update_rule_matches_documented_formula(name, dtype):
    with precision(dtype):
        run_case(name, dtype)


STATE_NAMES = {"Momentum": {"momentum_buffer": "v"}, "Adam-amsgrad": {"exp_avg": "m", "exp_avg_sq": "v",
                                                                       "max_exp_avg_sq": "vhat"},
               "RMSProp-centered": {"square_avg": "ms", "grad_avg": "mg", "momentum_buffer": "mom"},
               "Rprop": {"prev": "prev", "step_size": "step_size"}, "ASGD": {"ax": "ax", "eta": "eta", "mu": "mu"},
               "FTRL": {"accum": "m", "linear": "u"}, "ProximalAdagrad": {"accum": "a"},
               "Adagrad": {"sum": "h"}, "Adadelta": {"square_avg": "a", "acc_delta": "d"},
               "AdaMax": {"exp_avg": "m", "exp_inf": "v"}, "AdamWeightDecay": {"exp_avg": "m", "exp_avg_sq": "v"}}


@pytest.mark.parametrize("name", list(STATE_NAMES))
def test_state_matches_reference_field_by_field(name):
    with precision(np.float64):
        opt, ref_states = run_case(name, np.float64)
        names = names_of(opt.parameters)
        for ours, theirs in STATE_NAMES[name].items():
            for k, pname in enumerate(names):
                np.testing.assert_allclose(np.asarray(opt.state[pname][ours], np.float64),
                                           np.broadcast_to(ref_states[k][theirs], np.shape(opt.state[pname][ours])),
                                           rtol=1e-10, atol=1e-12, err_msg=f"{name} {ours} of {pname}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov, use_clip", [(False, False), (True, False), (False, True)])
def test_lars_over_momentum(dtype, nesterov, use_clip):
    with precision(dtype):
        params, grads = setup(dtype)
        names = names_of(params)
        lars_flags = ["LayerNorm" not in n and "bias" not in n for n in names]
        loss_scale = 2.0
        ref_history, _, _ = reference(params, scaled(grads, loss_scale),
                                      lars_momentum_rule(0.9, 0.02, 1e-5, lars_flags, nesterov, use_clip),
                                      constant(0.1), weight_decay=0.01, loss_scale=loss_scale, pre_decay=False,
                                      decay_flags=filter_flags(params))
        inner = ms.Momentum(jax.tree.map(jnp.asarray, params), 0.1, 0.9, weight_decay=0.01, loss_scale=loss_scale,
                            use_nesterov=nesterov)
        opt = ms.LARS(inner, epsilon=1e-5, coefficient=0.02, use_clip=use_clip)
        assert opt.lars_flag == tuple(lars_flags)
        assert_trajectory(opt, scaled(grads, loss_scale), ref_history, dtype, "LARS")


def test_lars_filter_receives_named_parameters():
    params = {"layer": {"LayerNorm": {"gamma": jnp.ones(3)}, "weight": jnp.ones((3, 3))}, "head": jnp.ones((2, 3))}
    seen = []

    def keep_matrices(param):
        seen.append((param.name, param.shape, param.ndim))
        return param.ndim == 2 and param.name != "head"

    opt = ms.LARS(ms.Momentum(params, 0.1, 0.9), lars_filter=keep_matrices)
    assert seen == [("head", (2, 3), 2), ("layer.LayerNorm.gamma", (3,), 1), ("layer.weight", (3, 3), 2)]
    assert opt.lars_flag == (False, False, True)
    assert ms.LARS(ms.Momentum(params, 0.1, 0.9)).lars_flag == (True, False, True)


def test_lars_errors():
    params = {"w": jnp.ones(2)}
    with pytest.raises(TypeError):
        ms.LARS(fo.optim.SGD(params))
    with pytest.raises(TypeError):
        ms.LARS(ms.Momentum(params, 0.1, 0.9), epsilon=1)
    with pytest.raises(TypeError):
        ms.LARS(ms.Momentum(params, 0.1, 0.9), use_clip=1)
    with pytest.raises(NotImplementedError):
        ms.LARS(ms.Adam(params))
    groups = [{"params": {"a": jnp.ones(2)}, "lr": [0.1, 0.2]}, {"params": {"b": jnp.ones(2)}}]
    with pytest.raises(ValueError):
        ms.LARS(ms.Momentum(groups, 0.1, 0.9), use_clip=True)


# ------------------------------------------------------------------------------------------ groups


def conv_net():
    return {"conv1": {"weight": jnp.ones((4, 16, 3))}, "conv2": {"weight": jnp.full((4, 16, 3), 2.0)},
            "bn": {"gamma": jnp.ones(4), "beta": jnp.zeros(4)}, "fc": {"weight": jnp.ones((2, 4)),
                                                                      "bias": jnp.zeros(2)}}


def documented_groups(net):
    """The docs' group example: conv params decayed and centralized, the others with lr 0.01, in net order."""
    conv_params = {k: v for k, v in net.items() if "conv" in k}
    no_conv_params = {k: v for k, v in net.items() if "conv" not in k}
    return [{"params": conv_params, "weight_decay": 0.01, "grad_centralization": True},
            {"params": no_conv_params, "lr": 0.01}, {"order_params": net}]


@pytest.mark.parametrize("cls", [ms.Momentum, ms.Adam, ms.AdaMax, ms.Adagrad, ms.Adadelta, ms.RMSProp, ms.Rprop,
                                 ms.ASGD, ms.ProximalAdagrad, ms.SGD, ms.Lamb])
def test_documented_group_example(cls):
    net = conv_net()
    kwargs = {"momentum": 0.9} if cls is ms.Momentum else {}
    opt = cls(documented_groups(net), learning_rate=0.1, weight_decay=0.0, **kwargs)
    assert opt.is_group and opt.is_group_lr and opt.is_group_params_ordered
    names = ["bn.beta", "bn.gamma", "conv1.weight", "conv2.weight", "fc.bias", "fc.weight"]
    assert fo.param_names(opt.parameters) == names
    # "The conv_params's parameters will use a learning rate of default value 0.1 and a weight decay of 0.01
    # and grad centralization of True. The no_conv_params's parameters will use a learning rate of 0.01 and a
    # weight decay of default value 0.0 and grad centralization of False."
    lrs = opt.get_lr_parameter(names)
    assert [float(x) for x in lrs] == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01])
    assert [float(x) for x in opt.get_lr()] == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01])
    assert [float(x) for x in opt.get_weight_decay()] == pytest.approx([0, 0, 0.01, 0.01, 0, 0])
    g = jax.tree.map(lambda x: jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) + 1.0, net)
    centered = opt.gradients_centralization(g)
    np.testing.assert_allclose(np.asarray(centered["conv1"]["weight"]).mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_array_equal(centered["fc"]["weight"], g["fc"]["weight"])


def test_documented_get_lr_parameter_example():
    net = conv_net()
    conv_params = {k: v for k, v in net.items() if "conv" in k}
    no_conv_params = {k: v for k, v in net.items() if "conv" not in k}
    group_params = [{"params": conv_params, "lr": 0.05}, {"params": no_conv_params, "lr": 0.01}]
    optim = ms.Momentum(group_params, learning_rate=0.1, momentum=0.9, weight_decay=0.0)
    conv_lr = optim.get_lr_parameter(["conv1.weight", "conv2.weight"])
    assert isinstance(conv_lr, list) and float(conv_lr[0]) == pytest.approx(0.05)  # print(conv_lr[0]) -> 0.05
    assert float(optim.get_lr_parameter("fc.weight")) == pytest.approx(0.01)
    assert float(optim.get_lr_parameter(ms.NamedParameter("fc.bias", net["fc"]["bias"]))) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        optim.get_lr_parameter("nope")
    with pytest.raises(TypeError):
        optim.get_lr_parameter(3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_update_with_centralization_and_order(dtype):
    """Groups with their own lr, weight decay and centralization, against the reference, in order_params' order."""
    with precision(dtype):
        params, grads = setup(dtype)
        p = jax.tree.map(jnp.asarray, params)
        first = {"conv": p["conv"], "cube": p["cube"], "fc": {"weight": p["fc"]["weight"]}}
        second = {"bn": p["bn"], "fc": {"bias": p["fc"]["bias"]}, "scale": p["scale"]}
        groups = [{"params": first, "weight_decay": 0.05, "grad_centralization": True},
                  {"params": second, "lr": 0.01}, {"order_params": p}]
        opt = ms.Momentum(groups, 0.1, 0.9, weight_decay=0.02, loss_scale=4.0)
        names = names_of(params)
        in_first = [n.startswith(("conv", "cube", "fc.weight")) for n in names]
        wd_of = [0.05 if f else 0.02 for f in in_first]

        def rule(p_, g, s, lr, t, k, wd, flag):
            return momentum_rule(0.9)(p_, g, s, 0.1 if in_first[k] else 0.01, t, k, wd, flag)

        # per-parameter weight decay: run the reference once per group value and keep each group's leaves
        hist_a, _, _ = reference(params, scaled(grads, 4.0), rule, constant(0.1), weight_decay=0.05,
                                 loss_scale=4.0, gc_flags=in_first)
        hist_b, _, _ = reference(params, scaled(grads, 4.0), rule, constant(0.1), weight_decay=0.02,
                                 loss_scale=4.0, gc_flags=in_first)
        merged = [treedef_merge(a, b, [w == 0.05 for w in wd_of]) for a, b in zip(hist_a, hist_b)]
        assert_trajectory(opt, scaled(grads, 4.0), merged, dtype, "groups")
        assert fo.param_names(opt.parameters) == names


def treedef_merge(a, b, take_a):
    leaves = [x if t else y for x, y, t in zip(jax.tree.leaves(a), jax.tree.leaves(b), take_a)]
    return jax.tree.structure(a).unflatten(leaves)


def test_groups_without_order_params_keep_their_trees():
    a, b = {"w": jnp.ones(2)}, {"v": jnp.ones(3)}
    opt = ms.SGD([{"params": a, "lr": 0.5}, {"params": b}], learning_rate=0.1)
    out = opt([{"w": jnp.ones(2)}, {"v": jnp.ones(3)}])
    assert out == (True, True)
    np.testing.assert_allclose(opt.parameters[0]["w"], 0.5)
    np.testing.assert_allclose(opt.parameters[1]["v"], 0.9)
    opt((jnp.ones(2), jnp.ones(3)))  # MindSpore's flat tuple of gradients
    np.testing.assert_allclose(opt.parameters[0]["w"], 0.0, atol=1e-7)


def test_default_weight_decay_filter_and_helpers():
    net = conv_net()
    opt = ms.Momentum(net, 0.1, 0.9, weight_decay=0.1, loss_scale=2.0)
    assert float(opt.get_weight_decay()) == pytest.approx(0.2)  # weight_decay * loss_scale, as MindSpore holds it
    zeros = jax.tree.map(jnp.zeros_like, net)
    decayed = opt.decay_weight(zeros)
    for name, g in fo.named_leaves(decayed):
        expected = 0.0 if ("beta" in name or "gamma" in name) else 0.2 * 1.0
        p = dict(fo.named_leaves(net))[name]
        np.testing.assert_allclose(g, expected * p, err_msg=name)
    assert opt.gradients_centralization(zeros) is zeros  # not grouped: nothing to centralize
    np.testing.assert_allclose(opt.scale_grad(jax.tree.map(lambda x: x + 4.0, zeros))["fc"]["weight"], 2.0)
    # the update leaves the norm layer undecayed: with zero gradients only decayed parameters move
    opt(zeros)
    np.testing.assert_array_equal(opt.parameters["bn"]["gamma"], net["bn"]["gamma"])
    np.testing.assert_allclose(opt.parameters["fc"]["weight"], 1.0 - 0.1 * 0.1)


def test_ftrl_and_sgd_decay_every_parameter():
    net = {"bn": {"gamma": jnp.ones(2)}, "w": jnp.ones(2)}
    zeros = jax.tree.map(jnp.zeros_like, net)
    sgd = ms.SGD(net, 0.1, weight_decay=0.5)
    sgd(zeros)
    np.testing.assert_allclose(sgd.parameters["bn"]["gamma"], 0.95)  # SGD's kernel decays every parameter
    np.testing.assert_allclose(sgd.decay_weight(zeros)["bn"]["gamma"], 0.0)  # decay_flags keep the filter
    ftrl = ms.FTRL(net, weight_decay=0.5)
    np.testing.assert_allclose(ftrl.decay_weight(zeros)["bn"]["gamma"], 0.5)  # FTRL's decay_flags are all True


# ------------------------------------------------------------------------------------------ learning rates


@pytest.mark.parametrize("learning_rate, expected", [
    (0.1, [0.1] * 5),
    (1, [1.0] * 5),
    (np.float32(0.25), [0.25] * 5),
    (jnp.asarray(0.3), [0.3] * 5),
    (jnp.asarray([0.3, 0.2, 0.1]), [0.3, 0.2, 0.1, 0.1, 0.1]),
    (np.array([0.5, 0.4]), [0.5, 0.4, 0.4, 0.4, 0.4]),
    ([0.3, 0.2, 0.1], [0.3, 0.2, 0.1, 0.1, 0.1]),
    ((0.3, 0.2), [0.3, 0.2, 0.2, 0.2, 0.2]),
    (ms.PolynomialDecayLR(0.1, 0.01, 4, 0.5), [0.01 + 0.09 * (1 - min(t, 4) / 4) ** 0.5 for t in range(5)]),
    (fo.schedules.warm_up_lr(0.1, 2), [0.0, 0.05, 0.1, 0.1, 0.1]),
])
def test_learning_rate_forms(learning_rate, expected):
    opt = ms.SGD({"w": jnp.zeros(1)}, learning_rate)
    seen, moves = [], []
    for _ in range(5):
        seen.append(float(opt.get_lr()))
        before = float(opt.parameters["w"][0])
        opt({"w": jnp.ones(1)})
        moves.append(before - float(opt.parameters["w"][0]))
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    np.testing.assert_allclose(moves, expected, rtol=1e-5, atol=1e-7)
    assert opt.dynamic_lr == (len(set(expected)) > 1)


def test_get_lr_parameter_returns_mindspore_values():
    sched = ms.CosineDecayLR(0.01, 0.1, 4)
    opt = ms.Adam([{"params": {"a": jnp.ones(2)}, "lr": sched}, {"params": {"b": jnp.ones(2)}, "lr": [0.1, 0.2]},
                   {"params": {"c": jnp.ones(2)}}], learning_rate=0.3)
    assert opt.get_lr_parameter("a") is sched
    np.testing.assert_allclose(opt.get_lr_parameter("b"), [0.1, 0.2])
    assert float(opt.get_lr_parameter("c")) == pytest.approx(0.3)
    assert float(opt.learning_rate) == pytest.approx(0.3)
    opt2 = ms.Adam({"a": jnp.ones(2)}, learning_rate=[0.1, 0.2])
    np.testing.assert_allclose(opt2.get_lr_parameter(["a"])[0], [0.1, 0.2])


# ------------------------------------------------------------------------------------------ errors

P = {"w": jnp.ones(2)}


@pytest.mark.parametrize("make, error", [
    (lambda: ms.Momentum(P, None, 0.9), TypeError),  # learning_rate of a wrong type
    (lambda: ms.Momentum(P, object(), 0.9), TypeError),
    (lambda: ms.Momentum(P, "0.1", 0.9), TypeError),
    (lambda: ms.Momentum(P, -0.1, 0.9), ValueError),  # negative
    (lambda: ms.Momentum(P, jnp.ones((2, 2)), 0.9), ValueError),  # a Tensor of more than 1 dimension
    (lambda: ms.Momentum(P, [[0.1, 0.2]], 0.9), ValueError),
    (lambda: ms.Momentum(P, 0.1, 0.9, weight_decay=-0.1), ValueError),  # weight_decay < 0
    (lambda: ms.Momentum(P, 0.1, 0.9, weight_decay="0.1"), TypeError),
    (lambda: ms.Momentum(P, 0.1, 0.9, weight_decay=jnp.asarray(0.1)), TypeError),
    (lambda: ms.Momentum(P, 0.1, 0.9, loss_scale=0.0), ValueError),  # loss_scale <= 0
    (lambda: ms.Momentum(P, 0.1, 0.9, loss_scale=-1.0), ValueError),
    (lambda: ms.Momentum(P, 0.1, 0.9, loss_scale="1"), TypeError),  # loss_scale not a float
    (lambda: ms.Momentum({}, 0.1, 0.9), ValueError),  # empty params
    (lambda: ms.Momentum([], 0.1, 0.9), ValueError),
    (lambda: ms.Momentum(None, 0.1, 0.9), ValueError),
    (lambda: ms.Momentum(3, 0.1, 0.9), TypeError),  # not iterable
    (lambda: ms.Momentum(jnp.ones(2), 0.1, 0.9), TypeError),  # a bare array, not a list of parameters
    (lambda: ms.Momentum({"w": 1.0}, 0.1, 0.9), TypeError),  # an element that is not a parameter
    (lambda: ms.Momentum([{"params": P}, jnp.ones(2)], 0.1, 0.9), TypeError),  # neither Parameter nor dict
    (lambda: ms.Momentum([{"params": P, "momentum": 0.5}], 0.1, 0.9), KeyError),  # a key MindSpore does not parse
    (lambda: ms.Momentum([{"params": {}}], 0.1, 0.9), ValueError),
    (lambda: ms.Momentum([{"params": P}, {"params": {"v": P["w"]}}], 0.1, 0.9), RuntimeError),  # twice
    (lambda: ms.Momentum([{"params": P}, {"order_params": P, "lr": 0.1}], 0.1, 0.9), ValueError),
    (lambda: ms.Momentum([{"params": P}, {"order_params": 3}], 0.1, 0.9), TypeError),
    (lambda: ms.Momentum([{"params": P}, {"order_params": {"w": P["w"], "v": jnp.ones(1)}}], 0.1, 0.9), ValueError),
    (lambda: ms.Momentum([{"params": P, "lr": [0.1, 0.2]}, {"params": {"v": jnp.ones(1)}, "lr": [0.1]}], 0.1,
                         0.9), ValueError),  # 1-D group learning rates of different lengths
    (lambda: ms.Momentum([{"params": P, "grad_centralization": 1}], 0.1, 0.9), TypeError),
    (lambda: ms.Momentum(P, 0.1, 1), TypeError),  # momentum must be a float
    (lambda: ms.Momentum(P, 0.1, -0.9), ValueError),
    (lambda: ms.Momentum(P, 0.1, 0.9, use_nesterov=1), TypeError),
    (lambda: ms.SGD(P, momentum="0.9"), TypeError),
    (lambda: ms.SGD(P, momentum=-0.1), ValueError),
    (lambda: ms.SGD(P, dampening=-0.1), ValueError),
    (lambda: ms.SGD(P, nesterov=True), ValueError),  # Nesterov without momentum
    (lambda: ms.SGD(P, momentum=0.9, dampening=0.1, nesterov=True), ValueError),
    (lambda: ms.SGD(P, weight_decay=ms.WarmUpLR(0.1, 2)), TypeError),  # no dynamic weight decay in SGD
    (lambda: ms.Adam(P, beta1=1.0), ValueError),
    (lambda: ms.Adam(P, beta2=0.0), ValueError),
    (lambda: ms.Adam(P, beta1=1), TypeError),
    (lambda: ms.Adam(P, eps=0.0), ValueError),
    (lambda: ms.Adam(P, eps=1), TypeError),
    (lambda: ms.Adam(P, use_nesterov="yes"), TypeError),
    (lambda: ms.Adam(P, use_lazy=True, use_offload=True), ValueError),
    (lambda: ms.Adam(P, use_amsgrad=True, use_lazy=True), ValueError),
    (lambda: ms.AdamWeightDecay(P, eps=-1e-6), ValueError),
    (lambda: ms.AdaMax(P, beta1=1.5), ValueError),
    (lambda: ms.Adagrad(P, accum=1), TypeError),
    (lambda: ms.Adagrad(P, accum=-0.1), ValueError),
    (lambda: ms.Adagrad(P, update_slots=0), TypeError),
    (lambda: ms.Adadelta(P, rho=1.5), ValueError),
    (lambda: ms.Adadelta(P, epsilon=-1.0), ValueError),
    (lambda: ms.Adadelta(P, rho=1), TypeError),
    (lambda: ms.RMSProp(P, epsilon=0.0), ValueError),
    (lambda: ms.RMSProp(P, decay=-0.9), ValueError),
    (lambda: ms.RMSProp(P, momentum=1), TypeError),
    (lambda: ms.RMSProp(P, centered=1), TypeError),
    (lambda: ms.Rprop(P, etas=[0.5, 1.2]), TypeError),
    (lambda: ms.Rprop(P, etas=(0.5, 1.2, 2.0)), ValueError),
    (lambda: ms.Rprop(P, step_sizes=(1.0, 0.1)), ValueError),
    (lambda: ms.Rprop(P, etas=(1.5, 1.2)), ValueError),
    (lambda: ms.Rprop(P, etas=(0.5, 1.0)), ValueError),
    (lambda: ms.Rprop(P, etas=(0.5, 2)), TypeError),
    (lambda: ms.ASGD(P, lambd=1), TypeError),
    (lambda: ms.FTRL(P, learning_rate=[0.1, 0.2]), ValueError),  # dynamic learning rate
    (lambda: ms.FTRL([{"params": P, "lr": 0.1}]), ValueError),  # group learning rate
    (lambda: ms.FTRL(P, learning_rate=1), TypeError),
    (lambda: ms.FTRL(P, lr_power=0.5), ValueError),
    (lambda: ms.FTRL(P, l1=-0.1), ValueError),
    (lambda: ms.FTRL(P, initial_accum=1), TypeError),
    (lambda: ms.ProximalAdagrad(P, l2=-1.0), ValueError),
    (lambda: ms.ProximalAdagrad(P, use_locking=0), TypeError),
    (lambda: ms.Lamb(P, 0.1, eps=0.0), ValueError),
])
def test_documented_errors(make, error):
    with pytest.raises(error):
        make()


def test_gradients_of_the_wrong_structure():
    opt = ms.Momentum(P, 0.1, 0.9)
    with pytest.raises(ValueError):
        opt({"v": jnp.ones(2)})
    with pytest.raises(ValueError):
        opt({"w": jnp.ones(3)})


# ------------------------------------------------------------------------------------------ signatures


SIGNATURES = {
    ms.Optimizer: "learning_rate, parameters, weight_decay=0.0, loss_scale=1.0",
    ms.Momentum: "params, learning_rate, momentum, weight_decay=0.0, loss_scale=1.0, use_nesterov=False",
    ms.SGD: "params, learning_rate=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, "
            "loss_scale=1.0",
    ms.Adam: "params, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-08, use_locking=False, "
             "use_nesterov=False, weight_decay=0.0, loss_scale=1.0, use_amsgrad=False, **kwargs",
    ms.AdamWeightDecay: "params, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-06, weight_decay=0.0",
    ms.AdaMax: "params, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0, loss_scale=1.0",
    ms.Adagrad: "params, accum=0.1, learning_rate=0.001, update_slots=True, loss_scale=1.0, weight_decay=0.0",
    ms.Adadelta: "params, learning_rate=1.0, rho=0.9, epsilon=1e-06, loss_scale=1.0, weight_decay=0.0",
    ms.RMSProp: "params, learning_rate=0.1, decay=0.9, momentum=0.0, epsilon=1e-10, use_locking=False, "
                "centered=False, loss_scale=1.0, weight_decay=0.0",
    ms.Rprop: "params, learning_rate=0.1, etas=(0.5, 1.2), step_sizes=(1e-06, 50.0), weight_decay=0.0",
    ms.ASGD: "params, learning_rate=0.1, lambd=0.0001, alpha=0.75, t0=1000000.0, weight_decay=0.0",
    ms.FTRL: "params, initial_accum=0.1, learning_rate=0.001, lr_power=-0.5, l1=0.0, l2=0.0, use_locking=False, "
             "loss_scale=1.0, weight_decay=0.0",
    ms.ProximalAdagrad: "params, accum=0.1, learning_rate=0.001, l1=0.0, l2=0.0, use_locking=False, "
                        "loss_scale=1.0, weight_decay=0.0",
    ms.Lamb: "params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-06, weight_decay=0.0",
    ms.LARS: "optimizer, epsilon=1e-05, coefficient=0.001, use_clip=False, lars_filter=_default_lars_filter",
}


@pytest.mark.parametrize("cls", list(SIGNATURES), ids=lambda c: c.__name__)
def test_signature_is_mindspore(cls):
    sig = inspect.signature(cls)
    parts = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.default is inspect.Parameter.empty:
            parts.append(p.name)
        else:
            default = p.default.__name__ if callable(p.default) else repr(p.default)
            parts.append(f"{p.name}={default}")
    assert ", ".join(parts) == SIGNATURES[cls]


# ------------------------------------------------------------------------------------------ custom optimizers


def test_custom_optimizer_from_the_helpers():
    class PlainSGD(ms.Optimizer):
        def construct(self, gradients):
            gradients = self.decay_weight(gradients)
            gradients = self.gradients_centralization(gradients)
            gradients = self.scale_grad(gradients)
            lr = self.get_lr()
            self.parameters = jax.tree.map(lambda p, g: p - lr * g, self.parameters, gradients)
            return True

    with precision(np.float64):
        params, grads = setup(np.float64)
        opt = PlainSGD(LR_LIST, jax.tree.map(jnp.asarray, params), weight_decay=0.01, loss_scale=4.0)

        def rule(p, g, s, lr, t, k, wd, flag):
            return p - lr * g, s

        ref, _, _ = reference(params, scaled(grads, 4.0), rule, list_lr, weight_decay=0.01, loss_scale=4.0,
                              decay_flags=filter_flags(params))
        for g, expected in zip(scaled(grads, 4.0), ref):
            assert opt(jax.tree.map(jnp.asarray, g)) is True
            for x, y in zip(jax.tree.leaves(opt.parameters), jax.tree.leaves(expected)):
                np.testing.assert_allclose(x, y, rtol=1e-10)
    with pytest.raises(NotImplementedError):
        ms.Optimizer(0.1, P)(P)


def test_state_dict_round_trip_continues_the_trajectory():
    with precision(np.float64):
        params, grads = setup(np.float64, steps=10)
        a = ms.Adam(jax.tree.map(jnp.asarray, params), LR_LIST, weight_decay=0.01)
        for g in grads[:5]:
            a(g)
        sd = a.state_dict()
        b = ms.Adam(a.parameters, LR_LIST, weight_decay=0.01)
        b.load_state_dict(sd)
        assert b.global_step == 5
        assert float(b.get_lr()) == pytest.approx(LR_LIST[5])
        for g in grads[5:]:
            a(g)
            b(g)
        for x, y in zip(jax.tree.leaves(a.parameters), jax.tree.leaves(b.parameters)):
            np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------ schedules


def test_learning_rate_schedule_documented_examples():
    global_step = jnp.asarray(2, jnp.int32)
    printed = [(ms.ExponentialDecayLR(0.1, 0.9, 4), 0.09486833), (ms.NaturalExpDecayLR(0.1, 0.9, 4, True), 0.1),
               (ms.InverseDecayLR(0.1, 0.9, 4), 0.06896552), (ms.CosineDecayLR(0.01, 0.1, 4), 0.055),
               (ms.PolynomialDecayLR(0.1, 0.01, 4, 0.5), 0.07363961), (ms.WarmUpLR(0.1, 2), 0.1)]
    for sched, value in printed:
        out = sched(global_step)
        assert isinstance(sched, ms.LearningRateSchedule)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(float(out), value, rtol=1e-6)
        np.testing.assert_allclose(float(jax.jit(sched)(global_step)), value, rtol=1e-6)
    with pytest.raises(TypeError):
        ms.ExponentialDecayLR(1, 0.9, 4)
    with pytest.raises(ValueError):
        ms.WarmUpLR(0.1, 0)


def test_dynamic_lr_functions_documented_examples():
    assert ms.piecewise_constant_lr([2, 5, 10], [0.1, 0.05, 0.01]) == [0.1, 0.1, 0.05, 0.05, 0.05, 0.01, 0.01, 0.01,
                                                                       0.01, 0.01]
    np.testing.assert_allclose(ms.exponential_decay_lr(0.1, 0.9, 6, 2, 1), [0.1, 0.1, 0.09, 0.09, 0.081, 0.081])
    np.testing.assert_allclose(ms.natural_exp_decay_lr(0.1, 0.9, 6, 2, 2, True),
                               [0.1, 0.1, 0.1, 0.1, 0.016529888822158657, 0.016529888822158657])
    np.testing.assert_allclose(ms.inverse_decay_lr(0.1, 0.5, 6, 1, 1, True),
                               [0.1, 0.06666666666666667, 0.05, 0.04, 0.03333333333333333, 0.028571428571428574])
    np.testing.assert_allclose(ms.cosine_decay_lr(0.01, 0.1, 6, 2, 2), [0.1, 0.1, 0.055, 0.055, 0.01, 0.01])
    np.testing.assert_allclose(ms.polynomial_decay_lr(0.1, 0.01, 6, 2, 2, 0.5),
                               [0.1, 0.1, 0.07363961030678928, 0.07363961030678928, 0.01, 0.01])
    np.testing.assert_allclose(ms.warmup_lr(0.1, 6, 2, 2), [0.0, 0.0, 0.05, 0.05, 0.1, 0.1])
    assert ms.dynamic_lr.warmup_lr is ms.warmup_lr


def test_dynamic_lr_list_drives_the_optimizer():
    lrs = ms.cosine_decay_lr(0.01, 0.1, 8, 2, 4)
    opt = ms.Momentum({"w": jnp.zeros(1)}, lrs, 0.0)
    for t in range(10):
        assert float(opt.get_lr()) == pytest.approx(lrs[min(t, 7)])
        opt({"w": jnp.ones(1)})


# ------------------------------------------------------------------------------------------ loss scale


def test_fixed_loss_scale_manager():
    manager = ms.FixedLossScaleManager()
    assert manager.get_loss_scale() == 128.0 and manager.get_drop_overflow_update() is True
    manager.update_loss_scale(True)
    assert manager.get_loss_scale() == 128.0
    cell = manager.get_update_cell()
    assert isinstance(cell, fo.StaticLossScale) and float(cell.loss_scale) == 128.0
    # drop_overflow_update=False: the optimizer is given the same loss_scale and divides by it
    manager = ms.FixedLossScaleManager(1024.0, False)
    assert manager.get_update_cell() is None
    opt = ms.Momentum({"w": jnp.zeros(1)}, 0.1, 0.9, loss_scale=manager.get_loss_scale())
    opt({"w": jnp.full(1, 1024.0)})
    np.testing.assert_allclose(opt.parameters["w"], -0.1)
    with pytest.raises(ValueError):
        ms.FixedLossScaleManager(0.5)


def mindspore_dynamic_manager(overflows, init, factor, window):
    """DynamicLossScaleManager.update_loss_scale as MindSpore writes it."""
    scale, cur_iter, last_overflow, out = init, 1, 0, []
    for overflow in overflows:
        if overflow:
            scale = max(scale / factor, 1)
            last_overflow = cur_iter
        elif (cur_iter - last_overflow) % window == 0:
            scale *= factor
        cur_iter += 1
        out.append(scale)
    return out


def test_dynamic_loss_scale_manager_follows_mindspore():
    rng = np.random.default_rng(0)
    overflows = list(rng.random(300) < 0.15)
    manager = ms.DynamicLossScaleManager(init_loss_scale=2**10, scale_factor=2, scale_window=5)
    got = []
    for overflow in overflows:
        manager.update_loss_scale(bool(overflow))
        got.append(manager.get_loss_scale())
    assert got == mindspore_dynamic_manager(overflows, 2**10, 2, 5)
    assert manager.get_drop_overflow_update() is True
    assert isinstance(manager.get_update_cell(), fo.DynamicLossScale)
    assert ms.DynamicLossScaleManager().get_loss_scale() == 2.0**24


def test_dynamic_loss_scale_manager_errors():
    with pytest.raises(ValueError):
        ms.DynamicLossScaleManager(init_loss_scale=0.5)
    with pytest.raises(ValueError):
        ms.DynamicLossScaleManager(scale_factor=0)
    with pytest.raises(ValueError):
        ms.DynamicLossScaleManager(scale_window=0)
    with pytest.raises(TypeError):
        ms.DynamicLossScaleManager(scale_window=2.5)
    manager = ms.DynamicLossScaleManager(init_loss_scale=4)
    for _ in range(1000):
        manager.update_loss_scale(True)
    with pytest.raises(RuntimeError):
        manager.update_loss_scale(True)


def test_update_cell_drives_loss_scaled():
    manager = ms.DynamicLossScaleManager(init_loss_scale=2.0**8, scale_window=3)
    tx = fo.loss_scaled(fo.momentum(lr=0.1, momentum=0.9), manager.get_update_cell())
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    grads = {"w": jnp.asarray([jnp.inf, 1.0])}
    updates, state = tx.update(grads, state, params)
    np.testing.assert_array_equal(updates["w"], 0.0)
    assert float(fo.get_loss_scale(state).loss_scale) == 2.0**7


def test_migration_guide_code_runs():
    """The python blocks of docs/migration_mindspore.md, in order, in one namespace."""
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[2] / "docs" / "migration_mindspore.md"
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "migration_mindspore"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"migration_mindspore.md block {i + 1}", "exec"), namespace)


# ------------------------------------------------------------------------------------------ functional variants

FUNCTIONAL_CASES = {
    "adam_mindspore": (lambda lr: adam_mindspore(lr, (0.8, 0.95), 1e-4, weight_decay=0.01),
                       adam_kernel_rule(0.8, 0.95, 1e-4), 0.01),
    "adam_mindspore-nesterov": (lambda lr: adam_mindspore(lr, eps=1e-6, nesterov=True),
                                adam_kernel_rule(0.9, 0.999, 1e-6, nesterov=True), 0.0),
    "adam_mindspore-amsgrad": (lambda lr: adam_mindspore(lr, eps=1e-6, amsgrad=True),
                               adam_kernel_rule(0.9, 0.999, 1e-6, amsgrad=True), 0.0),
    "adam_weight_decay": (lambda lr: adam_weight_decay(lr, (0.8, 0.9), weight_decay=0.05),
                          adam_weight_decay_rule(0.8, 0.9, 1e-6), 0.05),
    "adamax_mindspore": (lambda lr: adamax_mindspore(lr, eps=1e-4, weight_decay=0.01), adamax_rule(0.9, 0.999, 1e-4),
                         0.01),
    "rmsprop_mindspore": (lambda lr: rmsprop_mindspore(lr, alpha=0.8, eps=1e-6, momentum=0.5),
                          rmsprop_rule(0.8, 0.5, 1e-6, False), 0.0),
    "rmsprop_mindspore-centered": (lambda lr: rmsprop_mindspore(lr, eps=1e-6, weight_decay=0.02, momentum=0.9,
                                                                centered=True),
                                   rmsprop_rule(0.9, 0.9, 1e-6, True), 0.02),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUNCTIONAL_CASES))
def test_functional_variant_matches_documented_formula(name, dtype):
    """The functional rules alone, jitted, with a scheduled learning rate held in the state."""
    make, rule, weight_decay = FUNCTIONAL_CASES[name]
    with precision(dtype):
        params, grads = setup(dtype, steps=30)
        tx = make(fo.schedules.exponential_decay_lr(0.02, 0.8, 7))
        ours, state = run_funcopt(tx, params, grads)
        decoupled = name == "adam_weight_decay"
        ref, _, _ = reference(params, grads, rule, lambda t: 0.02 * 0.8 ** (t / 7), weight_decay=weight_decay,
                              pre_decay=not decoupled)
        tol = tolerance(dtype)
        for step, (a, b) in enumerate(zip(ours, ref)):
            for (leaf, x), y in zip(fo.named_leaves(a), jax.tree.leaves(b)):
                assert x.dtype == np.dtype(dtype)
                np.testing.assert_allclose(np.asarray(x, np.float64), y, err_msg=f"step {step + 1} {leaf}", **tol)
        assert float(fo.get_hparams(state)["lr"]) == pytest.approx(0.02 * 0.8 ** (29 / 7), rel=1e-5)
    if name.startswith("rmsprop"):
        init = tx.init({"w": jnp.zeros(3)})
        np.testing.assert_array_equal(init.slots["square_avg"]["w"], np.ones(3))  # MindSpore's mean_square
