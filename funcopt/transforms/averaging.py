"""Averages of the parameters (EMA, SWA) and Lookahead's slow weights, kept in the optimizer state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt._src.base import (
    GradientTransformation,
    PyTree,
    apply_updates,
    floating_only,
    merge_leaves,
    with_extra_args_support,
)
from funcopt._src.hparams import HParam, OptimizerState, check_hparam, compute_dtype, float_dtype
from funcopt._src.tree import floating_mask, is_floating
from funcopt.transforms.clipping import HParamSpec, require_params


def _copy(tree: PyTree) -> PyTree:
    # A real copy, so the state never shares a buffer with the parameters (donation-safe).
    return jax.tree.map(lambda p: jnp.array(p, copy=True), tree)


def lerp(start: jax.Array, end: jax.Array, weight: jax.Array | float) -> jax.Array:
    r"""``torch.lerp(start, end, weight)``: the point ``weight`` of the way from ``start`` to ``end``.

    .. math::

        \text{lerp}(s, e, w) = \begin{cases}
            s + w (e - s) & |w| < 0.5 \\
            e - (e - s)(1 - w) & \text{otherwise}
        \end{cases}

    torch's two-sided form, exact at both ends (:math:`w = 0` gives :math:`s`,
    :math:`w = 1` gives :math:`e` for finite values), computed as torch does in
    the compute dtype (float32 for half precision, see
    :func:`funcopt._src.hparams.compute_dtype`) and rounded once to the
    dtype of ``start`` and ``end`` together. The averages of :func:`ema`,
    :func:`swa_update` and ``fo.optim.swa_utils`` all move by it.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.transforms.averaging import lerp
        >>> lerp(jnp.array([0.0, 4.0]), jnp.array([4.0, 0.0]), 0.25)
        Array([1., 3.], dtype=float32)
    """
    start, end = jnp.asarray(start), jnp.asarray(end)
    dtype = jnp.result_type(start, end)
    c = compute_dtype(dtype)
    s, e, w = start.astype(c), end.astype(c), jnp.asarray(weight).astype(c)
    diff = e - s
    return jnp.where(jnp.abs(w) < 0.5, s + w * diff, e - diff * (1 - w)).astype(dtype)


def running_mean(average: jax.Array, current: jax.Array, n_averaged: jax.Array | int) -> jax.Array:
    r"""The mean of ``n_averaged + 1`` values from the mean of the first ``n_averaged`` and the next one.

    .. math:: \bar x_{n+1} = \bar x_n + \frac{x - \bar x_n}{n + 1}

    torch's ``get_swa_avg_fn`` (the running mean of ``AveragedModel``), computed
    in the compute dtype and rounded once to the dtype of ``average`` and
    ``current`` together. :func:`swa_update` and ``fo.optim.swa_utils`` both
    use it.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.transforms.averaging import running_mean
        >>> running_mean(jnp.array([2.0]), jnp.array([8.0]), 2)
        Array([4.], dtype=float32)
    """
    average, current = jnp.asarray(average), jnp.asarray(current)
    dtype = jnp.result_type(average, current)
    c = compute_dtype(dtype)
    a = average.astype(c)
    return (a + (current.astype(c) - a) / (jnp.asarray(n_averaged).astype(c) + 1)).astype(dtype)


def _interpolate(avg: jax.Array, p: jax.Array, weight: jax.Array) -> jax.Array:
    """:func:`lerp` from ``avg`` toward ``p``; exactly ``p`` when ``weight == 1`` (a copy, even of inf)."""
    avg = jnp.asarray(avg)
    return jnp.where(weight == 1, jnp.asarray(p).astype(avg.dtype), lerp(avg, p, weight).astype(avg.dtype))


DECAY_MESSAGE = "Invalid decay value {} provided. Please provide a value in [0,1] range."
"""torch's ``ValueError`` message for an averaging decay outside :math:`[0, 1]` (``torch.optim.swa_utils``)."""


def _with_rest(selected: PyTree, params: PyTree | None) -> PyTree:
    """``selected`` (floating leaves, MaskedNode elsewhere) completed from ``params`` when given."""
    return selected if params is None else merge_leaves(floating_mask(params), selected, params)


