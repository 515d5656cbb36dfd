"""References for the fo.compat.mindspore tests: MindSpore's documented formulas, in NumPy.

Each reference below is written out in NumPy from MindSpore's documentation (the
formula on the optimizer's page, or on the page of the kernel it runs where the two
differ, as noted), with the steps of MindSpore's ``construct``: the weight decay is
added to the loss-scaled gradients with ``weight_decay * loss_scale`` on the
parameters of ``decay_flags``, then the gradients are centralized, then multiplied
by ``1 / loss_scale``, then the rule runs with the learning rate of ``global_step``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import funcopt as fo
from tests.reference.harness import make_grads, make_params, tolerance

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

P = {"w": jnp.ones(2)}


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


LR_LIST = [0.05 * (0.9**i) for i in range(STEPS - 5)]  # shorter than the run: the last value is held


def list_lr(t):
    return LR_LIST[min(t, len(LR_LIST) - 1)]
