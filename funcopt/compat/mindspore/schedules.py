"""MindSpore's learning-rate schedule classes (``nn.LearningRateSchedule`` and its subclasses).

Each class is a callable ``global_step -> learning rate`` over the jittable
schedule of the same name in :mod:`funcopt.schedules`, which holds the formula.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from funcopt import schedules as _schedules

__all__ = [
    "CosineDecayLR",
    "ExponentialDecayLR",
    "InverseDecayLR",
    "LearningRateSchedule",
    "NaturalExpDecayLR",
    "PolynomialDecayLR",
    "WarmUpLR",
]

class LearningRateSchedule:
    """MindSpore's ``nn.LearningRateSchedule``: a callable ``global_step -> learning rate``.

    Subclasses define ``construct(global_step)`` with jittable JAX operations.
    An instance is a schedule for any funcopt hyperparameter and a
    ``learning_rate`` for the optimizers here.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> class Halving(ms.LearningRateSchedule):
        ...     def construct(self, global_step):
        ...         return 0.1 * 0.5 ** jnp.floor(global_step / 10)
        >>> float(Halving()(jnp.asarray(25)))
        0.025
    """

    def __call__(self, global_step: Any) -> jax.Array:
        return self.construct(global_step)

    def construct(self, global_step: Any) -> jax.Array:
        raise NotImplementedError


class _FunctionSchedule(LearningRateSchedule):
    _schedule: Callable[[Any], jax.Array]

    def construct(self, global_step: Any) -> jax.Array:
        return self._schedule(global_step)


class ExponentialDecayLR(_FunctionSchedule):
    r"""``nn.ExponentialDecayLR(learning_rate, decay_rate, decay_steps, is_stair=False)``.

    :math:`lr = learning\_rate \cdot decay\_rate^{p}`, :math:`p = step / decay\_steps`
    (floored when ``is_stair``); see :func:`funcopt.schedules.exponential_decay_lr`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> print(ms.ExponentialDecayLR(0.1, 0.9, 4)(jnp.asarray(2, jnp.int32)))
        0.09486833
    """

    def __init__(self, learning_rate: float, decay_rate: float, decay_steps: int, is_stair: bool = False):
        self._schedule = _schedules.exponential_decay_lr(learning_rate, decay_rate, decay_steps, is_stair)


class NaturalExpDecayLR(_FunctionSchedule):
    r"""``nn.NaturalExpDecayLR(learning_rate, decay_rate, decay_steps, is_stair=False)``.

    :math:`lr = learning\_rate \cdot e^{-decay\_rate \cdot p}`; see
    :func:`funcopt.schedules.natural_exp_decay_lr`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> print(ms.NaturalExpDecayLR(0.1, 0.9, 4, True)(jnp.asarray(2, jnp.int32)))
        0.1
    """

    def __init__(self, learning_rate: float, decay_rate: float, decay_steps: int, is_stair: bool = False):
        self._schedule = _schedules.natural_exp_decay_lr(learning_rate, decay_rate, decay_steps, is_stair)


class InverseDecayLR(_FunctionSchedule):
    r"""``nn.InverseDecayLR(learning_rate, decay_rate, decay_steps, is_stair=False)``.

    :math:`lr = learning\_rate / (1 + decay\_rate \cdot p)`; see
    :func:`funcopt.schedules.inverse_decay_lr`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> print(ms.InverseDecayLR(0.1, 0.9, 4)(jnp.asarray(2, jnp.int32)))
        0.06896552
    """

    def __init__(self, learning_rate: float, decay_rate: float, decay_steps: int, is_stair: bool = False):
        self._schedule = _schedules.inverse_decay_lr(learning_rate, decay_rate, decay_steps, is_stair)


class CosineDecayLR(_FunctionSchedule):
    r"""``nn.CosineDecayLR(min_lr, max_lr, decay_steps)``; see :func:`funcopt.schedules.cosine_decay_lr`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> print(ms.CosineDecayLR(0.01, 0.1, 4)(jnp.asarray(2, jnp.int32)))
        0.055
    """

    def __init__(self, min_lr: float, max_lr: float, decay_steps: int):
        self._schedule = _schedules.cosine_decay_lr(min_lr, max_lr, decay_steps)


class PolynomialDecayLR(_FunctionSchedule):
    r"""``nn.PolynomialDecayLR(learning_rate, end_learning_rate, decay_steps, power, update_decay_steps=False)``.

    See :func:`funcopt.schedules.polynomial_decay_lr`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> print(ms.PolynomialDecayLR(0.1, 0.01, 4, 0.5)(jnp.asarray(2, jnp.int32)))
        0.07363961
    """

    def __init__(self, learning_rate: float, end_learning_rate: float, decay_steps: int, power: float,
                 update_decay_steps: bool = False):
        self._schedule = _schedules.polynomial_decay_lr(learning_rate, end_learning_rate, decay_steps, power,
                                                         update_decay_steps)


class WarmUpLR(_FunctionSchedule):
    r"""``nn.WarmUpLR(learning_rate, warmup_steps)``; see :func:`funcopt.schedules.warm_up_lr`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> print(ms.WarmUpLR(0.1, 2)(jnp.asarray(2, jnp.int32)))
        0.1
    """

    def __init__(self, learning_rate: float, warmup_steps: int):
        self._schedule = _schedules.warm_up_lr(learning_rate, warmup_steps)
