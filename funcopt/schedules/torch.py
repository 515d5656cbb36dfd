r"""Closed forms of ``torch.optim.lr_scheduler``'s schedules, as pure functions of the step.

Each factory returns a jittable ``schedule(step) -> value`` where ``step`` is the
number of updates already applied (0 for the first update), which is torch's
``last_epoch`` at the time of an ``optimizer.step()`` when the scheduler is stepped
once per optimizer step. ``base_value`` plays the role of the group's initial
``lr`` (torch's ``base_lrs``), so any hyperparameter can follow these shapes.

torch computes most schedules recursively (``get_lr`` multiplies the previous lr by
a ratio); these are the closed forms (``_get_closed_form_lr`` where torch has one),
which agree with the recursion up to rounding.

The stateful scheduler classes are in :mod:`funcopt.optim.lr_scheduler`. The same
functions are reachable flat, as ``fo.schedules.cosine_annealing`` and so on.

Example:
    >>> import funcopt as fo
    >>> s = fo.schedules.torch.step(0.1, step_size=2, gamma=0.5)
    >>> [round(float(s(t)), 4) for t in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    >>> fo.schedules.torch.step is fo.schedules.step
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp

from funcopt._src.hparams import Schedule
from funcopt.schedules._common import Scalar, as_float, count_array, floor_div, int_table, is_int, is_real

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


def step(base_value: Scalar, step_size: int, gamma: Scalar = 0.1) -> Schedule:
    r"""Decay by ``gamma`` every ``step_size`` steps (torch's ``StepLR``).

    .. math::

        \eta_t = \eta_0 \, \gamma^{\lfloor t / \text{step\_size} \rfloor}

    Args:
        base_value: :math:`\eta_0`, the value at step 0 (torch's initial ``lr``).
        step_size: period of the decay, a positive integer.
        gamma: multiplicative factor of the decay.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.step(0.1, step_size=30)
        >>> [round(float(sched(t)), 6) for t in (0, 29, 30, 60)]
        [0.1, 0.1, 0.01, 0.001]
    """
    if not is_int(step_size) or step_size <= 0:
        raise ValueError(f"Expected positive integer step_size, but got {step_size}")

    def schedule(count):
        t = count_array(count)
        return as_float(base_value) * as_float(gamma) ** floor_div(t, step_size)

    return schedule


def multi_step(base_value: Scalar, milestones: Sequence[int], gamma: Scalar = 0.1) -> Schedule:
    r"""Decay by ``gamma`` at each milestone (torch's ``MultiStepLR``).

    .. math::

        \eta_t = \eta_0 \, \gamma^{\#\{m \in \text{milestones} : m \le t\}}

    A milestone listed twice decays twice, as in torch.

    Args:
        base_value: :math:`\eta_0`, the value at step 0.
        milestones: steps at which to decay (any order; repeats count).
        gamma: multiplicative factor of the decay.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.multi_step(1.0, milestones=[2, 4], gamma=0.5)
        >>> [float(sched(t)) for t in range(6)]
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    milestones = sorted(int(m) for m in milestones)

    def schedule(count):
        t = count_array(count)
        if not milestones:
            passed = jnp.zeros(t.shape)
        else:
            passed = jnp.sum(t[..., None] >= int_table(milestones, t), axis=-1)
        return as_float(base_value) * as_float(gamma) ** as_float(passed)

    return schedule


def constant(base_value: Scalar, factor: float = 1.0 / 3, total_iters: int = 5) -> Schedule:
    r"""Scale by ``factor`` for the first ``total_iters`` steps (torch's ``ConstantLR``).

    .. math::

        \eta_t = \eta_0 \cdot (\text{factor} \text{ if } t < \text{total\_iters} \text{ else } 1)

    torch's recursive ``step()`` divides by ``factor`` at ``total_iters`` (and so
    fails for ``factor=0``); this closed form does not.

    Args:
        base_value: :math:`\eta_0`, the value from step ``total_iters`` on.
        factor: the factor in [0, 1] applied before ``total_iters``.
        total_iters: number of scaled steps.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.constant(0.3, factor=0.5, total_iters=2)
        >>> [round(float(sched(t)), 6) for t in range(4)]
        [0.15, 0.15, 0.3, 0.3]
    """
    if factor > 1.0 or factor < 0:
        raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")

    def schedule(count):
        t = count_array(count)
        done = as_float(t >= total_iters)
        return as_float(base_value) * (factor + done * (1.0 - factor))

    return schedule


def linear(base_value: Scalar, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
           total_iters: int = 5) -> Schedule:
    r"""Move the factor linearly from ``start_factor`` to ``end_factor`` (torch's ``LinearLR``).

    .. math::

        \eta_t = \eta_0 \left(s + (e - s) \frac{\min(t, T)}{T}\right)

    with :math:`s` = ``start_factor``, :math:`e` = ``end_factor`` and :math:`T` = ``total_iters``.

    Args:
        base_value: :math:`\eta_0`.
        start_factor: factor at step 0, in (0, 1].
        end_factor: factor from step ``total_iters`` on, in [0, 1].
        total_iters: number of steps of the ramp.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.linear(1.0, start_factor=0.25, total_iters=3)
        >>> [float(sched(t)) for t in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if start_factor > 1.0 or start_factor <= 0:
        raise ValueError(
            "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."
        )
    if end_factor > 1.0 or end_factor < 0:
        raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")

    def schedule(count):
        t = as_float(jnp.minimum(count_array(count), total_iters))
        return as_float(base_value) * (start_factor + (end_factor - start_factor) * t / total_iters)

    return schedule


def exponential(base_value: Scalar, gamma: Scalar) -> Schedule:
    r"""Decay by ``gamma`` every step (torch's ``ExponentialLR``).

    .. math::

        \eta_t = \eta_0 \, \gamma^t

    Args:
        base_value: :math:`\eta_0`.
        gamma: multiplicative factor per step.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.exponential(1.0, gamma=0.5)
        >>> [float(sched(t)) for t in range(4)]
        [1.0, 0.5, 0.25, 0.125]
    """

    def schedule(count):
        return as_float(base_value) * as_float(gamma) ** as_float(count_array(count))

    return schedule


def polynomial(base_value: Scalar, total_iters: int = 5, power: Scalar = 1.0) -> Schedule:
    r"""Polynomial decay to zero over ``total_iters`` steps (torch's ``PolynomialLR``).

    .. math::

        \eta_t = \eta_0 \left(1 - \frac{\min(t, T)}{T}\right)^{p}

    Args:
        base_value: :math:`\eta_0`.
        total_iters: :math:`T`, the number of decaying steps.
        power: :math:`p`.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.polynomial(1.0, total_iters=4, power=2.0)
        >>> [float(sched(t)) for t in range(6)]
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """

    def schedule(count):
        # The remaining steps are counted exactly, so the base is never a rounding below 0.
        remaining = as_float(total_iters - jnp.minimum(count_array(count), total_iters))
        return as_float(base_value) * (remaining / total_iters) ** as_float(power)

    return schedule


def cosine_annealing(base_value: Scalar, T_max: int, eta_min: Scalar = 0.0) -> Schedule:
    r"""Cosine annealing from ``base_value`` to ``eta_min`` over ``T_max`` steps (``CosineAnnealingLR``).

    .. math::

        \eta_t = \eta_{\min} + \tfrac12 (\eta_0 - \eta_{\min})\left(1 + \cos\frac{\pi t}{T_{\max}}\right)

    This is torch's ``_get_closed_form_lr``. torch's ``step()`` follows a
    recursive form, :math:`\eta_{t} = \eta_{\min} + (\eta_{t-1} - \eta_{\min})
    \frac{1 + \cos(\pi t / T_{\max})}{1 + \cos(\pi (t-1) / T_{\max})}`, equal in
    exact arithmetic but carrying the rounding of every previous step, so the two
    drift apart slowly (in float64, by about 1e-13 relative after a few hundred
    steps, more where the value nears ``eta_min``).
    Past ``T_max`` both continue the cosine (the value rises again with period
    ``2 * T_max``), as torch does.

    Args:
        base_value: :math:`\eta_0`, the value at step 0.
        T_max: half period of the cosine, in steps.
        eta_min: minimum value.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.cosine_annealing(0.1, T_max=100)
        >>> [round(float(sched(t)), 6) for t in (0, 50, 100)]
        [0.1, 0.05, 0.0]
    """

    def schedule(count):
        t = as_float(count_array(count))
        eta_min_ = as_float(eta_min)
        return eta_min_ + (as_float(base_value) - eta_min_) * (1.0 + jnp.cos(math.pi * t / T_max)) / 2

    return schedule


def cosine_annealing_warm_restarts(base_value: Scalar, T_0: int, T_mult: int = 1,
                                   eta_min: Scalar = 0.0) -> Schedule:
    r"""Cosine annealing with warm restarts, SGDR (torch's ``CosineAnnealingWarmRestarts``).

    .. math::

        \eta_t = \eta_{\min} + \tfrac12 (\eta_0 - \eta_{\min})\left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    where the :math:`i`-th cycle lasts :math:`T_i = T_0 T_{mult}^i` steps and
    :math:`T_{cur}` counts the steps since the last restart. Cycle boundaries
    are found with integer arithmetic, so they match torch's step-by-step count
    exactly at any step (torch's ``step(epoch)`` form goes through a
    floating-point logarithm instead).

    Args:
        base_value: :math:`\eta_0`, the value at each restart.
        T_0: length of the first cycle, a positive integer.
        T_mult: growth factor of the cycle length, an integer >= 1.
        eta_min: minimum value.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.cosine_annealing_warm_restarts(1.0, T_0=2, T_mult=2)
        >>> [round(float(sched(t)), 6) for t in range(7)]
        [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """
    if T_0 <= 0 or not is_int(T_0):
        raise ValueError(f"Expected positive integer T_0, but got {T_0}")
    if T_mult < 1 or not is_int(T_mult):
        raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
    if not is_real(eta_min):
        raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
    # Start step and length of each cycle, far past any step count an int64 can hold.
    starts, lengths = [0], [T_0]
    if T_mult > 1:
        while starts[-1] < 2**62:
            starts.append(starts[-1] + lengths[-1])
            lengths.append(lengths[-1] * T_mult)

    def schedule(count):
        t = count_array(count)
        if T_mult == 1:
            t_cur = as_float(jnp.remainder(t, T_0))
            t_i = float(T_0)
        else:
            start_table = int_table(starts, t)
            restarts = jnp.sum(t[..., None] >= start_table[1:], axis=-1)
            t_cur = as_float(t - start_table[restarts])
            t_i = as_float(jnp.asarray([float(n) for n in lengths]))[restarts]
        eta_min_ = as_float(eta_min)
        return eta_min_ + (as_float(base_value) - eta_min_) * (1.0 + jnp.cos(math.pi * t_cur / t_i)) / 2

    return schedule


def _resolve_total_steps(total_steps: int | None, epochs: int | None, steps_per_epoch: int | None) -> int:
    if total_steps is not None:
        if total_steps <= 0 or not is_int(total_steps):
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
        return total_steps
    if epochs is not None and steps_per_epoch is not None:
        if not is_int(epochs) or epochs <= 0:
            raise ValueError(f"Expected positive integer epochs, but got {epochs}")
        if not is_int(steps_per_epoch) or steps_per_epoch <= 0:
            raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
        return epochs * steps_per_epoch
    raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")


def _check_one_cycle(pct_start: float, anneal_strategy: str) -> None:
    if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")


def _anneal(strategy: str, start: jax.Array, end: jax.Array, pct: jax.Array) -> jax.Array:
    if strategy == "cos":
        return end + (start - end) / 2.0 * (jnp.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _one_cycle_curve(total_steps: int, pct_start: float, anneal_strategy: str, three_phase: bool,
                     points: Sequence[Scalar]) -> Schedule:
    """The piecewise annealed curve through ``points`` at torch's OneCycleLR phase ends."""
    if three_phase:
        ends = [float(pct_start * total_steps) - 1, float(2 * pct_start * total_steps) - 2, total_steps - 1]
    else:
        ends = [float(pct_start * total_steps) - 1, total_steps - 1]

    def schedule(count):
        # torch raises past total_steps; from the last step on, hold the final value.
        t = as_float(jnp.minimum(count_array(count), total_steps - 1))
        values = [as_float(p) for p in points]
        pieces, start_step = [], 0.0
        for i, end_step in enumerate(ends):
            span = end_step - start_step
            pct = (t - start_step) / span if span != 0 else jnp.ones_like(t)
            pieces.append((t <= end_step, _anneal(anneal_strategy, values[i], values[i + 1], pct)))
            start_step = end_step
        out = pieces[-1][1]
        for cond, value in reversed(pieces[:-1]):
            out = jnp.where(cond, value, out)
        return out

    return schedule


def one_cycle(
    max_lr: Scalar,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""The 1cycle policy (torch's ``OneCycleLR``), its learning-rate curve.

    With :math:`\eta_{\text{init}} = \text{max\_lr} / \text{div\_factor}` and
    :math:`\eta_{\text{final}} = \eta_{\text{init}} / \text{final\_div\_factor}`,
    the value anneals (cosine or linear, ``anneal(a, b, p) = b + (a - b)(1 + \cos \pi p)/2``
    or :math:`a + (b - a) p`) between these points, with :math:`N` = ``total_steps``
    and :math:`s` = ``pct_start``:

    - two phases: :math:`\eta_{\text{init}} \to \text{max\_lr}` over steps
      :math:`[0, sN - 1]`, then :math:`\text{max\_lr} \to \eta_{\text{final}}` up to
      step :math:`N - 1`;
    - ``three_phase``: :math:`\eta_{\text{init}} \to \text{max\_lr} \to \eta_{\text{init}}`
      symmetrically over :math:`[0, 2sN - 2]`, then :math:`\to \eta_{\text{final}}`
      at step :math:`N - 1`.

    torch raises once stepped past ``total_steps``; this schedule holds
    :math:`\eta_{\text{final}}` from step :math:`N - 1` on (torch's scheduler would
    report an extrapolated value at step :math:`N`, which a run of :math:`N`
    updates never uses). See :func:`one_cycle_momentum` for the momentum curve.

    Args:
        max_lr: peak value.
        total_steps: number of steps of the cycle; or give ``epochs`` and
            ``steps_per_epoch``.
        epochs: number of epochs (with ``steps_per_epoch``).
        steps_per_epoch: steps per epoch (with ``epochs``).
        pct_start: fraction of the cycle spent increasing, a float in [0, 1].
        anneal_strategy: ``'cos'`` or ``'linear'``.
        div_factor: ``max_lr / div_factor`` is the initial value.
        final_div_factor: the initial value divided by it is the final value.
        three_phase: use torch's three-phase variant.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.one_cycle(1.0, total_steps=10, pct_start=0.5,
        ...                                anneal_strategy='linear', div_factor=10.0)
        >>> [round(float(sched(t)), 3) for t in (0, 2, 4, 9)]
        [0.1, 0.55, 1.0, 0.0]
    """
    total_steps = _resolve_total_steps(total_steps, epochs, steps_per_epoch)
    _check_one_cycle(pct_start, anneal_strategy)
    initial = max_lr / div_factor
    final = initial / final_div_factor
    points = [initial, max_lr, initial, final] if three_phase else [initial, max_lr, final]
    return _one_cycle_curve(total_steps, pct_start, anneal_strategy, three_phase, points)


def one_cycle_momentum(
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    base_momentum: Scalar = 0.85,
    max_momentum: Scalar = 0.95,
    three_phase: bool = False,
) -> Schedule:
    r"""The momentum curve of the 1cycle policy (``OneCycleLR`` with ``cycle_momentum=True``).

    Moves inversely to :func:`one_cycle`'s learning rate over the same phases:
    ``max_momentum`` :math:`\to` ``base_momentum`` while the rate rises, then
    back to ``max_momentum`` (and, with ``three_phase``, stays there during the
    final phase). torch writes it to ``momentum`` (SGD, RMSprop) or ``betas[0]``
    (Adam family); pass this schedule as that hyperparameter, e.g.
    ``fo.adam(betas=(fo.schedules.one_cycle_momentum(...), 0.999))``.

    Args:
        total_steps: number of steps of the cycle; or give ``epochs`` and
            ``steps_per_epoch``.
        epochs: number of epochs (with ``steps_per_epoch``).
        steps_per_epoch: steps per epoch (with ``epochs``).
        pct_start: fraction of the cycle spent increasing the learning rate.
        anneal_strategy: ``'cos'`` or ``'linear'``.
        base_momentum: momentum at the learning-rate peak.
        max_momentum: momentum at the start and the end.
        three_phase: use torch's three-phase variant.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.one_cycle_momentum(total_steps=10, pct_start=0.5,
        ...                                         anneal_strategy='linear')
        >>> [round(float(sched(t)), 3) for t in (0, 4, 9)]
        [0.95, 0.85, 0.95]
    """
    total_steps = _resolve_total_steps(total_steps, epochs, steps_per_epoch)
    _check_one_cycle(pct_start, anneal_strategy)
    if three_phase:
        points = [max_momentum, base_momentum, max_momentum, max_momentum]
    else:
        points = [max_momentum, base_momentum, max_momentum]
    return _one_cycle_curve(total_steps, pct_start, anneal_strategy, three_phase, points)


_CYCLIC_MODES = {
    "triangular": (lambda x: 1.0, "cycle"),
    "triangular2": (lambda x: 1 / (2.0 ** (x - 1)), "cycle"),
}


def _cyclic_shape(step_size_up: int, step_size_down: int | None, mode: str, gamma: Scalar,
                  scale_fn: Callable[[jax.Array], jax.Array] | None, scale_mode: str):
    """Returns ``fn(step) -> (position in the cycle in [0, 1], amplitude scale)``."""
    if scale_fn is None and mode not in ("triangular", "triangular2", "exp_range"):
        raise ValueError("mode is invalid and scale_fn is None")
    if scale_fn is not None and scale_mode not in ("cycle", "iterations"):
        raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
    if not step_size_up > 0:
        raise ValueError(f"Expected positive step_size_up, but got {step_size_up}")
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    total = up + down
    ratio = up / total
    if scale_fn is not None:
        fn, on = scale_fn, scale_mode
    elif mode == "exp_range":
        fn, on = (lambda x: as_float(gamma) ** x), "iterations"
    else:
        fn, on = _CYCLIC_MODES[mode]

    def shape(count):
        t = as_float(count_array(count))
        cycle = jnp.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        height = jnp.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
        scale = fn(cycle) if on == "cycle" else fn(t)
        return height, as_float(scale)

    return shape


def cyclic(
    base_lr: Scalar,
    max_lr: Scalar,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
    gamma: Scalar = 1.0,
    scale_fn: Callable[[jax.Array], jax.Array] | None = None,
    scale_mode: Literal["cycle", "iterations"] = "cycle",
) -> Schedule:
    r"""Cyclical learning rate, CLR (torch's ``CyclicLR``), its learning-rate curve.

    With :math:`S = u + d` the cycle length (``step_size_up + step_size_down``),
    :math:`c = \lfloor 1 + t / S \rfloor` the cycle number,
    :math:`x = 1 + t/S - c` and :math:`r = u / S`:

    .. math::

        h_t = \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases}, \qquad
        \eta_t = \eta_{\text{base}} + (\eta_{\max} - \eta_{\text{base}}) \, h_t \, s

    where the amplitude scale :math:`s` is 1 (``'triangular'``),
    :math:`2^{1 - c}` (``'triangular2'``), :math:`\gamma^t` (``'exp_range'``), or
    ``scale_fn(c)`` / ``scale_fn(t)`` (``scale_mode`` ``'cycle'`` / ``'iterations'``)
    when ``scale_fn`` is given; ``scale_fn`` must be jittable (jnp math).

    Args:
        base_lr: lower bound of the cycle.
        max_lr: upper bound of the cycle.
        step_size_up: steps of the increasing half.
        step_size_down: steps of the decreasing half (default ``step_size_up``).
        mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``; ignored
            when ``scale_fn`` is given.
        gamma: base of the ``'exp_range'`` scale.
        scale_fn: custom amplitude scale, a jittable function.
        scale_mode: what ``scale_fn`` receives: the cycle number or the step.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.cyclic(0.1, 1.0, step_size_up=2, mode='triangular2')
        >>> [round(float(sched(t)), 3) for t in range(7)]
        [0.1, 0.55, 1.0, 0.55, 0.1, 0.325, 0.55]
    """
    shape = _cyclic_shape(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)

    def schedule(count):
        height, scale = shape(count)
        base = as_float(base_lr)
        return base + (as_float(max_lr) - base) * height * scale

    return schedule


def cyclic_momentum(
    base_momentum: Scalar = 0.8,
    max_momentum: Scalar = 0.9,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
    gamma: Scalar = 1.0,
    scale_fn: Callable[[jax.Array], jax.Array] | None = None,
    scale_mode: Literal["cycle", "iterations"] = "cycle",
) -> Schedule:
    r"""The momentum curve of ``CyclicLR`` with ``cycle_momentum=True``.

    Cycles inversely to :func:`cyclic`, with :math:`h_t` and :math:`s` as there:

    .. math::

        \mu_t = \mu_{\max} - (\mu_{\max} - \mu_{\text{base}}) \, h_t \, s

    Args:
        base_momentum: momentum at the learning-rate peak.
        max_momentum: momentum at the start of each cycle.
        step_size_up: steps of the increasing half of the learning-rate cycle.
        step_size_down: steps of the decreasing half (default ``step_size_up``).
        mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``.
        gamma: base of the ``'exp_range'`` scale.
        scale_fn: custom amplitude scale, a jittable function.
        scale_mode: what ``scale_fn`` receives: the cycle number or the step.

    Returns:
        A schedule ``step -> value``.

    Example:
        >>> import funcopt as fo
        >>> sched = fo.schedules.cyclic_momentum(0.8, 0.9, step_size_up=2)
        >>> [round(float(sched(t)), 3) for t in range(5)]
        [0.9, 0.85, 0.8, 0.85, 0.9]
    """
    shape = _cyclic_shape(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)

    def schedule(count):
        height, scale = shape(count)
        top = as_float(max_momentum)
        return top - (top - as_float(base_momentum)) * height * scale

    return schedule
