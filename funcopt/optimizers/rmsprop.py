"""RMSprop, torch.optim.RMSprop's algorithm."""

from __future__ import annotations

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, check_hparam, is_static_zero, per_leaf_optimizer
from funcopt.optimizers._common import (
    check_eps,
    check_lr,
    check_weight_decay,
    ema,
    ema_of_square,
    l2,
    lerp_ema,
    signed,
)


def _check_rmsprop(lr: HParam, alpha: HParam, eps: HParam, weight_decay: HParam, momentum: HParam) -> None:
    """torch.optim.RMSprop's checks in its order, shared by both RMSprop rules (same arguments, same messages)."""
    check_lr(lr)
    check_eps(eps)
    check_hparam(momentum, "momentum", "Invalid momentum value: {}", lambda v: v >= 0)
    check_weight_decay(weight_decay)
    check_hparam(alpha, "alpha", "Invalid alpha value: {}", lambda v: v >= 0)


def rmsprop(
    lr: HParam = 1e-2,
    alpha: HParam = 0.99,
    eps: HParam = 1e-8,
    weight_decay: HParam = 0,
    momentum: HParam = 0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""RMSprop (torch.optim.RMSprop): steps divided by a running root mean square of the gradients.

    With :math:`g_t` the gradient (negated when ``maximize``), :math:`\alpha`
    the smoothing constant, :math:`\lambda` the weight decay and :math:`\mu` the
    momentum:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
        \bar g_t &= \bar g_{t-1} + (1 - \alpha)(g_t - \bar g_{t-1}), \quad
            \tilde v_t = v_t - \bar g_t^2 \text{ if centered, else } \tilde v_t = v_t \\
        b_t &= \mu b_{t-1} + g_t / (\sqrt{\tilde v_t} + \epsilon) \\
        \theta_t &= \theta_{t-1} - \gamma b_t \text{ if } \mu > 0, \text{ else }
            \theta_{t-1} - \gamma g_t / (\sqrt{\tilde v_t} + \epsilon)

    State: ``square_avg`` (:math:`v_t`), ``momentum_buffer`` (:math:`b_t`) when
    ``momentum`` is nonzero at construction (as torch creates it when
    ``momentum > 0``), ``grad_avg`` (:math:`\bar g_t`) when ``centered``; all
    start at zero. Complex parameters are treated as pairs of reals, as torch
    does.

    Args:
        lr: learning rate :math:`\gamma`.
        alpha: smoothing constant :math:`\alpha`.
        eps: :math:`\epsilon`, added to the denominator.
        weight_decay: L2 penalty :math:`\lambda` (needs ``params`` in ``update``).
        momentum: momentum factor :math:`\mu`.
        centered: normalize by an estimate of the gradient's variance instead
            of its second moment.
        maximize: maximize the objective instead of minimizing.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.rmsprop(lr=0.1, alpha=0.75, eps=0.0, momentum=0.5)
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({'w': jnp.array([3.0, -4.0])}, state, params)
        >>> updates['w']  # -lr * g / sqrt(0.25 g^2)
        Array([-0.2,  0.2], dtype=float32)
        >>> sorted(state.slots)
        ['momentum_buffer', 'square_avg']
    """
    _check_rmsprop(lr, alpha, eps, weight_decay, momentum)
    has_momentum = not is_static_zero(momentum)

    def leaf_update(g, p, slots, hp, step):
        del step
        alpha_, mu = hp["alpha"], hp["momentum"]
        g = l2(signed(g, maximize), p, hp["weight_decay"])
        square_avg = ema_of_square(slots["square_avg"], g, alpha_)
        new_slots = {"square_avg": square_avg}
        if centered:
            grad_avg = lerp_ema(slots["grad_avg"], g, alpha_)
            new_slots["grad_avg"] = grad_avg
            avg = jnp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = jnp.sqrt(square_avg)
        normalized = g / (avg + hp["eps"])
        if not has_momentum:
            return -hp["lr"] * normalized, new_slots
        # Like torch, a momentum set to 0 after construction leaves the buffer untouched.
        buf = jnp.where(mu > 0, mu * slots["momentum_buffer"] + normalized, slots["momentum_buffer"])
        new_slots["momentum_buffer"] = buf
        return -hp["lr"] * jnp.where(mu > 0, buf, normalized), new_slots

    return per_leaf_optimizer(
        hparams={"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "momentum": momentum},
        slots=("square_avg",) + (("momentum_buffer",) if has_momentum else ())
        + (("grad_avg",) if centered else ()),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        name="rmsprop",
    )


def rmsprop_mindspore(
    lr: HParam = 0.1,
    alpha: HParam = 0.9,
    eps: HParam = 1e-10,
    weight_decay: HParam = 0.0,
    momentum: HParam = 0.0,
    centered: bool = False,
) -> GradientTransformation:
    r"""RMSProp as MindSpore's ``nn.RMSProp`` computes it (``ApplyRMSProp`` / ``ApplyCenteredRMSProp``).

    With :math:`\rho` = ``alpha`` (MindSpore's ``decay``), :math:`\beta` the
    momentum and :math:`\lambda` the weight decay:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        s_t &= \rho s_{t-1} + (1 - \rho) g_t^2, \qquad s_0 = 1 \\
        \bar g_t &= \rho \bar g_{t-1} + (1 - \rho) g_t, \qquad \bar g_0 = 0 \quad \text{(centered)} \\
        m_t &= \beta m_{t-1} + \frac{\gamma\, g_t}{\sqrt{s_t - \bar g_t^2 + \epsilon}}
            \text{ (centered), else } \beta m_{t-1} + \frac{\gamma\, g_t}{\sqrt{s_t + \epsilon}} \\
        \theta_t &= \theta_{t-1} - m_t

    MindSpore's documented rule. Three differences from :func:`funcopt.rmsprop`
    (torch's): the mean square starts at **ones** (torch: zeros), :math:`\epsilon`
    is inside the square root, and the learning rate is applied inside the
    momentum buffer (so a changing learning rate weighs past steps
    differently). MindSpore's defaults.

    State: ``square_avg`` (:math:`s`, MindSpore's ``mean_square``),
    ``momentum_buffer`` (:math:`m`, ``moment``) and, when ``centered``,
    ``grad_avg`` (:math:`\bar g`, ``mean_grad``).

    Args:
        lr: learning rate :math:`\gamma`.
        alpha: decay :math:`\rho` of the running averages (MindSpore's ``decay``).
        eps: :math:`\epsilon`, added under the square root.
        weight_decay: L2 penalty :math:`\lambda` (needs ``params`` in ``update``).
        momentum: :math:`\beta`.
        centered: normalize by the estimated variance of the gradient.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers.rmsprop import rmsprop_mindspore
        >>> tx = rmsprop_mindspore(lr=0.1, alpha=0.5, eps=0.0)
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> updates, state = tx.update({'w': jnp.array([1.0, 0.0])}, tx.init(params), params)
        >>> updates['w']  # -0.1 * g / sqrt(0.5 * 1 + 0.5 * g^2)
        Array([-0.1, -0. ], dtype=float32)
        >>> state.slots['square_avg']['w']
        Array([1. , 0.5], dtype=float32)
    """
    _check_rmsprop(lr, alpha, eps, weight_decay, momentum)

    def leaf_init(p, hp):
        del hp
        slots = {"square_avg": jnp.ones_like(p), "momentum_buffer": jnp.zeros_like(p)}
        if centered:
            slots["grad_avg"] = jnp.zeros_like(p)
        return slots

    def leaf_update(g, p, slots, hp, step):
        del step
        rho = hp["alpha"]
        g = l2(g, p, hp["weight_decay"])
        square_avg = ema_of_square(slots["square_avg"], g, rho)
        new_slots = {"square_avg": square_avg}
        if centered:
            grad_avg = ema(slots["grad_avg"], g, rho)
            new_slots["grad_avg"] = grad_avg
            denom = jnp.sqrt(square_avg - grad_avg * grad_avg + hp["eps"])
        else:
            denom = jnp.sqrt(square_avg + hp["eps"])
        buf = hp["momentum"] * slots["momentum_buffer"] + hp["lr"] * g / denom
        new_slots["momentum_buffer"] = buf
        return -buf, new_slots

    return per_leaf_optimizer(
        hparams={"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "momentum": momentum},
        slots=("square_avg", "momentum_buffer") + (("grad_avg",) if centered else ()),
        leaf_update=leaf_update,
        leaf_init=leaf_init,
        needs_params=not is_static_zero(weight_decay),
        name="rmsprop_mindspore",
    )
