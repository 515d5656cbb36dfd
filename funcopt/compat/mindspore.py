r"""MindSpore's ``nn.Optimizer`` family over funcopt, with MindSpore's names, arguments and errors.

A port keeps the optimizer's construction and replaces MindSpore's cells by a
pytree of parameters and a gradient function::

    # MindSpore                                          # funcopt
    opt = nn.Momentum(net.trainable_params(),            opt = Momentum(params, learning_rate=0.1,
                      learning_rate=0.1, momentum=0.9)                  momentum=0.9)
    grads = grad_fn(data, label)                         grads = jax.grad(loss_fn)(opt.parameters, x, y)
    opt(grads)                                           opt(grads)

``parameters`` is a pytree of arrays (its leaves are named by their paths, the
way MindSpore names parameters: ``'conv1.weight'``), or a list of group dicts
with MindSpore's keys ``params`` / ``lr`` / ``weight_decay`` /
``grad_centralization`` / ``order_params``, where ``params`` is a pytree. The
current values are ``opt.parameters``; ``opt(grads)`` takes gradients with
the structure of ``opt.parameters`` (or a flat tuple of them, MindSpore's
order) and returns MindSpore's success flags, a tuple of ``True``.

Every update rule is a funcopt functional optimizer; what MindSpore adds around
it is kept: ``decay_weight`` (L2 decay on parameters whose names contain
neither ``'beta'`` nor ``'gamma'`` when not grouped), ``gradients_centralization``
and ``scale_grad`` (the division by ``loss_scale``), and the learning-rate
forms (a number, a 0-d or 1-D array, an iterable with one value per step, or a
:class:`LearningRateSchedule`). Where MindSpore's rule differs from torch's, the
functional layer has MindSpore's variant (``adam_mindspore``,
``adam_weight_decay``, ``adamax_mindspore``, ``rmsprop_mindspore``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import funcopt.optimizers as F
from funcopt import schedules as _schedules
from funcopt._src.base import GradientTransformation, PyTree, chain, stateless
from funcopt._src.hparams import HParam, float_dtype, is_static_zero
from funcopt._src.tree import param_names
from funcopt.optim import guard
from funcopt.optim.optimizer import IncompatibleKeys
from funcopt.optim.optimizer import Optimizer as _Engine
from funcopt.optimizers.adam import adam_mindspore, adam_weight_decay
from funcopt.optimizers.adamax import adamax_mindspore
from funcopt.optimizers.rmsprop import rmsprop_mindspore
from funcopt.schedules import dynamic_lr  # noqa: F401 - MindSpore's nn.dynamic_lr, as ms.dynamic_lr
from funcopt.schedules.dynamic_lr import (
    cosine_decay_lr,
    exponential_decay_lr,
    inverse_decay_lr,
    natural_exp_decay_lr,
    piecewise_constant_lr,
    polynomial_decay_lr,
    warmup_lr,
)
from funcopt.transforms.loss_scale import (
    DynamicLossScale,
    StaticLossScale,
    dynamic_loss_scale,
    static_loss_scale,
)
from funcopt.transforms.masking import MaskedNode
from funcopt.transforms.weight_decay import add_decayed_weights, centralize, mindspore_decay_filter

__all__ = [
    "ASGD",
    "FTRL",
    "LARS",
    "SGD",
    "AdaMax",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamWeightDecay",
    "CosineDecayLR",
    "DynamicLossScaleManager",
    "ExponentialDecayLR",
    "FixedLossScaleManager",
    "InverseDecayLR",
    "Lamb",
    "LearningRateSchedule",
    "LossScaleManager",
    "Momentum",
    "NamedParameter",
    "NaturalExpDecayLR",
    "Optimizer",
    "PolynomialDecayLR",
    "ProximalAdagrad",
    "RMSProp",
    "Rprop",
    "WarmUpLR",
    "cosine_decay_lr",
    "exponential_decay_lr",
    "inverse_decay_lr",
    "natural_exp_decay_lr",
    "piecewise_constant_lr",
    "polynomial_decay_lr",
    "warmup_lr",
]


# --------------------------------------------------------------------------- learning-rate schedules


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


# --------------------------------------------------------------------------- loss scale managers


class LossScaleManager:
    """MindSpore's ``amp.LossScaleManager`` interface: ``get_loss_scale``, ``update_loss_scale``, ``get_update_cell``.

    Example:
        >>> from funcopt.compat import mindspore as ms
        >>> isinstance(ms.FixedLossScaleManager(), ms.LossScaleManager)
        True
    """

    def get_loss_scale(self) -> float:
        raise NotImplementedError

    def update_loss_scale(self, overflow: bool) -> None:
        raise NotImplementedError

    def get_update_cell(self) -> Any:
        raise NotImplementedError


class FixedLossScaleManager(LossScaleManager):
    """``amp.FixedLossScaleManager(loss_scale=128.0, drop_overflow_update=True)``.

    ``get_update_cell()`` returns the :class:`funcopt.StaticLossScale` to give
    :func:`funcopt.loss_scaled` (which unscales, skips overflowed steps and
    holds the scale), or ``None`` when ``drop_overflow_update`` is False: then,
    as in MindSpore, give the optimizer the same ``loss_scale`` and it divides
    the gradients itself.

    Raises:
        ValueError: ``loss_scale`` < 1.

    Example:
        >>> from funcopt.compat import mindspore as ms
        >>> manager = ms.FixedLossScaleManager(1024.0, False)
        >>> manager.get_loss_scale(), manager.get_drop_overflow_update(), manager.get_update_cell()
        (1024.0, False, None)
    """

    def __init__(self, loss_scale: float = 128.0, drop_overflow_update: bool = True) -> None:
        if loss_scale < 1:
            raise ValueError(f"The argument 'loss_scale' must be >= 1, but got {loss_scale}")
        self._loss_scale = loss_scale
        self._drop_overflow_update = drop_overflow_update

    def get_loss_scale(self) -> float:
        """The loss scale."""
        return self._loss_scale

    def get_drop_overflow_update(self) -> bool:
        """Whether an overflowed step is skipped."""
        return self._drop_overflow_update

    def update_loss_scale(self, overflow: bool) -> None:
        """Nothing to update: the scale is fixed."""
        del overflow

    def get_update_cell(self) -> StaticLossScale | None:
        """The funcopt loss scale for :func:`funcopt.loss_scaled`, or None without ``drop_overflow_update``."""
        if not self._drop_overflow_update:
            return None
        return static_loss_scale(float(self._loss_scale))


class DynamicLossScaleManager(LossScaleManager):
    r"""``amp.DynamicLossScaleManager(init_loss_scale=2**24, scale_factor=2, scale_window=2000)``.

    ``update_loss_scale(overflow)`` follows MindSpore's rule (held in a
    :class:`funcopt.DynamicLossScale`, see :meth:`funcopt.DynamicLossScale.adjust`):
    on overflow :math:`s \leftarrow \max(s / f, 1)`; after ``scale_window``
    steps without overflow :math:`s \leftarrow s f`. As in MindSpore, more than
    1000 overflows in a row raise ``RuntimeError``. ``get_update_cell()``
    returns the current :class:`funcopt.DynamicLossScale` for
    :func:`funcopt.loss_scaled`.

    Raises:
        ValueError: ``init_loss_scale`` < 1, ``scale_factor`` <= 0 or ``scale_window`` <= 0.
        TypeError: ``scale_window`` not an int.

    Example:
        >>> from funcopt.compat import mindspore as ms
        >>> manager = ms.DynamicLossScaleManager(init_loss_scale=8, scale_window=2)
        >>> for overflow in [False, False, True]:
        ...     manager.update_loss_scale(overflow)
        ...     print(manager.get_loss_scale())
        8.0
        16.0
        8.0
    """

    _bad_step_max = 1000

    def __init__(self, init_loss_scale: float = 2**24, scale_factor: float = 2, scale_window: int = 2000) -> None:
        if init_loss_scale < 1.0:
            raise ValueError(f"The argument 'init_loss_scale' must be > 1, but got {init_loss_scale}")
        if isinstance(scale_window, bool) or not isinstance(scale_window, numbers.Integral):
            raise TypeError(f"For 'DynamicLossScaleManager', the 'scale_window' must be int, "
                            f"but got {type(scale_window).__name__}.")
        if scale_window <= 0:
            raise ValueError(f"For 'DynamicLossScaleManager', the 'scale_window' must be positive, "
                             f"but got {scale_window}.")
        if scale_factor <= 0:
            raise ValueError(f"The argument 'scale_factor' must be > 0, but got {scale_factor}")
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self._scale: DynamicLossScale = dynamic_loss_scale(float(init_loss_scale), scale_factor, scale_window)
        self.bad_step = 0

    @property
    def loss_scale(self) -> float:
        """The current loss scale."""
        return float(self._scale.loss_scale)

    def get_loss_scale(self) -> float:
        """The current loss scale."""
        return self.loss_scale

    def get_drop_overflow_update(self) -> bool:
        """Always True: an overflowed step is skipped."""
        return True

    def update_loss_scale(self, overflow: bool) -> None:
        """Adjust the scale after a step that did (``overflow``) or did not overflow."""
        self._scale = self._scale.adjust(not overflow)
        self.bad_step = self.bad_step + 1 if overflow else 0
        if self.bad_step > self._bad_step_max:
            raise RuntimeError(f"Dynamic loss scale Continuous overflow {self.bad_step} times, has exceeded "
                               "maximum threshold.")

    def get_update_cell(self) -> DynamicLossScale:
        """The current funcopt loss scale, for :func:`funcopt.loss_scaled`."""
        return self._scale


# --------------------------------------------------------------------------- argument checks


def _tname(value: Any) -> str:
    return type(value).__name__


def _check_type(value: Any, types: tuple[type, ...], name: str, owner: str) -> None:
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = ", ".join(t.__name__ for t in types)
        raise TypeError(f"For '{owner}', the type of '{name}' must be '{names}', but got '{_tname(value)}'.")


def _check_float(value: Any, name: str, owner: str) -> None:
    _check_type(value, (float,), name, owner)


def _check_bool(value: Any, name: str, owner: str) -> None:
    _check_type(value, (bool,), name, owner)


def _check_non_negative(value: float, name: str, owner: str) -> None:
    if not value >= 0:
        raise ValueError(f"For '{owner}', the '{name}' must be non-negative, but got {value}.")


def _check_positive(value: float, name: str, owner: str) -> None:
    if not value > 0:
        raise ValueError(f"For '{owner}', the '{name}' must be positive, but got {value}.")


def _check_open_unit(value: float, name: str, owner: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"For '{owner}', the '{name}' must be in range of (0.0, 1.0), but got {value}.")


def _check_betas_eps(beta1: Any, beta2: Any, eps: Any, owner: str) -> None:
    _check_float(beta1, "beta1", owner)
    _check_float(beta2, "beta2", owner)
    _check_float(eps, "eps", owner)
    _check_open_unit(beta1, "beta1", owner)
    _check_open_unit(beta2, "beta2", owner)
    _check_positive(eps, "eps", owner)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


# --------------------------------------------------------------------------- learning rates and groups


class _LR(NamedTuple):
    """A processed learning rate: the value the optimizer uses, the value MindSpore's getters return."""

    hparam: Any  # a float or a schedule, for the functional optimizer
    raw: Any  # what get_lr_parameter returns: a 0-d array, a 1-D array of per-step values, or the schedule
    dynamic: bool
    length: int  # number of per-step values of a 1-D learning rate, else 0


