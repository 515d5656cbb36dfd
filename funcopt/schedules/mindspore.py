"""The MindSpore family: ``nn.learning_rate_schedule``'s cells as functions, and ``nn.dynamic_lr``.

``nn.ExponentialDecayLR(...)`` becomes ``exponential_decay_lr(...)`` and so on: MindSpore's
argument names, formulas and exception types, as a jittable ``schedule(global_step) ->
value``. MindSpore's list-returning ``nn.dynamic_lr`` functions are the submodule
:mod:`funcopt.schedules.dynamic_lr` (also reachable here as ``dynamic_lr``), and
:func:`from_list` turns such a list into a schedule. The MindSpore-style cell classes
(``ExponentialDecayLR``, ...) are in :mod:`funcopt.compat.mindspore`. The same functions
are reachable flat, as ``fo.schedules.exponential_decay_lr`` and so on.

Example:
    >>> import funcopt as fo
    >>> s = fo.schedules.mindspore.exponential_decay_lr(0.1, 0.5, decay_steps=2, is_stair=True)
    >>> [round(float(s(t)), 4) for t in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    >>> lrs = fo.schedules.mindspore.dynamic_lr.piecewise_constant_lr([2, 4], [0.1, 0.01])
    >>> lrs, float(fo.schedules.mindspore.from_list(lrs)(3))
    ([0.1, 0.1, 0.01, 0.01], 0.01)
"""

from funcopt.schedules import dynamic_lr
from funcopt.schedules._mindspore import (
    cosine_decay_lr,
    exponential_decay_lr,
    from_list,
    inverse_decay_lr,
    natural_exp_decay_lr,
    polynomial_decay_lr,
    warm_up_lr,
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
