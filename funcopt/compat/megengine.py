r"""MegEngine's optimizer API over funcopt: ``megengine.optimizer``, ``autodiff.GradManager``, ``amp.GradScaler``.

A port changes the imports and where the parameters live::

    # MegEngine                                   # funcopt
    gm = GradManager().attach(model.parameters())  opt = SGD(params, lr=0.1, momentum=0.9)
    opt = SGD(model.parameters(), lr=0.1,          gm = GradManager().attach(opt)
              momentum=0.9)
    with gm:                                       with gm:
        loss = loss_fn(model(x), y)                    loss = gm.backward(loss_fn, x, y)
        gm.backward(loss)                          opt.step().clear_grad()
    opt.step().clear_grad()

Parameters and gradients are JAX arrays held by the optimizer (``opt.params``,
``opt.grad``), since JAX arrays carry no ``.grad``. The loss is a function
``loss_fn(params, *args)`` that :meth:`GradManager.backward` differentiates.

Every class here binds an existing functional optimizer; MegEngine's names,
argument order and defaults are the only thing added. Where MegEngine's rule
differs from torch's (Adagrad puts :math:`\epsilon` inside the square root), the
functional layer has the MegEngine variant
(:func:`funcopt.optimizers.adagrad.adagrad_megengine`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

import funcopt.optimizers as F
from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, concrete_value, float_dtype
from funcopt._src.tree import tree_all_finite
from funcopt.optim import clip_grad as _torch_clip
from funcopt.optim import guard
from funcopt.optim.optimizer import Optimizer
from funcopt.optimizers.adagrad import adagrad_megengine
from funcopt.transforms.clipping import clip_by_value, global_norm
from funcopt.transforms.clipping import clip_grad_norm as _clip_grad_norm_transform
from funcopt.transforms.loss_scale import DynamicLossScale, dynamic_loss_scale

__all__ = [
    "LAMB",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "GradManager",
    "GradScaler",
    "MultiStepLR",
    "clip_grad_norm",
    "clip_grad_value",
]


# --------------------------------------------------------------------------- optimizers
# Each factory has MegEngine's argument names, order and defaults, and hands them to a
# functional optimizer. The stateful class reads its signature from the factory.


def _sgd(lr: HParam, momentum: HParam = 0.0, nesterov: bool = False,
         weight_decay: HParam = 0.0) -> GradientTransformation:
    momentum_value = concrete_value(momentum)
    if nesterov and momentum_value is not None and momentum_value <= 0:
        raise ValueError("Nesterov momentum requires a momentum")
    return F.sgd(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def _adam(lr: HParam, betas: tuple[HParam, HParam] = (0.9, 0.999), eps: HParam = 1e-8,
          weight_decay: HParam = 0.0) -> GradientTransformation:
    return F.adam(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _adamw(lr: HParam, betas: tuple[HParam, HParam] = (0.9, 0.999), eps: HParam = 1e-8,
           weight_decay: HParam = 1e-2) -> GradientTransformation:
    return F.adamw(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _adagrad(lr: HParam = 1e-2, lr_decay: HParam = 0.0, eps: HParam = 1e-10,
             weight_decay: HParam = 0.0) -> GradientTransformation:
    return adagrad_megengine(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay)


def _adadelta(lr: HParam = 1.0, rho: HParam = 0.9, eps: HParam = 1e-6,
              weight_decay: HParam = 0.0) -> GradientTransformation:
    return F.adadelta(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)


def _lamb(lr: HParam, betas: tuple[HParam, HParam] = (0.9, 0.999), eps: HParam = 1e-8, bias_correction: bool = True,
          weight_decay: HParam = 0.0, always_adapt: bool = False) -> GradientTransformation:
    return F.lamb(lr=lr, betas=betas, eps=eps, bias_correction=bias_correction, weight_decay=weight_decay,
                  always_adapt=always_adapt)


class SGD(Optimizer):
    r"""``megengine.optimizer.SGD(params, lr, momentum=0.0, nesterov=False, weight_decay=0.0)``.

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1}, \qquad v_t = \mu v_{t-1} + g_t, \quad v_0 = 0 \\
        \theta_t &= \theta_{t-1} - \gamma (g_t + \mu v_t) \text{ if nesterov, else } \theta_{t-1} - \gamma v_t

    Over :func:`funcopt.sgd` (with no dampening, torch's SGD is this rule). The
    state ``momentum_buffer`` exists, as zeros, from construction when
    ``momentum`` is nonzero. ``nesterov`` is also stored in each param group
    (MegEngine keeps it as an attribute).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> linear = {'weight': jnp.zeros((2, 3)), 'bias': jnp.zeros(2)}   # megengine.module.Linear(3, 2)
        >>> opt = mge.SGD(linear, lr=1e-3, momentum=0.9, weight_decay=1e-4)
        >>> sd = opt.state_dict()
        >>> sd['state'][0], sd['param_groups'][0]['params']
        ({'momentum_buffer': array([0., 0.], dtype=float32)}, [0, 1])
    """

    factory = staticmethod(_sgd)
    state_has_step = False


class Adam(Optimizer):
    r"""``megengine.optimizer.Adam(params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)``.

    .. math::

        \theta_t = \theta_{t-1} - \gamma \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}

    with the weight decay added to the gradient; over :func:`funcopt.adam`
    (the same rule as torch's). State ``step``, ``exp_avg``, ``exp_avg_sq``.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> opt = mge.Adam({'w': jnp.array([1.0, -1.0])}, lr=0.1)
        >>> opt({'w': jnp.array([0.5, -2.0])}).params['w']
        Array([ 0.9, -0.9], dtype=float32)
    """

    factory = staticmethod(_adam)


class AdamW(Optimizer):
    r"""``megengine.optimizer.AdamW(params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)``.

    .. math::

        \theta_t = \theta_{t-1} - \gamma \left(\frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)}
            + \epsilon} + \lambda \theta_{t-1}\right)

    Over :func:`funcopt.adamw` (the same rule as torch's AdamW).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> mge.AdamW({'w': jnp.ones(2)}, lr=1e-3).param_groups[0]['weight_decay']
        0.01
    """

    factory = staticmethod(_adamw)


class Adagrad(Optimizer):
    r"""``megengine.optimizer.Adagrad(params, lr=1e-2, lr_decay=0.0, eps=1e-10, weight_decay=0.0)``.

    .. math::

        s_t = s_{t-1} + g_t^2, \qquad
        \theta_t = \theta_{t-1} - \frac{\gamma}{1 + (t - 1)\eta} \frac{g_t}{\sqrt{s_t + \epsilon}}

    MegEngine puts :math:`\epsilon` inside the square root (torch outside);
    over :func:`funcopt.optimizers.adagrad.adagrad_megengine`. State ``step``
    and ``square_avg`` (MegEngine's names).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> opt = mge.Adagrad({'w': jnp.array([1.0])}, lr=0.5, eps=16.0)
        >>> opt({'w': jnp.array([3.0])}).params['w']   # 1 - 0.5 * 3 / sqrt(9 + 16)
        Array([0.7], dtype=float32)
    """

    factory = staticmethod(_adagrad)


class Adadelta(Optimizer):
    r"""``megengine.optimizer.Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0)``.

    .. math::

        v_t = \rho v_{t-1} + (1 - \rho) g_t^2, \quad
        \Delta_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t, \quad
        u_t = \rho u_{t-1} + (1 - \rho) \Delta_t^2, \quad \theta_t = \theta_{t-1} - \gamma \Delta_t

    Over :func:`funcopt.adadelta` (the same rule as torch's). State ``step``,
    ``square_avg``, ``acc_delta``.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> sorted(mge.Adadelta({'w': jnp.ones(2)}).state_dict()['state'][0])
        ['acc_delta', 'square_avg', 'step']
    """

    factory = staticmethod(_adadelta)


class LAMB(Optimizer):
    r"""``megengine.optimizer.LAMB(params, lr, betas, eps=1e-8, bias_correction=True, weight_decay=0.0,
    always_adapt=False)``.

    .. math::

        r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} + \lambda \theta_{t-1}, \qquad
        \theta_t = \theta_{t-1} - \gamma \frac{\lVert\theta_{t-1}\rVert}{\lVert r_t\rVert} r_t

    (the trust ratio applies when :math:`\lambda > 0` or ``always_adapt``);
    over :func:`funcopt.lamb`, which is MegEngine's LAMBUpdate.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> opt = mge.LAMB({'w': jnp.array([3.0, 4.0])}, lr=0.1, always_adapt=True)
        >>> opt({'w': jnp.array([1.0, -1.0])}).params['w']   # a step of norm 0.1 * ||w|| = 0.5
        Array([2.6464467, 4.3535533], dtype=float32)
    """

    factory = staticmethod(_lamb)
    elementwise = False


# --------------------------------------------------------------------------- learning-rate scheduler


class MultiStepLR:
    r"""``megengine.optimizer.MultiStepLR(optimizer, milestones, gamma=0.1, current_epoch=-1)``.

    At every :meth:`step` each param group's learning rate becomes

    .. math:: \gamma_e = \gamma_0 \cdot \text{gamma}^{\,|\{m \in \text{milestones} : m \le e\}|}

    with :math:`e` the current epoch and :math:`\gamma_0` the group's
    ``initial_lr``. As in MegEngine, the constructor stores ``initial_lr`` in
    every group (or, resuming with ``current_epoch != -1``, requires it there)
    and takes the first :meth:`step`, so epoch 0's rate is set at once. The
    new rate is written into ``optimizer.param_groups`` and reaches the next
    update without recompiling.

    Args:
        optimizer: a funcopt stateful optimizer.
        milestones: increasing epoch indices.
        gamma: multiplicative factor of the decay.
        current_epoch: the epoch last finished; -1 to start.

    Raises:
        TypeError: ``optimizer`` is not a funcopt optimizer.
        ValueError: the milestones are not increasing.
        KeyError: resuming from a group without ``initial_lr``.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> opt = mge.SGD({'w': jnp.ones(2)}, lr=1.0)
        >>> sched = mge.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)
        >>> lrs = [opt.param_groups[0]['lr']]
        >>> for _ in range(5):
        ...     sched.step()
        ...     lrs.append(opt.param_groups[0]['lr'])
        >>> lrs
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 current_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError("optimizer argument given to the lr_scheduler should be Optimizer")
        milestones = list(milestones)
        if milestones != sorted(milestones):
            raise ValueError(f"Milestones should be a list of increasing integers. Got {milestones}")
        self.milestones = milestones
        self.gamma = gamma
        self.optimizer = optimizer
        self.current_epoch = current_epoch
        if current_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                                   "an optimizer")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.step()

    def get_lr(self) -> list[float]:
        """The learning rate of every group at :attr:`current_epoch`."""
        decays = bisect.bisect_right(self.milestones, self.current_epoch)
        return [base_lr * self.gamma**decays for base_lr in self.base_lrs]

    def step(self, epoch: int | None = None) -> None:
        """Advance to the next epoch (or to ``epoch``) and write the groups' learning rates."""
        guard.check_host_call(self, "step", epoch)
        self.current_epoch = self.current_epoch + 1 if epoch is None else epoch
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        """``{'milestones', 'gamma', 'current_epoch'}``, MegEngine's keys."""
        return {"milestones": self.milestones, "gamma": self.gamma, "current_epoch": self.current_epoch}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load :meth:`state_dict`'s keys; a missing key raises ``KeyError`` before anything changes."""
        values = {}
        for key in ("milestones", "gamma", "current_epoch"):
            if key not in state_dict:
                raise KeyError(f"key '{key}'' is not specified in state_dict when loading state dict")
            values[key] = state_dict[key]
        self.__dict__.update(values)


