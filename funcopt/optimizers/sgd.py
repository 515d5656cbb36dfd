"""Stochastic gradient descent with momentum, torch.optim.SGD's algorithm."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, check_hparam, is_static_zero, per_leaf_optimizer
from funcopt._src.state_dtype import DTypeLike, state_precision
from funcopt.optimizers._common import check_lr, check_weight_decay, heavy_ball, l2, momentum_direction, signed


def sgd(
    lr: HParam = 1e-3,
    momentum: HParam = 0.0,
    dampening: HParam = 0.0,
    weight_decay: HParam = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    r"""Stochastic gradient descent, optionally with momentum (torch.optim.SGD).

    With :math:`g_t` the gradient (negated when ``maximize``), :math:`\lambda`
    the weight decay, :math:`\mu` the momentum and :math:`\tau` the dampening:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        b_t &= g_t \text{ at } t = 1, \text{ else } \mu b_{t-1} + (1 - \tau) g_t \\
        g_t &\leftarrow g_t + \mu b_t \text{ if nesterov, else } b_t \\
        \theta_t &= \theta_{t-1} - \gamma g_t

    The momentum buffer (state ``momentum_buffer``) exists when ``momentum`` is
    nonzero at construction; it starts at zeros.

    Args:
        lr: learning rate :math:`\gamma`.
        momentum: momentum factor :math:`\mu`.
        dampening: dampening :math:`\tau` of the momentum.
        weight_decay: L2 penalty :math:`\lambda` (needs ``params`` in ``update``). The number 0
            (the default) is no term, as in :func:`funcopt.adam`.
        nesterov: use Nesterov momentum (needs momentum and zero dampening).
        maximize: maximize the objective instead of minimizing.
        mu_dtype: dtype of ``momentum_buffer`` (default: the parameter's).
        state_dtype, state_rounding, seed: its dtype again (or ``{'momentum_buffer': dtype}``), the
            rounding and its seed, as in :func:`funcopt.adam`.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.sgd(lr=0.1, momentum=0.9)
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({'w': jnp.ones(2)}, state, params)
        ...     params = fo.apply_updates(params, updates)
        >>> params['w']
        Array([0.71, 1.71], dtype=float32)
    """
    check_lr(lr)
    check_hparam(momentum, "momentum", "Invalid momentum value: {}", lambda v: v >= 0)
    check_weight_decay(weight_decay)
    has_momentum = not is_static_zero(momentum)
    if nesterov and (not has_momentum or not is_static_zero(dampening)):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    precision = state_precision({"momentum_buffer": "mu"}, state_dtype=state_dtype, mu_dtype=mu_dtype,
                                state_rounding=state_rounding, seed=seed)

    def leaf_update(g, p, slots, hp, step):
        g = l2(signed(g, maximize), p, hp["weight_decay"])
        new_slots = {}
        if has_momentum:
            mu = hp["momentum"]
            if is_static_zero(hp["dampening"]):
                # the buffer starts at zeros: mu * 0 + g is torch's first step (buf = g), with no select
                buf = heavy_ball(slots["momentum_buffer"], g, mu)
            else:
                buf = jnp.where(step == 1, g, mu * slots["momentum_buffer"] + (1 - hp["dampening"]) * g)
            new_slots["momentum_buffer"] = buf
            g = momentum_direction(g, buf, mu, nesterov)
        return -hp["lr"] * g, new_slots

    return per_leaf_optimizer(
        hparams={"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay},
        slots=("momentum_buffer",) if has_momentum else (),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        precision=precision,
        name="sgd",
    )