def _preprocess_lr(learning_rate: Any, owner: str) -> _LR:
    """MindSpore's ``_preprocess_single_lr``: the accepted forms, with its errors."""
    if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, str):
        value = float(learning_rate)
        _check_non_negative(value, "learning rate", owner)
        return _LR(value, jnp.asarray(value, float_dtype()), False, 0)
    if _is_array(learning_rate):
        arr = np.asarray(learning_rate)
        if arr.ndim == 0:
            return _LR(float(arr), jnp.asarray(float(arr), float_dtype()), False, 0)
        if arr.ndim > 1:
            raise ValueError(f"For 'Optimizer', if 'learning_rate' is Tensor type, then the dimension of it should "
                             f"be 0 or 1, but got {arr.ndim}.")
        return _list_lr(arr)
    if isinstance(learning_rate, LearningRateSchedule) or (
            callable(learning_rate) and not isinstance(learning_rate, type)):
        return _LR(learning_rate, learning_rate, True, 0)
    if isinstance(learning_rate, Iterable) and not isinstance(learning_rate, (str, bytes, Mapping)):
        values = np.asarray(list(learning_rate), dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"For 'Optimizer', if 'learning_rate' is Iterable type, it must hold one number per "
                             f"step, but got an array of shape {values.shape}.")
        return _list_lr(values)
    raise TypeError(f"For 'Optimizer', the argument 'learning_rate' must be int, float, Tensor, Iterable or "
                    f"LearningRateSchedule, but got {type(learning_rate)}.")


def _list_lr(values: np.ndarray) -> _LR:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("For 'Optimizer', a dynamic 'learning_rate' needs at least one value.")
    return _LR(_schedules.from_list(values), jnp.asarray(values, float_dtype()), True, int(values.size))


def _preprocess_weight_decay(weight_decay: Any, owner: str) -> Any:
    """MindSpore's ``_preprocess_weight_decay``: a non-negative number, or a schedule (MindSpore's Cell)."""
    if isinstance(weight_decay, (int, float)):
        value = float(weight_decay)
        _check_non_negative(value, "weight_decay", owner)
        return value
    if callable(weight_decay) and not _is_array(weight_decay):
        return weight_decay
    raise TypeError(f"For 'Optimizer', the argument 'Weight_decay' must be int, float or Cell.but got "
                    f"{type(weight_decay)}")


class _Group(NamedTuple):
    leaves: list[jax.Array]
    lr: _LR
    weight_decay: Any
    grad_centralization: bool


class NamedParameter(NamedTuple):
    """A parameter with its name, as MindSpore's ``Parameter`` is handed to ``lars_filter``.

    Attributes:
        name: the parameter's dotted path (``'conv1.weight'``).
        value: its current array.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> p = ms.NamedParameter('fc.bias', jnp.zeros(3))
        >>> p.name, p.shape, p.ndim
        ('fc.bias', (3,), 1)
    """

    name: str
    value: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def dtype(self) -> Any:
        return self.value.dtype


_GROUP_KEYS = ("params", "lr", "weight_decay", "order_params", "grad_centralization")


def _param_leaves(tree: Any, what: str) -> tuple[list[str], list[Any]]:
    """Names and leaves of a parameter pytree, with MindSpore's errors for empty or non-array content."""
    if tree is None:
        raise ValueError(f"For 'Optimizer', the argument {what} can not be None.")
    if _is_array(tree) or isinstance(tree, (str, bytes, numbers.Number)):
        raise TypeError(f"For 'Optimizer', the argument {what} must be a pytree (a list or dict) of parameters, "
                        f"but got {type(tree)}.")
    names = param_names(tree)
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"For 'Optimizer', the argument {what} must not be empty.")
    for name, leaf in zip(names, leaves):
        if not _is_array(leaf):
            raise TypeError(f"For 'Optimizer', all elements of the argument {what} must be 'Parameter' (arrays) "
                            f"or 'dict', but '{name}' is a {_tname(leaf)}.")
    return names, leaves


# --------------------------------------------------------------------------- the functional pipeline


def _unscale(loss_scale: float) -> GradientTransformation:
    """MindSpore's ``scale_grad``: gradients times the float32 reciprocal of the loss scale."""
    scale = StaticLossScale(jnp.asarray(loss_scale, jnp.float32))
    return stateless(lambda updates, params: scale.unscale(updates))


def _pipeline(make_rule: Callable[[Any], GradientTransformation], weight_decay: Any, grad_centralization: bool,
              loss_scale: float, decay: str) -> GradientTransformation:
    """What MindSpore's ``construct`` does around the update rule, as a chain of funcopt transforms.

    ``decay`` is where the weight decay goes: ``'pre'`` (``decay_weight``: added to
    the gradient before centralization; the rule's own L2 term is the same thing
    when nothing comes between), ``'pre_only'`` (the rule has no decay argument),
    ``'rule'`` (the rule's own placement, after centralization: SGD's kernel,
    AdamWeightDecay, Lamb). MindSpore adds the decay to the loss-scaled gradients
    with ``weight_decay * loss_scale`` and divides by the scale last; dividing
    first is the same computation.
    """
    parts = []
    if loss_scale != 1.0:
        parts.append(_unscale(loss_scale))
    rule_decay = weight_decay
    if decay == "pre_only" or (decay == "pre" and grad_centralization):
        if not is_static_zero(weight_decay):
            parts.append(add_decayed_weights(weight_decay))
        rule_decay = 0.0
    if grad_centralization:
        parts.append(centralize(channel_multiple=16))
    parts.append(make_rule(rule_decay))
    return parts[0] if len(parts) == 1 else chain(*parts)


# One factory per optimizer: MindSpore's hyperparameters to a funcopt rule and the pipeline.
# The engine (a funcopt.optim.Optimizer) reads each factory's signature: group keys are lr,
# weight_decay, grad_centralization; loss_scale and the flags are fixed per optimizer.


def _momentum_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
                   momentum: HParam, use_nesterov: bool) -> GradientTransformation:
    return _pipeline(lambda wd: F.momentum(lr=lr, momentum=momentum, weight_decay=wd, use_nesterov=use_nesterov),
                     weight_decay, grad_centralization, loss_scale, "pre")


def _sgd_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, momentum: HParam,
              dampening: HParam, nesterov: bool) -> GradientTransformation:
    return _pipeline(lambda wd: F.sgd(lr=lr, momentum=momentum, dampening=dampening, weight_decay=wd,
                                      nesterov=nesterov),
                     weight_decay, grad_centralization, loss_scale, "rule")


def _adam_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, beta1: HParam,
               beta2: HParam, eps: HParam, use_nesterov: bool, use_amsgrad: bool) -> GradientTransformation:
    return _pipeline(lambda wd: adam_mindspore(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd,
                                               nesterov=use_nesterov, amsgrad=use_amsgrad),
                     weight_decay, grad_centralization, loss_scale, "pre")