# --------------------------------------------------------------------------- gradient clipping


def _optimizers_of(tensors: Any) -> list[Optimizer] | None:
    """The optimizers named by ``tensors`` (an optimizer, a GradManager, or a list of them), else None."""
    if isinstance(tensors, (Optimizer, GradManager)):
        tensors = [tensors]
    if isinstance(tensors, (list, tuple)) and tensors and all(isinstance(t, (Optimizer, GradManager))
                                                            for t in tensors):
        out: list[Optimizer] = []
        for t in tensors:
            for opt in (t.attached_tensors() if isinstance(t, GradManager) else [t]):
                if not any(opt is o for o in out):
                    out.append(opt)
        return out
    return None


def clip_grad_norm(tensors: Any, max_norm: float, ord: float = 2.0) -> Any:
    r"""``megengine.optimizer.clip_grad_norm(tensors, max_norm, ord=2.0)``.

    With :math:`N` the ``ord``-norm of all gradients taken together as one vector:

    .. math:: g \leftarrow g \cdot \min\left(1, \frac{\text{max\_norm}}{N + 10^{-6}}\right)

    MegEngine rewrites ``param.grad`` in place and returns :math:`N`. Here the
    gradients live in an optimizer, or in a pytree:

    - ``tensors`` a funcopt optimizer, a :class:`GradManager` or a list of them:
      their accumulated gradients (``opt.grad``) are clipped in place and
      :math:`N` is returned, as in MegEngine (0 when no gradient is held);
    - ``tensors`` a pytree of gradient arrays: JAX arrays are immutable, so
      ``(clipped_pytree, N)`` is returned.

    Args:
        tensors: see above.
        max_norm: the largest total norm let through.
        ord: the :math:`p` of the norm; ``'inf'`` or ``inf`` for the largest magnitude.

    Returns:
        :math:`N`, a 0-d array; or ``(clipped, N)`` for a pytree.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> opt = mge.SGD({'w': jnp.zeros(2)}, lr=0.1)
        >>> _ = opt.backward(lambda p: jnp.sum(p['w'] * jnp.array([3.0, 4.0])))
        >>> mge.clip_grad_norm(opt, max_norm=1.0)
        Array(5., dtype=float32)
        >>> opt.grad['w'].round(4)
        Array([0.6, 0.8], dtype=float32)
        >>> clipped, norm = mge.clip_grad_norm({'w': jnp.array([0.0, -2.0])}, 1.0, ord='inf')
        >>> clipped['w'], norm
        (Array([ 0. , -0.9999995], dtype=float32), Array(2., dtype=float32))
    """
    opts = _optimizers_of(tensors)
    if opts is not None:
        return _torch_clip.clip_grad_norm_(opts, max_norm, norm_type=ord)
    if not jax.tree.leaves(tensors):
        return tensors, jnp.zeros([], float_dtype())
    tx = _clip_grad_norm_transform(max_norm, ord)
    clipped, _ = tx.update(tensors, tx.init(tensors))
    return clipped, global_norm(tensors, ord)