def _find(state: PyTree, cls: type | tuple[type, ...], what: str) -> Any:
    for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, cls)):
        if isinstance(x, cls):
            return x
    raise ValueError(f"this state holds no {what}")


# --- EMA -----------------------------------------------------------------------------------------------


class EmaState(NamedTuple):
    """State of :func:`ema`.

    Attributes:
        ema: the average of the parameters, shaped like them.
        decay_product: the product of the decays so far (for the debiasing).
        config: holds the ``decay`` hyperparameter; its ``step`` counts updates.
    """

    ema: PyTree
    decay_product: jax.Array
    config: OptimizerState


def ema(decay: HParam = 0.999, debias: bool = True) -> GradientTransformation:
    r"""Keep an exponential moving average of the parameters; the updates pass unchanged.

    Put it last in a chain: it averages the parameters *after* this step's
    updates, :math:`\theta_t = \theta_{t-1} + u_t`. With :math:`d_t` the decay:

    .. math::

        \bar\theta_t = \bar\theta_{t-1} + w_t(\theta_t - \bar\theta_{t-1}), \qquad
        w_t = \begin{cases}
            \dfrac{1 - d_t}{1 - \prod_{s \le t} d_s} & \text{debias} \\[1ex]
            1 \text{ at } t = 1, \text{ else } 1 - d_t & \text{otherwise}
        \end{cases}

    With ``debias`` this is the zero-initialized EMA divided by its bias
    correction :math:`1 - \prod d_s` (Adam's correction), written so that the
    state always holds the corrected average. Without it, it is
    ``torch.optim.swa_utils.AveragedModel(multi_avg_fn=get_ema_multi_avg_fn(decay))``
    updated after each step: the first average is a copy of the parameters,
    later ones interpolate. Before the first update the average is a copy of
    the initial parameters. Read it with :func:`ema_params`. ``decay`` is a
    hyperparameter held in the state; ``update`` needs ``params``.

    Args:
        decay: :math:`d \in [0, 1)` (:math:`[0, 1]` without ``debias``).
        debias: divide out the zero-initialization bias (see above).

    Returns:
        A :class:`funcopt.GradientTransformation` with :class:`EmaState`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.chain(fo.sgd(lr=1.0), fo.ema(decay=0.5))
        >>> params = {'w': jnp.array([0.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({'w': jnp.array([-3.0])}, state, params)
        ...     params = fo.apply_updates(params, updates)
        >>> params['w'], fo.ema_params(state)['w']
        (Array([6.], dtype=float32), Array([5.], dtype=float32))
    """
    if debias:
        check_hparam(decay, "decay", "Invalid decay value {}: with debias it must be in [0, 1)",
                     lambda v: 0.0 <= v < 1.0)
    else:
        check_hparam(decay, "decay", DECAY_MESSAGE, lambda v: 0.0 <= v <= 1.0)
    hps = HParamSpec({"decay": decay})

    def init(params):
        return EmaState(ema=_copy(params), decay_product=jnp.ones([], float_dtype()), config=hps.init())

    def update(updates, state, params=None, **extra):
        del extra
        require_params(params, "ema")
        hp = hps.current(state.config)
        d = hp["decay"]
        product = state.decay_product * d.astype(state.decay_product.dtype)
        if debias:
            weight = (1 - d) / (1 - product)
        else:
            weight = jnp.where(state.config.step == 0, jnp.ones_like(d), 1 - d)
        new_params = apply_updates(params, updates)
        average = jax.tree.map(lambda a, p: _interpolate(a, p, weight), state.ema, new_params)
        return updates, EmaState(ema=average, decay_product=product, config=hps.advance(state.config, hp))

    return floating_only(GradientTransformation(init, update))


def ema_params(state: PyTree, params: PyTree | None = None) -> PyTree:
    """The parameter average held by :func:`ema` in ``state`` (or in a chain's state).

    Args:
        state: the state of :func:`ema` or of a chain containing it.
        params: the current parameters, optional: the leaves the average does not
            hold (those that are not floating, which are never averaged) are
            taken from them; without them, :class:`funcopt.MaskedNode` stands there.

    Returns:
        The averaged parameters, in the structure of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> state = fo.ema(0.9).init({'w': jnp.ones(2)})
        >>> fo.ema_params(state)['w']
        Array([1., 1.], dtype=float32)
    """
    return _with_rest(_find(state, EmaState, "EMA (build the optimizer with funcopt.ema)").ema, params)


