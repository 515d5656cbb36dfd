"""The optax family: optax's schedules, by optax's names and arguments.

Each factory returns a jittable ``schedule(count) -> value`` with the values of the
optax schedule of the same name (``count``: the number of updates already applied),
so code written for ``optax.warmup_cosine_decay_schedule`` keeps its arguments. The
same functions are reachable flat, as ``fo.schedules.cosine_decay_schedule`` and so on.

Example:
    >>> import funcopt as fo
    >>> s = fo.schedules.optax.linear_schedule(1.0, 0.0, transition_steps=4)
    >>> [float(s(t)) for t in range(6)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    >>> fo.schedules.optax.linear_schedule is fo.schedules.linear_schedule
    True
"""

from funcopt.schedules._optax import (
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    exponential_decay,
    join_schedules,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
)

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
