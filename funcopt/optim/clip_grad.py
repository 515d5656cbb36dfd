r"""``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_`` for the stateful optimizers.

In torch the gradients live on the parameters, and these functions rewrite
``p.grad`` in place. Here they live in a :class:`funcopt.optim.Optimizer`
(``opt.grad``), so the functions take the optimizer (or a list of them) and
replace its accumulated gradients::

    opt.zero_grad()
    opt.backward(loss_fn, x, y)
    total_norm = fo.optim.clip_grad_norm_(opt, max_norm=1.0)
    opt.step()

Each call is one jitted computation over the optimizers' gradient storage
(packed flat buffers per dtype for elementwise optimizers), whatever the number
of parameters; the old gradient buffers are donated to it. Changing
``max_norm`` or ``clip_value`` from call to call does not recompile.

For gradients held in a pytree (the functional API) use the transforms
:func:`funcopt.clip_grad_norm` and :func:`funcopt.clip` inside the optimizer
chain, or :func:`funcopt.global_norm` for the norm alone.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from funcopt._src.base import PyTree
from funcopt._src.hparams import float_dtype
from funcopt.optim import guard
from funcopt.optim.optimizer import Optimizer
from funcopt.transforms.clipping import check_norm_type, clip_to_total_norm, global_norm, nonfinite_norm_message

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]

_CLIP_HINT = "tx = fo.chain(fo.clip_grad_norm(max_norm), fo.adam(...)); state = tx.init(params); ..."


def _optimizers(parameters: Any, fn: str) -> list[Optimizer]:
    """The distinct optimizers named by ``parameters``: one optimizer or an iterable of them."""
    if isinstance(parameters, Optimizer):
        return [parameters]
    if isinstance(parameters, (list, tuple, types.GeneratorType)) or (
            isinstance(parameters, Iterable) and not isinstance(parameters, (dict, str))
            and not hasattr(parameters, "shape")):
        is_generator = isinstance(parameters, types.GeneratorType)
        items = list(parameters)
        if is_generator and not items:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                          stacklevel=3)
        if all(isinstance(x, Optimizer) for x in items):
            unique: list[Optimizer] = []
            for x in items:
                if not any(x is u for u in unique):
                    unique.append(x)
            return unique
    raise TypeError(
        f"{fn} takes a funcopt.optim.Optimizer (or a list of them) and rewrites its accumulated gradients "
        f"(opt.grad) in place; got {type(parameters).__name__}. For gradients in a pytree, use the "
        "transforms funcopt.clip_grad_norm / funcopt.clip, or funcopt.global_norm for the norm")


def _storages(opts: list[Optimizer]) -> tuple[list[Optimizer], list[list[list[jax.Array]]]]:
    """The optimizers that hold gradients, and their storage (torch skips parameters whose grad is None)."""
    holders, storage = [], []
    for opt in opts:
        s = opt.grad_storage()
        if s is not None:
            holders.append(opt)
            storage.append(s)
    return holders, storage


def _zero_norm() -> jax.Array:
    return jnp.zeros([], float_dtype())


def _scalar(value: Any) -> jax.Array:
    # a traced argument of the compiled call, so a new value does not recompile
    return jnp.asarray(float(value), float_dtype())


def _norm_and_clip(storage: Any, max_norm: jax.Array, norm_type: float) -> tuple[jax.Array, Any]:
    total = global_norm(storage, norm_type)
    return total, clip_to_total_norm(storage, max_norm, total)


# Two compiled forms: donating the old buffers (the usual one), and keeping them, for
# error_if_nonfinite=True, where the gradients must be left as they were when it raises.
_clip_norm_donating = jax.jit(_norm_and_clip, static_argnums=2, donate_argnums=0)
_clip_norm_keeping = jax.jit(_norm_and_clip, static_argnums=2)


@partial(jax.jit, donate_argnums=0)
def _clip_with_norm(storage: Any, max_norm: jax.Array, total: jax.Array) -> Any:
    return clip_to_total_norm(storage, max_norm, total)


@partial(jax.jit, donate_argnums=0)
def _clip_value(storage: Any, clip_value: jax.Array) -> Any:
    def leaf(g):
        c = clip_value.astype(g.dtype)
        return jnp.clip(g, -c, c)

    return jax.tree.map(leaf, storage)


@partial(jax.jit, static_argnums=1)
def _total_norm(tree: Any, norm_type: float) -> jax.Array:
    return global_norm(tree, norm_type)


def _check_finite(total: jax.Array, norm_type: float) -> None:
    if not bool(jnp.isfinite(total)):
        raise RuntimeError(nonfinite_norm_message(norm_type))


def clip_grad_norm_(
    parameters: Optimizer | Iterable[Optimizer],
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> jax.Array:
    r"""Clip the total norm of an optimizer's accumulated gradients in place (torch's ``clip_grad_norm_``).

    With :math:`N` the norm of all gradients taken together as one vector
    (see :func:`funcopt.global_norm`), every gradient is multiplied by

    .. math::

        c = \min\left(1, \frac{\text{max\_norm}}{N + 10^{-6}}\right)

    as torch does: always (a non-finite :math:`N` gives non-finite gradients
    unless ``error_if_nonfinite``), with the same :math:`10^{-6}`.

    Args:
        parameters: a :class:`funcopt.optim.Optimizer`, or a list of them (one
            norm over all their gradients). Optimizers whose gradients are
            cleared are skipped, as torch skips parameters whose ``grad`` is None.
        max_norm: the largest total norm let through.
        norm_type: the :math:`p` of the norm: a positive number, ``inf`` (or
            ``'inf'``), ``-inf`` or 0, as ``torch.linalg.vector_norm``.
        error_if_nonfinite: raise torch's ``RuntimeError`` when :math:`N` is
            ``nan`` or ``inf``; the gradients are then left unchanged.
        foreach: accepted for torch compatibility; no effect (the call is always
            one fused computation).

    Returns:
        :math:`N`, the total norm before clipping, a 0-d array in the widest
        real dtype of the gradients (at least float32); ``0.`` when no
        optimizer holds gradients.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'a': jnp.zeros(2), 'b': jnp.zeros(())}, lr=0.1)
        >>> _ = opt.backward(lambda p: jnp.sum(p['a'] * jnp.array([3.0, -4.0])) + 12.0 * p['b'])
        >>> fo.optim.clip_grad_norm_(opt, max_norm=1.3)
        Array(13., dtype=float32)
        >>> opt.grad['a'], opt.grad['b']
        (Array([ 0.29999998, -0.39999998], dtype=float32), Array(1.1999999, dtype=float32))
    """
    del foreach
    opts = _optimizers(parameters, "clip_grad_norm_")
    guard.check_host_call("fo.optim", "clip_grad_norm_", max_norm, hint=_CLIP_HINT)
    norm_type = check_norm_type(norm_type)
    max_norm_arr = _scalar(max_norm)
    holders, storage = _storages(opts)
    if not holders:
        return _zero_norm()
    if error_if_nonfinite:
        total, clipped = _clip_norm_keeping(storage, max_norm_arr, norm_type)
        _check_finite(total, norm_type)
    else:
        total, clipped = _clip_norm_donating(storage, max_norm_arr, norm_type)
    for opt, new in zip(holders, clipped):
        opt.set_grad_storage(new)
    return total


def get_total_norm(
    tensors: Optimizer | Iterable[Optimizer] | PyTree,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> jax.Array:
    r"""The norm of all gradients (or arrays) taken together, torch's ``torch.nn.utils.get_total_norm``.

    .. math:: N = \Bigl(\sum_i \lVert g_i \rVert_p^p\Bigr)^{1/p}

    Args:
        tensors: a :class:`funcopt.optim.Optimizer` or a list of them (the norm
            of their accumulated gradients), or any pytree of arrays.
        norm_type: the :math:`p` of the norm (``inf`` or ``'inf'`` for the max).
        error_if_nonfinite: raise torch's ``RuntimeError`` when the norm is not finite.
        foreach: accepted for torch compatibility; no effect.

    Returns:
        The total norm, a 0-d array (``0.`` when there is nothing to measure).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.get_total_norm([jnp.array([3.0, 4.0]), jnp.array([-12.0])], norm_type='inf')
        Array(12., dtype=float32)
    """
    del foreach
    norm_type = check_norm_type(norm_type)
    try:
        opts = _optimizers(tensors, "get_total_norm")
    except TypeError:
        opts = None
    if opts is not None:
        _, storage = _storages(opts)
        tree: Any = storage
    else:
        tree = tensors
    if not jax.tree.leaves(tree):
        return _zero_norm()
    total = _total_norm(tree, norm_type)
    if error_if_nonfinite:
        _check_finite(total, norm_type)
    return total


def clip_grads_with_norm_(
    parameters: Optimizer | Iterable[Optimizer],
    max_norm: float,
    total_norm: jax.Array | float,
    foreach: bool | None = None,
) -> None:
    r"""Scale an optimizer's gradients in place by a given total norm (torch's ``clip_grads_with_norm_``).

    .. math:: g \leftarrow g \cdot \min\left(1, \frac{\text{max\_norm}}{\text{total\_norm} + 10^{-6}}\right)

    :func:`clip_grad_norm_` is :func:`get_total_norm` followed by this.

    Args:
        parameters: a :class:`funcopt.optim.Optimizer`, or a list of them.
        max_norm: the largest total norm let through.
        total_norm: the norm to scale by, e.g. from :func:`get_total_norm`.
        foreach: accepted for torch compatibility; no effect.

    Returns:
        None.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(2)})
        >>> _ = opt.backward(lambda p: jnp.sum(p['w'] * jnp.array([6.0, 8.0])))
        >>> fo.optim.clip_grads_with_norm_(opt, 1.0, fo.optim.get_total_norm(opt))
        >>> opt.grad['w']
        Array([0.59999996, 0.79999995], dtype=float32)
    """
    del foreach
    opts = _optimizers(parameters, "clip_grads_with_norm_")
    guard.check_host_call("fo.optim", "clip_grads_with_norm_", max_norm, total_norm, hint=_CLIP_HINT)
    holders, storage = _storages(opts)
    if not holders:
        return
    total = jnp.asarray(total_norm)
    if not jnp.issubdtype(total.dtype, jnp.floating):
        total = total.astype(float_dtype())
    clipped = _clip_with_norm(storage, _scalar(max_norm), total)
    for opt, new in zip(holders, clipped):
        opt.set_grad_storage(new)


def clip_grad_value_(
    parameters: Optimizer | Iterable[Optimizer],
    clip_value: float,
    foreach: bool | None = None,
) -> None:
    r"""Clamp every accumulated gradient entry to :math:`[-c, c]` in place (torch's ``clip_grad_value_``).

    .. math:: g \leftarrow \max(-c, \min(c, g))

    Args:
        parameters: a :class:`funcopt.optim.Optimizer`, or a list of them.
            Optimizers whose gradients are cleared are skipped.
        clip_value: :math:`c`, the largest magnitude let through.
        foreach: accepted for torch compatibility; no effect.

    Returns:
        None.

    Raises:
        RuntimeError: for complex gradients, as torch's ``clamp``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.zeros(3)})
        >>> _ = opt.backward(lambda p: jnp.sum(p['w'] * jnp.array([-2.0, 0.25, 3.0])))
        >>> fo.optim.clip_grad_value_(opt, 0.5)
        >>> opt.grad['w']
        Array([-0.5 ,  0.25,  0.5 ], dtype=float32)
    """
    del foreach
    opts = _optimizers(parameters, "clip_grad_value_")
    guard.check_host_call("fo.optim", "clip_grad_value_", clip_value, hint=_CLIP_HINT)
    clip_value = float(clip_value)
    holders, storage = _storages(opts)
    if not holders:
        return
    if any(jnp.issubdtype(x.dtype, jnp.complexfloating) for x in jax.tree.leaves(storage)):
        raise RuntimeError("clamp is not supported for complex types")
    clipped = _clip_value(storage, _scalar(clip_value))
    for opt, new in zip(holders, clipped):
        opt.set_grad_storage(new)
