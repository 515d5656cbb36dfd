"""Adafactor, torch.optim.Adafactor's algorithm (factored second moments)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.base import GradientTransformation, PyTree, floating_only
from funcopt._src.hparams import HParam, OptimizerState, check_hparam, per_leaf_optimizer
from funcopt._src.packing import refusing_packed
from funcopt.optimizers._common import check_real, signed
from funcopt.transforms.averaging import lerp

_SLOTS = ("row_var", "col_var", "variance")


def _is_factored(ndim: int) -> bool:
    return ndim > 1


def _slot_present(name: str, ndim: int) -> bool:
    return (name != "variance") if _is_factored(ndim) else (name == "variance")


def _placeholder(dtype: Any) -> jax.Array:
    return jnp.zeros((0,), dtype)


def adafactor(
    lr: HParam = 1e-2,
    beta2_decay: HParam = -0.8,
    eps: tuple[HParam | None, HParam] = (None, 1e-3),
    d: HParam = 1.0,
    weight_decay: HParam = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Adafactor (torch.optim.Adafactor), with torch's use of ``lr`` and :math:`\epsilon_1`.

    With :math:`G_t` the gradient (negated when ``maximize``), :math:`\tau` the
    ``beta2_decay``, :math:`\lambda` the weight decay and RMS the root mean square
    over a leaf:

    .. math::

        \hat\beta_{2,t} &= 1 - t^{\tau}, \qquad \rho_t = \min(\gamma, 1/\sqrt t), \qquad
            \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\, \rho_t \\
        R_t &= \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\, \mathrm{mean}_{-1}(G_t^2), \quad
        C_t = \hat\beta_{2,t} C_{t-1} + (1 - \hat\beta_{2,t})\, \mathrm{mean}_{-2}(G_t^2) \\
        \hat V_t &= \frac{R_t C_t}{\max(\mathrm{mean}_{-2}(R_t), \epsilon_1)} \text{ for a leaf of
            2 or more dimensions, else }
            \hat V_t = \hat\beta_{2,t} \hat V_{t-1} + (1 - \hat\beta_{2,t}) G_t^2 \\
        U_t &= G_t / \sqrt{\max(\hat V_t, \epsilon_1^2)}, \qquad
            \hat U_t = U_t / \max(1, \mathrm{RMS}(U_t) / d) \\
        \theta_t &= \theta_{t-1}(1 - \gamma\lambda) - \alpha_t \hat U_t

    The row and column factors reduce over the last two dimensions (for a
    3-d or larger leaf, the leading dimensions are batch dimensions).

    State, by torch's names and with torch's shapes: ``row_var`` (the leaf's
    shape with the last dimension 1) and ``col_var`` (the second-to-last
    dimension 1) for a leaf of two or more dimensions, ``variance`` (the
    leaf's shape) otherwise. A slot a leaf does not have holds ``None`` there,
    so ``state.slots['variance']`` has ``None`` at every matrix leaf.

    ``eps[0] = None`` (the default) means machine epsilon of the parameters'
    dtype; as in torch, the dtype of the first parameter (in flattening order)
    decides it for all. ``None`` is kept as is in the hyperparameters, so
    ``fo.get_hparams(state)['eps']`` reads ``(None, Array(0.001))``.

    Args:
        lr: :math:`\gamma`, the cap of the relative step size :math:`\rho_t` and
            the factor of the decoupled weight decay.
        beta2_decay: :math:`\tau \le 0`, the decay exponent of
            :math:`1 - \hat\beta_{2,t}`.
        eps: :math:`(\epsilon_1, \epsilon_2)`: the floor of the variance estimate
            (``None``: the dtype's epsilon) and the floor of the parameter RMS.
        d: the update clipping threshold, :math:`d \ge 1`.
        weight_decay: :math:`\lambda`, decoupled (multiplied by ``lr``).
        maximize: maximize the objective instead of minimizing.

    Returns:
        A :class:`funcopt.GradientTransformation`; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.adafactor(lr=0.1)
        >>> params = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> state.slots['row_var']['w'].shape, state.slots['col_var']['w'].shape
        ((2, 1), (1, 3))
        >>> updates, state = tx.update({'w': jnp.ones((2, 3)), 'b': jnp.ones(2)}, state, params)
        >>> fo.apply_updates(params, updates)['w']
        Array([[0.9, 0.9, 0.9],
               [0.9, 0.9, 0.9]], dtype=float32)
    """
    check_hparam(lr, "lr", "Learning rate should be >= 0 but is: {}", lambda v: v >= 0)
    check_hparam(beta2_decay, "beta2_decay", "beta2_decay should be <= 0 but is: {}", lambda v: v <= 0)
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(f"eps must be a pair (eps1, eps2), got {eps!r}")
    eps1, eps2 = eps
    if eps1 is not None:
        check_hparam(eps1, "eps[0]", "epsilon1 should be >= 0 but is: {}", lambda v: v >= 0)
    check_hparam(eps2, "eps[1]", "epsilon2 should be >= 0 but is: {}", lambda v: v >= 0)
    check_hparam(d, "d", "Clipping threshold d should be >= 1 but is: {}", lambda v: v >= 1)
    check_hparam(weight_decay, "weight_decay", "weight_decay should be >= 0 but is: {}", lambda v: v >= 0)

    hparams = {"lr": lr, "beta2_decay": beta2_decay, "eps": (eps1, eps2), "d": d,
               "weight_decay": weight_decay}

    def leaf_init(p, hp):
        del hp
        if _is_factored(p.ndim):
            row_shape = p.shape[:-1] + (1,)
            col_shape = p.shape[:-2] + (1,) + p.shape[-1:]
            return {"row_var": jnp.zeros(row_shape, p.dtype), "col_var": jnp.zeros(col_shape, p.dtype),
                    "variance": _placeholder(p.dtype)}
        return {"row_var": _placeholder(p.dtype), "col_var": _placeholder(p.dtype),
                "variance": jnp.zeros_like(p)}

    def build(default_eps1: float) -> GradientTransformation:
        def leaf_update(g, p, slots, hp, step):
            lr_, wd, d_ = hp["lr"], hp["weight_decay"], hp["d"]
            hp_eps1, eps2_ = hp["eps"]
            eps1_ = jnp.asarray(default_eps1, g.dtype) if hp_eps1 is None else hp_eps1
            g = signed(g, maximize)
            t = step.astype(g.dtype)
            weight = t ** hp["beta2_decay"]  # 1 - beta2_t
            rho = jnp.minimum(lr_, 1 / jnp.sqrt(t))
            size_sqrt = math.sqrt(max(g.size, 1))
            param_rms = jnp.sqrt(jnp.sum(p * p)) / size_sqrt
            alpha = jnp.maximum(eps2_, param_rms) * rho
            new_slots = dict(slots)
            if _is_factored(g.ndim):
                row_mean = jnp.sum(g * g, axis=-1, keepdims=True) / g.shape[-1]
                col_mean = jnp.sum(g * g, axis=-2, keepdims=True) / g.shape[-2]
                row_var = lerp(slots["row_var"], row_mean, weight)
                col_var = lerp(slots["col_var"], col_mean, weight)
                new_slots["row_var"], new_slots["col_var"] = row_var, col_var
                # row_var @ col_var with an inner dimension of 1 is the outer product.
                var_estimate = row_var * col_var
                var_estimate = var_estimate / jnp.maximum(jnp.mean(row_var, axis=-2, keepdims=True), eps1_)
            else:
                variance = lerp(slots["variance"], g * g, weight)
                new_slots["variance"] = variance
                var_estimate = variance
            u = jax.lax.rsqrt(jnp.maximum(var_estimate, eps1_ * eps1_)) * g
            u_rms = jnp.sqrt(jnp.sum(u * u)) / size_sqrt
            denom = jnp.maximum(1.0, u_rms / d_)
            return -lr_ * wd * p - (alpha / denom) * u, new_slots

        return per_leaf_optimizer(
            hparams=hparams,
            slots=_SLOTS,
            leaf_update=leaf_update,
            leaf_init=leaf_init,
            needs_params=True,
            complex_as_real=False,
            name="adafactor",
        )

    def strip(slots: dict[str, PyTree], treedef: Any, ndims: list[int]) -> dict[str, PyTree]:
        # Slots a leaf does not have are held as None, as absent from torch's per-parameter state.
        out = {}
        for k in _SLOTS:
            leaves = treedef.flatten_up_to(slots[k])
            out[k] = treedef.unflatten([v if _slot_present(k, n) else None for v, n in zip(leaves, ndims)])
        return out

    def fill(slots: dict[str, PyTree], treedef: Any, refs: list[Any]) -> dict[str, PyTree]:
        out = {}
        for k in _SLOTS:
            leaves = treedef.flatten_up_to(slots[k])
            out[k] = treedef.unflatten([
                v if _slot_present(k, np.ndim(r)) else _placeholder(jnp.result_type(r))
                for v, r in zip(leaves, refs)
            ])
        return out

    template = build(0.0)

    def init(params):
        check_real(params, "Adafactor")
        state = template.init(params)
        leaves, treedef = jax.tree.flatten(params)
        return state._replace(slots=strip(state.slots, treedef, [np.ndim(p) for p in leaves]))

    def update(grads, state, params=None, **extra):
        del extra
        if not isinstance(state, OptimizerState):
            raise TypeError(f"adafactor: expected an OptimizerState, got {type(state).__name__}")
        if params is None:
            raise ValueError("adafactor: params must be given to update() (the step size scales with "
                             "the parameters' RMS)")
        check_real(grads, "Adafactor")
        check_real(params, "Adafactor")
        g_leaves, treedef = jax.tree.flatten(grads)
        p_leaves = treedef.flatten_up_to(params)
        default_eps1 = float(jnp.finfo(jnp.result_type(p_leaves[0])).eps) if p_leaves else 0.0
        inner_state = state._replace(slots=fill(state.slots, treedef, p_leaves))
        updates, new_state = build(default_eps1).update(grads, inner_state, params)
        ndims = [np.ndim(p) for p in p_leaves]
        return updates, new_state._replace(slots=strip(new_state.slots, treedef, ndims))

    return refusing_packed(floating_only(GradientTransformation(init, update)), "fo.adafactor")
