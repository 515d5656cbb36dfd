r"""Learning-rate schedulers with ``torch.optim.lr_scheduler``'s classes, arguments and numbers.

Each scheduler drives a :class:`funcopt.optim.Optimizer` the way torch's drives a
``torch.optim.Optimizer``: it writes Python floats into ``optimizer.param_groups[i]['lr']``
(and, for :class:`CyclicLR` / :class:`OneCycleLR`, into ``'momentum'`` or ``betas[0]``).
The optimizer pushes the new values into its compiled step as arrays, so a scheduler
never causes a recompile.

The learning rates are computed in Python floats with torch's own recursions (the
chainable forms of ``get_lr``), so the sequence matches torch's to the last bit; the
``state_dict()`` of every scheduler has the keys and values of torch's, and either
library's state_dict loads into the other's scheduler.

As in torch, call ``scheduler.step()`` after ``optimizer.step()`` (or ``optimizer(grads)``);
the reverse order warns, because the first value of the schedule would be skipped::

    opt = fo.optim.SGD(params, lr=0.1, momentum=0.9)
    sched = fo.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    for batch in data:
        opt.backward(loss_fn, batch)
        opt.step().clear_grad()
        sched.step()
"""

from __future__ import annotations

import copy
import math
import types
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Literal, SupportsFloat

import numpy as np

from funcopt.optim import guard
from funcopt.optim.optimizer import Optimizer

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)

_STEP_OVERRIDDEN_WARNING = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
    "initialization. Please, make sure to call `optimizer.step()` before "
    "`lr_scheduler.step()`. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)

_STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
    "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
    "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
    "will result in PyTorch skipping the first value of the learning rate schedule. "
    "See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)

_GET_LR_WARNING = "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."

# attribute of the optimizer holding the handle of the step post hook that records optimizer steps
_HOOK_ATTR = "_lr_scheduler_step_hook"


# ---------------------------------------------------------------------- helpers


