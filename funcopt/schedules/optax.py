r"""optax's common schedules, with optax's names and arguments.

Each factory returns a jittable ``schedule(count) -> value`` (``count`` is the
number of updates already applied) giving the same values as the optax schedule
of the same name, as a float array in the default float dtype, so code written for
``optax.warmup_cosine_decay_schedule`` keeps its arguments. The same functions are
reachable flat, as ``fo.schedules.cosine_decay_schedule`` and so on.

Example:
    >>> import funcopt as fo
    >>> s = fo.schedules.optax.linear_schedule(1.0, 0.0, transition_steps=4)
    >>> [float(s(t)) for t in range(6)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    >>> fo.schedules.optax.linear_schedule is fo.schedules.linear_schedule
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from funcopt._src.hparams import Schedule
from funcopt.schedules._common import Scalar, as_float, count_array

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]


def constant_schedule(value: Scalar) -> Schedule:
    r"""A constant: :math:`v_t = v` (optax's ``constant_schedule``).

    Args:
        value: the value at every step.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> float(fo.schedules.constant_schedule(0.5)(100))
        0.5
    """

    def schedule(count):
        return jnp.broadcast_to(as_float(value), jnp.shape(count_array(count)))

    return schedule


def polynomial_schedule(init_value: Scalar, end_value: Scalar, power: Scalar, transition_steps: int,
                        transition_begin: int = 0) -> Schedule:
    r"""Polynomial transition from ``init_value`` to ``end_value`` (optax's ``polynomial_schedule``).

    With :math:`I, E` the initial and end values, :math:`B` = ``transition_begin``,
    :math:`T` = ``transition_steps`` and :math:`P` = ``power``:

    .. math::

        v_t = (I - E)\left(1 - \frac{\operatorname{clip}(t - B, 0, T)}{T}\right)^{P} + E

    A non-positive ``transition_steps`` gives the constant ``init_value``; a
    negative ``transition_begin`` counts as 0 (as optax does).

    Args:
        init_value: value up to step ``transition_begin``.
        end_value: value from step ``transition_begin + transition_steps`` on.
        power: exponent of the polynomial.
        transition_steps: length of the transition.
        transition_begin: steps to hold ``init_value`` first.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.polynomial_schedule(1.0, 0.0, power=2, transition_steps=4)
        >>> [float(sched(t)) for t in range(6)]
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    if transition_steps <= 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        done = jnp.clip(count_array(count) - transition_begin, 0, transition_steps)
        frac = as_float(transition_steps - done) / transition_steps
        end = as_float(end_value)
        return (as_float(init_value) - end) * frac ** as_float(power) + end

    return schedule


def linear_schedule(init_value: Scalar, end_value: Scalar, transition_steps: int,
                    transition_begin: int = 0) -> Schedule:
    r"""Linear transition from ``init_value`` to ``end_value`` (optax's ``linear_schedule``).

    .. math::

        v_t = I + (E - I) \frac{\operatorname{clip}(t - B, 0, T)}{T}

    i.e. :func:`polynomial_schedule` with ``power=1``.

    Args:
        init_value: value up to step ``transition_begin``.
        end_value: value from step ``transition_begin + transition_steps`` on.
        transition_steps: length of the transition.
        transition_begin: steps to hold ``init_value`` first.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.linear_schedule(0.0, 1.0, transition_steps=4, transition_begin=1)
        >>> [float(sched(t)) for t in range(7)]
        [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def piecewise_constant_schedule(init_value: Scalar,
                                boundaries_and_scales: Mapping[int, float] | None = None) -> Schedule:
    r"""Scaled jumps at given steps (optax's ``piecewise_constant_schedule``).

    .. math::

        v_t = I \prod_{(b, s) :\, t \ge b} s

    Args:
        init_value: value before the first boundary.
        boundaries_and_scales: ``{step: scale}``; each non-negative scale
            multiplies the value from its step on.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.piecewise_constant_schedule(1.0, {2: 0.5, 4: 0.1})
        >>> [round(float(sched(t)), 6) for t in range(6)]
        [1.0, 1.0, 0.5, 0.5, 0.05, 0.05]
    """
    items = sorted((boundaries_and_scales or {}).items())
    if not all(scale >= 0.0 for _, scale in items):
        raise ValueError("`piecewise_constant_schedule` expects non-negative scale factors")

    def schedule(count):
        t = count_array(count)
        value = jnp.broadcast_to(as_float(init_value), t.shape)
        for boundary, scale in items:
            value = jnp.where(t >= boundary, value * scale, value)
        return value

    return schedule


def _interpolator(kind: str) -> Callable[[Any, Any, Any], Any]:
    if kind == "linear":
        return lambda start, end, pct: (end - start) * pct + start
    if kind == "cosine":
        return lambda start, end, pct: end + (start - end) / 2.0 * (jnp.cos(math.pi * pct) + 1)
    raise ValueError("`interpolate_type` must be either 'cosine' or 'linear'")


def piecewise_interpolate_schedule(interpolate_type: str, init_value: Scalar,
                                   boundaries_and_scales: Mapping[int, float] | None = None) -> Schedule:
    r"""Interpolation between scaled values at boundaries (optax's ``piecewise_interpolate_schedule``).

    With boundaries :math:`0 = b_0 < b_1 < \dots < b_n` and values
    :math:`v_0 = I, v_k = v_{k-1} s_k` (the scales accumulate), the value
    interpolates (``'linear'`` or ``'cosine'``) from :math:`v_{k}` to
    :math:`v_{k+1}` over :math:`[b_k, b_{k+1})` and is :math:`v_n` from
    :math:`b_n` on. As in optax, a negative count gives 0.

    Args:
        interpolate_type: ``'linear'`` or ``'cosine'``.
        init_value: value at step 0.
        boundaries_and_scales: ``{step: scale}`` with non-negative scales.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.piecewise_interpolate_schedule('linear', 1.0, {4: 0.1, 8: 0.01})
        >>> [round(float(sched(t)), 6) for t in range(0, 11, 2)]
        [1.0, 0.55, 0.1, 0.0505, 0.001, 0.001]
    """
    interpolate = _interpolator(interpolate_type)
    items = sorted((boundaries_and_scales or {}).items())
    if not all(scale >= 0.0 for _, scale in items):
        raise ValueError("`piecewise_interpolate_schedule` expects non-negative scale factors")
    bounds = [0] + [b for b, _ in items]
    scales = [s for _, s in items]

    def schedule(count):
        t = count_array(count)
        tf = as_float(t)
        values = [as_float(init_value)]
        for s in scales:
            values.append(values[-1] * s)
        out = jnp.where(t >= bounds[-1], values[-1], jnp.zeros_like(tf))
        for k in range(len(scales)):
            width = max(bounds[k + 1] - bounds[k], 1)
            inside = (t >= bounds[k]) & (t < bounds[k + 1])
            pct = (tf - bounds[k]) / width
            out = out + jnp.where(inside, interpolate(values[k], values[k + 1], pct), 0.0)
        return out

    return schedule


def exponential_decay(
    init_value: Scalar,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    r"""Exponential decay (optax's ``exponential_decay``).

    .. math::

        v_t = \begin{cases} I & t \le B \\
            I \, r^{(t - B) / T} & t > B \end{cases}

    with :math:`r` = ``decay_rate``, :math:`B` = ``transition_begin`` and
    :math:`T` = ``transition_steps``; ``staircase`` floors the exponent, and
    ``end_value`` bounds the value (from below when :math:`r < 1`, from above
    otherwise). A non-positive ``transition_steps`` or a zero ``decay_rate``
    gives the constant ``init_value``; a negative ``transition_begin`` counts as 0.

    Args:
        init_value: the initial value.
        transition_steps: steps per factor of ``decay_rate``.
        decay_rate: the decay rate.
        transition_begin: steps to hold ``init_value`` first.
        staircase: decay in discrete jumps.
        end_value: bound where the decay stops.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.exponential_decay(1.0, transition_steps=2, decay_rate=0.5,
        ...                                        staircase=True, end_value=0.3)
        >>> [float(sched(t)) for t in range(6)]
        [1.0, 1.0, 0.5, 0.5, 0.3, 0.3]
    """
    if transition_steps <= 0 or decay_rate == 0:
        return constant_schedule(init_value)
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        elapsed = count_array(count) - transition_begin
        p = as_float(elapsed) / transition_steps
        if staircase:
            p = jnp.floor(p)
        init = as_float(init_value)
        value = jnp.where(elapsed <= 0, init, init * as_float(decay_rate) ** p)
        if end_value is not None:
            bound = jnp.maximum if decay_rate < 1.0 else jnp.minimum
            value = bound(value, as_float(end_value))
        return value

    return schedule


def cosine_decay_schedule(init_value: Scalar, decay_steps: int, alpha: Scalar = 0.0,
                          exponent: Scalar = 1.0) -> Schedule:
    r"""Cosine decay (optax's ``cosine_decay_schedule``).

    .. math::

        v_t = I\left((1 - \alpha)\left[\tfrac12\left(1 + \cos\frac{\pi \min(t, T)}{T}\right)\right]^{p}
            + \alpha\right)

    with :math:`T` = ``decay_steps`` and :math:`p` = ``exponent``.

    Args:
        init_value: the initial value.
        decay_steps: a positive number of steps to decay over.
        alpha: the final value as a fraction of ``init_value``.
        exponent: exponent of the cosine factor.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.cosine_decay_schedule(1.0, decay_steps=4, alpha=0.1)
        >>> [round(float(sched(t)), 6) for t in (0, 2, 4, 9)]
        [1.0, 0.55, 0.1, 0.1]
    """
    if not decay_steps > 0:
        raise ValueError(f"The cosine_decay_schedule requires positive decay_steps, got {decay_steps=}.")

    def schedule(count):
        t = as_float(jnp.minimum(count_array(count), decay_steps))
        cosine = 0.5 * (1 + jnp.cos(math.pi * t / decay_steps))
        alpha_ = as_float(alpha)
        return as_float(init_value) * ((1 - alpha_) * cosine ** as_float(exponent) + alpha_)

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""Run schedules one after the other (optax's ``join_schedules``).

    Schedule :math:`k` runs from ``boundaries[k-1]`` (0 for the first) and
    receives the steps counted from there: :math:`v_t = f_k(t - b_{k-1})` for
    :math:`b_{k-1} \le t < b_k`.

    Args:
        schedules: the schedules, in order.
        boundaries: steps where the next schedule takes over (one fewer than
            ``schedules``).

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.join_schedules(
        ...     [fo.schedules.constant_schedule(1.0), fo.schedules.linear_schedule(1.0, 0.0, 2)], [3])
        >>> [float(sched(t)) for t in range(6)]
        [1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    schedules, boundaries = list(schedules), list(boundaries)

    def schedule(count):
        t = count_array(count)
        value = as_float(schedules[0](t))
        for boundary, following in zip(boundaries, schedules[1:]):
            value = jnp.where(t < boundary, value, as_float(following(t - boundary)))
        return value

    return schedule


def warmup_constant_schedule(init_value: Scalar, peak_value: Scalar, warmup_steps: int) -> Schedule:
    r"""Linear warmup to ``peak_value``, then constant (optax's ``warmup_constant_schedule``).

    .. math::

        v_t = I + (P - I) \frac{\min(t, W)}{W}

    Args:
        init_value: value at step 0.
        peak_value: value from step ``warmup_steps`` on.
        warmup_steps: length of the warmup.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.warmup_constant_schedule(0.0, 1.0, warmup_steps=2)
        >>> [float(sched(t)) for t in range(4)]
        [0.0, 0.5, 1.0, 1.0]
    """
    return linear_schedule(init_value, peak_value, warmup_steps)


def warmup_cosine_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    decay_steps: int,
    end_value: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    r"""Linear warmup then cosine decay (optax's ``warmup_cosine_decay_schedule``).

    From ``init_value`` to ``peak_value`` linearly over ``warmup_steps``, then
    :func:`cosine_decay_schedule` from ``peak_value`` to ``end_value`` over the
    remaining ``decay_steps - warmup_steps`` steps (``decay_steps`` counts the
    warmup, as in optax):

    .. math::

        v_t = E + (P - E)\left[\tfrac12\left(1 + \cos\frac{\pi \min(t - W, D - W)}{D - W}\right)\right]^{p},
        \quad t \ge W

    Args:
        init_value: value at step 0.
        peak_value: value at the end of the warmup.
        warmup_steps: length of the warmup.
        decay_steps: total length of the schedule, warmup included.
        end_value: final value.
        exponent: exponent of the cosine factor.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6)
        >>> [round(float(sched(t)), 6) for t in range(8)]
        [0.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0]
    """
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps),
         cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha=alpha, exponent=exponent)],
        [warmup_steps],
    )


def warmup_exponential_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    r"""Linear warmup then exponential decay (optax's ``warmup_exponential_decay_schedule``).

    From ``init_value`` to ``peak_value`` linearly over ``warmup_steps``, then
    :func:`exponential_decay` from ``peak_value`` on the steps counted from the
    end of the warmup.

    Args:
        init_value: value at step 0.
        peak_value: value at the end of the warmup.
        warmup_steps: length of the warmup.
        transition_steps: steps per factor of ``decay_rate``.
        decay_rate: the decay rate.
        transition_begin: steps after the warmup to hold ``peak_value``.
        staircase: decay in discrete jumps.
        end_value: bound where the decay stops.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.warmup_exponential_decay_schedule(0.0, 1.0, 2, 1, 0.5)
        >>> [float(sched(t)) for t in range(5)]
        [0.0, 0.5, 1.0, 0.5, 0.25]
    """
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps),
         exponential_decay(peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value)],
        [warmup_steps],
    )


def linear_onecycle_schedule(transition_steps: int, peak_value: Scalar, pct_start: float = 0.3,
                             pct_final: float = 0.85, div_factor: float = 25.0,
                             final_div_factor: float = 1e4) -> Schedule:
    r"""Three linear phases of the one-cycle policy (optax's ``linear_onecycle_schedule``).

    With :math:`T` = ``transition_steps`` and :math:`v_0 = P / \text{div\_factor}`:
    :math:`v_0 \to P` over :math:`[0, \lfloor s T \rfloor]`, :math:`P \to v_0` up to
    :math:`\lfloor f T \rfloor`, then :math:`v_0 \to v_0 / \text{final\_div\_factor}`
    up to :math:`T` (:func:`piecewise_interpolate_schedule` with these points).

    Args:
        transition_steps: length of the cycle, positive.
        peak_value: the peak.
        pct_start: fraction of the cycle spent rising.
        pct_final: fraction of the cycle at the end of the fall back to ``v_0``.
        div_factor: ``peak_value / div_factor`` is the initial value.
        final_div_factor: the initial value divided by it is the final value.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.linear_onecycle_schedule(10, 1.0, pct_start=0.2, pct_final=0.6,
        ...                                               div_factor=10.0, final_div_factor=10.0)
        >>> [round(float(sched(t)), 4) for t in (0, 2, 6, 10)]
        [0.1, 1.0, 0.1, 0.01]
    """
    if transition_steps <= 0:
        raise ValueError("A linear onecycle schedule was set with a non-positive `transition_steps`")
    return piecewise_interpolate_schedule(
        "linear",
        peak_value / div_factor,
        {int(pct_start * transition_steps): div_factor,
         int(pct_final * transition_steps): 1.0 / div_factor,
         transition_steps: 1.0 / final_div_factor},
    )


def cosine_onecycle_schedule(transition_steps: int, peak_value: Scalar, pct_start: float = 0.3,
                             div_factor: float = 25.0, final_div_factor: float = 1e4) -> Schedule:
    r"""Cosine one-cycle policy (optax's ``cosine_onecycle_schedule``).

    With :math:`T` = ``transition_steps`` and :math:`v_0 = P / \text{div\_factor}`:
    cosine from :math:`v_0` to :math:`P` over :math:`[0, \lfloor s T \rfloor]`, then
    cosine down to :math:`v_0 / \text{final\_div\_factor}` at :math:`T`.

    Args:
        transition_steps: length of the cycle, positive.
        peak_value: the peak.
        pct_start: fraction of the cycle spent rising.
        div_factor: ``peak_value / div_factor`` is the initial value.
        final_div_factor: the initial value divided by it is the final value.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.cosine_onecycle_schedule(10, 1.0, pct_start=0.2, div_factor=10.0)
        >>> [round(float(sched(t)), 4) for t in (0, 1, 2, 10)]
        [0.1, 0.55, 1.0, 0.0]
    """
    if transition_steps <= 0:
        raise ValueError("A linear onecycle schedule was set with a non-positive `transition_steps`")
    return piecewise_interpolate_schedule(
        "cosine",
        peak_value / div_factor,
        {int(pct_start * transition_steps): div_factor,
         int(transition_steps): 1.0 / (div_factor * final_div_factor)},
    )


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    r"""SGD with warm restarts built from warmup-cosine cycles (optax's ``sgdr_schedule``).

    Each dict of ``cosine_kwargs`` holds the arguments of one
    :func:`warmup_cosine_decay_schedule`; the cycles run one after the other,
    each lasting its ``decay_steps``.

    Args:
        cosine_kwargs: one dict of :func:`warmup_cosine_decay_schedule`
            arguments per cycle.

    Returns:
        A schedule ``count -> value``.

    Example:
        >>> import funcopt as fo
        >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=3)
        >>> sched = fo.schedules.sgdr_schedule([cycle, cycle])
        >>> [float(sched(t)) for t in range(6)]
        [0.0, 1.0, 0.5, 0.0, 1.0, 0.5]
    """
    schedules, boundaries, start = [], [], 0
    for kwargs in cosine_kwargs:
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        start += kwargs["decay_steps"]
        boundaries.append(start)
    return join_schedules(schedules, boundaries[:-1])
