"""The ``torch.optim.lr_scheduler`` family: closed forms of torch's schedulers, by torch's argument names.

Each factory takes the base value first (torch's ``base_lrs``, the group's initial
``lr``) and returns a jittable ``schedule(step) -> value``, ``step`` being the number of
updates already applied (torch's ``last_epoch`` at an ``optimizer.step()``). The
stateful scheduler classes are in :mod:`funcopt.optim.lr_scheduler`. The same
functions are reachable flat, as ``fo.schedules.cosine_annealing`` and so on.

Example:
    >>> import funcopt as fo
    >>> s = fo.schedules.torch.step(0.1, step_size=2, gamma=0.5)
    >>> [round(float(s(t)), 4) for t in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    >>> fo.schedules.torch.step is fo.schedules.step
    True
"""

from funcopt.schedules._torch import (
    constant,
    cosine_annealing,
    cosine_annealing_warm_restarts,
    cyclic,
    cyclic_momentum,
    exponential,
    linear,
    multi_step,
    one_cycle,
    one_cycle_momentum,
    polynomial,
    step,
)

__all__ = [
    "constant",
    "cosine_annealing",
    "cosine_annealing_warm_restarts",
    "cyclic",
    "cyclic_momentum",
    "exponential",
    "linear",
    "multi_step",
    "one_cycle",
    "one_cycle_momentum",
    "polynomial",
    "step",
]
