"""Adadelta, torch.optim.Adadelta's algorithm."""

from __future__ import annotations

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, check_hparam, is_static_zero, per_leaf_optimizer
from funcopt.optimizers._common import check_eps, check_lr, check_weight_decay, ema_of_square, l2, signed


def adadelta(
    lr: HParam = 1.0,
    rho: HParam = 0.9,
    eps: HParam = 1e-6,
    weight_decay: HParam = 0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Adadelta (torch.optim.Adadelta): steps sized by running averages of squared gradients and steps.

    With :math:`g_t` the gradient (negated when ``maximize``), :math:`\rho` the
    decay and :math:`\lambda` the weight decay:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t \\
        u_t &= \rho u_{t-1} + (1 - \rho) \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \Delta_t

    State: ``square_avg`` (:math:`v_t`) and ``acc_delta`` (:math:`u_t`), both
    starting at zero. Complex parameters are treated as pairs of reals, as
    torch does.

    Args:
        lr: coefficient :math:`\gamma` that scales the step (torch's default 1.0).
        rho: decay :math:`\rho` of the running averages, in [0, 1].
        eps: :math:`\epsilon`, added inside both square roots.
        weight_decay: L2 penalty :math:`\lambda` (needs ``params`` in ``update``).
        maximize: maximize the objective instead of minimizing.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.adadelta(rho=0.25, eps=1.0)
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({'w': jnp.array([0.0, 2.0])}, state, params)
        >>> fo.apply_updates(params, updates)['w']
        Array([1., 1.], dtype=float32)
        >>> state.slots['square_avg']['w']
        Array([0., 3.], dtype=float32)
    """
    check_lr(lr)
    check_hparam(rho, "rho", "Invalid rho value: {}", lambda v: 0.0 <= v <= 1.0)
    check_eps(eps)
    check_weight_decay(weight_decay)

    def leaf_update(g, p, slots, hp, step):
        del step
        rho_, eps_ = hp["rho"], hp["eps"]
        g = l2(signed(g, maximize), p, hp["weight_decay"])
        square_avg = ema_of_square(slots["square_avg"], g, rho_)
        std = jnp.sqrt(square_avg + eps_)
        delta = jnp.sqrt(slots["acc_delta"] + eps_) / std * g
        acc_delta = ema_of_square(slots["acc_delta"], delta, rho_)
        return -hp["lr"] * delta, {"square_avg": square_avg, "acc_delta": acc_delta}

    return per_leaf_optimizer(
        hparams={"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay},
        slots=("square_avg", "acc_delta"),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        name="adadelta",
    )
