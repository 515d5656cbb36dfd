"""Gradient clipping transforms, and the hyperparameter bookkeeping the transforms share."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from funcopt._src.base import GradientTransformation, PyTree, floating_only
from funcopt._src.hparams import (
    HParam,
    OptimizerState,
    check_hparam,
    compute_dtype,
    concrete_value,
    evaluate_hparams,
    float_dtype,
    has_schedule,
)
from funcopt._src.packing import refuse_packed
from funcopt._src.tree import floating_leaves, tree_norm


class HParamSpec:
    """The numeric hyperparameters of a transform, held as arrays in an :class:`OptimizerState`.

    ``init()`` evaluates them at step 0; ``current(state)`` returns the values
    for the coming update: the ones held in the state (so that
    :func:`funcopt.set_hparams` takes effect), except that scheduled
    hyperparameters are recomputed from their schedule at ``state.step`` (or at
    ``step`` when given).

    Example:
        >>> import funcopt as fo
        >>> from funcopt.transforms.clipping import HParamSpec
        >>> spec = HParamSpec({'max_norm': 1.0, 'scale': lambda step: 2.0 * step})
        >>> state = fo.set_hparams(spec.init(), max_norm=3.0)
        >>> state = HParamSpec.advance(state, spec.current(state))
        >>> {k: float(v) for k, v in spec.current(state).items()}
        {'max_norm': 3.0, 'scale': 2.0}
    """

    def __init__(self, spec: Mapping[str, Any]):
        self.spec = dict(spec)
        self.scheduled = {k: v for k, v in self.spec.items() if has_schedule(v)}

    def init(self) -> OptimizerState:
        step = jnp.zeros([], jnp.int32)
        return OptimizerState(step=step, hparams=evaluate_hparams(self.spec, step), slots={})

    def current(self, state: OptimizerState, step: jax.Array | None = None) -> dict[str, Any]:
        if not self.scheduled:
            return dict(state.hparams)
        fresh = evaluate_hparams(self.scheduled, state.step if step is None else step)
        return {**state.hparams, **fresh}

    @staticmethod
    def advance(state: OptimizerState, hparams: Mapping[str, Any]) -> OptimizerState:
        """The state after one more update with ``hparams``."""
        return OptimizerState(step=state.step + 1, hparams=dict(hparams), slots=state.slots)


def require_params(params: PyTree | None, name: str) -> None:
    """Raise the ``ValueError`` of a transform whose ``update`` needs ``params`` and got none.

    Example:
        >>> from funcopt.transforms.clipping import require_params
        >>> require_params(None, 'ema')
        Traceback (most recent call last):
        ...
        ValueError: ema: params must be given to update()
    """
    if params is None:
        raise ValueError(f"{name}: params must be given to update()")


def _real_dtype(dtype: Any) -> jnp.dtype:
    c = compute_dtype(dtype)
    return jnp.finfo(c).dtype if jnp.issubdtype(c, jnp.complexfloating) else c


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_norm_type(norm_type: Any) -> float:
    """``norm_type`` as a float, checked as torch checks the ``p`` of a vector norm.

    Raises:
        TypeError: not a number or a string.
        ValueError: a string other than ``'inf'``, ``nan``, or a negative number other than ``-inf``.

    Example:
        >>> from funcopt.transforms.clipping import check_norm_type
        >>> check_norm_type('inf'), check_norm_type(2)
        (inf, 2.0)
    """
    if isinstance(norm_type, bool) or not isinstance(norm_type, (numbers.Real, str)):
        raise TypeError(f"norm_type must be a number or 'inf', got {type(norm_type).__name__}")
    try:
        value = float(norm_type)
    except ValueError:
        raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}") from None
    if math.isnan(value) or value < 0 and value != -math.inf:
        raise ValueError(f"norm_type must be non-negative, inf or -inf, got {norm_type!r}")
    return value


def _vector_norm(x: jax.Array, ord: float, dtype: Any) -> jax.Array:
    """torch.linalg.vector_norm of one array, in ``dtype``."""
    a = jnp.abs(jnp.asarray(x).astype(compute_dtype(jnp.asarray(x).dtype))).astype(dtype).reshape(-1)
    if ord == math.inf:
        return jnp.max(a, initial=jnp.zeros([], dtype))
    if ord == -math.inf:
        return jnp.min(a, initial=jnp.array(jnp.inf, dtype))
    if ord == 0:
        return jnp.sum(a != 0).astype(dtype)
    if ord == 1:
        return jnp.sum(a)
    if ord == 2:
        return jnp.sqrt(jnp.sum(a * a))
    return jnp.sum(a**ord) ** (1.0 / ord)


def global_norm(tree: PyTree, norm_type: float | str = 2.0) -> jax.Array:
    r"""The norm of all leaves of ``tree`` taken together as one vector (torch's total norm).

    As in ``torch.nn.utils.clip_grad_norm_``, the norm of each leaf is taken
    first and the result is the norm of the vector of those norms, which is
    the norm of the concatenation of all leaves:

    .. math:: \lVert g \rVert_p = \Bigl(\sum_i \lVert g_i \rVert_p^p\Bigr)^{1/p},
        \qquad \lVert g \rVert_\infty = \max_i \max |g_i|

    Leaves that are not floating (integers, keys...: see
    :func:`funcopt.floating_only`) do not count.

    Args:
        tree: a pytree of arrays (complex leaves use their modulus).
        norm_type: :math:`p`: a positive number, ``inf`` (``float('inf')`` or
            ``'inf'``), ``-inf`` (the smallest modulus) or 0 (torch's count of
            nonzero entries, applied twice).

    Returns:
        A 0-d array in the widest real dtype of the leaves, at least float32;
        0 for a tree with no leaves.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> g = {'a': jnp.array([3.0, -4.0]), 'b': jnp.array(12.0)}
        >>> fo.global_norm(g)
        Array(13., dtype=float32)
        >>> fo.global_norm(g, norm_type='inf')
        Array(12., dtype=float32)
    """
    ord = check_norm_type(norm_type)
    leaves = [jnp.asarray(x) for x in floating_leaves(tree)]
    if not leaves:
        return jnp.zeros([], float_dtype())
    dtype = jnp.result_type(*[_real_dtype(x.dtype) for x in leaves])
    norms = jnp.stack([_vector_norm(x, ord, dtype) for x in leaves])
    return _vector_norm(norms, ord, dtype)


def scale_leaf(u: jax.Array, factor: jax.Array) -> jax.Array:
    """``u * factor`` in the compute dtype of ``u``, rounded back to ``u.dtype``.

    The compute dtype is :func:`funcopt._src.hparams.compute_dtype`'s: float32 for half precision.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.transforms.clipping import scale_leaf
        >>> scale_leaf(jnp.array([1.0, 3.0], jnp.bfloat16), jnp.array(0.5))
        Array([0.5, 1.5], dtype=bfloat16)
    """
    u = jnp.asarray(u)
    c = compute_dtype(u.dtype)
    return (u.astype(c) * factor.astype(c)).astype(u.dtype)


TORCH_CLIP_EPS = 1e-6
"""What ``torch.nn.utils.clip_grad_norm_`` adds to the total norm before dividing ``max_norm`` by it."""


def clip_to_total_norm(tree: PyTree, max_norm: jax.Array, total_norm: jax.Array) -> PyTree:
    r"""Scale every leaf of ``tree`` by torch's clipping coefficient for a total norm :math:`N`.

    .. math:: c = \min\left(1, \frac{\text{max\_norm}}{N + 10^{-6}}\right)

    computed with torch's arithmetic (``torch.nn.utils.clip_grads_with_norm_``):
    ``max_norm / (N + 1e-6)`` is a Python number divided by a tensor there, which
    torch evaluates as ``reciprocal(N + 1e-6) * max_norm``, in the dtype of
    :math:`N`. The leaves are always multiplied, so a non-finite :math:`N` gives
    non-finite leaves. This is the one formula behind :func:`clip_grad_norm`,
    ``fo.optim.clip_grad_norm_`` and the MegEngine adapter's ``clip_grad_norm``.

    Args:
        tree: the pytree to scale (each leaf keeps its dtype, see :func:`scale_leaf`).
        max_norm: the largest total norm let through, a 0-d array.
        total_norm: :math:`N`, a 0-d floating array (e.g. from :func:`global_norm`).

    Returns:
        ``tree`` scaled by :math:`c`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.transforms.clipping import clip_to_total_norm
        >>> clip_to_total_norm({'a': jnp.array([6.0, 8.0])}, jnp.array(5.0), jnp.array(10.0))['a']
        Array([2.9999998, 3.9999998], dtype=float32)
    """
    coef = jnp.reciprocal(total_norm + jnp.asarray(TORCH_CLIP_EPS, total_norm.dtype))
    coef = jnp.minimum(coef * max_norm.astype(total_norm.dtype), jnp.asarray(1.0, total_norm.dtype))
    return jax.tree.map(lambda u: scale_leaf(u, coef), tree)


def nonfinite_norm_message(norm_type: float) -> str:
    """torch's ``RuntimeError`` message for a non-finite total norm with ``error_if_nonfinite=True``.

    Example:
        >>> from funcopt.transforms.clipping import nonfinite_norm_message
        >>> nonfinite_norm_message(2.0)[:37]
        'The total norm of order 2.0 for gradi'
    """
    return (f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`")


def hparam_transform(
    spec: Mapping[str, Any],
    apply: Callable[[PyTree, PyTree | None, dict[str, Any]], PyTree],
    needs_params: str | None = None,
) -> GradientTransformation:
    """A transform with no state beyond its hyperparameters: ``apply(updates, params, hp)``.

    The state is ``spec``'s :class:`HParamSpec` state, so :func:`funcopt.set_hparams`
    and schedules work on it; only floating leaves are passed to ``apply`` (see
    :func:`funcopt.floating_only`).

    Args:
        spec: the hyperparameters, name to value or schedule.
        apply: the update rule, given the updates, the params (or None) and the
            hyperparameters' current values.
        needs_params: when given, ``update`` without ``params`` raises
            :func:`require_params`' error naming this transform.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.transforms.clipping import hparam_transform
        >>> tx = hparam_transform({'s': 3.0}, lambda u, p, hp: {k: v * hp['s'] for k, v in u.items()})
        >>> g = {'a': jnp.array([1.0])}
        >>> tx.update(g, tx.init(g))[0]['a']
        Array([3.], dtype=float32)
    """
    hps = HParamSpec(spec)

    def init(params):
        del params
        return hps.init()

    def update(updates, state, params=None, **extra):
        del extra
        if needs_params is not None:
            require_params(params, needs_params)
        hp = hps.current(state)
        return apply(updates, params, hp), hps.advance(state, hp)

    return floating_only(GradientTransformation(init, update))


def _scale_to_norm(max_norm: jax.Array, norm: jax.Array) -> jax.Array:
    """optax's clipping factor ``min(1, max_norm / norm)``, 1 for a zero norm (no epsilon, unlike torch's)."""
    return jnp.minimum(1.0, max_norm.astype(norm.dtype) / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))


def clip_by_global_norm(max_norm: HParam) -> GradientTransformation:
    r"""Scale all updates so their global L2 norm is at most ``max_norm``.

    .. math:: u \leftarrow u \cdot \min\left(1, \frac{\text{max\_norm}}{\lVert u \rVert_2}\right)

    ``max_norm`` is a hyperparameter held in the state (see :func:`funcopt.set_hparams`).
    Unlike :func:`clip_grad_norm` there is no :math:`10^{-6}` in the denominator.

    Args:
        max_norm: the largest global norm let through.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.clip_by_global_norm(1.0)
        >>> g = {'a': jnp.array([3.0, 4.0])}
        >>> tx.update(g, tx.init(g))[0]['a']
        Array([0.6, 0.8], dtype=float32)
    """
    check_hparam(max_norm, "max_norm", "Invalid max_norm value: {}", lambda v: v >= 0)

    def apply(updates, params, hp):
        del params
        scale = _scale_to_norm(hp["max_norm"], tree_norm(updates))
        return jax.tree.map(lambda u: scale_leaf(u, scale), updates)

    return hparam_transform({"max_norm": max_norm}, apply)


def clip_grad_norm(
    max_norm: HParam, norm_type: float | str = 2.0, error_if_nonfinite: bool = False
) -> GradientTransformation:
    r"""Clip the total norm of the updates, with ``torch.nn.utils.clip_grad_norm_``'s arithmetic.

    With :math:`N` the total norm of all updates taken together (see
    :func:`global_norm`):

    .. math::

        c &= \min\left(1, \frac{\text{max\_norm}}{N + 10^{-6}}\right) \\
        u &\leftarrow c \, u

    The updates are always multiplied by :math:`c`, as torch does (so a
    non-finite norm gives non-finite updates).

    ``error_if_nonfinite`` raises torch's ``RuntimeError`` when the norm is
    ``nan`` or ``inf``, but only when ``update`` runs eagerly on concrete
    arrays: inside ``jax.jit`` (or any other trace) the norm is not known
    while tracing, no error can be raised, and the updates are scaled by the
    non-finite norm as with ``error_if_nonfinite=False``. Wrap the optimizer in
    :func:`funcopt.apply_if_finite` to skip such steps under ``jit``.

    Args:
        max_norm: the largest total norm let through (a hyperparameter held in
            the state).
        norm_type: the :math:`p` of the norm: a positive number, ``inf`` or
            ``'inf'``; fixed at construction.
        error_if_nonfinite: raise when the total norm is not finite (eager
            calls only, see above).

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.clip_grad_norm(1.0, norm_type='inf')
        >>> g = {'a': jnp.array([0.5, -4.0])}
        >>> tx.update(g, tx.init(g))[0]['a']  # 0.5 and -4 times 1 / (4 + 1e-6)
        Array([ 0.12499997, -0.99999976], dtype=float32)
    """
    check_hparam(max_norm, "max_norm", "Invalid max_norm value: {}", lambda v: v >= 0)
    ord = check_norm_type(norm_type)

    def apply(updates, params, hp):
        del params
        if not jax.tree.leaves(updates):
            return updates
        total = global_norm(updates, ord)
        if error_if_nonfinite and not _is_tracer(total) and not bool(jnp.isfinite(total)):
            raise RuntimeError(nonfinite_norm_message(ord))
        return clip_to_total_norm(updates, hp["max_norm"], total)

    return hparam_transform({"max_norm": max_norm}, apply)


def clip(max_delta: HParam) -> GradientTransformation:
    r"""Clip every update element to :math:`[-\text{max\_delta}, \text{max\_delta}]`.

    .. math:: u \leftarrow \max(-\delta, \min(\delta, u))

    This is ``torch.nn.utils.clip_grad_value_(clip_value=max_delta)`` as a
    transform. ``max_delta`` is a hyperparameter held in the state.

    Args:
        max_delta: :math:`\delta \ge 0`, the largest magnitude let through.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.clip(0.5)
        >>> g = {'a': jnp.array([-2.0, 0.25, 3.0])}
        >>> tx.update(g, tx.init(g))[0]['a']
        Array([-0.5 ,  0.25,  0.5 ], dtype=float32)
    """
    check_hparam(max_delta, "max_delta", "Invalid max_delta value: {}", lambda v: v >= 0)

    def apply(updates, params, hp):
        del params

        def leaf(u):
            u = jnp.asarray(u)
            d = hp["max_delta"].astype(u.dtype)
            return jnp.clip(u, -d, d)

        return jax.tree.map(leaf, updates)

    return hparam_transform({"max_delta": max_delta}, apply)


def clip_by_value(lower: HParam, upper: HParam) -> GradientTransformation:
    r"""Clip every update element to :math:`[\text{lower}, \text{upper}]`.

    .. math:: u \leftarrow \max(\text{lower}, \min(\text{upper}, u))

    Both bounds are hyperparameters held in the state.

    Args:
        lower: the smallest value let through.
        upper: the largest value let through; must not be below ``lower``.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.clip_by_value(-1.0, 0.5)
        >>> g = {'a': jnp.array([-2.0, 0.25, 3.0])}
        >>> tx.update(g, tx.init(g))[0]['a']
        Array([-1.  ,  0.25,  0.5 ], dtype=float32)
    """
    check_hparam(lower, "lower", "Invalid lower value: {}", lambda v: not math.isnan(v))
    check_hparam(upper, "upper", "Invalid upper value: {}", lambda v: not math.isnan(v))
    lo, hi = concrete_value(lower), concrete_value(upper)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"lower must not exceed upper, got lower={lower} and upper={upper}")

    def apply(updates, params, hp):
        del params

        def leaf(u):
            u = jnp.asarray(u)
            return jnp.clip(u, hp["lower"].astype(u.dtype), hp["upper"].astype(u.dtype))

        return jax.tree.map(leaf, updates)

    return hparam_transform({"lower": lower, "upper": upper}, apply)


def clip_by_leaf_norm(max_norm: HParam, norm_type: float | str = 2.0) -> GradientTransformation:
    r"""Clip the norm of each leaf (block) of the updates separately.

    For every leaf :math:`u_i`:

    .. math:: u_i \leftarrow u_i \cdot \min\left(1, \frac{\text{max\_norm}}{\lVert u_i \rVert_p}\right)

    A leaf whose norm is 0 is left as it is. ``max_norm`` is a hyperparameter
    held in the state; ``norm_type`` is fixed at construction.

    Args:
        max_norm: the largest norm let through for each leaf.
        norm_type: the :math:`p` of the norm: a positive number or ``inf``.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.clip_by_leaf_norm(1.0)
        >>> g = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([0.3, 0.4])}
        >>> u, _ = tx.update(g, tx.init(g))
        >>> u['a'], u['b']
        (Array([0.6, 0.8], dtype=float32), Array([0.3, 0.4], dtype=float32))
    """
    check_hparam(max_norm, "max_norm", "Invalid max_norm value: {}", lambda v: v >= 0)
    ord = check_norm_type(norm_type)

    def apply(updates, params, hp):
        del params
        refuse_packed(updates, "fo.clip_by_leaf_norm")

        def leaf(u):
            u = jnp.asarray(u)
            dtype = _real_dtype(u.dtype)
            return scale_leaf(u, _scale_to_norm(hp["max_norm"], _vector_norm(u, ord, dtype)))

        return jax.tree.map(leaf, updates)

    return hparam_transform({"max_norm": max_norm}, apply)


clip_by_block_norm = clip_by_leaf_norm
"""Another name of :func:`clip_by_leaf_norm` (each leaf is one block)."""