def clip_grad_value(tensors: Any, lower: float, upper: float) -> Any:
    r"""``megengine.optimizer.clip_grad_value(tensors, lower, upper)``: clip every gradient entry.

    .. math:: g \leftarrow \min(\text{upper}, \max(\text{lower}, g))

    ``tensors`` a funcopt optimizer, a :class:`GradManager` or a list of them:
    their accumulated gradients are clipped in place and ``None`` is returned,
    as in MegEngine. ``tensors`` a pytree of gradients: the clipped pytree is
    returned.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> mge.clip_grad_value({'w': jnp.array([-2.0, 0.25, 3.0])}, -1.0, 0.5)['w']
        Array([-1.  ,  0.25,  0.5 ], dtype=float32)
    """
    tx = clip_by_value(lower, upper)
    opts = _optimizers_of(tensors)
    if opts is None:
        return tx.update(tensors, tx.init(tensors))[0]
    for opt in opts:
        storage = opt.grad_storage()
        if storage is not None:
            opt.set_grad_storage(tx.update(storage, tx.init(storage))[0])
    return None


# --------------------------------------------------------------------------- GradManager


def _hook(callbacks: Sequence[Callable[[jax.Array, jax.Array], jax.Array]]) -> Callable[[jax.Array], jax.Array]:
    """An identity on a parameter whose gradient goes through ``callbacks`` (MegEngine's attach callbacks)."""

    @jax.custom_vjp
    def hook(p):
        return p

    def fwd(p):
        return p, p

    def bwd(p, g):
        for cb in callbacks:
            g = cb(p, g)
        return (g,)

    hook.defvjp(fwd, bwd)
    return hook