# --- SWA -----------------------------------------------------------------------------------------------


class AveragedParams(NamedTuple):
    """A running average of parameters, ``torch.optim.swa_utils.AveragedModel`` as a value.

    Attributes:
        n_averaged: how many parameter sets went into the average (torch's ``n_averaged``).
        params: the average, shaped like the parameters.
    """

    n_averaged: jax.Array
    params: PyTree


def swa_init(params: PyTree) -> AveragedParams:
    """Start an average of ``params``: ``AveragedModel(model)`` (nothing averaged yet, a copy held).

    Args:
        params: the parameters.

    Returns:
        An :class:`AveragedParams` with ``n_averaged == 0``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> int(fo.swa_init({'w': jnp.zeros(2)}).n_averaged)
        0
    """
    return AveragedParams(n_averaged=jnp.zeros([], jnp.int32), params=_copy(params))


def _ema_weight(n_averaged: jax.Array, decay: jax.Array, dtype: Any) -> jax.Array:
    # 1 for the first average: it copies the parameters, as AveragedModel does
    return jnp.where(n_averaged == 0, jnp.ones([], dtype), 1 - decay.astype(dtype))


def swa_update(average: AveragedParams, params: PyTree, decay: HParam | None = None) -> AveragedParams:
    r"""Add ``params`` to the average: ``AveragedModel.update_parameters(model)``.

    With :math:`n` = ``n_averaged``, the first call copies the parameters and
    later calls compute

    .. math::

        \bar\theta &\leftarrow \bar\theta + \frac{\theta - \bar\theta}{n + 1}
            \quad \text{(decay None: torch's default running mean)} \\
        \bar\theta &\leftarrow \bar\theta + (1 - d)(\theta - \bar\theta)
            \quad \text{(torch's get\_ema\_multi\_avg\_fn(d))}

    then :math:`n \leftarrow n + 1`.

    Args:
        average: the running average.
        params: the parameters to add.
        decay: ``None`` for the equal-weight mean (SWA), or an EMA decay in [0, 1].

    Returns:
        The new :class:`AveragedParams`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> avg = fo.swa_init({'w': jnp.zeros(1)})
        >>> for x in [1.0, 2.0, 6.0]:
        ...     avg = fo.swa_update(avg, {'w': jnp.array([x])})
        >>> avg.params['w'], int(avg.n_averaged)
        (Array([3.], dtype=float32), 3)
    """
    if decay is not None:
        if callable(decay):
            raise TypeError("swa_update: decay must be a number or a 0-d array, not a schedule")
        check_hparam(decay, "decay", DECAY_MESSAGE, lambda v: 0.0 <= v <= 1.0)
        decay = jnp.asarray(decay)

    def leaf(a, p):
        if not is_floating(a):
            return a  # not averaged (see funcopt.floating_only): the value held since swa_init
        a = jnp.asarray(a)
        if decay is not None:
            return _interpolate(a, p, _ema_weight(average.n_averaged, decay, compute_dtype(a.dtype)))
        first = average.n_averaged == 0
        return jnp.where(first, jnp.asarray(p).astype(a.dtype), running_mean(a, p, average.n_averaged).astype(a.dtype))

    return AveragedParams(average.n_averaged + 1, jax.tree.map(leaf, average.params, params))


class SwaState(NamedTuple):
    """State of :func:`swa`.

    Attributes:
        average: the running average of the parameters.
        config: holds ``swa_start``, ``swa_freq`` (and ``decay`` in EMA mode);
            its ``step`` counts updates.
    """

    average: AveragedParams
    config: OptimizerState