def _adam_weight_decay_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
                            beta1: HParam, beta2: HParam, eps: HParam) -> GradientTransformation:
    # MindSpore's AdamWeightDecay neither centralizes nor unscales the gradients
    del grad_centralization, loss_scale
    return adam_weight_decay(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def _adamax_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, beta1: HParam,
                 beta2: HParam, eps: HParam) -> GradientTransformation:
    return _pipeline(lambda wd: adamax_mindspore(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def _adagrad_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, accum: HParam,
                  update_slots: bool) -> GradientTransformation:
    if update_slots:
        rule = lambda wd: F.adagrad(lr=lr, initial_accumulator_value=accum, eps=0.0, weight_decay=wd)  # noqa: E731
    else:
        # the accumulator never changes: each step is lr / sqrt(accum) times the gradient
        scale = 1.0 / math.sqrt(accum) if accum > 0 else math.inf
        scaled_lr = (lambda step: lr(step) * scale) if callable(lr) else lr * scale
        rule = lambda wd: F.sgd(lr=scaled_lr, weight_decay=wd)  # noqa: E731
    return _pipeline(rule, weight_decay, grad_centralization, loss_scale, "pre")


def _adadelta_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, rho: HParam,
                   epsilon: HParam) -> GradientTransformation:
    return _pipeline(lambda wd: F.adadelta(lr=lr, rho=rho, eps=epsilon, weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def _rmsprop_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, decay: HParam,
                  momentum: HParam, epsilon: HParam, centered: bool) -> GradientTransformation:
    return _pipeline(lambda wd: rmsprop_mindspore(lr=lr, alpha=decay, eps=epsilon, weight_decay=wd,
                                                  momentum=momentum, centered=centered),
                     weight_decay, grad_centralization, loss_scale, "pre")


def _rprop_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
                etas: tuple[HParam, HParam], step_sizes: tuple[HParam, HParam]) -> GradientTransformation:
    return _pipeline(lambda wd: F.rprop(lr=lr, etas=etas, step_sizes=step_sizes),
                     weight_decay, grad_centralization, loss_scale, "pre_only")