def _check_optimizer(optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _format_param(name: str, optimizer: Optimizer, param: Any) -> list[Any]:
    """One value per param group: a list / tuple of matching length, or a scalar repeated."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has {len(optimizer.param_groups)}.")
        return list(param)
    return [param] * len(optimizer.param_groups)


def _copy_value(value: Any) -> Any:
    # JAX arrays are immutable; a NumPy array in a group is copied so callers cannot alias it
    return value.copy() if isinstance(value, np.ndarray) else value


def _group_values(optimizer: Optimizer, key: str) -> list[Any]:
    """``[group[key] for group in optimizer.param_groups]``; ``KeyError`` when a group lacks ``key``."""
    return [_copy_value(group[key]) for group in optimizer.param_groups]


def _set_group_value(group: dict[str, Any], key: str, value: Any) -> None:
    group[key] = value


def _snapshot(value: Any) -> Any:
    """A deep copy where one can be made (so a saved state_dict is not changed by later steps)."""
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - objects that refuse copying are kept as they are
        return value


def _record_optimizer_step(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
    optimizer._opt_called = True  # type: ignore[attr-defined]


def _tracks_optimizer_steps(optimizer: Optimizer) -> bool:
    """Whether the hook that records optimizer steps is still in place (torch: ``step`` still wrapped)."""
    handle = getattr(optimizer, _HOOK_ATTR, None)
    if handle is None or not handle.registered:
        return False
    return "step" not in vars(optimizer)  # a step method replaced on the instance bypasses the hook


def _track_optimizer_steps(optimizer: Optimizer) -> None:
    """Record in ``optimizer._opt_called`` that a step ran (once per optimizer, like torch's wrapper)."""
    handle = getattr(optimizer, _HOOK_ATTR, None)
    if handle is not None and handle.registered and "step" not in vars(optimizer):
        return
    setattr(optimizer, _HOOK_ATTR, optimizer.register_step_post_hook(_record_optimizer_step))


class _GetLrInStep:
    """Within ``step``, ``get_lr`` is called by the scheduler itself and does not warn."""

    def __init__(self, scheduler: LRScheduler) -> None:
        self.scheduler = scheduler

    def __enter__(self) -> _GetLrInStep:
        self.scheduler._get_lr_called_within_step = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.scheduler._get_lr_called_within_step = False


class _InitialStep:
    """Marks the step made by the constructor (``_is_initial``)."""

    def __init__(self, scheduler: LRScheduler) -> None:
        self.scheduler = scheduler

    def __enter__(self) -> None:
        self.scheduler._is_initial = True

    def __exit__(self, *exc: Any) -> None:
        self.scheduler._is_initial = False


def _warn_get_lr_outside_step(scheduler: LRScheduler) -> None:
    if not scheduler._get_lr_called_within_step:
        warnings.warn(_GET_LR_WARNING, UserWarning, stacklevel=3)


def _lambdas_per_group(optimizer: Optimizer, lr_lambda: Any) -> list[Callable[[int], float]]:
    if not isinstance(lr_lambda, (list, tuple)):
        return [lr_lambda] * len(optimizer.param_groups)
    if len(lr_lambda) != len(optimizer.param_groups):
        raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, but got {len(lr_lambda)}")
    return list(lr_lambda)


def _lambdas_state(lambdas: list[Callable[..., Any]]) -> list[dict[str, Any] | None]:
    """Callable objects save their ``__dict__``; plain functions and lambdas save None (as torch)."""
    return [None if isinstance(fn, types.FunctionType) else _snapshot(fn.__dict__) for fn in lambdas]


# ---------------------------------------------------------------------- base class


def _attribute_holders(obj: Any) -> list[Any]:
    """The scheduler, its child schedulers and its user functions: everything a load writes into."""
    out = [obj]
    for child in getattr(obj, "_schedulers", None) or []:
        out += _attribute_holders(child)
    for fn in list(getattr(obj, "lr_lambdas", None) or []) + [getattr(obj, "_scale_fn_custom", None)]:
        if fn is not None and hasattr(fn, "__dict__") and not isinstance(fn, types.FunctionType):
            out.append(fn)
    return out


def _atomic_load(load: Callable[..., None]) -> Callable[..., None]:
    """Make a ``load_state_dict`` all-or-nothing: on any error every attribute it touched is put back."""

    def load_state_dict(self: Any, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        epoch = state_dict.get("last_epoch", 0)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float, np.integer, np.floating)):
            raise TypeError(f"state_dict['last_epoch'] must be a number, got {epoch!r}")
        saved = [(holder, dict(holder.__dict__)) for holder in _attribute_holders(self)]
        try:
            load(self, state_dict)
        except BaseException:
            for holder, attrs in saved:
                holder.__dict__.clear()
                holder.__dict__.update(attrs)
            raise

    load_state_dict.__doc__ = load.__doc__
    load_state_dict.__name__ = load.__name__
    load_state_dict.__qualname__ = load.__qualname__
    return load_state_dict


class LRScheduler:
    r"""Base class of the learning-rate schedulers (torch's ``LRScheduler``).

    A subclass implements :meth:`get_lr`: the learning rates for epoch
    :attr:`last_epoch`, one per param group. The constructor stores each group's
    current ``lr`` as ``group['initial_lr']`` (kept if already there) and in
    :attr:`base_lrs`, then takes the first step (``last_epoch`` becomes 0). Each
    :meth:`step` then sets, for every group :math:`i`,

    .. math::

        t \leftarrow t + 1, \qquad \eta_i \leftarrow \text{get\_lr}()_i

    where :math:`t` is :attr:`last_epoch`; :meth:`get_last_lr` returns the :math:`\eta_i`.

    Args:
        optimizer: the :class:`funcopt.optim.Optimizer` whose ``param_groups`` it drives.
        last_epoch: index of the last epoch seen; ``-1`` starts the schedule. Another
            value resumes it, and then every group must already hold ``'initial_lr'``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> class Halving(fo.optim.lr_scheduler.LRScheduler):
        ...     def get_lr(self):
        ...         return [base * 0.5 ** self.last_epoch for base in self.base_lrs]
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=0.8)
        >>> sched = Halving(opt)
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        >>> sched.get_last_lr(), opt.param_groups[0]['initial_lr']
        ([0.1], 0.8)
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "load_state_dict" in cls.__dict__:
            cls.load_state_dict = _atomic_load(cls.__dict__["load_state_dict"])

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", _copy_value(group["lr"]))
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming scheduler "
                        "with last_epoch >= 0.\n"
                        "This typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't properly loaded "
                        "the optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run (not recommended)")
        self.base_lrs: list[Any] = _group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        _track_optimizer_steps(optimizer)
        self._initial_step()

    def _initial_step(self) -> None:
        """Reset the step count and take the constructor's step."""
        self._step_count = 0
        with _InitialStep(self):
            self.step()

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute but the optimizer (torch's keys), copied.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=0.1)
            >>> sd = fo.optim.lr_scheduler.StepLR(opt, step_size=3).state_dict()
            >>> sd['last_epoch'], sd['base_lrs'], sd['step_size']
            (0, [0.1], 3)
        """
        return {k: _snapshot(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes saved by :meth:`state_dict` (or by the torch scheduler of the same class).

        Load the optimizer's state too: the learning rates live in its param groups.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=0.1)
            >>> sched = fo.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
            >>> sched.load_state_dict({**sched.state_dict(), 'last_epoch': 7})
            >>> sched.last_epoch
            7
        """
        self.__dict__.update(_snapshot(dict(state_dict)))

    def get_last_lr(self) -> list[Any]:
        """The learning rates set by the latest step, one per param group.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD([{'params': [jnp.zeros(1)]}, {'params': [jnp.zeros(1)], 'lr': 0.5}], lr=0.1)
            >>> fo.optim.lr_scheduler.StepLR(opt, step_size=10).get_last_lr()
            [0.1, 0.5]
        """
        return self._last_lr

    def get_lr(self) -> list[Any]:
        """The learning rates for :attr:`last_epoch`, one per group (subclasses implement it).

        Called by :meth:`step`; called directly it warns (use :meth:`get_last_lr`).
        """
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule by one epoch (or, deprecated, jump to ``epoch``) and set the groups' lrs.

        Call it after the optimizer's step. The first call after construction warns
        with a ``UserWarning`` when the optimizer has not stepped yet, as torch does.
        With ``epoch`` given it warns that the argument is deprecated and uses the
        closed form of the schedule where the class has one.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
            >>> sched = fo.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 2], gamma=0.5)
            >>> _ = opt({'w': jnp.ones(2)}); sched.step(); opt.param_groups[0]['lr']
            0.5
        """
        guard.check_host_call(self, "step", epoch)
        if self._step_count == 1:
            if not _tracks_optimizer_steps(self.optimizer):
                warnings.warn(_STEP_OVERRIDDEN_WARNING, UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, "_opt_called", False):
                warnings.warn(_STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        with _GetLrInStep(self):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            _set_group_value(group, "lr", lr)
        self._last_lr: list[Any] = _group_values(self.optimizer, "lr")


class _LRScheduler(LRScheduler):
    """The former name of :class:`LRScheduler`, kept for old code."""


# ---------------------------------------------------------------------- multiplicative schedules


LRScheduler.load_state_dict = _atomic_load(LRScheduler.load_state_dict)  # type: ignore[method-assign]

class LambdaLR(LRScheduler):
    r"""Set each group's lr to its initial lr times a function of the epoch.

    .. math::

        \eta_t = \eta_0 \cdot \lambda(t)

    Args:
        optimizer: the optimizer to drive.
        lr_lambda: ``epoch -> factor``, or a list of such functions, one per param group.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Functions and lambdas are not saved by :meth:`state_dict` (``None`` in their place);
    callable objects save their ``__dict__``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD([{'params': [jnp.zeros(1)]}, {'params': [jnp.zeros(1)], 'lr': 1.0}], lr=0.1)
        >>> sched = fo.optim.lr_scheduler.LambdaLR(opt, [lambda t: 1 / (t + 1), lambda t: 0.5 ** t])
        >>> for _ in range(2):
        ...     _ = opt([[jnp.ones(1)], [jnp.ones(1)]])
        ...     sched.step()
        >>> [round(lr, 6) for lr in sched.get_last_lr()]
        [0.033333, 0.25]
    """

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        self.lr_lambdas: list[Callable[[int], float]] = _lambdas_per_group(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        state = {k: _snapshot(v) for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = _lambdas_state(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("lr_lambdas")
        self.__dict__.update(_snapshot(state))
        for fn, attrs in zip(self.lr_lambdas, saved):
            if attrs is not None:
                fn.__dict__.update(_snapshot(attrs))

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        return [base_lr * lmbda(self.last_epoch)
                for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(LRScheduler):
    r"""Multiply each group's lr by a function of the epoch at every step after the first.

    .. math::

        \eta_0 = \eta_{\text{init}}, \qquad \eta_t = \eta_{t-1} \cdot \lambda(t)

    Args:
        optimizer: the optimizer to drive.
        lr_lambda: ``epoch -> factor``, or a list of such functions, one per param group.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.lr_scheduler.MultiplicativeLR(opt, lr_lambda=lambda t: 0.5)
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        >>> sched.get_last_lr()
        [0.125]
    """

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        self.lr_lambdas: list[Callable[[int], float]] = _lambdas_per_group(optimizer, lr_lambda)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    state_dict = LambdaLR.state_dict
    load_state_dict = LambdaLR.load_state_dict

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * lmbda(self.last_epoch)
                for lmbda, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)]


class StepLR(LRScheduler):
    r"""Decay each group's lr by ``gamma`` every ``step_size`` epochs.

    .. math::

        \eta_t = \eta_0 \, \gamma^{\lfloor t / \text{step\_size} \rfloor}

    computed as torch does, by multiplying the current lr by :math:`\gamma` at each
    non-zero multiple of ``step_size`` (so changes made to the lr from outside carry on).

    Args:
        optimizer: the optimizer to drive.
        step_size: period of the decay, in epochs.
        gamma: multiplicative factor of the decay. Default: 0.1.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=0.1)
        >>> sched = fo.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        >>> lrs = []
        >>> for _ in range(5):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [0.1, 0.05, 0.05, 0.025, 0.025]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Decay each group's lr by ``gamma`` at each milestone epoch.

    .. math::

        \eta_t = \eta_0 \, \gamma^{\#\{m \in \text{milestones} \,:\, m \le t\}}

    A milestone listed ``n`` times decays by :math:`\gamma^n` at once.

    Args:
        optimizer: the optimizer to drive.
        milestones: epoch indices (increasing).
        gamma: multiplicative factor of the decay. Default: 0.1.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)
        >>> lrs = []
        >>> for _ in range(5):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [1.0, 0.5, 0.5, 0.25, 0.25]
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        if self.last_epoch not in self.milestones:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch) for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    r"""Multiply each group's lr by ``factor`` until epoch ``total_iters``, then restore it.

    .. math::

        \eta_t = \begin{cases} \eta_0 \cdot \text{factor} & t < \text{total\_iters} \\
                               \eta_0 & t \ge \text{total\_iters} \end{cases}

    Args:
        optimizer: the optimizer to drive.
        factor: the factor applied until the milestone, in ``[0, 1]``. Default: 1/3.
        total_iters: the number of epochs the factor applies. Default: 5.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Raises:
        ValueError: ``factor`` outside ``[0, 1]``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=0.1)
        >>> sched = fo.optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=2)
        >>> lrs = [sched.get_last_lr()[0]]
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [0.05, 0.05, 0.1, 0.1]
    """

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = -1) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    r"""Scale each group's lr by a factor moving linearly from ``start_factor`` to ``end_factor``.

    .. math::

        \eta_t = \eta_0 \left(s + (e - s) \frac{\min(t, T)}{T}\right)

    with :math:`s` = ``start_factor``, :math:`e` = ``end_factor``, :math:`T` = ``total_iters``;
    computed as torch does, by the ratio of consecutive factors.

    Args:
        optimizer: the optimizer to drive.
        start_factor: the factor at epoch 0, in ``(0, 1]``. Default: 1/3.
        end_factor: the factor from epoch ``total_iters`` on, in ``[0, 1]``. Default: 1.0.
        total_iters: the number of epochs of the ramp. Default: 5.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Raises:
        ValueError: a factor out of its range.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
        >>> lrs = [sched.get_last_lr()[0]]
        >>> for _ in range(4):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        delta = self.end_factor - self.start_factor
        ratio = 1.0 + delta / (self.total_iters * self.start_factor + (self.last_epoch - 1) * delta)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    r"""Decay each group's lr by ``gamma`` every epoch.

    .. math::

        \eta_t = \eta_0 \, \gamma^t

    Args:
        optimizer: the optimizer to drive.
        gamma: multiplicative factor of the decay.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        >>> sched.get_last_lr()
        [0.125]
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        # the constructor's step keeps the lr (a resumed schedule must not advance one epoch ahead)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    r"""Decay each group's lr polynomially to 0 over ``total_iters`` epochs.

    .. math::

        \eta_t = \eta_0 \left(1 - \frac{\min(t, T)}{T}\right)^{p}

    with :math:`T` = ``total_iters`` and :math:`p` = ``power``; computed as torch does, by
    the ratio of consecutive factors.

    Args:
        optimizer: the optimizer to drive.
        total_iters: the number of epochs of the decay. Default: 5.
        power: the power of the polynomial. Default: 1.0.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.lr_scheduler.PolynomialLR(opt, total_iters=4, power=2.0)
        >>> lrs = []
        >>> for _ in range(5):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [0.5625, 0.25, 0.0625, 0.0, 0.0]
    """

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0,
                 last_epoch: int = -1) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        decay_factor = ((1.0 - self.last_epoch / self.total_iters)
                        / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [group["lr"] * decay_factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
                for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Anneal each group's lr along a cosine from its initial value to ``eta_min`` over ``T_max`` epochs.

    The lr follows torch's recursion

    .. math::

        \eta_{t} = \eta_{\min} + (\eta_{t-1} - \eta_{\min})
            \frac{1 + \cos(\pi t / T_{\max})}{1 + \cos(\pi (t-1) / T_{\max})}

    which tracks the closed form (used by ``step(epoch)``)

    .. math::

        \eta_t = \eta_{\min} + \tfrac12 (\eta_0 - \eta_{\min}) \left(1 + \cos\frac{\pi t}{T_{\max}}\right)

    and, past :math:`T_{\max}`, goes back up (the cosine continues; no restart).
    At the epochs where the denominator vanishes (:math:`t - 1 - T_{\max}` a multiple of
    :math:`2 T_{\max}`) the lr rises by :math:`(\eta_0 - \eta_{\min})(1 - \cos(\pi / T_{\max}))/2`.

    Args:
        optimizer: the optimizer to drive.
        T_max: the half period, in epochs.
        eta_min: the minimum lr. Default: 0.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.2)
        >>> lrs = []
        >>> for _ in range(4):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 6))
        >>> lrs
        [0.882843, 0.6, 0.317157, 0.2]
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        if self._step_count == 1 and self.last_epoch > 0:
            # the first step of a resumed schedule: jump onto the closed form
            return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(self.last_epoch * math.pi / self.T_max))
                    / 2 for base_lr in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (group["lr"] - self.eta_min) + self.eta_min
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts (SGDR): the cosine restarts every :math:`T_i` epochs.

    .. math::

        \eta_t = \eta_{\min} + \tfrac12 (\eta_0 - \eta_{\min}) \left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    where :math:`T_{cur}` counts the epochs since the last restart and :math:`T_i` starts at
    ``T_0`` and is multiplied by ``T_mult`` at each restart. ``step(epoch)`` accepts a
    fractional epoch (e.g. ``epoch + i / iters`` per batch) and may be interleaved with ``step()``.

    Args:
        optimizer: the optimizer to drive.
        T_0: the number of epochs until the first restart, a positive int.
        T_mult: the factor by which :math:`T_i` grows after each restart, an int ``>= 1``. Default: 1.
        eta_min: the minimum lr. Default: 0.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Raises:
        ValueError: ``T_0``, ``T_mult`` or ``eta_min`` invalid; a negative ``epoch`` given to ``step``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2)
        >>> lrs = []
        >>> for _ in range(6):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 6))
        >>> lrs
        [0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base_lr in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        """Advance one epoch, or move to ``epoch`` (a float is allowed: fractions of an epoch per batch).

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
            >>> sched = fo.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=4)
            >>> sched.step(1.0)
            >>> round(sched.get_last_lr()[0], 6)
            0.853553
        """
        guard.check_host_call(self, "step", epoch)
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    # the restart index n: T_0 (T_mult^n - 1) / (T_mult - 1) <= epoch
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        with _GetLrInStep(self):
            for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
                _set_group_value(group, "lr", lr)
        self._last_lr = _group_values(self.optimizer, "lr")


# ---------------------------------------------------------------------- cyclical schedules


def _set_momentum(group: dict[str, Any], value: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group["momentum"] = value


def _momentum_support(optimizer: Optimizer) -> bool:
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    return "betas" in optimizer.defaults


class CyclicLR(LRScheduler):
    r"""Cycle each group's lr between ``base_lr`` and ``max_lr`` (cyclical learning rates, CLR).

    With :math:`S` = ``step_size_up + step_size_down`` and :math:`r` = ``step_size_up / S``,
    at epoch :math:`t` (one per batch):

    .. math::

        c = \left\lfloor 1 + t / S \right\rfloor, \quad x = 1 + t / S - c, \quad
        h = \begin{cases} x / r & x \le r \\ (x - 1) / (r - 1) & x > r \end{cases}

    .. math::

        \eta_t = \eta_{\text{base}} + (\eta_{\max} - \eta_{\text{base}})\, h\, s, \qquad
        m_t = m_{\max} - (m_{\max} - m_{\text{base}})\, h\, s

    where the scale :math:`s` is 1 (``'triangular'``), :math:`1/2^{c-1}` (``'triangular2'``),
    :math:`\gamma^t` (``'exp_range'``), or ``scale_fn`` of :math:`c` or :math:`t` (``scale_mode``).
    With ``cycle_momentum`` the momentum :math:`m_t` is written into each group's
    ``'momentum'``, or into ``betas[0]`` for optimizers with ``betas`` (Adam...), moving
    opposite to the lr.

    Args:
        optimizer: the optimizer to drive.
        base_lr: the lower lr bound, a float or one per group (written into the groups).
        max_lr: the upper lr bound, a float or one per group.
        step_size_up: epochs in the rising half of a cycle. Default: 2000.
        step_size_down: epochs in the falling half; ``None`` means ``step_size_up``.
        mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'`` (ignored with ``scale_fn``).
        gamma: the base of ``'exp_range'``'s scale. Default: 1.0.
        scale_fn: a custom scale ``x -> [0, 1]``; replaces ``mode``.
        scale_mode: ``'cycle'`` or ``'iterations'``: what ``scale_fn`` receives. Default: ``'cycle'``.
        cycle_momentum: cycle the momentum too. Default: True.
        base_momentum: the lower momentum bound (at the lr's peak). Default: 0.8.
        max_momentum: the upper momentum bound (at the cycle's start). Default: 0.9.
        last_epoch: the index of the last batch; ``-1`` starts the schedule.

    Raises:
        ValueError: a list of the wrong length, an unknown ``mode`` without ``scale_fn``, or
            ``cycle_momentum`` with an optimizer that has neither ``momentum`` nor ``betas``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=0.1, momentum=0.9)
        >>> sched = fo.optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=0.5, step_size_up=2)
        >>> lrs, moms = [], []
        >>> for _ in range(4):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 6))
        ...     moms.append(round(opt.param_groups[0]['momentum'], 6))
        >>> lrs, moms
        ([0.3, 0.5, 0.3, 0.1], [0.85, 0.8, 0.85, 0.9])
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                _set_group_value(group, "lr", lr)
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_ref: Callable[[float], float]
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _momentum_support(optimizer)
            self.base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            self.max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for m_max, m_base, group in zip(self.max_momentums, self.base_momentums,
                                                optimizer.param_groups, strict=True):
                    _set_momentum(group, m_max, self.use_beta1)
                    group["max_momentum"] = m_max
                    group["base_momentum"] = m_base
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = self._triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = self._triangular2_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = partial(self._exp_range_scale_fn, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x: float) -> float:
        """The amplitude scale at ``x`` (the cycle number or the iteration, per ``scale_mode``)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    @staticmethod
    def _triangular_scale_fn(x: float) -> float:
        return 1.0

    @staticmethod
    def _triangular2_scale_fn(x: float) -> float:
        return 1 / (2.0 ** (x - 1))

    @staticmethod
    def _exp_range_scale_fn(gamma: float, x: float) -> float:
        return gamma ** x

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle) if self.scale_mode == "cycle" else self.scale_fn(self.last_epoch)
        lrs = []
        for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True):
            lrs.append(base_lr + (max_lr - base_lr) * scale_factor * scale)
        if self.cycle_momentum:
            momentums = [m_max - (m_max - m_base) * scale_factor * scale
                         for m_base, m_max in zip(self.base_momentums, self.max_momentums, strict=True)]
            for group, momentum in zip(self.optimizer.param_groups, momentums, strict=True):
                _set_momentum(group, momentum, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        state = {k: _snapshot(v) for k, v in self.__dict__.items()
                 if k not in ("optimizer", "_scale_fn_ref", "_scale_fn_custom")}
        fn = self._scale_fn_custom
        state["_scale_fn_custom"] = (None if fn is None or isinstance(fn, types.FunctionType)
                                     else _snapshot(fn.__dict__))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        attrs = state.pop("_scale_fn_custom")
        state.pop("_scale_fn_ref", None)
        self.__dict__.update(_snapshot(state))
        if attrs is not None:
            self._scale_fn_custom.__dict__.update(_snapshot(attrs))
        self._init_scale_fn()


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy: warm the lr up to ``max_lr``, then anneal it far below its start.

    With :math:`\eta_{\text{init}} = \eta_{\max} / \text{div\_factor}` and
    :math:`\eta_{\min} = \eta_{\text{init}} / \text{final\_div\_factor}`, two phases (or three
    with ``three_phase``) end at steps :math:`p T - 1` (and :math:`2 p T - 2`) and :math:`T - 1`,
    with :math:`T` = ``total_steps`` and :math:`p` = ``pct_start``. Within a phase from step
    :math:`a` to :math:`b`, going from value :math:`u` to :math:`v`:

    .. math::

        \text{cos:}\; v + \tfrac{u - v}{2}\left(1 + \cos\left(\pi \tfrac{t - a}{b - a}\right)\right),
        \qquad \text{linear:}\; u + (v - u) \tfrac{t - a}{b - a}

    The lr goes :math:`\eta_{\text{init}} \to \eta_{\max} \to \eta_{\min}` (three phases:
    :math:`\eta_{\text{init}} \to \eta_{\max} \to \eta_{\text{init}} \to \eta_{\min}`); with
    ``cycle_momentum`` the momentum moves the other way between ``max_momentum`` and
    ``base_momentum``, written into ``'momentum'`` or ``betas[0]`` of each group.
    Stepping past ``total_steps`` raises ``ValueError``. The groups receive ``initial_lr``,
    ``max_lr``, ``min_lr`` (and ``max_momentum``, ``base_momentum``) entries.

    Args:
        optimizer: the optimizer to drive.
        max_lr: the peak lr, a float or one per group.
        total_steps: the number of steps of the cycle; or give ``epochs`` and ``steps_per_epoch``.
        epochs: the number of epochs (with ``steps_per_epoch``).
        steps_per_epoch: the number of steps per epoch (with ``epochs``).
        pct_start: the fraction of the cycle spent warming up, a float in ``[0, 1]``. Default: 0.3.
        anneal_strategy: ``'cos'`` or ``'linear'``. Default: ``'cos'``.
        cycle_momentum: cycle the momentum too. Default: True.
        base_momentum: the momentum at the lr's peak, a float or one per group. Default: 0.85.
        max_momentum: the momentum at the ends, a float or one per group. Default: 0.95.
        div_factor: ``initial_lr = max_lr / div_factor``. Default: 25.
        final_div_factor: ``min_lr = initial_lr / final_div_factor``. Default: 1e4.
        three_phase: use the three-phase schedule of the original paper. Default: False.
        last_epoch: the index of the last batch; ``-1`` starts the schedule.

    Raises:
        ValueError: invalid step counts, ``pct_start`` or ``anneal_strategy``, a list of the wrong
            length, or ``cycle_momentum`` with an optimizer that has neither ``momentum`` nor ``betas``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.Adam({'w': jnp.zeros(2)}, lr=0.1)
        >>> sched = fo.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy='linear')
        >>> lrs, beta1 = [sched.get_last_lr()[0]], [opt.param_groups[0]['betas'][0]]
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 6))
        ...     beta1.append(round(opt.param_groups[0]['betas'][0], 6))
        >>> lrs, beta1
        ([0.04, 0.52, 1.0, 0.857143], [0.95, 0.9, 0.85, 0.864286])
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")

        def phase(end_step: float, start_lr: str, end_lr: str, start_m: str, end_m: str) -> dict[str, Any]:
            return {"end_step": end_step, "start_lr": start_lr, "end_lr": end_lr,
                    "start_momentum": start_m, "end_momentum": end_m}

        if three_phase:
            self._schedule_phases = [
                phase(float(pct_start * self.total_steps) - 1, "initial_lr", "max_lr", "max_momentum",
                      "base_momentum"),
                phase(float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr", "base_momentum",
                      "max_momentum"),
                phase(self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._schedule_phases = [
                phase(float(pct_start * self.total_steps) - 1, "initial_lr", "max_lr", "max_momentum",
                      "base_momentum"),
                phase(self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy

        max_lrs = _format_param("max_lr", self.optimizer, max_lr)
        if last_epoch == -1:
            for m_lr, group in zip(max_lrs, self.optimizer.param_groups):
                group["initial_lr"] = m_lr / div_factor
                group["max_lr"] = m_lr
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = cycle_momentum
        if self.cycle_momentum:
            self.use_beta1 = _momentum_support(self.optimizer)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for m_max, m_base, group in zip(max_momentums, base_momentums, optimizer.param_groups,
                                                strict=True):
                    _set_momentum(group, m_max, self.use_beta1)
                    group["max_momentum"] = m_max
                    group["base_momentum"] = m_base
        super().__init__(optimizer, last_epoch)

    def _anneal_func(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return self._annealing_cos(start, end, pct)
        if self._anneal_func_type == "linear":
            return self._annealing_linear(start, end, pct)
        raise ValueError(f"Unknown _anneal_func_type: {self._anneal_func_type}")

    @staticmethod
    def _annealing_cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    @staticmethod
    def _annealing_linear(start: float, end: float, pct: float) -> float:
        return (end - start) * pct + start

    def get_lr(self) -> list[Any]:
        _warn_get_lr_outside_step(self)
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"Tried to step {step_num} times. The specified number of total steps is "
                             f"{self.total_steps}")
        lrs = []
        last = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, ph in enumerate(self._schedule_phases):
                end_step = ph["end_step"]
                if step_num <= end_step or i == last:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lr = self._anneal_func(group[ph["start_lr"]], group[ph["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal_func(group[ph["start_momentum"]], group[ph["end_momentum"]], pct)
                    break
                start_step = ph["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                _set_momentum(group, momentum, self.use_beta1)
        return lrs


# ---------------------------------------------------------------------- combinations


def _check_member_schedulers(owner: str, optimizer: Optimizer, schedulers: Sequence[Any]) -> None:
    for i, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{owner} at index {i} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner} does not support `ReduceLROnPlateau` scheduler as it requires additional kwargs to be "
                f"specified when calling `step`, but got one at index {i} in the given schedulers sequence.")
        if optimizer is not scheduler.optimizer:
            raise ValueError(
                f"{owner} expects all schedulers to belong to the same optimizer, but got scheduler "
                f"{type(scheduler).__name__} at index {i} has {scheduler.optimizer}, which is different from "
                f"{type(optimizer).__name__}.")


class SequentialLR(LRScheduler):
    r"""Run schedulers one after another, switching at the milestone epochs.

    .. math::

        \eta_t = \text{schedulers}[k]\text{ at its own epoch } t - m_{k-1}, \qquad
        k = \#\{m_j \in \text{milestones} : m_j \le t\}

    At each milestone the next scheduler restarts from epoch 0 (its closed form, from the
    groups' ``initial_lr``). The constructor undoes the initial steps the schedulers took
    when they were built.

    Args:
        optimizer: the optimizer every scheduler drives.
        schedulers: the schedulers, in order (not :class:`ReduceLROnPlateau`).
        milestones: the epochs at which to switch, one fewer than the schedulers.
        last_epoch: the index of the last epoch. Default: -1.

    Raises:
        ValueError: no schedulers, a wrong number of milestones, a :class:`ReduceLROnPlateau`,
            or a scheduler of another optimizer.
        TypeError: an entry without an ``optimizer`` attribute.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> from funcopt.optim import lr_scheduler as S
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> warmup = S.LinearLR(opt, start_factor=0.5, total_iters=2)
        >>> decay = S.ExponentialLR(opt, gamma=0.5)
        >>> sched = S.SequentialLR(opt, schedulers=[warmup, decay], milestones=[2])
        >>> lrs = [sched.get_last_lr()[0]]
        >>> for _ in range(4):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [0.5, 0.75, 1.0, 0.5, 0.25]
    """

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int],
                 last_epoch: int = -1) -> None:
        if len(schedulers) < 1:
            raise ValueError(f"{type(self).__name__} expects at least one scheduler, but got no scheduler.")
        _check_member_schedulers(type(self).__name__, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number of "
                f"milestone points, but got number of schedulers {len(schedulers)} and the number of milestones "
                f"to be equal to {len(milestones)}")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in self.optimizer.param_groups:
            _set_group_value(group, "lr", group["initial_lr"])
        self.recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def recursive_undo(self, sched: Any = None) -> None:
        """Take back one epoch from every scheduler (nested ones included): their constructors' steps."""
        target = self if sched is None else sched
        if hasattr(target, "_schedulers"):
            for s in target._schedulers:
                self.recursive_undo(s)
        elif hasattr(target, "last_epoch"):
            target.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        """Step the scheduler active at the new epoch; at a milestone, restart the next one at epoch 0."""
        guard.check_host_call(self, "step")
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        state = {k: _snapshot(v) for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("_schedulers")
        self.__dict__.update(_snapshot(state))
        for scheduler, s in zip(self._schedulers, saved):
            scheduler.load_state_dict(s)


class ChainedScheduler(LRScheduler):
    r"""Step several schedulers together: each step calls every scheduler's ``step()`` in order.

    For multiplicative (chainable) schedulers the factors compose:

    .. math::

        \eta_t = \eta_0 \prod_k f_k(t)

    Args:
        schedulers: the schedulers to chain (not :class:`ReduceLROnPlateau`), all of one optimizer.
        optimizer: that optimizer; by default the first scheduler's.

    Raises:
        ValueError: no schedulers, a :class:`ReduceLROnPlateau`, or schedulers of different optimizers.
        TypeError: an entry without an ``optimizer`` attribute.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> from funcopt.optim import lr_scheduler as S
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = S.ChainedScheduler([S.ConstantLR(opt, factor=0.5, total_iters=2),
        ...                             S.ExponentialLR(opt, gamma=0.5)])
        >>> lrs = [sched.get_last_lr()[0]]
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [0.5, 0.25, 0.25, 0.125]
    """

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None) -> None:
        if len(schedulers) < 1:
            raise ValueError(
                f"{type(self).__name__} expects at least one scheduler to be chained, but got no scheduler.")
        optimizer = optimizer or schedulers[0].optimizer
        _check_member_schedulers(type(self).__name__, optimizer, schedulers)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        """Step every chained scheduler, in order."""
        guard.check_host_call(self, "step")
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    state_dict = SequentialLR.state_dict
    load_state_dict = SequentialLR.load_state_dict


# ---------------------------------------------------------------------- metric-driven


class ReduceLROnPlateau(LRScheduler):
    r"""Reduce each group's lr by ``factor`` when a metric stops improving for ``patience`` epochs.

    A value :math:`a` improves on the best :math:`b` when (mode ``'min'``)
    :math:`a < b (1 - \text{threshold})` (``'rel'``) or :math:`a < b - \text{threshold}` (``'abs'``);
    mode ``'max'`` mirrors it. After more than ``patience`` epochs without improvement:

    .. math::

        \eta \leftarrow \max(\eta \cdot \text{factor}, \text{min\_lr}_i)
        \quad\text{if the change exceeds } \text{eps}

    then ``cooldown`` epochs pass in which bad epochs are not counted.

    Args:
        optimizer: the optimizer to drive.
        mode: ``'min'`` or ``'max'``. Default: ``'min'``.
        factor: the reduction factor, ``< 1``. Default: 0.1.
        patience: the number of bad epochs tolerated. Default: 10.
        threshold: the significance threshold. Default: 1e-4.
        threshold_mode: ``'rel'`` or ``'abs'``. Default: ``'rel'``.
        cooldown: epochs to wait after a reduction. Default: 0.
        min_lr: the lower bound of the lr, a float or one per group. Default: 0.
        eps: reductions smaller than this are skipped. Default: 1e-8.

    Raises:
        ValueError: ``factor >= 1``, an unknown mode or threshold mode, or a ``min_lr`` list of
            the wrong length.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
        >>> lrs = []
        >>> for loss in [3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]:
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step(loss)
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr: float | None = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _group_values(self.optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record the metric of an epoch (a number or 0-d array) and reduce the lrs when it has plateaued.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
            >>> sched = fo.optim.lr_scheduler.ReduceLROnPlateau(opt, mode='max', patience=0)
            >>> sched.step(jnp.asarray(0.5)); sched.step(0.4); sched.get_last_lr()
            [0.1]
        """
        guard.check_host_call(self, "step", metrics, epoch)
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self, epoch: int) -> None:
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    "The number of param groups in the `optimizer` "
                    f"({len(self.optimizer.param_groups)}) differs "
                    f"from when `ReduceLROnPlateau` was initialized "
                    f"({len(self.min_lrs)}), usually due to a new "
                    "param group being added to the optimizer. Please "
                    "modify the `min_lrs` field to match the length "
                    "of the `optimizer` param groups.")
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for i, group in enumerate(self.optimizer.param_groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                _set_group_value(group, "lr", new_lr)

    @property
    def in_cooldown(self) -> bool:
        """Whether the scheduler is waiting out a cooldown."""
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(_snapshot(dict(state_dict)))
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)
