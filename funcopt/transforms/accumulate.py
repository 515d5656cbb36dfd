"""Gradient accumulation: one optimizer step every k micro-batches."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt._src.base import GradientTransformation, PyTree, floating_only, with_extra_args_support
from funcopt._src.hparams import HParam, OptimizerState, check_hparam, compute_dtype
from funcopt.transforms.clipping import HParamSpec


class MultiStepsState(NamedTuple):
    """State of :func:`multi_steps`.

    Attributes:
        mini_step: micro-batches accumulated since the last inner update (0 to k-1).
        gradient_step: inner updates made so far.
        acc_grads: the accumulator (the running mean, or the sum, of the
            micro-batch gradients), shaped like the parameters.
        inner_state: the inner optimizer's state.
        config: holds the ``every_k`` hyperparameter; its ``step`` counts micro-batches.
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    acc_grads: PyTree
    inner_state: Any
    config: OptimizerState

    def has_updated(self) -> jax.Array:
        """Whether the last ``update`` ran the inner optimizer."""
        return jnp.logical_and(self.mini_step == 0, self.gradient_step > 0)


def _check_every_k(v: float) -> bool:
    return v >= 1 and float(v).is_integer()


def multi_steps(inner: Any, every_k: HParam, reduce: str = "mean", *,
                accumulator_dtype: Any = None) -> GradientTransformation:
    r"""Accumulate gradients over ``every_k`` micro-batches, then step ``inner`` once.

    With micro-batch gradients :math:`g_1, \ldots, g_k`, the k-th call runs
    the inner optimizer on

    .. math::

        \bar g = \frac{1}{k}\sum_{j=1}^{k} g_j \quad (\text{reduce='mean'}), \qquad
        \bar g = \sum_{j=1}^{k} g_j \quad (\text{reduce='sum'})

    and returns its updates; the other calls return zero updates and leave
    the inner state alone (the same semantics as ``optax.MultiSteps``). The
    state holds one accumulator shaped like the parameters and nothing else
    of that size; in 'mean' mode it holds the running mean
    :math:`a_j = a_{j-1} + (g_j - a_{j-1})/j`, which keeps its magnitude that
    of one gradient. Under ``jit`` the inner update runs only on the k-th call
    (``lax.cond``).

    ``every_k`` is a hyperparameter held in the state (a whole number
    :math:`\ge 1`; a schedule is evaluated at the count of inner updates).

    Args:
        inner: the optimizer to step (funcopt or optax).
        every_k: micro-batches per inner step.
        reduce: ``'mean'`` or ``'sum'`` of the micro-batch gradients.
        accumulator_dtype: dtype of the accumulator; by default each leaf's
            parameter dtype. Use float32 for half-precision parameters.

    Returns:
        A :class:`funcopt.GradientTransformation` with :class:`MultiStepsState`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.multi_steps(fo.sgd(lr=1.0), every_k=2)
        >>> params = {'w': jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> u, state = tx.update({'w': jnp.array([1.0, 2.0])}, state, params)
        >>> u['w']
        Array([0., 0.], dtype=float32)
        >>> u, state = tx.update({'w': jnp.array([3.0, 2.0])}, state, params)
        >>> u['w']
        Array([-2., -2.], dtype=float32)
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    check_hparam(every_k, "every_k", "every_k must be a positive integer, got {}", _check_every_k)
    inner = with_extra_args_support(inner)
    hps = HParamSpec({"every_k": every_k})

    def acc_like(p):
        p = jnp.asarray(p)
        return jnp.zeros(p.shape, p.dtype if accumulator_dtype is None else accumulator_dtype)

    def init(params):
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=jnp.zeros([], jnp.int32),
            acc_grads=jax.tree.map(acc_like, params),
            inner_state=inner.init(params),
            config=hps.init(),
        )

    def update(updates, state, params=None, **extra):
        hp = hps.current(state.config, step=state.gradient_step)
        k = jnp.round(hp["every_k"]).astype(jnp.int32)
        n = state.mini_step + 1

        def add(a, g):
            c = compute_dtype(a.dtype)
            a_c, g_c = a.astype(c), jnp.asarray(g).astype(c)
            if reduce == "mean":
                return (a_c + (g_c - a_c) / n.astype(c)).astype(a.dtype)
            return (a_c + g_c).astype(a.dtype)

        acc = jax.tree.map(add, state.acc_grads, updates)
        emit = n >= k

        def run_inner(acc, inner_state):
            grads = jax.tree.map(lambda a, g: a.astype(jnp.asarray(g).dtype), acc, updates)
            new_updates, new_inner = inner.update(grads, inner_state, params, **extra)
            return new_updates, new_inner, jax.tree.map(jnp.zeros_like, acc)

        shapes = jax.eval_shape(run_inner, acc, state.inner_state)[0]

        def hold(acc, inner_state):
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            return zeros, inner_state, acc

        new_updates, inner_state, acc = jax.lax.cond(emit, run_inner, hold, acc, state.inner_state)
        return new_updates, MultiStepsState(
            mini_step=jnp.where(emit, 0, n).astype(jnp.int32),
            gradient_step=state.gradient_step + emit.astype(jnp.int32),
            acc_grads=acc,
            inner_state=inner_state,
            config=hps.advance(state.config, hp),
        )

    return floating_only(GradientTransformation(init, update))
