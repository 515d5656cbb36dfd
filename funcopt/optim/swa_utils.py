r"""``torch.optim.swa_utils`` for parameter pytrees: weight averaging (SWA, EMA) and the SWA learning rate.

:class:`AveragedModel` keeps a running average of a parameter pytree (or of a
:class:`funcopt.optim.Optimizer`'s parameters), with torch's averaging
functions, counter and ``state_dict`` keys. :class:`SWALR` anneals the learning
rate of an optimizer's param groups to a fixed value, with torch's exact
sequence of values::

    opt = fo.optim.SGD(params, lr=0.1, momentum=0.9)
    swa_model = fo.optim.swa_utils.AveragedModel(opt)
    swa_scheduler = fo.optim.swa_utils.SWALR(opt, swa_lr=0.05)
    for epoch in range(100):
        for x, y in batches:
            opt.backward(loss_fn, x, y)
            opt.step().clear_grad()
        if epoch >= 75:
            swa_model.update_parameters(opt)
            swa_scheduler.step()
    evaluate(swa_model.params)

What does not carry over from torch: there is no module to call, so evaluate
``apply(swa_model.params, x)`` with the model's own function; and there are no
buffers, so ``use_buffers`` has nothing to act on and ``update_bn`` has no
counterpart. Every leaf of the pytree given to :meth:`AveragedModel.update_parameters`
is averaged; to average batch-norm statistics, include them in that pytree, and
to keep them out of the average, leave them out of it.

The functional forms of the same averages are :func:`funcopt.swa` /
:func:`funcopt.swa_update` and :func:`funcopt.ema`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.base import PyTree
from funcopt._src.tree import param_names
from funcopt.optim.interop import to_numpy
from funcopt.optim.lr_scheduler import LRScheduler
from funcopt.optim.optimizer import Optimizer
from funcopt.transforms.averaging import DECAY_MESSAGE, lerp, running_mean

__all__ = [
    "SWALR",
    "AveragedModel",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
]

AvgFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
MultiAvgFn = Callable[[list[jax.Array], list[jax.Array], jax.Array], list[jax.Array]]


def _check_decay(decay: float) -> None:
    if decay < 0.0 or decay > 1.0:
        raise ValueError(DECAY_MESSAGE.format(decay))


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    r"""The exponential moving average over a list of arrays (torch's ``get_ema_multi_avg_fn``).

    .. math::

        W^{\text{EMA}}_{t+1} = \text{decay}\, W^{\text{EMA}}_t + (1 - \text{decay})\, W^{\text{model}}_{t+1}

    computed as torch's ``lerp`` with weight :math:`1 - \text{decay}`.

    Args:
        decay: the decay, in :math:`[0, 1]`.

    Returns:
        A function ``(averaged_list, current_list, n_averaged) -> new_averaged_list``.
        Unlike torch's, it returns the new arrays instead of writing into the old
        ones (JAX arrays are immutable); :class:`AveragedModel` uses the result.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fn = fo.optim.swa_utils.get_ema_multi_avg_fn(0.75)
        >>> fn([jnp.array([0.0, 4.0])], [jnp.array([4.0, 0.0])], jnp.array(1))[0]
        Array([1., 3.], dtype=float32)
    """
    _check_decay(decay)

    def ema_update(ema_param_list: Sequence[jax.Array], current_param_list: Sequence[jax.Array],
                   num_averaged: jax.Array) -> list[jax.Array]:
        del num_averaged
        return [lerp(a, c, 1 - decay) for a, c in zip(ema_param_list, current_param_list, strict=True)]

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    r"""The running mean over a list of arrays (torch's ``get_swa_multi_avg_fn``).

    .. math:: \bar W_{n+1} = \bar W_n + \frac{W - \bar W_n}{n + 1}

    computed as torch's ``lerp`` with weight :math:`1 / (n + 1)`.

    Returns:
        A function ``(averaged_list, current_list, n_averaged) -> new_averaged_list``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fn = fo.optim.swa_utils.get_swa_multi_avg_fn()
        >>> fn([jnp.array([2.0])], [jnp.array([8.0])], jnp.array(2))[0]
        Array([4.], dtype=float32)
    """

    def swa_update(averaged_param_list: Sequence[jax.Array], current_param_list: Sequence[jax.Array],
                   num_averaged: jax.Array) -> list[jax.Array]:
        # torch's weight 1 / (n + 1) is a tensor of its default dtype, float32, whatever the params' dtype
        weight = 1 / (jnp.asarray(num_averaged).astype(jnp.float32) + 1)
        return [lerp(a, c, weight) for a, c in zip(averaged_param_list, current_param_list, strict=True)]

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    r"""The exponential moving average of one array (torch's ``get_ema_avg_fn``).

    .. math::

        W^{\text{EMA}}_{t+1} = \text{decay}\, W^{\text{EMA}}_t + (1 - \text{decay})\, W^{\text{model}}_{t+1}

    Args:
        decay: the decay, in :math:`[0, 1]`.

    Returns:
        A function ``(averaged, current, n_averaged) -> new_averaged``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fn = fo.optim.swa_utils.get_ema_avg_fn(0.5)
        >>> fn(jnp.array([0.0, 4.0]), jnp.array([2.0, 2.0]), jnp.array(1))
        Array([1., 3.], dtype=float32)
    """
    _check_decay(decay)

    def ema_update(ema_param: jax.Array, current_param: jax.Array, num_averaged: jax.Array) -> jax.Array:
        del num_averaged
        return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn() -> AvgFn:
    r"""The running mean of one array (torch's ``get_swa_avg_fn``, the default of :class:`AveragedModel`).

    .. math:: \bar W_{n+1} = \bar W_n + \frac{W - \bar W_n}{n + 1}

    Returns:
        A function ``(averaged, current, n_averaged) -> new_averaged``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fn = fo.optim.swa_utils.get_swa_avg_fn()
        >>> fn(jnp.array([2.0]), jnp.array([8.0]), jnp.array(2))
        Array([4.], dtype=float32)
    """

    def swa_update(averaged_param: jax.Array, current_param: jax.Array, num_averaged: jax.Array) -> jax.Array:
        return running_mean(averaged_param, current_param, num_averaged)

    return swa_update


def _params_of(model: Any) -> PyTree:
    if isinstance(model, Optimizer):
        return model.params
    if isinstance(model, AveragedModel):
        return model.params
    return model


class AveragedModel:
    r"""A running average of a parameter pytree: torch's ``torch.optim.swa_utils.AveragedModel``.

    The constructor copies the parameters; each :meth:`update_parameters` call
    adds the current ones to the average. The first call (``n_averaged == 0``)
    copies them; later calls apply the averaging function, by default the
    equal-weight running mean (SWA):

    .. math::

        \bar W \leftarrow \bar W + \frac{W - \bar W}{n + 1}, \qquad n \leftarrow n + 1

    Each update is one jitted call over all leaves, compiled once.

    Args:
        model: a parameter pytree, or a :class:`funcopt.optim.Optimizer` (its
            :attr:`~funcopt.optim.Optimizer.params`).
        device: a ``jax.Device`` to keep the average on; by default where the
            parameters are.
        avg_fn: ``(averaged, current, n_averaged) -> new_averaged`` applied leaf
            by leaf (e.g. :func:`get_ema_avg_fn`); jittable.
        multi_avg_fn: ``(averaged_list, current_list, n_averaged) -> new_list``
            applied to the leaves of each dtype together (e.g.
            :func:`get_ema_multi_avg_fn`); jittable, and it returns the new
            arrays (torch's writes in place and returns None).
        use_buffers: accepted for torch compatibility; a pytree has no buffers,
            so every leaf given is averaged either way (see the module notes).

    Raises:
        AssertionError: when both ``avg_fn`` and ``multi_avg_fn`` are given (torch's error).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> swa = fo.optim.swa_utils.AveragedModel({'w': jnp.zeros(2)})
        >>> for x in [1.0, 2.0, 6.0]:
        ...     swa.update_parameters({'w': jnp.full(2, x)})
        >>> swa.params['w'], int(swa.n_averaged)
        (Array([3., 3.], dtype=float32), 3)
        >>> ema = fo.optim.swa_utils.AveragedModel(
        ...     {'w': jnp.zeros(1)}, multi_avg_fn=fo.optim.swa_utils.get_ema_multi_avg_fn(0.5))
        >>> for x in [4.0, 0.0]:
        ...     ema.update_parameters({'w': jnp.array([x])})
        >>> ema.params['w']
        Array([2.], dtype=float32)
    """

    def __init__(
        self,
        model: PyTree | Optimizer,
        device: jax.Device | None = None,
        avg_fn: AvgFn | None = None,
        multi_avg_fn: MultiAvgFn | None = None,
        use_buffers: bool = False,
    ) -> None:
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        params = _params_of(model)
        leaves, treedef = jax.tree.flatten(params)
        if not leaves:
            raise ValueError("AveragedModel got a model with no arrays")
        # a real copy: the average never shares a buffer with the model (whose buffers a step may donate)
        leaves = [jnp.array(x, copy=True) for x in leaves]
        if device is not None:
            leaves = jax.device_put(leaves, device)
        self._treedef = treedef
        self._leaves: list[jax.Array] = leaves
        self._names = param_names(params)
        self.device = device
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers
        self.n_averaged: jax.Array = jnp.zeros([], jnp.int32)
        self._update_fn = jax.jit(self._averaged)

    # ------------------------------------------------------------------ views

    @property
    def params(self) -> PyTree:
        """The averaged parameters, in the structure of the model."""
        return self._treedef.unflatten(self._leaves)

    @property
    def module(self) -> PyTree:
        """The averaged parameters (torch's name for the averaged copy of the model)."""
        return self.params

    # ------------------------------------------------------------------ averaging

    def _averaged(self, averaged: list[jax.Array], current: list[jax.Array],
                  n_averaged: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        current = [c.astype(a.dtype) for a, c in zip(averaged, current)]
        if self.avg_fn is not None:
            new = [self.avg_fn(a, c, n_averaged) for a, c in zip(averaged, current)]
        elif self.multi_avg_fn is not None:
            new = list(averaged)
            by_dtype: dict[Any, list[int]] = {}
            for i, a in enumerate(averaged):
                by_dtype.setdefault(a.dtype, []).append(i)
            for members in by_dtype.values():
                out = self.multi_avg_fn([averaged[i] for i in members], [current[i] for i in members],
                                        n_averaged)
                if out is None or len(out) != len(members):
                    raise TypeError("multi_avg_fn must return the list of new averaged arrays (JAX arrays "
                                    "are immutable, so it cannot update them in place as torch's does)")
                for i, x in zip(members, out):
                    new[i] = x
        else:
            swa = get_swa_avg_fn()
            new = [swa(a, c, n_averaged) for a, c in zip(averaged, current)]
        # the first update copies the model, as torch does
        new = [jnp.where(n_averaged == 0, c, jnp.asarray(x).astype(a.dtype)).reshape(a.shape)
               for a, c, x in zip(averaged, current, new)]
        return new, n_averaged + 1

    def update_parameters(self, model: PyTree | Optimizer) -> None:
        """Add the current parameters to the average.

        Args:
            model: a pytree with the structure and shapes of the averaged
                parameters, or a :class:`funcopt.optim.Optimizer` holding one.

        Raises:
            ValueError: when ``model`` does not have the structure and shapes of the averaged parameters.
        """
        leaves, treedef = jax.tree.flatten(_params_of(model))
        if treedef != self._treedef:
            raise ValueError(f"update_parameters: the model's structure {treedef} does not match the "
                             f"averaged parameters' {self._treedef}")
        for name, a, c in zip(self._names, self._leaves, leaves):
            if tuple(np.shape(c)) != a.shape:
                raise ValueError(f"update_parameters: parameter {name!r} has shape {tuple(np.shape(c))}, the "
                                 f"averaged one {a.shape}")
        leaves = [jnp.asarray(x) for x in leaves]
        if self.device is not None:
            leaves = jax.device_put(leaves, self.device)
        self._leaves, self.n_averaged = self._update_fn(self._leaves, leaves, self.n_averaged)

    # ------------------------------------------------------------------ state_dict

    def state_dict(self) -> dict[str, np.ndarray]:
        """torch's keys: ``'n_averaged'`` and ``'module.<name>'`` per parameter, as NumPy arrays.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> params = {'fc': {'weight': jnp.ones((2, 2)), 'bias': jnp.zeros(2)}}
            >>> swa = fo.optim.swa_utils.AveragedModel(params)
            >>> list(swa.state_dict())
            ['n_averaged', 'module.fc.bias', 'module.fc.weight']
        """
        out = {"n_averaged": np.asarray(self.n_averaged, np.int64)}
        for name, x in zip(self._names, self._leaves):
            out["module." + name] = np.array(x)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load :meth:`state_dict`'s output or a torch ``AveragedModel``'s (tensors or arrays).

        Everything is checked before anything changes.

        Raises:
            RuntimeError: on missing or unexpected keys or mismatched shapes, in the words of torch's error.
        """
        expected = ["n_averaged"] + ["module." + n for n in self._names]
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        errors = []
        if unexpected:
            listed = ", ".join(f'"{k}"' for k in unexpected)
            errors.append(f"Unexpected key(s) in state_dict: {listed}. ")
        if missing:
            listed = ", ".join(f'"{k}"' for k in missing)
            errors.append(f"Missing key(s) in state_dict: {listed}. ")
        arrays = {}
        for k in expected:
            if k in state_dict:
                arrays[k] = to_numpy(state_dict[k])
        for name, leaf in zip(self._names, self._leaves):
            key = "module." + name
            if key in arrays and tuple(arrays[key].shape) != leaf.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape "
                              f"{tuple(arrays[key].shape)} from checkpoint, the shape in current model is "
                              f"{leaf.shape}.")
        if "n_averaged" in arrays:
            n = arrays["n_averaged"]
            if n.size != 1 or not np.issubdtype(n.dtype, np.number) or float(n.reshape(())) < 0:
                errors.append("n_averaged must be a non-negative count.")
        if errors:
            raise RuntimeError("Error(s) in loading state_dict for AveragedModel:\n\t" + "\n\t".join(errors))
        self._leaves = [jax.device_put(jnp.asarray(arrays["module." + n], dtype=leaf.dtype), leaf.sharding)
                        for n, leaf in zip(self._names, self._leaves)]
        self.n_averaged = jnp.asarray(int(arrays["n_averaged"].reshape(())), self.n_averaged.dtype)

    def __repr__(self) -> str:
        return f"AveragedModel(n_averaged={int(self.n_averaged)}, params=<{len(self._leaves)} arrays>)"


def _format_param(name: str, optimizer: Optimizer, param: Any) -> list[Any]:
    """One value per param group: a list / tuple of matching length, or one value for all."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(f"{name} must have the same length as optimizer.param_groups. {name} has "
                             f"{len(param)} values, param_groups has {len(optimizer.param_groups)}.")
        return list(param)
    return [param] * len(optimizer.param_groups)


class SWALR(LRScheduler):
    r"""Anneal each param group's lr to a fixed ``swa_lr`` (torch's ``torch.optim.swa_utils.SWALR``).

    With :math:`\eta` the group's lr before the step, :math:`s = \text{step} - 1`
    the steps taken since construction (0 at construction) and :math:`f` the
    annealing function (:math:`f(t) = (1 - \cos \pi t)/2` for ``'cos'``,
    :math:`f(t) = t` for ``'linear'``), each step sets

    .. math::

        \alpha' &= f\bigl(\mathrm{clip}((s - 1) / \max(1, E), 0, 1)\bigr), \quad
        \alpha = f\bigl(\mathrm{clip}(s / \max(1, E), 0, 1)\bigr) \\
        \eta_0 &= \begin{cases} \text{swa\_lr} & \alpha' = 1 \\
                   (\eta - \alpha' \, \text{swa\_lr}) / (1 - \alpha') & \text{otherwise} \end{cases} \\
        \eta &\leftarrow \alpha \, \text{swa\_lr} + (1 - \alpha)\, \eta_0

    so that over :math:`E` = ``anneal_epochs`` steps the lr moves from its value
    at construction to ``swa_lr`` and stays there (with :math:`E = 0` it jumps at
    the first step). These are torch's formulas, in Python floats, so the values
    match torch's exactly.

    Args:
        optimizer: the :class:`funcopt.optim.Optimizer` to drive.
        swa_lr: the final lr, for all groups or one per group (stored in each
            group as ``'swa_lr'``).
        anneal_epochs: the number of steps of the annealing phase, an int >= 0.
        anneal_strategy: ``'cos'`` or ``'linear'``.
        last_epoch: the index of the last epoch; ``-1`` starts the schedule.

    Raises:
        ValueError: for an unknown strategy, a negative or non-int ``anneal_epochs``,
            or a list of ``swa_lr`` of the wrong length (torch's messages).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
        >>> sched = fo.optim.swa_utils.SWALR(opt, swa_lr=0.2, anneal_epochs=2, anneal_strategy='linear')
        >>> lrs = []
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.ones(2)})
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 6))
        >>> lrs
        [0.6, 0.2, 0.2]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        swa_lr: float | Sequence[float],
        anneal_epochs: int = 10,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        last_epoch: int = -1,
    ) -> None:
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        for value, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = value
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', "
                             f"instead got {anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t: float) -> float:
        return t

    @staticmethod
    def _cosine_anneal(t: float) -> float:
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr: float, swa_lr: float, alpha: float) -> float:
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def get_lr(self) -> list[Any]:
        """The learning rates for the coming epoch, one per group (called by :meth:`step`)."""
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, "
                          "please use `get_last_lr()`.", UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        prev_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha)
                    for group in self.optimizer.param_groups]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [group["swa_lr"] * alpha + lr * (1 - alpha)
                for group, lr in zip(self.optimizer.param_groups, prev_lrs, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute but the optimizer and the annealing function (as torch)."""
        return {k: v for k, v in super().state_dict().items() if k != "anneal_func"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (or a torch ``SWALR``'s); the strategy picks the function."""
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "anneal_func"})
        self._set_anneal_func(self._anneal_strategy)