def _asgd_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, lambd: HParam,
               alpha: HParam, t0: HParam) -> GradientTransformation:
    return _pipeline(lambda wd: F.asgd(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def _ftrl_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
               initial_accum: HParam, lr_power: HParam, l1: HParam, l2: HParam) -> GradientTransformation:
    return _pipeline(lambda wd: F.ftrl(lr=lr, initial_accum=initial_accum, lr_power=lr_power, l1=l1, l2=l2,
                                       weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def _proximal_adagrad_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
                           accum: HParam, l1: HParam, l2: HParam) -> GradientTransformation:
    return _pipeline(lambda wd: F.proximal_adagrad(lr=lr, accum=accum, l1=l1, l2=l2, weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def _lamb_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, beta1: HParam,
               beta2: HParam, eps: HParam) -> GradientTransformation:
    return _pipeline(lambda wd: F.lamb(lr=lr, betas=(beta1, beta2), eps=eps, bias_correction=True,
                                       weight_decay=wd, always_adapt=True),
                     weight_decay, grad_centralization, loss_scale, "rule")


def _lars_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, momentum: HParam,
               use_nesterov: bool, lars: bool, coefficient: HParam, epsilon: HParam,
               use_clip: bool) -> GradientTransformation:
    del grad_centralization
    if not lars:
        # parameters LARS leaves out take the momentum step on the raw gradient, without decay
        return _pipeline(lambda wd: F.momentum(lr=lr, momentum=momentum, use_nesterov=use_nesterov),
                         0.0, False, loss_scale, "pre")
    return _pipeline(lambda wd: F.lars(lr=lr, momentum=momentum, weight_decay=wd, trust_coefficient=coefficient,
                                       eps=epsilon, nesterov=use_nesterov, use_clip=use_clip),
                     weight_decay, False, loss_scale, "rule")


_ENGINES: dict[Any, type] = {}


def _engine_class(factory: Callable[..., GradientTransformation], elementwise: bool) -> type:
    key = (factory, elementwise)
    cls = _ENGINES.get(key)
    if cls is None:
        cls = type(f"_Engine_{factory.__name__.strip('_')}", (_Engine,),
                   {"factory": staticmethod(factory), "elementwise": elementwise, "state_has_step": True,
                    "__module__": __name__})
        _ENGINES[key] = cls
    return cls


# --------------------------------------------------------------------------- the base class


class Optimizer:
    r"""``mindspore.nn.Optimizer(learning_rate, parameters, weight_decay=0.0, loss_scale=1.0)``.

    The base of the MindSpore-named optimizers, and of custom ones: a subclass
    defines ``construct(self, gradients)`` from the helpers MindSpore gives
    (:meth:`decay_weight`, :meth:`gradients_centralization`,
    :meth:`scale_grad`, :meth:`get_lr`), assigns the new values to
    :attr:`parameters`, and returns its result. Calling the optimizer runs
    ``construct`` and counts the step (:attr:`global_step`).

    ``learning_rate``: a number (>= 0); a 0-d array; a 1-D array or any
    iterable of numbers, step :math:`i` using element :math:`i` (the last one
    after the end); a :class:`LearningRateSchedule` or any jittable function of
    the step. ``parameters``: a pytree of arrays, or a list of group dicts
    with keys ``params`` (a pytree), ``lr``, ``weight_decay``,
    ``grad_centralization`` and, in a dict of its own, ``order_params`` (a
    pytree holding every parameter: its structure and order become those of
    :attr:`parameters` and of the gradients). Without groups the weight decay
    skips parameters whose names contain ``'beta'`` or ``'gamma'``.

    Raises:
        TypeError: ``learning_rate`` of another type; an element of
            ``parameters`` neither an array nor a dict; ``loss_scale`` not a
            float; ``weight_decay`` neither a number nor a schedule.
        ValueError: ``parameters`` None or empty; a negative learning rate or
            ``weight_decay``; ``loss_scale`` <= 0; a learning-rate array with
            more than one dimension; 1-D group learning rates of different
            lengths.
        KeyError: a group key MindSpore does not parse.
        RuntimeError: a parameter in two groups.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> class PlainSGD(ms.Optimizer):
        ...     def construct(self, gradients):
        ...         gradients = self.scale_grad(self.decay_weight(gradients))
        ...         lr = self.get_lr()
        ...         self.parameters = jax.tree.map(lambda p, g: p - lr * g, self.parameters, gradients)
        ...         return True
        >>> opt = PlainSGD(0.5, {'w': jnp.array([1.0, 2.0])}, weight_decay=0.5)
        >>> opt({'w': jnp.array([1.0, 1.0])})
        True
        >>> opt.parameters['w']
        Array([0.25, 1.  ], dtype=float32)
    """

    _centralizes = True  # whether construct() centralizes gradients (AdamWeightDecay's does not)
    _decay_filter = True  # whether the 'beta' / 'gamma' filter applies without groups (FTRL: no)
    _rule_decays_all = False  # whether the rule decays every parameter whatever the flags (SGD's kernel)

    def __init__(self, learning_rate: Any, parameters: Any, weight_decay: Any = 0.0, loss_scale: float = 1.0):
        owner = self.cls_name
        self._engine: _Engine | None = None
        self._global_step = 0
        groups_given, parameters = self._check_parameters(parameters)
        if isinstance(loss_scale, int) and not isinstance(loss_scale, bool):
            loss_scale = float(loss_scale)
        _check_float(loss_scale, "loss_scale", owner)
        _check_positive(loss_scale, "loss_scale", owner)
        self.loss_scale = loss_scale
        default_lr = _preprocess_lr(learning_rate, owner)
        self.is_group = groups_given is not None
        self.is_group_lr = False
        self.is_group_params_ordered = False
        if self.is_group:
            tree, names, groups, spec_of = self._parse_groups(groups_given, default_lr, weight_decay, owner)
            self._default_weight_decay = _preprocess_weight_decay(weight_decay, owner)
        else:
            names, leaves = _param_leaves(parameters, "parameters")
            self._default_weight_decay = _preprocess_weight_decay(weight_decay, owner)
            tree = parameters
            groups = [_Group(leaves, default_lr, self._default_weight_decay, False)]
            spec_of = [0] * len(leaves)
        self._default_lr = default_lr
        self._tree_def = jax.tree.structure(tree)
        self._names = names
        self._groups = groups
        self._spec_of = spec_of
        self._params_value = tree
        self.dynamic_lr = default_lr.dynamic or any(g.lr.dynamic for g in groups)
        self.dynamic_weight_decay = any(callable(g.weight_decay) for g in groups)
        self.grad_centralization = any(g.grad_centralization for g in groups)

    @property
    def cls_name(self) -> str:
        """The class name, used in error messages as MindSpore does."""
        return type(self).__name__

    # ------------------------------------------------------------------ parsing

    @staticmethod
    def _check_parameters(parameters: Any) -> tuple[list[Mapping[str, Any]] | None, Any]:
        """``(group dicts, None)`` for a list of groups, ``(None, pytree)`` otherwise; MindSpore's errors."""
        if parameters is None:
            raise ValueError("For 'Optimizer', the argument parameters can not be None.")
        if _is_array(parameters) or isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
            raise TypeError(f"For 'Optimizer', the argument parameters must be Iterable type, but got "
                            f"{type(parameters)}.")
        if not isinstance(parameters, (Mapping, list, tuple)) and jax.tree.leaves(parameters) == [parameters]:
            parameters = list(parameters)  # a generator or view of parameters, as MindSpore's list(parameters)
        if isinstance(parameters, list) and any(isinstance(x, Mapping) for x in parameters):
            if not all(isinstance(x, Mapping) for x in parameters):
                raise TypeError("For 'Optimizer', all elements of the argument 'parameters' must be 'Parameter' "
                                "or 'dict', please check the 'parameters'.")
            return list(parameters), None
        if not jax.tree.leaves(parameters):
            raise ValueError("For 'Optimizer', the argument parameters must not be empty.")
        return None, parameters

    def _parse_groups(self, groups: list[Mapping[str, Any]], default_lr: _LR, weight_decay: Any, owner: str):
        order_tree = None
        specs: list[_Group] = []
        group_trees: list[Any] = []
        group_names: list[list[str]] = []
        list_length = default_lr.length
        for group in groups:
            invalid = [k for k in group if k not in _GROUP_KEYS]
            if invalid:
                raise KeyError(f"For 'Optimizer', the key in group params must be one of in {list(_GROUP_KEYS)}, "
                               f"but got {invalid}.")
            if "order_params" in group:
                if len(group) > 1:
                    raise ValueError(f"For 'Optimizer', the order params dict in group parameters should only "
                                     f"include the 'order_params' key, but got {list(group.keys())}.")
                if not isinstance(group["order_params"], Iterable) or _is_array(group["order_params"]):
                    raise TypeError("For 'Optimizer', the value of 'order_params' in group parameters should be "
                                    f"Iterable type, but got {type(group['order_params'])}.")
                order_tree = group["order_params"]
                self.is_group_params_ordered = True
                continue
            if "params" not in group:
                raise KeyError("For 'Optimizer', every group of parameters must have the key 'params'.")
            names, leaves = _param_leaves(group["params"], "group `params`")
            lr = default_lr
            if "lr" in group:
                self.is_group_lr = True
                lr = _preprocess_lr(group["lr"], owner)
                if lr.length:
                    if list_length and lr.length != list_length:
                        raise ValueError("For 'Optimizer', the Tensor type dynamic learning rate in group must be "
                                         "the same size as the argument 'learning_rate'.")
                    list_length = lr.length
            wd = _preprocess_weight_decay(group.get("weight_decay", weight_decay), owner)
            gc = group.get("grad_centralization", False)
            if not isinstance(gc, bool):
                raise TypeError(f"For 'Optimizer', the 'gradients_centralization' must be bool type, but got "
                                f"{type(gc)}.")
            specs.append(_Group(leaves, lr, wd, gc))
            group_trees.append(group["params"])
            group_names.append(names)
        if not specs:
            raise ValueError("For 'Optimizer', the argument parameters must not be empty.")
        seen: dict[int, str] = {}
        for names, spec in zip(group_names, specs):
            for name, leaf in zip(names, spec.leaves):
                if id(leaf) in seen:
                    raise RuntimeError(f"For 'Optimizer', the {name} parameter already exists, it does not support "
                                       "repeated setting. Please check whether the optimizer parameter has been set "
                                       "multiple times.")
                seen[id(leaf)] = name
        if order_tree is not None:
            names, leaves = _param_leaves(order_tree, "'order_params'")
            if len(leaves) != len(seen):
                raise ValueError(f"For 'Optimizer',the length of order parameters must be the same as the length of "
                                 f"group parameters, but got order parameters' length {len(leaves)}, group "
                                 f"parameters' length {len(seen)}.")
            owner_of = {id(leaf): i for i, spec in enumerate(specs) for leaf in spec.leaves}
            spec_of = []
            for name, leaf in zip(names, leaves):
                if id(leaf) not in owner_of:
                    raise ValueError(f"For 'Optimizer', the parameter {name} of 'order_params' is in no group of "
                                     "'params'.")
                spec_of.append(owner_of[id(leaf)])
            return order_tree, names, specs, spec_of
        tree = group_trees[0] if len(group_trees) == 1 else list(group_trees)
        names = [n for ns in group_names for n in ns]
        spec_of = [i for i, spec in enumerate(specs) for _ in spec.leaves]
        return tree, names, specs, spec_of

    def _decay_flag(self, k: int) -> bool:
        """MindSpore's ``decay_flags`` for parameter ``k`` (in leaf order): whether ``decay_weight`` decays it."""
        wd = self._groups[self._spec_of[k]].weight_decay
        if not callable(wd) and wd <= 0:
            return False
        return self.is_group or not self._decay_filter or mindspore_decay_filter(self._names[k])

    def _decays(self, k: int) -> bool:
        """Whether the update rule decays parameter ``k`` (SGD's kernel decays every parameter)."""
        wd = self._groups[self._spec_of[k]].weight_decay
        return self._decay_flag(k) or (self._rule_decays_all and (callable(wd) or wd > 0))

    # ------------------------------------------------------------------ the engine

    def _build(self, factory: Callable[..., GradientTransformation], *, elementwise: bool = True,
               split: Callable[[int], Any] | None = None, **rule_kwargs: Any) -> None:
        """Hold parameters and state in a funcopt stateful optimizer running ``factory``'s rule.

        Parameters with the same learning rate, weight decay and centralization
        (and the same ``split(k)``) share a group; groups are cuts of one pytree,
        so :attr:`parameters` keeps the structure given.
        """
        keys = []
        for k in range(len(self._names)):
            spec = self._groups[self._spec_of[k]]
            decay = spec.weight_decay if self._decays(k) else 0.0
            gc = spec.grad_centralization and self._centralizes
            keys.append((self._spec_of[k], decay if callable(decay) else float(decay), gc,
                         () if split is None else tuple(sorted(split(k).items()))))
        distinct = list(dict.fromkeys(keys))
        tree = self._params_value
        leaves = jax.tree.leaves(tree)
        engine_groups = []
        for key in distinct:
            spec_index, decay, gc, extra = key
            spec = self._groups[spec_index]
            if len(distinct) == 1:
                cut = tree
            else:
                cut = self._tree_def.unflatten([leaf if keys[i] == key else MaskedNode()
                                                for i, leaf in enumerate(leaves)])
            group = {"params": cut, "lr": spec.lr.hparam, "weight_decay": decay, "grad_centralization": gc}
            group.update(dict(extra))
            engine_groups.append(group)
        any_gc = any(k[2] for k in keys)
        engine_cls = _engine_class(factory, elementwise and not any_gc)
        first = engine_groups[0]
        self._engine = engine_cls(engine_groups, lr=first["lr"], weight_decay=first["weight_decay"],
                                  grad_centralization=first["grad_centralization"], loss_scale=self.loss_scale,
                                  **rule_kwargs, **dict(distinct[0][3]))

    # ------------------------------------------------------------------ values

    @property
    def parameters(self) -> PyTree:
        """The current parameter values, in the structure given (or of ``order_params``)."""
        if self._engine is not None:
            return self._engine.params
        return self._params_value

    @parameters.setter
    def parameters(self, tree: PyTree) -> None:
        guard.check_host_call(self, "parameters = ...", tree)
        if jax.tree.structure(tree) != self._tree_def:
            raise ValueError(f"parameters of structure {jax.tree.structure(tree)} do not match the optimizer's "
                             f"{self._tree_def}")
        if self._engine is not None:
            self._engine.params = tree
        else:
            self._params_value = tree

    @property
    def global_step(self) -> int:
        """The number of updates applied (MindSpore's ``global_step``)."""
        return self._global_step

    @property
    def learning_rate(self) -> Any:
        """The ``learning_rate`` given, as :meth:`get_lr_parameter` returns it."""
        return self._default_lr.raw

    @property
    def state(self) -> dict[str, dict[str, jax.Array]]:
        """Per-parameter optimizer state by parameter name (torch's state names)."""
        return {} if self._engine is None else self._engine.state

    def state_dict(self) -> dict[str, Any]:
        """The optimizer state (funcopt's / torch's format), for checkpoints."""
        if self._engine is None:
            return {"state": {}, "param_groups": [], "global_step": self._global_step}
        return {**self._engine.state_dict(), "global_step": self._global_step}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Load :meth:`state_dict`'s result; ``strict`` as :meth:`funcopt.optim.Optimizer.load_state_dict`."""
        guard.check_host_call(self, "load_state_dict", state_dict)
        if self._engine is not None:
            keys = self._engine.load_state_dict({k: v for k, v in state_dict.items() if k != "global_step"},
                                                strict=strict)
            self._global_step = self._engine.step_count(0)
            return keys
        self._global_step = int(state_dict.get("global_step", 0))
        return IncompatibleKeys([], [], [])

    # ------------------------------------------------------------------ MindSpore's helpers

    def _lr_at(self, lr: _LR) -> jax.Array:
        value = lr.hparam(jnp.asarray(self._global_step, jnp.int32)) if callable(lr.hparam) else lr.hparam
        return jnp.asarray(value, float_dtype()).reshape(())

    def _wd_at(self, wd: Any) -> jax.Array:
        value = wd(jnp.asarray(self._global_step, jnp.int32)) if callable(wd) else wd
        return jnp.asarray(value, float_dtype()).reshape(()) * self.loss_scale

    def get_lr(self) -> Any:
        """The learning rate of the coming update: one 0-d array, or a tuple with one per parameter for group rates.

        Unlike MindSpore's, calling it does not advance :attr:`global_step`; the
        optimizer counts its own steps.

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.Momentum({'w': jnp.zeros(2)}, learning_rate=[0.1, 0.05, 0.01], momentum=0.9)
            >>> lrs = []
            >>> for _ in range(4):
            ...     lrs.append(round(float(opt.get_lr()), 6))
            ...     _ = opt({'w': jnp.ones(2)})
            >>> lrs
            [0.1, 0.05, 0.01, 0.01]
        """
        if self.is_group_lr:
            return tuple(self._lr_at(self._groups[s].lr) for s in self._spec_of)
        return self._lr_at(self._default_lr)

    def get_lr_parameter(self, param: Any) -> Any:
        """The learning rate of parameter(s) ``param``: a name, an object with ``.name``, or a list of them.

        Returns what MindSpore returns for each: the fixed rate as a 0-d array,
        the 1-D array of per-step rates, or the schedule.

        Raises:
            TypeError: ``param`` is not a parameter or a list.
            ValueError: a parameter the optimizer does not hold.

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> net = {'conv': {'weight': jnp.ones((16, 16, 3, 3))}, 'fc': {'weight': jnp.ones((10, 16))}}
            >>> conv_params = {'conv': net['conv']}
            >>> no_conv_params = {'fc': net['fc']}
            >>> group_params = [{'params': conv_params, 'lr': 0.05}, {'params': no_conv_params, 'lr': 0.01}]
            >>> optim = ms.Momentum(group_params, learning_rate=0.1, momentum=0.9, weight_decay=0.0)
            >>> conv_lr = optim.get_lr_parameter(['conv.weight'])
            >>> print(conv_lr[0])
            0.05
        """
        if isinstance(param, list):
            items = param
        elif isinstance(param, str) or hasattr(param, "name"):
            items = [param]
        else:
            raise TypeError(f"For 'get_lr_parameter', the 'param' must be 'Parameter' or 'list' type, but got "
                            f"{type(param)}.")
        out = []
        for p in items:
            name = p if isinstance(p, str) else getattr(p, "name", None)
            if not isinstance(name, str):
                raise TypeError(f"For '{self.cls_name}', a parameter is given by its name or an object with a "
                                f"'name', got {type(p)}.")
            matches = [k for k, n in enumerate(self._names) if n == name]
            if not matches:
                raise ValueError(f"For 'get_lr_parameter', the parameter {name} is not in optimizer, please check "
                                 "whether the argument 'param' is correct.")
            if len(matches) > 1:
                raise ValueError(f"For 'get_lr_parameter', the name {name} is shared by several parameters "
                                 "(groups with the same names); use 'order_params' to name them by their paths.")
            lr = self._groups[self._spec_of[matches[0]]].lr if self.is_group_lr else self._default_lr
            out.append(lr.raw)
        return out if isinstance(param, list) else out[0]

    def get_weight_decay(self) -> Any:
        """The weight decay of the coming update times ``loss_scale``, as MindSpore holds it.

        One 0-d array without groups, else a tuple with one per parameter.

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.Momentum({'w': jnp.zeros(2)}, 0.1, 0.9, weight_decay=0.01, loss_scale=128.0)
            >>> print(opt.get_weight_decay())
            1.28
        """
        if self.is_group:
            return tuple(self._wd_at(self._groups[s].weight_decay) for s in self._spec_of)
        return self._wd_at(self._groups[0].weight_decay)

    def _as_tree(self, gradients: Any) -> PyTree:
        if jax.tree.structure(gradients) == self._tree_def:
            return gradients
        if isinstance(gradients, (tuple, list)) and len(gradients) == len(self._names) \
                and all(_is_array(g) for g in gradients):
            return self._tree_def.unflatten(list(gradients))
        raise ValueError(f"For '{self.cls_name}', the gradients must have the structure of the parameters "
                         f"{self._tree_def}, or be a tuple of {len(self._names)} arrays in the parameters' order.")

    def _leaf_mask(self, keep: Callable[[int], bool]) -> PyTree:
        return self._tree_def.unflatten([keep(k) for k in range(len(self._names))])

    def decay_weight(self, gradients: Any) -> PyTree:
        r"""MindSpore's ``decay_weight``: :math:`g \leftarrow g + \lambda s \theta` on the decayed parameters.

        :math:`\lambda s` is :meth:`get_weight_decay` (MindSpore decays the
        loss-scaled gradients); the decayed parameters are MindSpore's
        ``decay_flags``.

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.SGD({'fc': {'weight': jnp.ones(2)}, 'bn': {'gamma': jnp.ones(2)}}, weight_decay=0.1)
            >>> g = opt.decay_weight({'fc': {'weight': jnp.zeros(2)}, 'bn': {'gamma': jnp.zeros(2)}})
            >>> g['fc']['weight'], g['bn']['gamma']
            (Array([0.1, 0.1], dtype=float32), Array([0., 0.], dtype=float32))
        """
        gradients = self._as_tree(gradients)
        params = self.parameters
        decays = [k for k in range(len(self._names)) if self._decay_flag(k)]
        for s, spec in enumerate(self._groups):
            members = [k for k in decays if self._spec_of[k] == s]
            if not members:
                continue
            tx = add_decayed_weights(self._wd_at(spec.weight_decay), mask=self._leaf_mask(members.__contains__))
            gradients = tx.update(gradients, tx.init(params), params)[0]
        return gradients

    def gradients_centralization(self, gradients: Any) -> PyTree:
        """MindSpore's ``gradients_centralization``: centralize the gradients of groups that ask for it.

        See :func:`funcopt.centralize` (with MindSpore's skip of parameters whose
        second dimension is not a multiple of 16).

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.SGD([{'params': {'w': jnp.ones((2, 16))}, 'grad_centralization': True}])
            >>> g = jnp.arange(32.0).reshape(2, 16)
            >>> opt.gradients_centralization({'w': g})['w'].sum(axis=1)
            Array([0., 0.], dtype=float32)
        """
        gradients = self._as_tree(gradients)
        if not self.is_group:
            return gradients
        mask = self._leaf_mask(lambda k: self._groups[self._spec_of[k]].grad_centralization)
        tx = centralize(mask=mask, channel_multiple=16)
        return tx.update(gradients, tx.init(gradients))[0]

    def scale_grad(self, gradients: Any) -> PyTree:
        """MindSpore's ``scale_grad``: the gradients divided by ``loss_scale`` (multiplied by its reciprocal).

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.SGD({'w': jnp.ones(2)}, loss_scale=1024.0)
            >>> opt.scale_grad({'w': jnp.array([2048.0, 512.0])})['w']
            Array([2. , 0.5], dtype=float32)
        """
        gradients = self._as_tree(gradients)
        if self.loss_scale == 1.0:
            return gradients
        return _unscale(self.loss_scale).update(gradients, None)[0]

    # ------------------------------------------------------------------ stepping

    def construct(self, gradients: PyTree) -> Any:
        """The update; built-in optimizers run their funcopt rule, custom subclasses override this."""
        if self._engine is None:
            raise NotImplementedError(f"{self.cls_name} must define construct(self, gradients)")
        self._engine(gradients)
        return tuple(True for _ in self._names)

    def __call__(self, gradients: Any) -> Any:
        """Apply ``gradients`` (the structure of :attr:`parameters`, or a flat tuple) and count the step.

        Returns:
            What ``construct`` returns: for the built-in optimizers, MindSpore's
            success flags, a tuple of ``True`` with one entry per parameter.
        """
        guard.check_host_call(self, "__call__", gradients)
        out = self.construct(self._as_tree(gradients))
        self._global_step += 1
        return out

    def __repr__(self) -> str:
        return f"{self.cls_name}<{len(self._names)} parameters, global_step={self._global_step}>"


# --------------------------------------------------------------------------- the optimizers


class Momentum(Optimizer):
    r"""``nn.Momentum(params, learning_rate, momentum, weight_decay=0.0, loss_scale=1.0, use_nesterov=False)``.

    .. math::

        v_{t+1} = u v_t + g, \qquad
        p_{t+1} = p_t - lr (g + u v_{t+1}) \text{ if use\_nesterov, else } p_t - lr\, v_{t+1}

    after ``decay_weight``, ``gradients_centralization`` and ``scale_grad``;
    over :func:`funcopt.momentum`.

    Raises:
        TypeError: ``momentum`` not a float or ``use_nesterov`` not a bool (and
            the base class's errors).
        ValueError: ``momentum`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Momentum({'w': jnp.array([1.0, 2.0])}, learning_rate=0.1, momentum=0.9)
        >>> for _ in range(2):
        ...     _ = opt({'w': jnp.ones(2)})
        >>> [round(float(x), 4) for x in opt.parameters['w']]
        [0.71, 1.71]
    """

    def __init__(self, params: Any, learning_rate: Any, momentum: float, weight_decay: Any = 0.0,
                 loss_scale: float = 1.0, use_nesterov: bool = False):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        _check_float(momentum, "momentum", self.cls_name)
        if momentum < 0.0:
            raise ValueError(f"For 'Momentum', the argument 'momentum' must be at least 0.0, but got {momentum}")
        _check_bool(use_nesterov, "use_nesterov", self.cls_name)
        self.momentum = momentum
        self.use_nesterov = use_nesterov
        self._build(_momentum_rule, momentum=momentum, use_nesterov=use_nesterov)


class SGD(Optimizer):
    r"""``nn.SGD(params, learning_rate=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
    loss_scale=1.0)``.

    .. math::

        v_{t+1} = u v_t + (1 - \text{dampening}) g \; (v_1 = g), \qquad
        p_{t+1} = p_t - lr (g + u v_{t+1}) \text{ if nesterov, else } p_t - lr\, v_{t+1}

    Over :func:`funcopt.sgd`. As in MindSpore's SGD kernel, the weight decay
    is added inside the rule, after centralization, to every parameter (no
    ``'beta'`` / ``'gamma'`` filter).

    Raises:
        TypeError: ``momentum`` or ``dampening`` not a number, ``nesterov`` not
            a bool, or a scheduled weight decay.
        ValueError: ``momentum`` or ``dampening`` < 0; ``nesterov`` without a
            positive momentum and zero dampening.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.SGD({'w': jnp.array([1.0])}, momentum=0.9, dampening=0.5)
        >>> for _ in range(2):
        ...     _ = opt({'w': jnp.ones(1)})
        >>> opt.parameters['w']   # steps of 0.1 * 1, then 0.1 * (0.9 + 0.5)
        Array([0.76], dtype=float32)
    """

    _rule_decays_all = True

    def __init__(self, params: Any, learning_rate: Any = 0.1, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: Any = 0.0, nesterov: bool = False, loss_scale: float = 1.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        if isinstance(momentum, int) and not isinstance(momentum, bool):
            momentum = float(momentum)
        if not isinstance(momentum, float):
            raise TypeError(f"For 'SGD', the argument 'momentum' must be float type, but got {type(momentum)}.")
        if momentum < 0.0:
            raise ValueError(f"For 'SGD', the argument 'momentum' must be at least 0.0, but got {momentum}.")
        if isinstance(dampening, int) and not isinstance(dampening, bool):
            dampening = float(dampening)
        if not isinstance(dampening, float):
            raise TypeError(f"For 'SGD', the argument 'dampening' must be float type, but got {type(dampening)}.")
        if dampening < 0.0:
            raise ValueError(f"For 'SGD', the argument 'dampening' must be at least 0.0, but got 'dampening' "
                             f"{dampening}")
        _check_bool(nesterov, "nesterov", owner)
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError(f"For 'SGD', if 'nesterov' is true, 'momentum' must be > 0.0 and 'dampening' must "
                             f"equal to 0.0, but got 'momentum' {momentum}, 'dampening' {dampening}")
        if self.dynamic_weight_decay:
            raise TypeError("For 'SGD', dynamic weight decay is currently not supported, the argument "
                            "'weight_decay' or 'weight_decay' set in grouped 'params' must be float or int type.")
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self._build(_sgd_rule, momentum=momentum, dampening=dampening, nesterov=nesterov)


class Adam(Optimizer):
    r"""``nn.Adam(params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, use_locking=False,
    use_nesterov=False, weight_decay=0.0, loss_scale=1.0, use_amsgrad=False, **kwargs)``.

    .. math::

        \gamma_t = \gamma \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}, \qquad
        \theta_t = \theta_{t-1} - \gamma_t \frac{m_t}{\sqrt{v_t} + \epsilon}

    (:math:`\beta_1 m_t + (1 - \beta_1) g_t` in the numerator with
    ``use_nesterov``; :math:`\max_{s \le t} v_s` in the denominator with
    ``use_amsgrad``, whose kernel has no Nesterov form). Over
    :func:`funcopt.optimizers.adam.adam_mindspore`, the rule of MindSpore's
    ``Adam`` / ``ApplyAdamWithAmsgrad`` kernels. ``use_locking`` has no effect;
    ``use_lazy`` and ``use_offload`` (keyword arguments) are accepted and
    compute the same dense update.

    Raises:
        TypeError: ``beta1``, ``beta2``, ``eps`` not floats; a flag not a bool.
        ValueError: ``beta1`` or ``beta2`` outside (0, 1); ``eps`` <= 0;
            ``use_lazy`` with ``use_offload``; ``use_amsgrad`` with either.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Adam({'w': jnp.array([1.0, -1.0])}, learning_rate=0.1)
        >>> opt({'w': jnp.array([0.5, -2.0])})
        (True,)
        >>> opt.parameters['w']
        Array([ 0.9, -0.9], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, use_locking: bool = False, use_nesterov: bool = False, weight_decay: Any = 0.0,
                 loss_scale: float = 1.0, use_amsgrad: bool = False, **kwargs: Any):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        unknown = set(kwargs) - {"use_lazy", "use_offload"}
        if unknown:
            raise TypeError(f"For 'Adam', unexpected keyword arguments {sorted(unknown)}.")
        use_lazy = kwargs.get("use_lazy", False)
        use_offload = kwargs.get("use_offload", False)
        _check_betas_eps(beta1, beta2, eps, owner)
        for name, flag in (("use_locking", use_locking), ("use_nesterov", use_nesterov),
                           ("use_amsgrad", use_amsgrad), ("use_lazy", use_lazy), ("use_offload", use_offload)):
            _check_bool(flag, name, owner)
        if use_lazy and use_offload:
            raise ValueError(f"For 'Adam', 'use_lazy' and 'use_offload' can not both be True.But got "
                             f"use_lazy={use_lazy}, use_offload={use_offload}.")
        if use_amsgrad and (use_lazy or use_offload):
            raise ValueError(f"For lazy Adam and Adam with offload, there is no parameter named 'use_amsgrad'.but "
                             f"got 'use_amsgrad'={use_amsgrad}.")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.use_nesterov, self.use_amsgrad = use_nesterov, use_amsgrad
        self._build(_adam_rule, beta1=beta1, beta2=beta2, eps=eps, use_nesterov=use_nesterov and not use_amsgrad,
                    use_amsgrad=use_amsgrad)


class AdamWeightDecay(Optimizer):
    r"""``nn.AdamWeightDecay(params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0)``.

    .. math::

        \theta_t = \theta_{t-1} - \gamma \left(\frac{m_t}{\sqrt{v_t} + \epsilon} + \lambda \theta_{t-1}\right)

    with no bias correction and the decay only on the decayed parameters
    (``'beta'`` / ``'gamma'`` filter without groups); over
    :func:`funcopt.optimizers.adam.adam_weight_decay`. As MindSpore's, it
    neither centralizes nor unscales the gradients.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.AdamWeightDecay({'w': jnp.array([2.0]), 'ln': {'gamma': jnp.array([2.0])}},
        ...                          learning_rate=0.1, beta1=0.5, beta2=0.75, weight_decay=0.5)
        >>> new = opt({'w': jnp.array([4.0]), 'ln': {'gamma': jnp.array([4.0])}}) and opt.parameters
        >>> new['w'], new['ln']['gamma']
        (Array([1.8], dtype=float32), Array([1.9], dtype=float32))
    """

    _centralizes = False

    def __init__(self, params: Any, learning_rate: Any = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-6, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        _check_betas_eps(beta1, beta2, eps, self.cls_name)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._build(_adam_weight_decay_rule, beta1=beta1, beta2=beta2, eps=eps)


class AdaMax(Optimizer):
    r"""``nn.AdaMax(params, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0,
    loss_scale=1.0)``.

    .. math::

        m_{t+1} = \beta_1 m_t + (1 - \beta_1) g, \quad v_{t+1} = \max(\beta_2 v_t, |g|), \quad
        w \leftarrow w - \frac{l}{1 - \beta_1^{t+1}} \frac{m_{t+1}}{v_{t+1} + \epsilon}

    Over :func:`funcopt.optimizers.adamax.adamax_mindspore`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.AdaMax({'w': jnp.array([1.0])}, learning_rate=0.5, eps=1.0)
        >>> _ = opt({'w': jnp.array([3.0])})
        >>> opt.parameters['w']
        Array([0.625], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-08, weight_decay: Any = 0.0, loss_scale: float = 1.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        _check_betas_eps(beta1, beta2, eps, self.cls_name)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._build(_adamax_rule, beta1=beta1, beta2=beta2, eps=eps)


class Adagrad(Optimizer):
    r"""``nn.Adagrad(params, accum=0.1, learning_rate=0.001, update_slots=True, loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        h_t = h_{t-1} + g_t^2, \quad h_0 = \text{accum}, \qquad
        w_t = w_{t-1} - \gamma \frac{g_t}{\sqrt{h_t}}

    MindSpore's ``ApplyAdagrad`` kernel (no :math:`\epsilon`); over
    :func:`funcopt.adagrad` with ``initial_accumulator_value=accum`` and
    ``eps=0``. With ``update_slots=False`` the accumulator stays at ``accum``
    and each step is :math:`\gamma / \sqrt{\text{accum}}` times the gradient
    (:func:`funcopt.sgd` with that rate; no ``sum`` state).

    Raises:
        TypeError: ``accum`` not a float or ``update_slots`` not a bool.
        ValueError: ``accum`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Adagrad({'w': jnp.array([1.0])}, accum=7.0, learning_rate=0.5)
        >>> _ = opt({'w': jnp.array([3.0])})
        >>> opt.parameters['w']   # 1 - 0.5 * 3 / sqrt(7 + 9)
        Array([0.625], dtype=float32)
    """

    def __init__(self, params: Any, accum: float = 0.1, learning_rate: Any = 0.001, update_slots: bool = True,
                 loss_scale: float = 1.0, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        _check_float(accum, "accum", self.cls_name)
        _check_non_negative(accum, "accum", self.cls_name)
        _check_bool(update_slots, "update_slots", self.cls_name)
        self.accum, self.update_slots = accum, update_slots
        self._build(_adagrad_rule, accum=accum, update_slots=update_slots)


class Adadelta(Optimizer):
    r"""``nn.Adadelta(params, learning_rate=1.0, rho=0.9, epsilon=1e-6, loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        a_t = \rho a_{t-1} + (1 - \rho) g^2, \quad
        u = \frac{\sqrt{d_{t-1} + \epsilon}}{\sqrt{a_t + \epsilon}} g, \quad
        d_t = \rho d_{t-1} + (1 - \rho) u^2, \quad w \leftarrow w - \gamma u

    Over :func:`funcopt.adadelta` (the same rule as torch's).

    Raises:
        TypeError: ``rho`` or ``epsilon`` not a float.
        ValueError: ``rho`` outside [0, 1]; ``epsilon`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Adadelta({'w': jnp.array([1.0, 2.0])}, rho=0.25, epsilon=1.0)
        >>> _ = opt({'w': jnp.array([0.0, 2.0])})
        >>> opt.parameters['w']
        Array([1., 1.], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 1.0, rho: float = 0.9, epsilon: float = 1e-6,
                 loss_scale: float = 1.0, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        _check_float(rho, "rho", owner)
        _check_float(epsilon, "epsilon", owner)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"For '{owner}', the 'rho' must be in range of [0.0, 1.0], but got {rho}.")
        _check_non_negative(epsilon, "epsilon", owner)
        self.rho, self.epsilon = rho, epsilon
        self._build(_adadelta_rule, rho=rho, epsilon=epsilon)


class RMSProp(Optimizer):
    r"""``nn.RMSProp(params, learning_rate=0.1, decay=0.9, momentum=0.0, epsilon=1e-10, use_locking=False,
    centered=False, loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        s_{t+1} = \rho s_t + (1 - \rho) g^2, \quad
        m_{t+1} = \beta m_t + \frac{\eta}{\sqrt{s_{t+1} + \epsilon}} g, \quad w \leftarrow w - m_{t+1}

    (:math:`s_{t+1} - \bar g_{t+1}^2` under the root when ``centered``), with
    the mean square starting at ones; over
    :func:`funcopt.optimizers.rmsprop.rmsprop_mindspore`.

    Raises:
        TypeError: ``decay``, ``momentum``, ``epsilon`` not floats; a flag not a bool.
        ValueError: ``decay`` or ``momentum`` < 0; ``epsilon`` <= 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.RMSProp({'w': jnp.array([1.0])}, learning_rate=0.1, decay=0.5, epsilon=1e-30)
        >>> _ = opt({'w': jnp.array([1.0])})
        >>> opt.parameters['w']   # mean square 0.5 * 1 + 0.5 * 1 = 1
        Array([0.9], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 0.1, decay: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-10, use_locking: bool = False, centered: bool = False, loss_scale: float = 1.0,
                 weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        _check_float(decay, "decay", owner)
        _check_non_negative(decay, "decay", owner)
        _check_float(momentum, "momentum", owner)
        _check_non_negative(momentum, "momentum", owner)
        _check_float(epsilon, "epsilon", owner)
        _check_positive(epsilon, "epsilon", owner)
        _check_bool(use_locking, "use_locking", owner)
        _check_bool(centered, "centered", owner)
        self.decay, self.momentum, self.epsilon, self.centered = decay, momentum, epsilon, centered
        self._build(_rmsprop_rule, decay=decay, momentum=momentum, epsilon=epsilon, centered=centered)


class Rprop(Optimizer):
    r"""``nn.Rprop(params, learning_rate=0.1, etas=(0.5, 1.2), step_sizes=(1e-6, 50.), weight_decay=0.0)``.

    .. math::

        \Delta_t = \mathrm{clip}(\Delta_{t-1} \cdot \eta^{\pm}, \Gamma_{min}, \Gamma_{max}), \quad
        w \leftarrow w - \Delta_t \operatorname{sign}(g_t) \quad (g_t \leftarrow 0 \text{ after a sign change})

    with :math:`\Delta_0` the learning rate of the first step; over
    :func:`funcopt.rprop` (MindSpore's rule is torch's).

    Raises:
        TypeError: ``etas`` or ``step_sizes`` not a tuple, or holding non-floats.
        ValueError: not pairs; minimal step size above the maximal; ``etaminus``
            outside (0, 1) or ``etaplus`` <= 1.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Rprop({'w': jnp.array([1.0, 2.0])}, learning_rate=0.5)
        >>> for g in ([1.0, 1.0], [3.0, -1.0]):
        ...     _ = opt({'w': jnp.array(g)})
        >>> opt.parameters['w']
        Array([-0.10000002,  1.5       ], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 0.1, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50.0), weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        owner = self.cls_name
        if not isinstance(etas, tuple):
            raise TypeError(f"For Rprop, etas must be a tuple, but got {type(etas)}.")
        if len(etas) != 2:
            raise ValueError(f"For Rprop, etas must be a tuple with the size of 2, but got {len(etas)}.")
        if not isinstance(step_sizes, tuple):
            raise TypeError(f"For Rprop, step_sizes must be a tuple, but got {type(step_sizes)}.")
        if len(step_sizes) != 2:
            raise ValueError(f"For Rprop, step_sizes must be a tuple with the size of 2, but got {len(step_sizes)}.")
        if step_sizes[0] > step_sizes[1]:
            raise ValueError(f"For Rprop, maximal step size should not be less than minimal step size, but got "
                             f"{step_sizes[0]} > {step_sizes[1]}.")
        _check_float(etas[0], "etaminus", owner)
        _check_open_unit(etas[0], "etaminus", owner)
        _check_float(etas[1], "etaplus", owner)
        if etas[1] <= 1.0:
            raise ValueError(f"For Rprop, etaplus must be greater than 1.0, but got etaplus {etas[1]}.")
        _check_float(step_sizes[0], "min_step_sizes", owner)
        _check_float(step_sizes[1], "max_step_sizes", owner)
        self.etas, self.step_sizes = etas, step_sizes
        self._build(_rprop_rule, etas=etas, step_sizes=step_sizes)


class ASGD(Optimizer):
    r"""``nn.ASGD(params, learning_rate=0.1, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0)``.

    .. math::

        w_t = w_{t-1}(1 - \lambda \eta_{t-1}) - \eta_{t-1} g_t, \quad
        \eta_t = \frac{lr}{(1 + \lambda\, lr\, t)^\alpha}, \quad \mu_t = \frac{1}{\max(1, t - t_0)}

    with the average :math:`ax` in the state (``state[name]['ax']``); over
    :func:`funcopt.asgd` (MindSpore's kernel is torch's rule; its documented
    :math:`\eta_t` leaves out the :math:`lr` factor that the kernel has).

    Raises:
        TypeError: ``lambd``, ``alpha`` or ``t0`` not a float.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.ASGD({'w': jnp.array([1.0, 2.0])}, learning_rate=0.5, lambd=0.0, t0=0.0)
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.array([1.0, -1.0])})
        >>> opt.parameters['w'], opt.state['w']['ax']
        (Array([-0.5,  3.5], dtype=float32), array([-0.25,  3.25], dtype=float32))
    """

    def __init__(self, params: Any, learning_rate: Any = 0.1, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        for name, value in (("lambd", lambd), ("alpha", alpha), ("t0", t0)):
            _check_float(value, name, self.cls_name)
        self.lambd, self.alpha, self.t0 = lambd, alpha, t0
        self._build(_asgd_rule, lambd=lambd, alpha=alpha, t0=t0)


class FTRL(Optimizer):
    r"""``nn.FTRL(params, initial_accum=0.1, learning_rate=0.001, lr_power=-0.5, l1=0.0, l2=0.0,
    use_locking=False, loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        m_{t+1} = m_t + g^2, \quad
        u_{t+1} = u_t + g - \frac{m_{t+1}^{-p} - m_t^{-p}}{\alpha} \omega_t, \quad
        \omega_{t+1} = \frac{\operatorname{sign}(u_{t+1}) l_1 - u_{t+1}}{m_{t+1}^{-p} / \alpha + 2 l_2}
            \text{ if } |u_{t+1}| > l_1 \text{ else } 0

    Over :func:`funcopt.ftrl`. As in MindSpore the learning rate is one fixed
    positive float, and the weight decay reaches every parameter.

    Raises:
        TypeError: ``initial_accum``, ``learning_rate``, ``lr_power``, ``l1``,
            ``l2`` not floats; ``use_locking`` not a bool.
        ValueError: a dynamic or grouped learning rate; ``lr_power`` > 0;
            ``learning_rate`` <= 0; ``initial_accum``, ``l1`` or ``l2`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.FTRL({'w': jnp.zeros(2)}, initial_accum=0.0, learning_rate=1.0, l1=0.5)
        >>> _ = opt({'w': jnp.array([0.3, -2.5])})
        >>> opt.parameters['w']
        Array([0. , 0.8], dtype=float32)
    """

    _decay_filter = False

    def __init__(self, params: Any, initial_accum: float = 0.1, learning_rate: Any = 0.001, lr_power: float = -0.5,
                 l1: float = 0.0, l2: float = 0.0, use_locking: bool = False, loss_scale: float = 1.0,
                 weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale=loss_scale)
        owner = self.cls_name
        if self.dynamic_lr or self.is_group_lr:
            raise ValueError(f"For 'FTRL', dynamic learning rate and group learning rate are currently not "
                             f"supported in FTRL, they should all be false, but got dynamic learning rate "
                             f"{self.dynamic_lr} and group learning rate {self.is_group_lr}.")
        _check_float(initial_accum, "initial_accum", owner)
        _check_non_negative(initial_accum, "initial_accum", owner)
        _check_float(learning_rate, "learning_rate", owner)
        _check_positive(learning_rate, "learning_rate", owner)
        _check_float(lr_power, "lr_power", owner)
        if lr_power > 0.0:
            raise ValueError(f"For '{owner}', the 'lr_power' must be less than or equal to 0.0, but got {lr_power}.")
        _check_float(l1, "l1", owner)
        _check_non_negative(l1, "l1", owner)
        _check_float(l2, "l2", owner)
        _check_non_negative(l2, "l2", owner)
        _check_bool(use_locking, "use_locking", owner)
        self.initial_accum, self.lr_power, self.l1, self.l2 = initial_accum, lr_power, l1, l2
        self._build(_ftrl_rule, initial_accum=initial_accum, lr_power=lr_power, l1=l1, l2=l2)


class ProximalAdagrad(Optimizer):
    r"""``nn.ProximalAdagrad(params, accum=0.1, learning_rate=0.001, l1=0.0, l2=0.0, use_locking=False,
    loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        a_t = a_{t-1} + g^2, \quad \eta_t = \gamma / \sqrt{a_t}, \quad v = w - \eta_t g, \quad
        w \leftarrow \frac{\operatorname{sign}(v)}{1 + \eta_t l_2} \max(|v| - \eta_t l_1, 0)

    Over :func:`funcopt.proximal_adagrad` (the kernels' per-coordinate rate).

    Raises:
        TypeError: ``accum``, ``l1`` or ``l2`` not a float; ``use_locking`` not a bool.
        ValueError: ``accum``, ``l1`` or ``l2`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.ProximalAdagrad({'w': jnp.array([0.2, 3.0])}, accum=0.0, learning_rate=0.5, l1=0.5)
        >>> _ = opt({'w': jnp.array([0.1, 1.0])})
        >>> opt.parameters['w']
        Array([0.  , 2.25], dtype=float32)
    """

    def __init__(self, params: Any, accum: float = 0.1, learning_rate: Any = 0.001, l1: float = 0.0,
                 l2: float = 0.0, use_locking: bool = False, loss_scale: float = 1.0, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        for name, value in (("accum", accum), ("l1", l1), ("l2", l2)):
            _check_float(value, name, owner)
            _check_non_negative(value, name, owner)
        _check_bool(use_locking, "use_locking", owner)
        self.accum, self.l1, self.l2 = accum, l1, l2
        self._build(_proximal_adagrad_rule, accum=accum, l1=l1, l2=l2)


class Lamb(Optimizer):
    r"""``nn.Lamb(params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0)``.

    .. math::

        r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \qquad
        w_{t+1} = w_t - \gamma \frac{\lVert w_t \rVert}{\lVert r_t + \lambda w_t \rVert} (r_t + \lambda w_t)

    MindSpore's documented rule (the trust ratio always applies, 1 where a
    norm is 0), per parameter; over :func:`funcopt.lamb` with
    ``always_adapt=True``.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Lamb({'w': jnp.array([3.0, 4.0])}, learning_rate=0.1)
        >>> _ = opt({'w': jnp.array([1.0, -1.0])})
        >>> opt.parameters['w']   # the step, of norm sqrt(2), is rescaled to 0.1 * ||w|| = 0.5
        Array([2.6464467, 4.3535533], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-6, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        _check_betas_eps(beta1, beta2, eps, self.cls_name)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._build(_lamb_rule, elementwise=False, beta1=beta1, beta2=beta2, eps=eps)


def _default_lars_filter(param: Any) -> bool:
    return "LayerNorm" not in param.name and "bias" not in param.name


class LARS(Optimizer):
    r"""``nn.LARS(optimizer, epsilon=1e-05, coefficient=0.001, use_clip=False, lars_filter=...)``.

    Wraps a :class:`Momentum` optimizer: for the parameters ``lars_filter``
    keeps (by default those whose names contain neither ``'LayerNorm'`` nor
    ``'bias'``) the gradient becomes

    .. math::

        \phi = \frac{\eta \lVert w \rVert}{\lVert g \rVert + \lambda \lVert w \rVert + \epsilon}, \qquad
        g \leftarrow \phi\, (g + \lambda w)

    (:math:`\phi / lr` clipped to [0, 1] with ``use_clip``; :math:`\phi = 1`
    where :math:`\lVert w \rVert` or :math:`\lVert g \rVert` is 0, so that a
    zero-initialized parameter trains) before the momentum
    step; the others take the momentum step on the raw gradient. The weight
    decay :math:`\lambda` and its ``'beta'`` / ``'gamma'`` filter are the
    wrapped optimizer's. Over :func:`funcopt.lars` (LARS and
    :func:`funcopt.momentum` in one rule). The wrapped optimizer's parameters
    and state move to the LARS optimizer: use the LARS one from then on.

    ``lars_filter`` receives a :class:`NamedParameter` (``.name``, ``.shape``...).

    Raises:
        TypeError: ``optimizer`` not a MindSpore-style optimizer; ``epsilon`` or
            ``coefficient`` not a float; ``use_clip`` not a bool.
        ValueError: ``use_clip`` with both group and dynamic learning rates.
        NotImplementedError: a wrapped optimizer other than :class:`Momentum`,
            or gradient centralization (MindSpore centralizes between LARS and
            the momentum step, which one rule cannot express).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> net = {'fc': {'weight': jnp.array([[3.0, 4.0]]), 'bias': jnp.array([1.0])}}
        >>> opt = ms.LARS(ms.Momentum(net, 1.0, 0.0), epsilon=0.0, coefficient=0.1)
        >>> _ = opt({'fc': {'weight': jnp.array([[10.0, 0.0]]), 'bias': jnp.array([1.0])}})
        >>> opt.parameters['fc']['weight'], opt.parameters['fc']['bias']   # trust ratio 0.1 * 5 / 10
        (Array([[2.5, 4. ]], dtype=float32), Array([0.], dtype=float32))
    """

    def __init__(self, optimizer: Optimizer, epsilon: float = 1e-05, coefficient: float = 0.001,
                 use_clip: bool = False, lars_filter: Callable[[Any], bool] = _default_lars_filter):
        owner = "LARS"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"For '{owner}', the type of 'optimizer' must be 'Optimizer', but got "
                            f"'{_tname(optimizer)}'.")
        _check_float(epsilon, "epsilon", owner)
        _check_float(coefficient, "coefficient", owner)
        _check_bool(use_clip, "use_clip", owner)
        if not isinstance(optimizer, Momentum):
            raise NotImplementedError(f"LARS wraps Momentum here (funcopt.lars is LARS with momentum), got "
                                      f"{optimizer.cls_name}")
        if use_clip and optimizer.is_group_lr and optimizer.dynamic_lr:
            raise ValueError("For 'LARS', if the argument 'use_clip' is set to True, then the dynamic learning rate "
                             "and group learning rate cannot both be true.")
        if any(g.grad_centralization for g in optimizer._groups):
            raise NotImplementedError("LARS with grad_centralization groups is not supported")
        # the wrapped optimizer's parameters, groups, learning rates and decay become this one's
        self.__dict__.update({k: v for k, v in optimizer.__dict__.items() if not k.startswith("_engine")})
        self._centralizes = False
        self._engine = None
        self.parameters = optimizer.parameters
        self.optimizer = optimizer
        self.epsilon, self.coefficient, self.use_clip = epsilon, coefficient, use_clip
        leaves = jax.tree.leaves(self._params_value)
        self.lars_flag = tuple(bool(lars_filter(NamedParameter(n, p))) for n, p in zip(self._names, leaves))
        self._build(_lars_rule, elementwise=False, split=lambda k: {"lars": self.lars_flag[k]},
                    momentum=optimizer.momentum, use_nesterov=optimizer.use_nesterov, coefficient=coefficient,
                    epsilon=epsilon, use_clip=use_clip)
        optimizer._engine = None