def swa(swa_start: HParam = 0, swa_freq: HParam = 1, decay: HParam | None = None) -> GradientTransformation:
    r"""Stochastic weight averaging of the parameters along training; the updates pass unchanged.

    Put it last in a chain. After update :math:`t` (counting from 1), when

    .. math:: t > \text{swa\_start} \quad\text{and}\quad (t - \text{swa\_start}) \bmod \text{swa\_freq} = 0

    the parameters after the update are added to the average with
    :func:`swa_update` (the running mean of ``AveragedModel``, or its EMA when
    ``decay`` is given). ``swa_freq`` equal to the steps per epoch averages
    once per epoch, as the torch recipe does. Read the average with
    :func:`swa_params`. ``swa_start``, ``swa_freq`` and ``decay`` are
    hyperparameters held in the state (the names of torchcontrib's SWA);
    ``update`` needs ``params``.

    Args:
        swa_start: updates to make before averaging starts.
        swa_freq: average every this many updates (a positive integer).
        decay: ``None`` for the equal-weight mean, or an EMA decay in [0, 1].

    Returns:
        A :class:`funcopt.GradientTransformation` with :class:`SwaState`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.chain(fo.sgd(lr=1.0), fo.swa(swa_start=1))
        >>> params = {'w': jnp.array([0.0])}
        >>> state = tx.init(params)
        >>> for _ in range(3):
        ...     updates, state = tx.update({'w': jnp.array([-1.0])}, state, params)
        ...     params = fo.apply_updates(params, updates)
        >>> params['w'], fo.swa_params(state)['w']
        (Array([3.], dtype=float32), Array([2.5], dtype=float32))
    """
    check_hparam(swa_start, "swa_start", "swa_start must be a non-negative integer, got {}",
                 lambda v: v >= 0 and float(v).is_integer())
    check_hparam(swa_freq, "swa_freq", "swa_freq must be a positive integer, got {}",
                 lambda v: v >= 1 and float(v).is_integer())
    spec: dict[str, Any] = {"swa_start": swa_start, "swa_freq": swa_freq}
    if decay is not None:
        check_hparam(decay, "decay", DECAY_MESSAGE, lambda v: 0.0 <= v <= 1.0)
        spec["decay"] = decay
    hps = HParamSpec(spec)

    def init(params):
        return SwaState(average=swa_init(params), config=hps.init())

    def update(updates, state, params=None, **extra):
        del extra
        require_params(params, "swa")
        hp = hps.current(state.config)
        t = state.config.step + 1
        start = jnp.round(hp["swa_start"]).astype(jnp.int32)
        freq = jnp.round(hp["swa_freq"]).astype(jnp.int32)
        due = (t > start) & ((t - start) % freq == 0)
        avg = state.average
        new_avg = swa_update(avg, apply_updates(params, updates), hp.get("decay"))
        avg = jax.tree.map(lambda new, old: jnp.where(due, new, old), new_avg, avg)
        return updates, SwaState(average=avg, config=hps.advance(state.config, hp))

    return floating_only(GradientTransformation(init, update))


def swa_params(state: PyTree, params: PyTree | None = None) -> PyTree:
    """The averaged parameters held by :func:`swa` in ``state`` (or an :class:`AveragedParams`).

    Args:
        state: the state of :func:`swa`, of a chain containing it, or an :class:`AveragedParams`.
        params: the current parameters, optional: the leaves the average does not
            hold (those that are not floating, which are never averaged) are
            taken from them; without them, :class:`funcopt.MaskedNode` stands there.

    Returns:
        The averaged parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.swa_params(fo.swa().init({'w': jnp.ones(1)}))['w']
        Array([1.], dtype=float32)
    """
    found = _find(state, AveragedParams, "parameter average (build the optimizer with funcopt.swa)")
    return _with_rest(found.params, params)


