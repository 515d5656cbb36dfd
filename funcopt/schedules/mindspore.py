r"""MindSpore's ``nn.learning_rate_schedule`` formulas as jittable functions.

``ExponentialDecayLR(...)`` becomes ``exponential_decay_lr(...)`` and so on: the
same argument names, the documented formulas, and the documented exception types
for bad arguments. The returned schedule takes MindSpore's ``global_step`` (our
step count: the number of updates already applied).

MindSpore's list-returning ``nn.dynamic_lr`` functions are the submodule
:mod:`funcopt.schedules.dynamic_lr` (also reachable here as ``dynamic_lr``), and
:func:`from_list` turns such a list into a schedule. The MindSpore-style cell classes
(``ExponentialDecayLR``, ...) are in :mod:`funcopt.compat.mindspore`. The same
functions are reachable flat, as ``fo.schedules.exponential_decay_lr`` and so on.

Example:
    >>> import funcopt as fo
    >>> s = fo.schedules.mindspore.exponential_decay_lr(0.1, 0.5, decay_steps=2, is_stair=True)
    >>> [round(float(s(t)), 4) for t in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    >>> lrs = fo.schedules.mindspore.dynamic_lr.piecewise_constant_lr([2, 4], [0.1, 0.01])
    >>> lrs, float(fo.schedules.mindspore.from_list(lrs)(3))
    ([0.1, 0.1, 0.01, 0.01], 0.01)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from funcopt._src.hparams import Schedule
from funcopt.schedules import dynamic_lr
from funcopt.schedules._common import as_float, count_array, floor_div
from funcopt.schedules._mindspore_checks import (
    check_bool,
    check_decay,
    check_float,
    check_min_max,
    check_positive_int,
)

__all__ = [
    "cosine_decay_lr",
    "dynamic_lr",
    "exponential_decay_lr",
    "from_list",
    "inverse_decay_lr",
    "natural_exp_decay_lr",
    "polynomial_decay_lr",
    "warm_up_lr",
]


def _decay_exponent(count, decay_steps: int, is_stair: bool):
    t = count_array(count)
    return floor_div(t, decay_steps) if is_stair else as_float(t) / decay_steps


def _decay_schedule(learning_rate: float, decay_rate: float, decay_steps: int, is_stair: bool, owner: str,
                    rule: Callable[[Any], Any]) -> Schedule:
    """The checks and step-to-exponent map the three decay schedules share; ``rule`` maps the exponent to the rate."""
    check_decay(learning_rate, decay_rate, decay_steps, "decay_steps", is_stair, owner)

    def schedule(global_step):
        return rule(_decay_exponent(global_step, decay_steps, is_stair))

    return schedule


def exponential_decay_lr(learning_rate: float, decay_rate: float, decay_steps: int,
                         is_stair: bool = False) -> Schedule:
    r"""Exponential decay, MindSpore's ``nn.ExponentialDecayLR``.

    .. math::

        \text{lr} = \text{learning\_rate} \cdot \text{decay\_rate}^{p}, \qquad
        p = \frac{\text{current\_step}}{\text{decay\_steps}}
        \ \left(\left\lfloor \frac{\text{current\_step}}{\text{decay\_steps}} \right\rfloor
        \text{ if is\_stair}\right)

    Args:
        learning_rate: initial value, a positive float.
        decay_rate: the decay rate, a positive float.
        decay_steps: steps per factor of ``decay_rate``, a positive int.
        is_stair: decay once every ``decay_steps`` steps.

    Returns:
        A schedule ``global_step -> lr``.

    Raises:
        TypeError: ``learning_rate`` or ``decay_rate`` not a float, ``decay_steps``
            not an int or ``is_stair`` not a bool.
        ValueError: ``decay_steps`` < 1, or ``learning_rate`` or ``decay_rate`` <= 0.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.exponential_decay_lr(0.1, 0.9, decay_steps=4)
        >>> round(float(sched(2)), 6)
        0.094868
    """
    return _decay_schedule(learning_rate, decay_rate, decay_steps, is_stair, "ExponentialDecayLR",
                           lambda p: learning_rate * as_float(decay_rate) ** p)


def natural_exp_decay_lr(learning_rate: float, decay_rate: float, decay_steps: int,
                         is_stair: bool = False) -> Schedule:
    r"""Natural exponential decay, MindSpore's ``nn.NaturalExpDecayLR``, as documented.

    .. math::

        \text{lr} = \text{learning\_rate} \cdot e^{-\text{decay\_rate} \cdot p}, \qquad
        p = \frac{\text{current\_step}}{\text{decay\_steps}}
        \ \left(\left\lfloor \frac{\text{current\_step}}{\text{decay\_steps}} \right\rfloor
        \text{ if is\_stair}\right)

    This is the formula of MindSpore's documentation (the same as TensorFlow's
    natural exponential decay). MindSpore's own kernel has been seen to compute
    :math:`e^{-\text{decay\_rate} \cdot \text{current\_step}}` instead, with the
    step rounded down to a multiple of ``decay_steps`` when ``is_stair``; the two
    agree only at step 0.

    Args:
        learning_rate: initial value, a positive float.
        decay_rate: the decay rate, a positive float.
        decay_steps: steps per factor of :math:`e^{-\text{decay\_rate}}`, a positive int.
        is_stair: decay once every ``decay_steps`` steps.

    Returns:
        A schedule ``global_step -> lr``.

    Raises:
        TypeError: ``learning_rate`` or ``decay_rate`` not a float, ``decay_steps``
            not an int or ``is_stair`` not a bool.
        ValueError: ``decay_steps`` < 1, or ``learning_rate`` or ``decay_rate`` <= 0.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.natural_exp_decay_lr(0.1, 0.9, decay_steps=4, is_stair=True)
        >>> [round(float(sched(t)), 6) for t in (2, 4)]
        [0.1, 0.040657]
    """
    return _decay_schedule(learning_rate, decay_rate, decay_steps, is_stair, "NaturalExpDecayLR",
                           lambda p: learning_rate * jnp.exp(-decay_rate * p))


def inverse_decay_lr(learning_rate: float, decay_rate: float, decay_steps: int,
                     is_stair: bool = False) -> Schedule:
    r"""Inverse-time decay, MindSpore's ``nn.InverseDecayLR``.

    .. math::

        \text{lr} = \frac{\text{learning\_rate}}{1 + \text{decay\_rate} \cdot p}, \qquad
        p = \frac{\text{current\_step}}{\text{decay\_steps}}
        \ \left(\left\lfloor \frac{\text{current\_step}}{\text{decay\_steps}} \right\rfloor
        \text{ if is\_stair}\right)

    Args:
        learning_rate: initial value, a positive float.
        decay_rate: the decay rate, a positive float.
        decay_steps: the step scale of the decay, a positive int.
        is_stair: decay once every ``decay_steps`` steps.

    Returns:
        A schedule ``global_step -> lr``.

    Raises:
        TypeError: ``learning_rate`` or ``decay_rate`` not a float, ``decay_steps``
            not an int or ``is_stair`` not a bool.
        ValueError: ``decay_steps`` < 1, or ``learning_rate`` or ``decay_rate`` <= 0.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.inverse_decay_lr(0.1, 0.5, decay_steps=2)
        >>> [round(float(sched(t)), 6) for t in (0, 2, 4)]
        [0.1, 0.066667, 0.05]
    """
    return _decay_schedule(learning_rate, decay_rate, decay_steps, is_stair, "InverseDecayLR",
                           lambda p: learning_rate / (1 + decay_rate * p))


def cosine_decay_lr(min_lr: float, max_lr: float, decay_steps: int) -> Schedule:
    r"""Cosine decay, MindSpore's ``nn.CosineDecayLR``.

    .. math::

        \text{lr} = \text{min\_lr} + \tfrac12(\text{max\_lr} - \text{min\_lr})
        \left(1 + \cos\left(\pi \frac{\min(\text{current\_step}, \text{decay\_steps})}
        {\text{decay\_steps}}\right)\right)

    The decay runs over ``decay_steps`` steps and stays at ``min_lr`` after
    (MindSpore clips the step at ``decay_steps``).

    Args:
        min_lr: the final value, a non-negative float.
        max_lr: the value at step 0, a positive float greater than ``min_lr``.
        decay_steps: steps to decay over, a positive int.

    Returns:
        A schedule ``global_step -> lr``.

    Raises:
        TypeError: ``min_lr`` or ``max_lr`` not a float, ``decay_steps`` not an int.
        ValueError: ``min_lr`` < 0, ``decay_steps`` < 1, ``max_lr`` <= 0 or
            ``max_lr`` <= ``min_lr``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.cosine_decay_lr(0.01, 0.1, decay_steps=4)
        >>> [round(float(sched(t)), 6) for t in (0, 2, 4, 6)]
        [0.1, 0.055, 0.01, 0.01]
    """
    check_min_max(min_lr, max_lr, "CosineDecayLR")
    check_positive_int(decay_steps, "decay_steps", "CosineDecayLR")
    delta = 0.5 * (max_lr - min_lr)

    def schedule(global_step):
        p = as_float(jnp.minimum(count_array(global_step), decay_steps))
        return min_lr + delta * (1.0 + jnp.cos(math.pi * p / decay_steps))

    return schedule


def polynomial_decay_lr(learning_rate: float, end_learning_rate: float, decay_steps: int, power: float,
                        update_decay_steps: bool = False) -> Schedule:
    r"""Polynomial decay, MindSpore's ``nn.PolynomialDecayLR``.

    .. math::

        \text{lr} = (\text{learning\_rate} - \text{end\_learning\_rate})
        \left(1 - \frac{\text{tmp\_step}}{\text{tmp\_decay\_steps}}\right)^{\text{power}}
        + \text{end\_learning\_rate}

    with :math:`\text{tmp\_step} = \min(\text{current\_step}, \text{decay\_steps})`
    and :math:`\text{tmp\_decay\_steps} = \text{decay\_steps}`. With
    ``update_decay_steps`` the decay restarts every ``decay_steps`` steps from a
    lower point: :math:`\text{tmp\_decay\_steps} = \text{decay\_steps} \cdot
    \lceil \text{current\_step} / \text{decay\_steps} \rceil` (at least
    ``decay_steps``, so step 0 is defined) and :math:`\text{tmp\_step}` is the
    unclipped current step.

    Args:
        learning_rate: value at step 0, a positive float.
        end_learning_rate: final value, a non-negative float.
        decay_steps: steps to decay over, a positive int.
        power: exponent of the polynomial, a positive float.
        update_decay_steps: stretch the decay every ``decay_steps`` steps.

    Returns:
        A schedule ``global_step -> lr``.

    Raises:
        TypeError: ``learning_rate``, ``end_learning_rate`` or ``power`` not a
            float, ``decay_steps`` not an int or ``update_decay_steps`` not a bool.
        ValueError: ``end_learning_rate`` < 0, ``decay_steps`` < 1, or
            ``learning_rate`` or ``power`` <= 0.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.polynomial_decay_lr(0.1, 0.01, decay_steps=4, power=0.5)
        >>> [round(float(sched(t)), 6) for t in (0, 2, 4, 6)]
        [0.1, 0.07364, 0.01, 0.01]
    """
    owner = "PolynomialDecayLR"
    check_float(learning_rate, "learning_rate", owner)
    check_float(end_learning_rate, "end_learning_rate", owner, positive=False)
    check_positive_int(decay_steps, "decay_steps", owner)
    check_bool(update_decay_steps, "update_decay_steps", owner)
    check_float(power, "power", owner)

    def schedule(global_step):
        t = count_array(global_step)
        # 1 - p is formed as (span - step) / span, exact in the numerator, so it never rounds below 0.
        if update_decay_steps:
            cycles = jnp.maximum(-floor_div(-t, decay_steps), 1.0)  # ceil(t / decay_steps), at least 1
            span = decay_steps * cycles
            rest = (span - as_float(t)) / span
        else:
            rest = as_float(decay_steps - jnp.minimum(t, decay_steps)) / decay_steps
        return (learning_rate - end_learning_rate) * rest**power + end_learning_rate

    return schedule


def warm_up_lr(learning_rate: float, warmup_steps: int) -> Schedule:
    r"""Linear warmup, MindSpore's ``nn.WarmUpLR``.

    .. math::

        \text{lr} = \text{learning\_rate} \cdot
        \frac{\min(\text{current\_step}, \text{warmup\_steps})}{\text{warmup\_steps}}

    Args:
        learning_rate: the value reached at ``warmup_steps``, a positive float.
        warmup_steps: length of the warmup, a positive int.

    Returns:
        A schedule ``global_step -> lr``.

    Raises:
        TypeError: ``learning_rate`` not a float or ``warmup_steps`` not an int.
        ValueError: ``warmup_steps`` < 1 or ``learning_rate`` <= 0.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.warm_up_lr(0.1, warmup_steps=2)
        >>> [round(float(sched(t)), 6) for t in range(4)]
        [0.0, 0.05, 0.1, 0.1]
    """
    check_float(learning_rate, "learning_rate", "WarmUpLR")
    check_positive_int(warmup_steps, "warmup_steps", "WarmUpLR")

    def schedule(global_step):
        return learning_rate * as_float(jnp.minimum(count_array(global_step), warmup_steps)) / warmup_steps

    return schedule


def from_list(values: Sequence[float]) -> Schedule:
    r"""A schedule that reads a list of per-step values, such as a ``dynamic_lr`` list.

    .. math::

        v_t = \text{values}[\min(t, n - 1)]

    Past the end of the list the last value is held.

    Args:
        values: one value per step (a list, tuple or 1-d array), not empty.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> from funcopt.schedules import dynamic_lr
        >>> sched = fo.schedules.from_list(dynamic_lr.warmup_lr(0.1, 4, 1, 2))
        >>> [round(float(sched(t)), 6) for t in range(6)]
        [0.0, 0.05, 0.1, 0.1, 0.1, 0.1]
    """
    table = np.asarray(values, dtype=np.float64)
    if table.ndim != 1 or table.size == 0:
        raise ValueError(f"from_list needs a non-empty 1-d sequence of values, got shape {table.shape}")

    def schedule(count):
        t = count_array(count)
        index = jnp.clip(t, 0, table.size - 1).astype(jnp.int32)
        return as_float(table)[index]

    return schedule
