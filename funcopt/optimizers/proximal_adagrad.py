r"""Proximal Adagrad, MindSpore's ``nn.ProximalAdagrad`` (TensorFlow's ``ApplyProximalAdagrad``).

An Adagrad step followed by the proximal operator of
:math:`l_1\|\theta\|_1 + \tfrac{l_2}{2}\|\theta\|^2` (FOBOS, Duchi & Singer 2009):
soft-thresholding that sets small weights exactly to zero, then a shrinkage.
The rule sets the parameter value directly, so the update returned is the
difference ``new_param - param`` and ``params`` must be given.
"""

from __future__ import annotations

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, per_leaf_optimizer
from funcopt.optimizers._common import check_lr, check_mindspore_non_negative, check_weight_decay


def proximal_adagrad(
    lr: HParam = 1e-3,
    accum: HParam = 0.1,
    l1: HParam = 0.0,
    l2: HParam = 0.0,
    weight_decay: HParam = 0.0,
) -> GradientTransformation:
    r"""Proximal Adagrad (FOBOS with Adagrad step sizes) as MindSpore computes it.

    With :math:`g_t` the gradient, :math:`\gamma` the learning rate,
    :math:`a` the accumulator and :math:`\lambda` the weight decay:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        a_t &= a_{t-1} + g_t^2 \\
        \eta_t &= \gamma / \sqrt{a_t} \\
        v_t &= \theta_{t-1} - \eta_t g_t \\
        \theta_t &= \frac{\operatorname{sign}(v_t)}{1 + \eta_t l_2} \max(|v_t| - \eta_t l_1, 0)

    MindSpore's and TensorFlow's documentation write the shrinkage with the
    scalar learning rate (``sign(prox_v) / (1 + lr * l2) * max(|prox_v| - lr * l1, 0)``),
    but both frameworks' kernels (TensorFlow's ``ApplyProximalAdagrad`` functor,
    MindSpore's CPU kernels) use the per-coordinate Adagrad rate
    :math:`\eta_t = \gamma / \sqrt{a_t}` there, as FOBOS prescribes; this
    implementation follows the kernels. The weight decay is added to the
    gradient first (MindSpore's ``decay_weight``). :math:`a_0` = ``accum``.
    The returned update is :math:`\theta_t - \theta_{t-1}`.

    State: ``accum``.

    Args:
        lr: learning rate :math:`\gamma` (MindSpore's ``learning_rate``), >= 0.
        accum: starting value of the accumulator, >= 0.
        l1: L1 regularization strength, >= 0.
        l2: L2 regularization strength, >= 0.
        weight_decay: :math:`\lambda`, added to the gradient as
            :math:`\lambda\theta`, >= 0.

    Returns:
        A :class:`funcopt.GradientTransformation` whose ``update`` needs ``params``.

    Raises:
        ValueError: a negative ``lr``, ``accum``, ``l1``, ``l2`` or ``weight_decay``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.proximal_adagrad(lr=0.5, accum=0.0, l1=0.5)
        >>> params = {'w': jnp.array([0.2, 3.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({'w': jnp.array([0.1, 1.0])}, state, params)
        >>> fo.apply_updates(params, updates)['w']   # the first weight is thresholded to 0
        Array([0.  , 2.25], dtype=float32)
    """
    check_lr(lr)
    for name, value in (("accum", accum), ("l1", l1), ("l2", l2)):
        check_mindspore_non_negative(value, name, "ProximalAdagrad")
    check_weight_decay(weight_decay)

    def leaf_init(p, hp):
        return {"accum": jnp.full_like(p, hp["accum"])}

    def leaf_update(g, p, slots, hp, step):
        del step
        g = g + hp["weight_decay"] * p
        new_accum = slots["accum"] + g * g
        eta = hp["lr"] / jnp.sqrt(new_accum)
        prox = p - eta * g
        shrunk = jnp.maximum(jnp.abs(prox) - eta * hp["l1"], 0)
        new_p = jnp.sign(prox) * shrunk / (1 + eta * hp["l2"])
        return new_p - p, {"accum": new_accum}

    return per_leaf_optimizer(
        hparams={"lr": lr, "accum": accum, "l1": l1, "l2": l2, "weight_decay": weight_decay},
        slots=("accum",),
        leaf_update=leaf_update,
        leaf_init=leaf_init,
        needs_params=True,
        name="proximal_adagrad",
    )
