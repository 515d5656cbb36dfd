r"""Mixed-precision training: low-precision parameters, full-precision master weights in the optimizer state.

The model computes with parameters in ``bfloat16`` (or ``float16``); an update
that is small next to a parameter would vanish when added in that precision
(:math:`1 + 10^{-3}` rounds back to :math:`1` in bfloat16). :func:`mixed_precision`
keeps a ``float32`` copy of the parameters (the master weights) in its state,
runs the optimizer on it, and returns the updates that move the low-precision
parameters to the master values rounded to their precision.
"""

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
from funcopt._src.hparams import OptimizerState
from funcopt._src.tree import floating_mask


class MixedPrecisionState(NamedTuple):
    """State of :func:`mixed_precision`.

    Attributes:
        master: the master weights, shaped like the parameters, floating leaves
            in ``master_dtype`` (read them with :func:`master_params`).
        inner_state: the inner optimizer's state (floating per-parameter arrays
            in ``state_dtype`` when one was given).
    """

    master: PyTree
    inner_state: Any


def _is_real_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def _cast(x: Any, dtype: Any) -> Any:
    """``x`` as ``dtype`` when it is an array of another dtype; anything else unchanged."""
    if dtype is None or not hasattr(x, "dtype") or jnp.dtype(x.dtype) == jnp.dtype(dtype):
        return x
    return jnp.asarray(x).astype(dtype)


def _per_param_mask(inner: GradientTransformation, master: PyTree, master_dtype: Any) -> Any:
    """Which leaves of ``inner.init(master)`` are per-parameter state (a bool per leaf).

    They are the floating leaves whose dtype follows the parameters' dtype
    (``exp_avg``, optax's ``mu``...), found by building the state for the
    parameters in two dtypes; hyperparameters, step counts and loss scales keep
    theirs. Should the inner ``init`` not accept the second dtype, the
    per-parameter leaves are taken to be the ``slots`` of each
    :class:`funcopt.OptimizerState` and, elsewhere, the non-scalar floating arrays.
    """
    other = jnp.float16 if jnp.dtype(master_dtype) != jnp.float16 else jnp.float32

    def as_other(m):
        return jax.ShapeDtypeStruct(jnp.shape(m), other if _is_real_float(m) else jnp.asarray(m).dtype)

    def is_float(x):
        return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)

    try:
        first = jax.eval_shape(inner.init, master)
        second = jax.eval_shape(inner.init, jax.tree.map(as_other, master))
        if jax.tree.structure(first) == jax.tree.structure(second):
            return jax.tree.map(lambda a, b: is_float(a) and a.dtype != b.dtype, first, second)
    except Exception:  # noqa: BLE001 - any failure of the probe falls back to the structural rule
        pass

    def node(x):
        if isinstance(x, OptimizerState):
            return x._replace(step=False, hparams=jax.tree.map(lambda _: False, x.hparams),
                              slots=jax.tree.map(is_float, x.slots), rng=None if x.rng is None else False)
        return is_float(x) and len(x.shape) > 0

    state = jax.eval_shape(inner.init, master)
    return jax.tree.map(node, state, is_leaf=lambda x: isinstance(x, OptimizerState))


