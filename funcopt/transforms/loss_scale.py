"""Loss scaling for mixed-precision training, as pure values: static and dynamic (MindSpore's rules)."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt._src.base import GradientTransformation, PyTree, floating_only, with_extra_args_support
from funcopt._src.hparams import OptimizerState, evaluate_hparams
from funcopt._src.tree import tree_all_finite


def _scale_tree(tree: PyTree, factor: jax.Array) -> PyTree:
    # As MindSpore does: the factor is cast to each input's dtype first.
    return jax.tree.map(lambda x: jnp.asarray(x) * factor.astype(jnp.asarray(x).dtype), tree)


def _unscale_tree(tree: PyTree, scale: jax.Array) -> PyTree:
    # x / scale, never through 1 / scale: above 2**126 that reciprocal is subnormal in float32, XLA on
    # CPU flushes it to zero (and turns a vector division into a multiply by it), and every gradient
    # would silently become zero. Split scale = m * 2**e: shift the exponent exactly with ldexp, then
    # divide by m in [0.5, 1) (exact for the usual power-of-two scales).
    def unscale(x):
        x = jnp.asarray(x)
        m, e = jnp.frexp(scale.astype(x.dtype))
        return jnp.ldexp(x, -e) / m

    return jax.tree.map(unscale, tree)


class StaticLossScale(NamedTuple):
    """A fixed loss scale (MindSpore's ``FixedLossScaleManager`` / ``amp.StaticLossScaler``).

    Build it with :func:`static_loss_scale`.

    Attributes:
        scale_value: the loss scale, a float32 0-d array.
    """

    scale_value: jax.Array

    @property
    def loss_scale(self) -> jax.Array:
        """The current loss scale."""
        return self.scale_value

    def scale(self, tree: PyTree) -> PyTree:
        """Multiply a loss (or any pytree) by the loss scale, in each leaf's dtype."""
        return _scale_tree(tree, self.scale_value)

    def unscale(self, tree: PyTree) -> PyTree:
        """Divide gradients (or any pytree) by the loss scale."""
        return _unscale_tree(tree, self.scale_value)

    def adjust(self, grads_finite: jax.Array) -> StaticLossScale:
        """The loss scale for the next step: unchanged."""
        del grads_finite
        return self


class DynamicLossScale(NamedTuple):
    r"""A loss scale that adapts to overflows (MindSpore's ``DynamicLossScaleManager``).

    Build it with :func:`dynamic_loss_scale`. ``adjust(grads_finite)`` returns
    the scale for the next step, by MindSpore's rules: on an overflow the scale
    is divided by ``scale_factor`` (never below 1) and the run of good steps
    restarts; after ``scale_window`` good steps in a row it is multiplied by
    ``scale_factor`` (unless that would overflow float32) and the run restarts.

    Attributes:
        scale_value: the loss scale, a float32 0-d array.
        counter: good steps since the last change of the run, modulo ``scale_window``.
        config: holds the ``scale_factor`` and ``scale_window`` hyperparameters
            (see :func:`funcopt.set_hparams`); its ``step`` counts ``adjust`` calls.
    """

    scale_value: jax.Array
    counter: jax.Array
    config: OptimizerState

    @property
    def loss_scale(self) -> jax.Array:
        """The current loss scale."""
        return self.scale_value

    def scale(self, tree: PyTree) -> PyTree:
        """Multiply a loss (or any pytree) by the loss scale, in each leaf's dtype."""
        return _scale_tree(tree, self.scale_value)

    def unscale(self, tree: PyTree) -> PyTree:
        """Divide gradients (or any pytree) by the loss scale."""
        return _unscale_tree(tree, self.scale_value)

    def adjust(self, grads_finite: jax.Array) -> DynamicLossScale:
        r"""The loss scale for the next step, given whether this step's gradients were finite.

        With :math:`s` the scale, :math:`f` the factor, :math:`w` the window
        and :math:`c` the counter:

        .. math::

            s &\leftarrow \begin{cases}
                \max(1, s / f) & \text{overflow} \\
                s f & \text{finite, } c = w - 1 \text{ and } s f < \infty \\
                s & \text{otherwise}
            \end{cases} \\
            c &\leftarrow \begin{cases} 0 & \text{overflow} \\ (c + 1) \bmod w & \text{finite} \end{cases}
        """
        finite = jnp.asarray(grads_finite, bool)
        hp = self.config.hparams
        factor = hp["scale_factor"].astype(self.scale_value.dtype)
        window = jnp.round(hp["scale_window"]).astype(jnp.int32)
        grown = self.scale_value * factor
        on_good = jnp.where((self.counter == window - 1) & jnp.isfinite(grown), grown, self.scale_value)
        on_overflow = jnp.maximum(jnp.ones_like(self.scale_value), self.scale_value / factor)
        scale_value = jnp.where(finite, on_good, on_overflow)
        counter = jnp.where(finite, (self.counter + 1) % window, 0).astype(jnp.int32)
        config = OptimizerState(self.config.step + 1, self.config.hparams, self.config.slots)
        return DynamicLossScale(scale_value, counter, config)


LossScale = StaticLossScale | DynamicLossScale


def _positive_number(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"The argument '{name}' must be a number, but got {type(v).__name__}")


def static_loss_scale(loss_scale: float = 128.0) -> StaticLossScale:
    """A fixed loss scale, MindSpore's ``FixedLossScaleManager(loss_scale=128.0)``.

    Args:
        loss_scale: the scale, at least 1.

    Returns:
        A :class:`StaticLossScale`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> ls = fo.static_loss_scale(1024.0)
        >>> ls.scale(jnp.array(0.5)), ls.unscale({'w': jnp.array([2048.0])})['w']
        (Array(512., dtype=float32), Array([2.], dtype=float32))
    """
    _positive_number(loss_scale, "loss_scale")
    if loss_scale < 1:
        raise ValueError(f"The argument 'loss_scale' must be >= 1, but got {loss_scale}")
    return StaticLossScale(jnp.asarray(loss_scale, jnp.float32))


def dynamic_loss_scale(init_loss_scale: float = 2.0**24, scale_factor: float = 2,
                       scale_window: int = 2000) -> DynamicLossScale:
    """A dynamic loss scale with MindSpore ``DynamicLossScaleManager``'s arguments and defaults.

    See :meth:`DynamicLossScale.adjust` for the rule. It follows the manager's
    ``update_loss_scale`` step for step, except that a scale that would
    overflow float32 is kept instead of growing, and there is no error after
    1000 overflows in a row (MindSpore's manager raises one).

    Args:
        init_loss_scale: the first scale, at least 1.
        scale_factor: divides the scale on overflow and multiplies it after a
            window of good steps; positive.
        scale_window: good steps in a row before the scale grows; a positive integer.

    Returns:
        A :class:`DynamicLossScale`.

    Example:
        >>> import funcopt as fo
        >>> ls = fo.dynamic_loss_scale(init_loss_scale=8.0, scale_window=2)
        >>> for finite in [True, True, False, True]:
        ...     ls = ls.adjust(finite)
        ...     print(float(ls.loss_scale), int(ls.counter))
        8.0 1
        16.0 0
        8.0 0
        8.0 1
    """
    _positive_number(init_loss_scale, "init_loss_scale")
    _positive_number(scale_factor, "scale_factor")
    if init_loss_scale < 1.0:
        raise ValueError(f"The argument 'init_loss_scale' must be > 1, but got {init_loss_scale}")
    if isinstance(scale_window, bool) or not isinstance(scale_window, numbers.Integral) or scale_window <= 0:
        raise ValueError(f"The argument 'scale_window' must be a positive int, but got {scale_window}")
    if scale_factor <= 0:
        raise ValueError(f"The argument 'scale_factor' must be > 0, but got {scale_factor}")
    step = jnp.zeros([], jnp.int32)
    hparams = evaluate_hparams({"scale_factor": scale_factor, "scale_window": scale_window}, step)
    config = OptimizerState(step, hparams, {})
    return DynamicLossScale(jnp.asarray(init_loss_scale, jnp.float32), jnp.zeros([], jnp.int32), config)


class LossScaledState(NamedTuple):
    """State of :func:`loss_scaled`.

    Attributes:
        loss_scale: the loss scale to multiply the next loss by.
        overflow: whether the last gradients were not finite.
        inner_state: the inner optimizer's state.
    """

    loss_scale: LossScale
    overflow: jax.Array
    inner_state: Any


def loss_scaled(inner: Any, loss_scale: LossScale | None = None,
                drop_overflow_update: bool = True) -> GradientTransformation:
    r"""Unscale loss-scaled gradients, skip overflowed steps and adjust the scale.

    The gradients given to ``update`` are those of ``loss_scale.scale(loss)``,
    computed with the scale held in the state (read it with
    :func:`get_loss_scale`). Each update

    .. math::

        g &\leftarrow g / s \\
        \text{finite} &= \text{all entries of } g \text{ finite} \\
        u &= \text{inner}(g) \text{ if finite (or not drop\_overflow\_update), else } 0 \\
        s &\leftarrow \text{loss\_scale.adjust(finite)}

    which is what MindSpore's ``TrainOneStepWithLossScaleCell`` does with a
    loss scale manager. On a skipped step the inner state is left unchanged.

    Args:
        inner: the optimizer (funcopt or optax).
        loss_scale: a :class:`DynamicLossScale` or :class:`StaticLossScale`;
            by default :func:`dynamic_loss_scale` with MindSpore's defaults.
        drop_overflow_update: skip the inner step when the gradients
            overflow (MindSpore's ``drop_overflow_update``; always True with
            its dynamic manager).

    Returns:
        A :class:`funcopt.GradientTransformation` with :class:`LossScaledState`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.loss_scaled(fo.sgd(lr=0.1), fo.dynamic_loss_scale(2.0**10))
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> loss_fn = lambda p: jnp.sum(p['w'] ** 2)
        >>> grads = jax.grad(lambda p: fo.get_loss_scale(state).scale(loss_fn(p)))(params)
        >>> updates, state = tx.update(grads, state, params)
        >>> fo.apply_updates(params, updates)['w']
        Array([0.8, 1.6], dtype=float32)
    """
    if loss_scale is None:
        loss_scale = dynamic_loss_scale()
    if not isinstance(loss_scale, (StaticLossScale, DynamicLossScale)):
        raise TypeError("loss_scale must be a StaticLossScale or DynamicLossScale, "
                        f"got {type(loss_scale).__name__}")
    inner = with_extra_args_support(inner)

    def init(params):
        return LossScaledState(loss_scale=loss_scale, overflow=jnp.array(False),
                               inner_state=inner.init(params))

    def update(updates, state, params=None, **extra):
        grads = state.loss_scale.unscale(updates)
        finite = tree_all_finite(grads)

        def run_inner(inner_state):
            return inner.update(grads, inner_state, params, **extra)

        if drop_overflow_update:
            shapes = jax.eval_shape(run_inner, state.inner_state)[0]

            def skip(inner_state):
                return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), inner_state

            new_updates, inner_state = jax.lax.cond(finite, run_inner, skip, state.inner_state)
        else:
            new_updates, inner_state = run_inner(state.inner_state)
        return new_updates, LossScaledState(
            loss_scale=state.loss_scale.adjust(finite),
            overflow=jnp.logical_not(finite),
            inner_state=inner_state,
        )

    return floating_only(GradientTransformation(init, update))


def get_loss_scale(state: PyTree) -> LossScale:
    """The loss scale held in an optimizer state (the first one found), to scale the next loss.

    Args:
        state: the state of :func:`loss_scaled`, or of a chain containing it.

    Returns:
        The :class:`DynamicLossScale` or :class:`StaticLossScale`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.chain(fo.clip_by_global_norm(1.0), fo.loss_scaled(fo.sgd(lr=0.1)))
        >>> float(fo.get_loss_scale(tx.init({'w': jnp.zeros(2)})).loss_scale)
        16777216.0
    """
    def is_scale(x):
        return isinstance(x, (StaticLossScale, DynamicLossScale))

    for x in jax.tree.leaves(state, is_leaf=is_scale):
        if is_scale(x):
            return x
    raise ValueError("this state holds no loss scale (build the optimizer with funcopt.loss_scaled)")
