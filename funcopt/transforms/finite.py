"""Skip optimizer steps whose gradients are not finite."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt._src.base import GradientTransformation, floating_only, with_extra_args_support
from funcopt._src.hparams import OptimizerState, check_hparam
from funcopt._src.tree import tree_all_finite
from funcopt.transforms.clipping import HParamSpec


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`.

    Attributes:
        notfinite_count: consecutive non-finite steps up to the last one (0
            after a finite step).
        last_finite: whether the last gradients were all finite.
        total_notfinite: non-finite steps seen in all.
        inner_state: the inner optimizer's state.
        config: holds ``max_consecutive_errors`` (``inf`` for never); its
            ``step`` counts all calls, finite or not.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: Any
    config: OptimizerState


def apply_if_finite(inner: Any, max_consecutive_errors: int | float | None = None) -> GradientTransformation:
    r"""Run ``inner`` only on finite gradients: a step with a ``nan`` or ``inf`` is skipped.

    On a skipped step the updates are zeros and the inner state is left as it
    was (its step count too). With :math:`n` the number of consecutive
    non-finite steps including this one, the step is taken when

    .. math:: \text{all finite} \;\lor\; n > \text{max\_consecutive\_errors}

    This is ``optax.apply_if_finite``'s rule: after ``max_consecutive_errors``
    skipped steps in a row the wrapper gives up and applies the non-finite
    gradients, and keeps applying them until a finite step resets :math:`n`.
    ``None`` (the default) never gives up. ``max_consecutive_errors`` is a
    hyperparameter held in the state (``inf`` stands for ``None``). Under
    ``jit`` the inner update runs only on steps that are taken (``lax.cond``).

    Args:
        inner: the optimizer to protect (funcopt or optax).
        max_consecutive_errors: non-finite steps in a row to skip before
            giving up; ``None`` for never.

    Returns:
        A :class:`funcopt.GradientTransformation` with :class:`ApplyIfFiniteState`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.apply_if_finite(fo.sgd(lr=1.0))
        >>> params = {'w': jnp.ones(2)}
        >>> u, state = tx.update({'w': jnp.array([jnp.nan, 1.0])}, tx.init(params), params)
        >>> u['w'], int(state.total_notfinite)
        (Array([0., 0.], dtype=float32), 1)
    """
    if max_consecutive_errors is None:
        max_consecutive_errors = math.inf
    check_hparam(max_consecutive_errors, "max_consecutive_errors",
                 "max_consecutive_errors must be a non-negative integer or None, got {}",
                 lambda v: v == math.inf or (v >= 0 and float(v).is_integer()))
    inner = with_extra_args_support(inner)
    hps = HParamSpec({"max_consecutive_errors": max_consecutive_errors})

    def init(params):
        return ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
            total_notfinite=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
            config=hps.init(),
        )

    def update(updates, state, params=None, **extra):
        hp = hps.current(state.config)
        finite = tree_all_finite(updates)
        notfinite_count = jnp.where(finite, 0, state.notfinite_count + 1).astype(jnp.int32)
        take = jnp.logical_or(finite, notfinite_count.astype(hp["max_consecutive_errors"].dtype)
                              > hp["max_consecutive_errors"])

        def run_inner(inner_state):
            return inner.update(updates, inner_state, params, **extra)

        shapes = jax.eval_shape(run_inner, state.inner_state)[0]

        def skip(inner_state):
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), inner_state

        new_updates, inner_state = jax.lax.cond(take, run_inner, skip, state.inner_state)
        return new_updates, ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=finite,
            total_notfinite=state.total_notfinite + jnp.logical_not(finite).astype(jnp.int32),
            inner_state=inner_state,
            config=hps.advance(state.config, hp),
        )

    return floating_only(GradientTransformation(init, update))