# --- Lookahead -----------------------------------------------------------------------------------------


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    Attributes:
        slow_params: the slow weights :math:`\\phi`, shaped like the parameters.
        fast_state: the fast (inner) optimizer's state.
        config: holds ``sync_period`` and ``slow_step_size``; its ``step`` counts fast steps.
    """

    slow_params: PyTree
    fast_state: Any
    config: OptimizerState


def lookahead(fast: Any, sync_period: HParam = 6, slow_step_size: HParam = 0.5) -> GradientTransformation:
    r"""Lookahead (Zhang et al. 2019): ``fast`` makes k steps, then the weights move toward them.

    The parameters given to ``update`` are the fast weights :math:`\theta`; the
    slow weights :math:`\phi` live in the state, starting at the initial
    parameters. Each update makes one fast step; every ``sync_period``-th
    (:math:`k`) one then does

    .. math::

        \phi &\leftarrow \phi + \alpha(\theta - \phi) \\
        \theta &\leftarrow \phi

    and the returned updates take the parameters to the new :math:`\phi`
    (``phi - params``, so up to one rounding). The fast optimizer's state
    carries on across synchronizations, as in the paper's experiments.
    ``sync_period`` and ``slow_step_size`` are hyperparameters held in the
    state; ``update`` needs ``params``. Read :math:`\phi` with
    :func:`lookahead_slow_params`; after a synchronization the parameters are
    the slow weights.

    Args:
        fast: the inner optimizer (funcopt or optax).
        sync_period: :math:`k`, fast steps per synchronization (a positive integer).
        slow_step_size: :math:`\alpha \in [0, 1]`.

    Returns:
        A :class:`funcopt.GradientTransformation` with :class:`LookaheadState`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.lookahead(fo.sgd(lr=1.0), sync_period=2, slow_step_size=0.5)
        >>> params = {'w': jnp.array([0.0])}
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     updates, state = tx.update({'w': jnp.array([-1.0])}, state, params)
        ...     params = fo.apply_updates(params, updates)
        >>> params['w']
        Array([1.], dtype=float32)
    """
    check_hparam(sync_period, "sync_period", "Invalid sync_period value: {}",
                 lambda v: v >= 1 and float(v).is_integer())
    check_hparam(slow_step_size, "slow_step_size", "Invalid slow_step_size value: {}",
                 lambda v: 0.0 <= v <= 1.0)
    fast = with_extra_args_support(fast)
    hps = HParamSpec({"sync_period": sync_period, "slow_step_size": slow_step_size})

    def init(params):
        return LookaheadState(slow_params=_copy(params), fast_state=fast.init(params), config=hps.init())

    def update(updates, state, params=None, **extra):
        require_params(params, "lookahead")
        hp = hps.current(state.config)
        fast_updates, fast_state = fast.update(updates, state.fast_state, params, **extra)
        t = state.config.step + 1
        sync = t % jnp.round(hp["sync_period"]).astype(jnp.int32) == 0
        fast_params = apply_updates(params, fast_updates)

        def move_slow(slow, theta):
            slow, theta = jnp.asarray(slow), jnp.asarray(theta)
            c = compute_dtype(slow.dtype)
            s_c = slow.astype(c)
            return (s_c + hp["slow_step_size"].astype(c) * (theta.astype(c) - s_c)).astype(slow.dtype)

        def jump(new_slow, p, u):
            c = compute_dtype(new_slow.dtype)
            u = jnp.asarray(u)
            return jnp.where(sync, (new_slow.astype(c) - jnp.asarray(p).astype(c)).astype(u.dtype), u)

        new_slow = jax.tree.map(move_slow, state.slow_params, fast_params)
        new_updates = jax.tree.map(jump, new_slow, params, fast_updates)
        slow_params = jax.tree.map(lambda n, s: jnp.where(sync, n, s), new_slow, state.slow_params)
        return new_updates, LookaheadState(slow_params=slow_params, fast_state=fast_state,
                                           config=hps.advance(state.config, hp))

    return floating_only(GradientTransformation(init, update))


def lookahead_slow_params(state: PyTree, params: PyTree | None = None) -> PyTree:
    """The slow weights :math:`\\phi` held by :func:`lookahead` in ``state`` (or a chain's state).

    Args:
        state: the state of :func:`lookahead` or of a chain containing it.
        params: the current parameters, optional: the leaves the slow weights does not
            hold (those that are not floating, which are never trained) are
            taken from them; without them, :class:`funcopt.MaskedNode` stands there.

    Returns:
        The slow weights, in the structure of the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> state = fo.lookahead(fo.sgd(lr=0.1)).init({'w': jnp.ones(2)})
        >>> fo.lookahead_slow_params(state)['w']
        Array([1., 1.], dtype=float32)
    """
    found = _find(state, LookaheadState, "slow weights (build the optimizer with funcopt.lookahead)")
    return _with_rest(found.slow_params, params)