class GradManager:
    r"""``megengine.autodiff.GradManager``: differentiate a loss and accumulate into an optimizer's gradients.

    JAX traces functions instead of recording a tape, so the loss is given as
    a function: ``gm.backward(loss_fn, *args)`` differentiates
    ``loss_fn(opt.params, *args)`` with respect to the attached optimizer's
    parameters and ADDS the result into ``opt.grad`` (MegEngine's accumulation
    into ``.grad``), in one jitted call. ``record()`` / ``release()`` and the
    ``with gm:`` block keep MegEngine's control flow and its errors: ``backward``
    outside a recording raises ``RuntimeError``, and a recording ends at the
    first ``backward``.

    ``attach(opt, callbacks)`` takes the optimizer that holds the parameters
    (MegEngine attaches ``model.parameters()``; here they live in the
    optimizer). Each callback is called as ``callback(param, grad)`` for every
    parameter during ``backward`` and returns the gradient passed on (then
    accumulated), in the order attached; attaching again appends callbacks.
    Callbacks run inside the compiled gradient computation, so they must be
    JAX-traceable functions.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> opt = mge.SGD({'w': jnp.array([1.0, 2.0])}, lr=0.1)
        >>> gm = mge.GradManager().attach(opt, callbacks=lambda p, g: 2.0 * g)
        >>> loss_fn = lambda p, x: jnp.sum(p['w'] * x)
        >>> for _ in range(2):          # two micro-batches accumulate
        ...     with gm:
        ...         loss = gm.backward(loss_fn, jnp.array([1.0, -1.0]))
        >>> opt.grad['w']
        Array([ 4., -4.], dtype=float32)
        >>> opt.step().clear_grad().params['w']
        Array([0.6, 2.4], dtype=float32)
    """

    def __init__(self) -> None:
        self._optimizer: Optimizer | None = None
        self._callbacks: list[Callable[[jax.Array, jax.Array], jax.Array]] = []
        self._recording = False
        self._wrapped: dict[Any, Callable[..., Any]] = {}

    def attach(self, params: Optimizer, callbacks: Any = None) -> GradManager:
        """Differentiate with respect to ``params``, a funcopt optimizer; add ``callbacks``. Returns self."""
        if not isinstance(params, Optimizer):
            raise TypeError("GradManager.attach takes the funcopt optimizer that holds the parameters (their "
                            f"gradients accumulate in opt.grad), got {type(params).__name__}; for a pytree "
                            "of arrays use jax.grad directly")
        if self._optimizer is not None and params is not self._optimizer:
            raise ValueError("this GradManager is attached to another optimizer; use one GradManager per "
                             "optimizer")
        if callbacks is None:
            callbacks = []
        elif callable(callbacks):
            callbacks = [callbacks]
        callbacks = list(callbacks)
        if not all(callable(cb) for cb in callbacks):
            raise TypeError("callbacks must be callables (param, grad) -> grad")
        self._optimizer = params
        if callbacks:
            self._callbacks.extend(callbacks)
            self._wrapped.clear()
        return self

    def attached_tensors(self) -> list[Optimizer]:
        """The attached optimizer, in a list (MegEngine returns the attached tensors)."""
        return [] if self._optimizer is None else [self._optimizer]

    def record(self) -> None:
        """Start a recording; :meth:`backward` is allowed until it ends."""
        if self._recording:
            raise RuntimeError("already recording")
        self._recording = True

    def release(self) -> None:
        """End the recording without a :meth:`backward`."""
        self._recording = False

    def __enter__(self) -> GradManager:
        self.record()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _wrap(self, loss_fn: Callable[..., Any], has_aux: bool) -> Callable[..., Any]:
        key = (loss_fn, has_aux)
        fn = self._wrapped.get(key)
        if fn is not None:
            return fn
        hook = _hook(tuple(self._callbacks)) if self._callbacks else None

        def wrapped(params, dy, *args, **kwargs):
            if hook is not None:
                params = jax.tree.map(hook, params)
            out = loss_fn(params, *args, **kwargs)
            loss, aux = out if has_aux else (out, None)
            loss = jnp.asarray(loss)
            # the vector-Jacobian product with dy (MegEngine's backward(y, dy)); dy = 1 for a scalar loss
            return jnp.sum(loss * dy.astype(loss.dtype)), (loss, aux)

        self._wrapped[key] = wrapped
        return wrapped

    def backward(self, loss_fn: Callable[..., Any], *args: Any, dy: Any = None, has_aux: bool = False,
                 **kwargs: Any) -> Any:
        r"""Accumulate the gradient of ``loss_fn(opt.params, *args, **kwargs)`` into ``opt.grad``; end the recording.

        .. math:: \text{grad} \leftarrow \text{grad} + \frac{\partial (dy \cdot y)}{\partial \theta}

        with :math:`y` the loss (summed when it is not a scalar) and
        :math:`dy = 1` by default, MegEngine's ``backward(y, dy)``.

        Returns:
            The loss :math:`y` (not multiplied by ``dy``), or ``(loss, aux)`` with ``has_aux``.
        """
        if self._optimizer is None:
            raise RuntimeError("no tensors attached: call attach(optimizer) first")
        if not self._recording:
            raise RuntimeError("no computation history. did you forget record() or call a method that "
                               "clears the history?")
        try:
            dy_arr = jnp.asarray(1.0 if dy is None else dy, dtype=float_dtype())
            _, (loss, aux) = self._optimizer.backward(self._wrap(loss_fn, has_aux), dy_arr, *args,
                                                      has_aux=True, **kwargs)
        finally:
            self.release()
        return (loss, aux) if has_aux else loss


