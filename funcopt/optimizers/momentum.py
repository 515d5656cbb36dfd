r"""Momentum, MindSpore's ``nn.Momentum`` algorithm (the ``ApplyMomentum`` kernel).

MindSpore documents the rule as

.. math::

    v_{t+1} = v_t u + g, \qquad
    p_{t+1} = p_t - (g \cdot lr + v_{t+1} u \cdot lr) \text{ if use_nesterov, else } p_t - lr \cdot v_{t+1}

with the weight decay added to the gradient beforehand (``Optimizer.decay_weight``:
:math:`g \leftarrow g + \lambda p`). MindSpore keeps the moment under the name
``moments``; here it is ``momentum_buffer``, torch's name for the same quantity,
so that state-dict conversion is the same as for :func:`funcopt.sgd`.
"""

from __future__ import annotations

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, check_hparam, is_static_zero, per_leaf_optimizer
from funcopt.optimizers._common import check_lr, check_weight_decay, heavy_ball, l2, momentum_direction


def momentum(
    lr: HParam,
    momentum: HParam,
    weight_decay: HParam = 0.0,
    use_nesterov: bool = False,
) -> GradientTransformation:
    r"""Momentum SGD as MindSpore's ``nn.Momentum`` computes it.

    With :math:`g_t` the gradient, :math:`\lambda` the weight decay, :math:`u`
    the momentum and :math:`\gamma` the learning rate:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        v_t &= u v_{t-1} + g_t, \qquad v_0 = 0 \\
        \theta_t &= \theta_{t-1} - \gamma (g_t + u v_t) \text{ if use_nesterov, else }
            \theta_{t-1} - \gamma v_t

    This is MindSpore's documented rule (``v_{t+1} = v_t * u + grad``;
    ``p_{t+1} = p_t - lr * v_{t+1}``, or ``p_t - (grad * lr + v_{t+1} * u * lr)``
    with Nesterov). It is the same trajectory as ``torch.optim.SGD`` with zero
    dampening, since torch's first buffer :math:`v_1 = g_1` equals
    :math:`u \cdot 0 + g_1`. Unlike :func:`funcopt.sgd`, the buffer exists
    even when the momentum is 0, as MindSpore allocates it.

    State: ``momentum_buffer`` (MindSpore's ``moments``), zeros at first.

    Like MindSpore's learning rate and momentum, ``lr`` and ``momentum`` have no
    default. MindSpore applies ``weight_decay`` only to parameters whose names
    lack ``'beta'`` and ``'gamma'`` when parameters are not grouped; here it
    applies to every leaf (mask it with :func:`funcopt.partition` or
    :func:`funcopt.masked` for other choices). MindSpore's ``loss_scale``
    (a division of the gradients) is not part of the rule.

    Args:
        lr: learning rate :math:`\gamma` (MindSpore's ``learning_rate``).
        momentum: momentum :math:`u`, at least 0.
        weight_decay: L2 penalty :math:`\lambda` added to the gradient (needs
            ``params`` in ``update``).
        use_nesterov: use the Nesterov form of the step.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Raises:
        ValueError: a negative ``lr``, ``momentum`` or ``weight_decay``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.momentum(lr=0.1, momentum=0.9)
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({'w': jnp.ones(2)}, state, params)
        ...     params = fo.apply_updates(params, updates)
        >>> params['w']
        Array([0.71, 1.71], dtype=float32)
        >>> state.slots['momentum_buffer']['w']
        Array([1.9, 1.9], dtype=float32)
    """
    check_lr(lr)
    check_hparam(momentum, "momentum",
                 "For 'Momentum', the argument 'momentum' must be at least 0.0, but got {}",
                 lambda v: v >= 0)
    check_weight_decay(weight_decay)
    if not isinstance(use_nesterov, bool):
        raise TypeError(f"For 'Momentum', the 'use_nesterov' should be a bool, "
                        f"but got {type(use_nesterov).__name__}.")

    def leaf_update(g, p, slots, hp, step):
        del step
        u = hp["momentum"]
        g = l2(g, p, hp["weight_decay"])
        buf = heavy_ball(slots["momentum_buffer"], g, u)
        direction = momentum_direction(g, buf, u, use_nesterov)
        return -hp["lr"] * direction, {"momentum_buffer": buf}

    return per_leaf_optimizer(
        hparams={"lr": lr, "momentum": momentum, "weight_decay": weight_decay},
        slots=("momentum_buffer",),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        name="momentum",
    )
