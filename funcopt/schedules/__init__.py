r"""Pure, jittable schedules: functions ``step -> value`` for any hyperparameter.

A schedule receives the number of updates already applied (0 for the first
update; a Python int or a traced integer array) and returns the value to use
for this update as a float array (float64 under ``jax.enable_x64``). Any
numeric hyperparameter of a funcopt optimizer accepts one, and it lives in the
optimizer state as an array, so stepping a schedule never recompiles::

    tx = fo.sgd(lr=fo.schedules.cosine_annealing(0.1, T_max=100), momentum=0.9)

Three families, each with its framework's names and arguments, each a submodule
(:mod:`funcopt.schedules.torch`, :mod:`funcopt.schedules.optax`,
:mod:`funcopt.schedules.mindspore`) whose functions are also reachable here, flat
(``fo.schedules.torch.step is fo.schedules.step``):

- closed forms of ``torch.optim.lr_scheduler`` (parameterised by the base value):
  :func:`step`, :func:`multi_step`, :func:`constant`, :func:`linear`,
  :func:`exponential`, :func:`polynomial`, :func:`cosine_annealing`,
  :func:`cosine_annealing_warm_restarts`, :func:`cyclic`, :func:`cyclic_momentum`,
  :func:`one_cycle`, :func:`one_cycle_momentum`;
- optax's schedules: :func:`constant_schedule`, :func:`linear_schedule`,
  :func:`polynomial_schedule`, :func:`exponential_decay`,
  :func:`cosine_decay_schedule`, :func:`warmup_constant_schedule`,
  :func:`warmup_cosine_decay_schedule`, :func:`warmup_exponential_decay_schedule`,
  :func:`piecewise_constant_schedule`, :func:`piecewise_interpolate_schedule`,
  :func:`linear_onecycle_schedule`, :func:`cosine_onecycle_schedule`,
  :func:`sgdr_schedule`, :func:`join_schedules`;
- MindSpore's ``nn.learning_rate_schedule`` cells as functions:
  :func:`exponential_decay_lr`, :func:`natural_exp_decay_lr`,
  :func:`inverse_decay_lr`, :func:`cosine_decay_lr`, :func:`polynomial_decay_lr`,
  :func:`warm_up_lr`; MindSpore's list-returning ``nn.dynamic_lr`` functions are in
  :mod:`funcopt.schedules.dynamic_lr`, and :func:`from_list` turns such a list
  into a schedule.
"""

from funcopt.schedules import dynamic_lr, mindspore, optax, torch
from funcopt.schedules.mindspore import (
    cosine_decay_lr,
    exponential_decay_lr,
    from_list,
    inverse_decay_lr,
    natural_exp_decay_lr,
    polynomial_decay_lr,
    warm_up_lr,
)
from funcopt.schedules.optax import (
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
from funcopt.schedules.torch import (
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
    "constant_schedule",
    "cosine_annealing",
    "cosine_annealing_warm_restarts",
    "cosine_decay_lr",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cyclic",
    "cyclic_momentum",
    "dynamic_lr",
    "exponential",
    "exponential_decay",
    "exponential_decay_lr",
    "from_list",
    "inverse_decay_lr",
    "join_schedules",
    "linear",
    "linear_onecycle_schedule",
    "linear_schedule",
    "mindspore",
    "multi_step",
    "natural_exp_decay_lr",
    "one_cycle",
    "one_cycle_momentum",
    "optax",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial",
    "polynomial_decay_lr",
    "polynomial_schedule",
    "sgdr_schedule",
    "step",
    "torch",
    "warm_up_lr",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]