# --------------------------------------------------------------------------- GradScaler


class GradScaler:
    r"""``megengine.amp.GradScaler(init_scale=2.0**4, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000)``.

    The loss is multiplied by the scale :math:`s` before differentiation and
    the gradients by :math:`1/s` after. :meth:`update` then adjusts :math:`s`:

    .. math::

        s \leftarrow \begin{cases}
            s \cdot \text{backoff\_factor} & \text{a gradient was not finite (the tracker restarts)} \\
            s \cdot \text{growth\_factor} & \text{growth\_interval finite steps in a row} \\
            s & \text{otherwise}
        \end{cases}

    The scale, the count of finite steps and the growth are a
    :class:`funcopt.DynamicLossScale` (:func:`funcopt.dynamic_loss_scale` with
    ``scale_factor=growth_factor``, ``scale_window=growth_interval``); the
    backoff multiplies by ``backoff_factor`` as MegEngine does (no lower bound).
    ``growth_interval=0`` keeps the scale fixed and skips the finiteness check.
    :meth:`unscale` on non-finite gradients drops them (``opt.grad`` becomes
    None), so the following ``opt.step()`` raises unless new gradients come:
    skip it by checking ``opt.grad is None``.

    Raises:
        ValueError: ``growth_factor`` <= 0, or ``growth_interval`` negative or
            not an integer (:func:`funcopt.dynamic_loss_scale`'s checks).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import megengine as mge
        >>> opt = mge.SGD({'w': jnp.array([1.0])}, lr=0.1)
        >>> gm = mge.GradManager().attach(opt)
        >>> scaler = mge.GradScaler(init_scale=8.0, growth_interval=2)
        >>> for _ in range(2):
        ...     with gm:
        ...         loss = scaler.backward(gm, lambda p: jnp.sum(p['w'] ** 2))
        ...     _ = opt.step().clear_grad()
        >>> scaler.scale_factor, opt.params['w']
        (16.0, Array([0.64], dtype=float32))
    """

    def __init__(self, init_scale: float = 2.0**4, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = growth_interval
        self._found_non_finite = False
        window = growth_interval if growth_interval else 1
        # funcopt's dynamic scale starts at 1 or more; MegEngine takes any initial scale
        self._scale: DynamicLossScale = dynamic_loss_scale(max(float(init_scale), 1.0), self.growth_factor, window)
        self._set(float(init_scale), 0)

    @property
    def scale_factor(self) -> float:
        """The current loss scale."""
        return float(self._scale.scale_value)

    @property
    def _growth_tracker(self) -> int:
        return int(self._scale.counter)

    def _set(self, scale: float, tracker: int) -> None:
        self._scale = self._scale._replace(scale_value=jnp.asarray(scale, self._scale.scale_value.dtype),
                                           counter=jnp.asarray(tracker, self._scale.counter.dtype))

    def backward(self, gm: GradManager, loss_fn: Callable[..., Any], *args: Any, dy: Any = None,
                 unscale_grad: bool = True, update_scale: Any = "if_unscale_grad", **kwargs: Any) -> Any:
        """``gm.backward`` of the loss times the scale; then :meth:`unscale` and :meth:`update` by default.

        Returns:
            The (unscaled) loss, as :meth:`GradManager.backward`.
        """
        scaled_dy = self.scale_factor if dy is None else jnp.asarray(dy) * self.scale_factor
        out = gm.backward(loss_fn, *args, dy=scaled_dy, **kwargs)
        if unscale_grad:
            self.unscale(gm)
            if update_scale:
                self.update()
        return out

    def unscale(self, grad_tensors: Any) -> GradScaler:
        """Multiply the gradients of ``grad_tensors`` (an optimizer, a GradManager, or a list) by 1 / scale.

        When any gradient is not finite they are all dropped and :meth:`update`
        will back off. Returns self.
        """
        guard.check_host_call(self, "unscale", grad_tensors)
        opts = _optimizers_of(grad_tensors)
        if opts is None:
            raise TypeError("unscale takes a funcopt optimizer, a GradManager or a list of them, "
                            f"got {type(grad_tensors).__name__}")
        storages = [(opt, opt.grad_storage()) for opt in opts]
        storages = [(opt, s) for opt, s in storages if s is not None]
        unscaled = [(opt, self._scale.unscale(s)) for opt, s in storages]
        if self.growth_interval != 0 and unscaled and not bool(tree_all_finite([u for _, u in unscaled])):
            self._found_non_finite = True
            for opt, _ in unscaled:
                opt.clear_grad()
            return self
        for opt, u in unscaled:
            opt.set_grad_storage(u)
        return self

    def update(self, new_scale: float | None = None) -> None:
        """Adjust the scale after a step (see the class), or set it to ``new_scale``."""
        if self.growth_interval == 0:
            return
        if new_scale is not None:
            self._set(float(new_scale), self._growth_tracker)
        elif self._found_non_finite:
            self._set(self.scale_factor * self.backoff_factor, 0)
        else:
            self._scale = self._scale.adjust(True)
        self._found_non_finite = False

    def state_dict(self) -> dict[str, Any]:
        """MegEngine's keys: scale_factor, growth_factor, backoff_factor, growth_interval, _growth_tracker."""
        return {"scale_factor": self.scale_factor, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load :meth:`state_dict`'s values."""
        restored = GradScaler(state["scale_factor"], state["growth_factor"], state["backoff_factor"],
                              state["growth_interval"])
        restored._set(float(state["scale_factor"]), int(state["_growth_tracker"]))
        self.__dict__.update(restored.__dict__)