def _dtypes_like(tree: Any, like: Any) -> Any:
    """``tree`` with each array leaf cast to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, ref: _cast(x, getattr(ref, "dtype", None)), tree, like)


def mixed_precision(
    inner: Any,
    param_dtype: Any = jnp.bfloat16,
    master_dtype: Any = jnp.float32,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Train low-precision parameters through full-precision master weights kept in the state.

    With :math:`\theta` the parameters (``param_dtype``), :math:`\theta_m` the
    master weights (``master_dtype``) and :math:`\mathrm{rd}` rounding to
    ``param_dtype``, each update computes

    .. math::

        u_m, s &= \text{inner}(\text{cast}_m(g), s, \theta_m) \\
        \theta_m &\leftarrow \theta_m + u_m \\
        u &= \mathrm{rd}(\theta_m) - \theta

    so ``apply_updates(params, u)`` gives exactly :math:`\mathrm{rd}(\theta_m)`
    (the difference of the two low-precision values is exact in
    ``master_dtype`` unless one is over :math:`2^{16}` times the other in
    magnitude, for bfloat16 in float32; and since :math:`u` is taken from the parameters given, any drift is undone
    at the next step). The updates are in ``master_dtype``; the parameters keep
    their dtype. The inner optimizer (funcopt or optax) sees only master-dtype
    gradients and weights, so its state is in ``master_dtype`` too, unless
    ``state_dtype`` is given: then its per-parameter arrays (those whose dtype
    follows the parameters', such as ``exp_avg`` or optax's ``mu``; not the
    hyperparameters, step counts or loss scale) are stored in ``state_dtype``
    and computed in ``master_dtype``. Every array of the state keeps its dtype
    from step to step.

    Pass the full-precision initial values to ``init`` to keep them in the
    master copy (``init(params32)``, then train ``params32`` cast to
    ``param_dtype``); given low-precision parameters, the master copy starts
    from their values. Only real floating leaves are rounded to ``param_dtype``;
    other leaves are updated in their own dtype. With ``param_dtype=None`` each
    leaf is rounded to the dtype of the parameter passed to ``update``.

    For float16 gradients, wrap the inner optimizer in :func:`funcopt.loss_scaled`
    (``mixed_precision(loss_scaled(adam(...)))``): the gradients are cast to
    ``master_dtype`` first and unscaled there.

    Args:
        inner: the optimizer run on the master weights (funcopt or optax).
        param_dtype: the dtype of the model's parameters, that the master
            weights are rounded to; ``None`` for each parameter's own dtype.
        master_dtype: the dtype of the master weights (and of the optimizer's
            arithmetic).
        state_dtype: the dtype to store the optimizer's per-parameter state in;
            ``None`` keeps ``master_dtype``.

    Returns:
        A :class:`funcopt.GradientTransformation` with :class:`MixedPrecisionState`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.mixed_precision(fo.sgd(lr=1e-3), param_dtype=jnp.bfloat16)
        >>> params = {'w': jnp.ones(2, jnp.bfloat16)}
        >>> state = tx.init(params)
        >>> for _ in range(5):
        ...     updates, state = tx.update({'w': jnp.ones(2, jnp.bfloat16)}, state, params)
        ...     params = fo.apply_updates(params, updates)
        >>> fo.master_params(state)['w'], params['w']
        (Array([0.995, 0.995], dtype=float32), Array([0.996094, 0.996094], dtype=bfloat16))

        Plain bfloat16 training would not have moved: each step of :math:`10^{-3}`
        is below half the spacing of bfloat16 numbers at 1 (:math:`2^{-8}`).
    """
    inner = with_extra_args_support(inner)
    master_dtype = jnp.dtype(master_dtype)
    param_dtype = None if param_dtype is None else jnp.dtype(param_dtype)
    state_dtype = None if state_dtype is None else jnp.dtype(state_dtype)

    def to_master(p):
        p = jnp.asarray(p)
        # a real copy, so the state never shares a buffer with the parameters
        return jnp.array(p, dtype=master_dtype if _is_real_float(p) else p.dtype, copy=True)

    def rounded(m, like_dtype):
        target = like_dtype if param_dtype is None else param_dtype
        return m.astype(target) if _is_real_float(m) else m.astype(like_dtype)

    def init(params):
        master = jax.tree.map(to_master, params)
        inner_state = inner.init(master)
        if state_dtype is not None:
            mask = _per_param_mask(inner, master, master_dtype)
            inner_state = jax.tree.map(lambda x, per_param: _cast(x, state_dtype) if per_param else x,
                                       inner_state, mask)
        return MixedPrecisionState(master=master, inner_state=inner_state)

    def update(grads, state, params=None, **extra):
        master = state.master
        if params is None:
            # the parameters a caller who applied every update holds
            params = jax.tree.map(lambda m: rounded(m, m.dtype) if param_dtype is not None else m, master)
        stored = state.inner_state
        # compute in the dtypes the inner optimizer creates, store back in the stored ones
        if state_dtype is None:
            inner_state = stored
        else:
            inner_state = _dtypes_like(stored, jax.eval_shape(inner.init, master))
        g = jax.tree.map(lambda x, m: jnp.asarray(x).astype(m.dtype), grads, master)
        inner_updates, inner_state = inner.update(g, inner_state, master, **extra)
        new_master = apply_updates(master, inner_updates)
        inner_state = _dtypes_like(inner_state, stored)

        def delta(m, p):
            p = jnp.asarray(p)
            target = rounded(m, p.dtype)
            return target.astype(m.dtype) - p.astype(m.dtype)

        updates = jax.tree.map(delta, new_master, params)
        return updates, MixedPrecisionState(master=new_master, inner_state=inner_state)

    return floating_only(GradientTransformation(init, update))


def master_params(state: PyTree, params: PyTree | None = None) -> PyTree:
    """The master weights held in the state of :func:`mixed_precision` (the first one found).

    Args:
        state: the state of :func:`mixed_precision`, or of a transform that contains it.
        params: the current parameters, optional: the leaves the master copy does not
            hold (those that are not floating, which are never trained) are
            taken from them; without them, :class:`funcopt.MaskedNode` stands there.

    Returns:
        The master weights, shaped like the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> state = fo.mixed_precision(fo.adam()).init({'w': jnp.ones(2, jnp.bfloat16)})
        >>> fo.master_params(state)['w'].dtype
        dtype('float32')
    """
    for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, MixedPrecisionState)):
        if isinstance(x, MixedPrecisionState):
            return x.master if params is None else merge_leaves(floating_mask(params), x.master, params)
    raise ValueError("this state holds no master weights (build the optimizer with funcopt.mixed_precision)")
