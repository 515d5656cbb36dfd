r"""FTRL-proximal, MindSpore's ``nn.FTRL`` (TensorFlow's ``ApplyFtrl`` kernel).

FTRL keeps a per-coordinate accumulator of squared gradients and a "linear"
term, and sets each weight to the closed-form minimizer of the regularized
model, which is exactly zero wherever the linear term is within the L1
strength. The rule sets the parameter value directly, so the update returned
is the difference ``new_param - param`` and ``params`` must be given.
"""

from __future__ import annotations

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, check_hparam, per_leaf_optimizer
from funcopt.optimizers._common import check_mindspore_non_negative, check_weight_decay


def _accum_power(accum: jnp.ndarray, lr_power: jnp.ndarray) -> jnp.ndarray:
    # The kernels take a square root for the default lr_power = -0.5.
    return jnp.where(lr_power == -0.5, jnp.sqrt(accum), jnp.power(accum, -lr_power))


def ftrl(
    lr: HParam = 1e-3,
    initial_accum: HParam = 0.1,
    lr_power: HParam = -0.5,
    l1: HParam = 0.0,
    l2: HParam = 0.0,
    weight_decay: HParam = 0.0,
) -> GradientTransformation:
    r"""FTRL-proximal (McMahan et al. 2013) as MindSpore's ``nn.FTRL`` computes it.

    With :math:`g_t` the gradient, :math:`\alpha` the learning rate,
    :math:`p` = ``lr_power``, :math:`m` the accumulator, :math:`u` the linear
    term and :math:`\lambda` the weight decay:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        m_t &= m_{t-1} + g_t^2 \\
        u_t &= u_{t-1} + g_t - \frac{m_t^{-p} - m_{t-1}^{-p}}{\alpha} \theta_{t-1} \\
        \theta_t &= \begin{cases}
            \dfrac{\operatorname{sign}(u_t)\, l_1 - u_t}{m_t^{-p} / \alpha + 2 l_2}
                & \text{if } |u_t| > l_1 \\
            0 & \text{otherwise}
        \end{cases}

    This is MindSpore's documented rule for ``nn.FTRL`` (and TensorFlow's
    ``ApplyFtrl``; :math:`m^{-p}` is a square root for the default
    :math:`p = -0.5`), with the weight decay added to the gradient first
    (MindSpore's ``decay_weight``; ``nn.FTRL`` applies it to every parameter
    when they are not grouped). :math:`m_0` = ``initial_accum``,
    :math:`u_0 = 0`. The returned update is :math:`\theta_t - \theta_{t-1}`.

    State: ``accum`` (MindSpore's ``moments``) and ``linear``.

    Args:
        lr: learning rate :math:`\alpha` (MindSpore's ``learning_rate``), > 0.
        initial_accum: starting value of the accumulator, >= 0.
        lr_power: :math:`p`, <= 0; 0 gives a fixed learning rate.
        l1: L1 regularization strength, >= 0.
        l2: L2 regularization strength, >= 0.
        weight_decay: :math:`\lambda`, added to the gradient as
            :math:`\lambda\theta`, >= 0.

    Returns:
        A :class:`funcopt.GradientTransformation` whose ``update`` needs ``params``.

    Raises:
        ValueError: a non-positive ``lr``, a positive ``lr_power``, or a negative
            ``initial_accum``, ``l1``, ``l2`` or ``weight_decay``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.ftrl(lr=1.0, initial_accum=0.0, l1=0.5)
        >>> params = {'w': jnp.array([0.0, 0.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({'w': jnp.array([0.3, -2.5])}, state, params)
        >>> fo.apply_updates(params, updates)['w']   # |linear| = 0.3 <= l1 gives exactly 0
        Array([0. , 0.8], dtype=float32)
    """
    check_hparam(lr, "lr", "Invalid learning rate: {}", lambda v: v > 0)
    check_mindspore_non_negative(initial_accum, "initial_accum", "FTRL")
    check_hparam(lr_power, "lr_power", "For 'FTRL', the 'lr_power' must be <= 0.0, but got {}.",
                 lambda v: v <= 0)
    check_mindspore_non_negative(l1, "l1", "FTRL")
    check_mindspore_non_negative(l2, "l2", "FTRL")
    check_weight_decay(weight_decay)

    def leaf_init(p, hp):
        return {"accum": jnp.full_like(p, hp["initial_accum"]), "linear": jnp.zeros_like(p)}

    def leaf_update(g, p, slots, hp, step):
        del step
        lr_, lr_power_, l1_, l2_ = hp["lr"], hp["lr_power"], hp["l1"], hp["l2"]
        g = g + hp["weight_decay"] * p
        accum = slots["accum"]
        new_accum = accum + g * g
        new_accum_pow = _accum_power(new_accum, lr_power_)
        sigma = (new_accum_pow - _accum_power(accum, lr_power_)) / lr_
        linear = slots["linear"] + g - sigma * p
        quadratic = new_accum_pow / lr_ + 2 * l2_
        new_p = jnp.where(jnp.abs(linear) > l1_, (l1_ * jnp.sign(linear) - linear) / quadratic,
                          jnp.zeros_like(p))
        return new_p - p, {"accum": new_accum, "linear": linear}

    return per_leaf_optimizer(
        hparams={"lr": lr, "initial_accum": initial_accum, "lr_power": lr_power, "l1": l1, "l2": l2,
                 "weight_decay": weight_decay},
        slots=("accum", "linear"),
        leaf_update=leaf_update,
        leaf_init=leaf_init,
        needs_params=True,
        name="ftrl",
    )
