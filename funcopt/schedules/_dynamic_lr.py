r"""MindSpore's ``nn.dynamic_lr``: learning-rate lists computed per epoch, in Python floats.

Each function returns a ``list[float]`` with one value per step (``total_step``
values), where step :math:`i` belongs to epoch
:math:`\text{current\_epoch} = \lfloor i / \text{step\_per\_epoch} \rfloor`.
A funcopt optimizer takes such a list through :func:`funcopt.schedules.from_list`
(MindSpore optimizers take it directly).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from funcopt.schedules._mindspore_checks import (
    check_bool,
    check_decay,
    check_float,
    check_min_max,
    check_positive_int,
)


def _check_steps(total_step: int, step_per_epoch: int, owner: str) -> None:
    check_positive_int(total_step, "total_step", owner)
    check_positive_int(step_per_epoch, "step_per_epoch", owner)


def _per_epoch(total_step: int, step_per_epoch: int, value: Callable[[int], float]) -> list[float]:
    """``value(current_epoch)`` for each of ``total_step`` steps, step ``i`` being in epoch ``i // step_per_epoch``."""
    return [value(i // step_per_epoch) for i in range(total_step)]


def _decay_per_epoch(learning_rate: float, decay_rate: float, total_step: int, step_per_epoch: int,
                     decay_epoch: int, is_stair: bool, owner: str, value: Callable[[int], float]) -> list[float]:
    """The checks and per-epoch loop the three decay lists share; ``value`` maps an epoch to its rate."""
    _check_steps(total_step, step_per_epoch, owner)
    check_decay(learning_rate, decay_rate, decay_epoch, "decay_epoch", is_stair, owner)
    return _per_epoch(total_step, step_per_epoch, value)


def piecewise_constant_lr(milestone: Sequence[int], learning_rates: Sequence[float]) -> list[float]:
    r"""Piecewise constant learning rates, MindSpore's ``nn.piecewise_constant_lr``.

    With milestones :math:`(M_1, \dots, M_N)` and rates :math:`(x_1, \dots, x_N)`:

    .. math::

        y[i] = x_t \quad \text{for } i \in [M_{t-1}, M_t), \ M_0 = 0

    Args:
        milestone: increasing positive step counts.
        learning_rates: one float per milestone.

    Returns:
        A list of :math:`M_N` floats.

    Raises:
        TypeError: ``milestone`` or ``learning_rates`` not a list or tuple, a
            milestone not an int or a rate not a float.
        ValueError: different lengths, a milestone < 1, or a milestone smaller
            than the one before.

    Example:
        >>> from funcopt.schedules import dynamic_lr
        >>> dynamic_lr.piecewise_constant_lr([2, 5, 10], [0.1, 0.05, 0.01])
        [0.1, 0.1, 0.05, 0.05, 0.05, 0.01, 0.01, 0.01, 0.01, 0.01]
    """
    owner = "piecewise_constant_lr"
    for name, value in (("milestone", milestone), ("learning_rates", learning_rates)):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"For '{owner}', the '{name}' must be a list or tuple, "
                            f"but got {type(value).__name__}.")
    if len(milestone) != len(learning_rates):
        raise ValueError(f"For '{owner}', the size of 'milestone' must be same with the size of "
                         f"'learning_rates', but got 'milestone' size: {len(milestone)}, "
                         f"'learning_rates' size: {len(learning_rates)}.")
    lr: list[float] = []
    last = 0
    for i, (item, rate) in enumerate(zip(milestone, learning_rates)):
        check_positive_int(item, f"milestone[{i}]", owner)
        if not isinstance(rate, float):
            raise TypeError(f"For '{owner}', the 'learning_rates[{i}]' must be a float, "
                            f"but got {type(rate).__name__}.")
        if item < last:
            raise ValueError(f"For '{owner}', the value of milestone[{i}] must be greater than "
                             f"milestone[{i - 1}], but got milestone[{i}]: {item}, "
                             f"milestone[{i - 1}]: {milestone[i - 1]}.")
        lr += [rate] * (item - last)
        last = item
    return lr


def exponential_decay_lr(learning_rate: float, decay_rate: float, total_step: int, step_per_epoch: int,
                         decay_epoch: int, is_stair: bool = False) -> list[float]:
    r"""Exponential decay per epoch, MindSpore's ``nn.exponential_decay_lr``.

    .. math::

        y[i] = \text{learning\_rate} \cdot \text{decay\_rate}^{\,\text{current\_epoch} / \text{decay\_epoch}}

    With ``is_stair`` the exponent is rounded down, so the rate drops once every
    ``decay_epoch`` epochs.

    Args:
        learning_rate: initial value, a positive float.
        decay_rate: the decay rate, a positive float.
        total_step: number of values, a positive int.
        step_per_epoch: steps per epoch, a positive int.
        decay_epoch: epochs per factor of ``decay_rate``, a positive int.
        is_stair: decay once every ``decay_epoch`` epochs.

    Returns:
        A list of ``total_step`` floats.

    Raises:
        TypeError: an int argument not an int, ``is_stair`` not a bool, or
            ``learning_rate`` or ``decay_rate`` not a float.
        ValueError: an int argument < 1, or ``learning_rate`` or ``decay_rate`` <= 0.

    Example:
        >>> from funcopt.schedules import dynamic_lr
        >>> [round(v, 6) for v in dynamic_lr.exponential_decay_lr(0.1, 0.9, 6, 2, 1)]
        [0.1, 0.1, 0.09, 0.09, 0.081, 0.081]
    """
    def value(epoch: int) -> float:
        p = epoch / decay_epoch
        return learning_rate * decay_rate ** (math.floor(p) if is_stair else p)

    return _decay_per_epoch(learning_rate, decay_rate, total_step, step_per_epoch, decay_epoch, is_stair,
                            "exponential_decay_lr", value)


def natural_exp_decay_lr(learning_rate: float, decay_rate: float, total_step: int, step_per_epoch: int,
                         decay_epoch: int, is_stair: bool = False) -> list[float]:
    r"""Natural exponential decay per epoch, MindSpore's ``nn.natural_exp_decay_lr``.

    .. math::

        y[i] = \text{learning\_rate} \cdot e^{-\text{decay\_rate} \cdot \text{current\_epoch}}

    With ``is_stair`` the epoch is rounded down to a multiple of ``decay_epoch``
    (the documented example: ``decay_epoch=2`` gives
    :math:`e^{-2\,\text{decay\_rate}}` at epochs 2 and 3); without it
    ``decay_epoch`` has no effect.

    Args:
        learning_rate: initial value, a positive float.
        decay_rate: the decay rate, a positive float.
        total_step: number of values, a positive int.
        step_per_epoch: steps per epoch, a positive int.
        decay_epoch: epochs between drops with ``is_stair``, a positive int.
        is_stair: decay once every ``decay_epoch`` epochs.

    Returns:
        A list of ``total_step`` floats.

    Raises:
        TypeError: an int argument not an int, ``is_stair`` not a bool, or
            ``learning_rate`` or ``decay_rate`` not a float.
        ValueError: an int argument < 1, or ``learning_rate`` or ``decay_rate`` <= 0.

    Example:
        >>> from funcopt.schedules import dynamic_lr
        >>> [round(v, 6) for v in dynamic_lr.natural_exp_decay_lr(0.1, 0.9, 6, 2, 2, True)]
        [0.1, 0.1, 0.1, 0.1, 0.01653, 0.01653]
    """
    def value(epoch: int) -> float:
        if is_stair:
            epoch = epoch // decay_epoch * decay_epoch
        return learning_rate * math.exp(-decay_rate * epoch)

    return _decay_per_epoch(learning_rate, decay_rate, total_step, step_per_epoch, decay_epoch, is_stair,
                            "natural_exp_decay_lr", value)


def inverse_decay_lr(learning_rate: float, decay_rate: float, total_step: int, step_per_epoch: int,
                     decay_epoch: int, is_stair: bool = False) -> list[float]:
    r"""Inverse-time decay per epoch, MindSpore's ``nn.inverse_decay_lr``.

    .. math::

        y[i] = \frac{\text{learning\_rate}}
        {1 + \text{decay\_rate} \cdot \text{current\_epoch} / \text{decay\_epoch}}

    With ``is_stair`` the ratio :math:`\text{current\_epoch} / \text{decay\_epoch}`
    is rounded down.

    Args:
        learning_rate: initial value, a positive float.
        decay_rate: the decay rate, a positive float.
        total_step: number of values, a positive int.
        step_per_epoch: steps per epoch, a positive int.
        decay_epoch: the epoch scale of the decay, a positive int.
        is_stair: decay once every ``decay_epoch`` epochs.

    Returns:
        A list of ``total_step`` floats.

    Raises:
        TypeError: an int argument not an int, ``is_stair`` not a bool, or
            ``learning_rate`` or ``decay_rate`` not a float.
        ValueError: an int argument < 1, or ``learning_rate`` or ``decay_rate`` <= 0.

    Example:
        >>> from funcopt.schedules import dynamic_lr
        >>> [round(v, 6) for v in dynamic_lr.inverse_decay_lr(0.1, 0.5, 6, 1, 1, True)]
        [0.1, 0.066667, 0.05, 0.04, 0.033333, 0.028571]
    """
    def value(epoch: int) -> float:
        return learning_rate / (1 + decay_rate * (epoch // decay_epoch if is_stair else epoch / decay_epoch))

    return _decay_per_epoch(learning_rate, decay_rate, total_step, step_per_epoch, decay_epoch, is_stair,
                            "inverse_decay_lr", value)


def cosine_decay_lr(min_lr: float, max_lr: float, total_step: int, step_per_epoch: int,
                    decay_epoch: int) -> list[float]:
    r"""Cosine decay per epoch, MindSpore's ``nn.cosine_decay_lr``.

    .. math::

        y[i] = \text{min\_lr} + \tfrac12(\text{max\_lr} - \text{min\_lr})
        \left(1 + \cos\left(\pi \frac{\min(\text{current\_epoch}, \text{decay\_epoch})}{\text{decay\_epoch}}
        \right)\right)

    The decay runs over ``decay_epoch`` epochs and stays at ``min_lr`` after.

    Args:
        min_lr: final value, a non-negative float.
        max_lr: initial value, a positive float greater than ``min_lr``.
        total_step: number of values, a positive int.
        step_per_epoch: steps per epoch, a positive int.
        decay_epoch: epochs to decay over, a positive int.

    Returns:
        A list of ``total_step`` floats.

    Raises:
        TypeError: ``min_lr`` or ``max_lr`` not a float, or an int argument not an int.
        ValueError: ``min_lr`` < 0, ``max_lr`` <= ``min_lr``, or an int argument < 1.

    Example:
        >>> from funcopt.schedules import dynamic_lr
        >>> [round(v, 6) for v in dynamic_lr.cosine_decay_lr(0.01, 0.1, 6, 2, 2)]
        [0.1, 0.1, 0.055, 0.055, 0.01, 0.01]
    """
    owner = "cosine_decay_lr"
    check_min_max(min_lr, max_lr, owner)
    _check_steps(total_step, step_per_epoch, owner)
    check_positive_int(decay_epoch, "decay_epoch", owner)
    delta = 0.5 * (max_lr - min_lr)
    return _per_epoch(total_step, step_per_epoch,
                      lambda epoch: min_lr + delta * (1 + math.cos(math.pi * min(epoch, decay_epoch) / decay_epoch)))


def polynomial_decay_lr(learning_rate: float, end_learning_rate: float, total_step: int, step_per_epoch: int,
                        decay_epoch: int, power: float, update_decay_epoch: bool = False) -> list[float]:
    r"""Polynomial decay per epoch, MindSpore's ``nn.polynomial_decay_lr``.

    .. math::

        y[i] = (\text{learning\_rate} - \text{end\_learning\_rate})
        \left(1 - \frac{\text{tmp\_epoch}}{\text{tmp\_decay\_epoch}}\right)^{\text{power}}
        + \text{end\_learning\_rate}

    with :math:`\text{tmp\_epoch} = \min(\text{current\_epoch}, \text{decay\_epoch})`
    and :math:`\text{tmp\_decay\_epoch} = \text{decay\_epoch}`; with
    ``update_decay_epoch``, :math:`\text{tmp\_decay\_epoch} = \text{decay\_epoch}
    \cdot \lceil \text{current\_epoch} / \text{decay\_epoch} \rceil` (at least
    ``decay_epoch``) and :math:`\text{tmp\_epoch}` is the unclipped current epoch.

    Args:
        learning_rate: initial value, a positive float.
        end_learning_rate: final value, a non-negative float.
        total_step: number of values, a positive int.
        step_per_epoch: steps per epoch, a positive int.
        decay_epoch: epochs to decay over, a positive int.
        power: exponent of the polynomial, a positive float.
        update_decay_epoch: stretch the decay every ``decay_epoch`` epochs.

    Returns:
        A list of ``total_step`` floats.

    Raises:
        TypeError: a float argument not a float, an int argument not an int, or
            ``update_decay_epoch`` not a bool.
        ValueError: ``learning_rate`` or ``power`` <= 0, ``end_learning_rate`` < 0
            or an int argument < 1.

    Example:
        >>> from funcopt.schedules import dynamic_lr
        >>> [round(v, 6) for v in dynamic_lr.polynomial_decay_lr(0.1, 0.01, 6, 2, 2, 0.5)]
        [0.1, 0.1, 0.07364, 0.07364, 0.01, 0.01]
    """
    owner = "polynomial_decay_lr"
    check_float(learning_rate, "learning_rate", owner)
    check_float(end_learning_rate, "end_learning_rate", owner, positive=False)
    check_float(power, "power", owner)
    _check_steps(total_step, step_per_epoch, owner)
    check_positive_int(decay_epoch, "decay_epoch", owner)
    check_bool(update_decay_epoch, "update_decay_epoch", owner)
    delta = learning_rate - end_learning_rate

    def value(epoch: int) -> float:
        if update_decay_epoch:
            span = decay_epoch * max(-(-epoch // decay_epoch), 1)
        else:
            span, epoch = decay_epoch, min(epoch, decay_epoch)
        return delta * (1 - epoch / span) ** power + end_learning_rate

    return _per_epoch(total_step, step_per_epoch, value)


def warmup_lr(learning_rate: float, total_step: int, step_per_epoch: int, warmup_epoch: int) -> list[float]:
    r"""Linear warmup per epoch, MindSpore's ``nn.warmup_lr``.

    .. math::

        y[i] = \text{learning\_rate} \cdot \frac{\min(\text{current\_epoch}, \text{warmup\_epoch})}
        {\text{warmup\_epoch}}

    Args:
        learning_rate: value reached at ``warmup_epoch``, a non-negative float.
        total_step: number of values, a positive int.
        step_per_epoch: steps per epoch, a positive int.
        warmup_epoch: epochs of warmup, a positive int.

    Returns:
        A list of ``total_step`` floats.

    Raises:
        TypeError: ``learning_rate`` not a float or an int argument not an int.
        ValueError: ``learning_rate`` < 0 or an int argument < 1.

    Example:
        >>> from funcopt.schedules import dynamic_lr
        >>> dynamic_lr.warmup_lr(0.1, 6, 2, 2)
        [0.0, 0.0, 0.05, 0.05, 0.1, 0.1]
    """
    owner = "warmup_lr"
    check_float(learning_rate, "learning_rate", owner, positive=False)
    check_positive_int(warmup_epoch, "warmup_epoch", owner)
    _check_steps(total_step, step_per_epoch, owner)
    return _per_epoch(total_step, step_per_epoch, lambda epoch: learning_rate * min(epoch, warmup_epoch) / warmup_epoch)

