"""Weight decay (coupled and decoupled), masks by parameter name, and gradient centralization."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.base import EmptyState, GradientTransformation, PyTree, floating_only
from funcopt._src.hparams import HParam, check_hparam, compute_dtype
from funcopt._src.packing import refuse_packed
from funcopt._src.tree import name_mask
from funcopt.transforms.clipping import hparam_transform

Mask = PyTree | Callable[[PyTree], PyTree] | str | Sequence[str] | None
"""Which leaves a transform acts on: a pytree of bools with the structure of
the parameters, a callable ``params -> pytree of bools``, or one or several
shell-style patterns matched against the torch-style names (``'*.weight'``)."""


def _resolve_mask(mask: Mask, tree: PyTree) -> PyTree | None:
    if mask is None:
        return None
    refuse_packed(tree, "a weight-decay mask")
    if isinstance(mask, str) or (
        isinstance(mask, (list, tuple)) and len(mask) > 0 and all(isinstance(m, str) for m in mask)
    ):
        return name_mask(tree, mask)
    if callable(mask):
        return mask(tree)
    return mask


def _map_masked(fn: Callable[..., jax.Array], mask: PyTree | None, updates: PyTree, *rest: PyTree) -> PyTree:
    """``fn(u, *others)`` on the selected leaves; the other updates pass unchanged."""
    if mask is None:
        return jax.tree.map(fn, updates, *rest)

    def leaf(m, u, *others):
        if isinstance(m, jax.core.Tracer) or np.shape(m) != ():
            return jnp.where(m, fn(u, *others), u)
        return fn(u, *others) if bool(m) else u

    return jax.tree.map(leaf, mask, updates, *rest)


def add_decayed_weights(weight_decay: HParam = 0.0, mask: Mask = None) -> GradientTransformation:
    r"""Add coupled (L2) weight decay to the updates: :math:`u \leftarrow u + \lambda\theta`.

    Placed before an optimizer, this is the ``weight_decay`` of torch.optim's
    SGD or Adam (the decay goes through the optimizer's own scaling).
    ``weight_decay`` is a hyperparameter held in the state. ``update`` needs
    ``params``. ``set_hparams(state, weight_decay=...)`` on a chain sets every
    hyperparameter of that name, the optimizer's included.

    MindSpore's ``nn.Optimizer`` does the same (``decay_weight``) on the
    parameters its filter selects; see :func:`mindspore_decay_mask`.

    Args:
        weight_decay: :math:`\lambda \ge 0`.
        mask: the leaves to decay (see :data:`Mask`); all when ``None``.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> params = {'w': jnp.array([1.0, 2.0]), 'bias': jnp.array([1.0])}
        >>> tx = fo.add_decayed_weights(0.1, mask='w')
        >>> grads = {'w': jnp.zeros(2), 'bias': jnp.zeros(1)}
        >>> u, _ = tx.update(grads, tx.init(params), params)
        >>> u['w'], u['bias']
        (Array([0.1, 0.2], dtype=float32), Array([0.], dtype=float32))
    """
    check_hparam(weight_decay, "weight_decay", "Invalid weight_decay value: {}", lambda v: v >= 0)

    def apply(updates, params, hp):
        def leaf(u, p):
            u, p = jnp.asarray(u), jnp.asarray(p)
            c = compute_dtype(u.dtype)
            return (u.astype(c) + hp["weight_decay"].astype(c) * p.astype(c)).astype(u.dtype)

        return _map_masked(leaf, _resolve_mask(mask, params), updates, params)

    return hparam_transform({"weight_decay": weight_decay}, apply, needs_params="add_decayed_weights")


def decoupled_weight_decay(lr: HParam = 1e-3, weight_decay: HParam = 1e-2,
                           mask: Mask = None) -> GradientTransformation:
    r"""Decoupled weight decay (AdamW's): :math:`u \leftarrow u - \gamma\lambda\theta`.

    Placed after an optimizer, ``chain(adam(lr=γ), decoupled_weight_decay(lr=γ, weight_decay=λ))``
    follows torch.optim.AdamW: torch multiplies the parameters by
    :math:`1 - \gamma\lambda` before the Adam step, which adds the same
    :math:`-\gamma\lambda\theta` to the update. ``lr`` and ``weight_decay`` are
    hyperparameters held in the state; :func:`funcopt.set_hparams` with
    ``lr=`` sets every ``lr`` of a chain at once, so the two stay equal.
    ``update`` needs ``params``. Note that ``set_hparams(state, weight_decay=...)``
    on the whole chain also sets the optimizer's own (coupled)
    ``weight_decay``; to change only this decay, set it on this transform's
    part of the state.

    Args:
        lr: the learning rate :math:`\gamma` the decay is scaled by.
        weight_decay: :math:`\lambda \ge 0`.
        mask: the leaves to decay (see :data:`Mask`); all when ``None``.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> tx = fo.decoupled_weight_decay(lr=0.1, weight_decay=0.5)
        >>> tx.update({'w': jnp.zeros(2)}, tx.init(params), params)[0]['w']
        Array([-0.05, -0.1 ], dtype=float32)
    """
    check_hparam(lr, "lr", "Invalid learning rate: {}", lambda v: v >= 0)
    check_hparam(weight_decay, "weight_decay", "Invalid weight_decay value: {}", lambda v: v >= 0)

    def apply(updates, params, hp):
        def leaf(u, p):
            u, p = jnp.asarray(u), jnp.asarray(p)
            c = compute_dtype(u.dtype)
            rate = hp["lr"].astype(c) * hp["weight_decay"].astype(c)
            return (u.astype(c) - rate * p.astype(c)).astype(u.dtype)

        return _map_masked(leaf, _resolve_mask(mask, params), updates, params)

    return hparam_transform({"lr": lr, "weight_decay": weight_decay}, apply, needs_params="decoupled_weight_decay")


def mindspore_decay_filter(name: str) -> bool:
    """MindSpore's default weight-decay filter: decay unless the name contains ``'beta'`` or ``'gamma'``.

    ``mindspore.nn.Optimizer`` applies its ``weight_decay`` through this filter
    when the parameters are not grouped, to skip the ``gamma`` and ``beta`` of
    its BatchNorm and LayerNorm layers. Worth knowing when porting:

    - it is a substring test on the full name, so ``'alphabeta.weight'`` or
      ``'gamma_proj.weight'`` are not decayed either;
    - biases *are* decayed (it is not the usual "no decay on biases and norms" rule);
    - with grouped parameters MindSpore drops the filter: each group's
      ``weight_decay`` applies to every parameter of the group;
    - MindSpore adds the decay to the gradients while they are still
      multiplied by the optimizer's ``loss_scale`` (it multiplies
      ``weight_decay`` by ``loss_scale`` to match), then centralizes and
      unscales them: decay first, then :func:`centralize`.

    Args:
        name: a parameter name (``'bn1.gamma'``, ``'fc.weight'``).

    Returns:
        True when the parameter is decayed.

    Example:
        >>> import funcopt as fo
        >>> [fo.mindspore_decay_filter(n) for n in ['conv.weight', 'fc.bias', 'bn.gamma', 'ln.beta']]
        [True, True, False, False]
    """
    return "beta" not in name and "gamma" not in name


def mindspore_decay_mask(params: PyTree) -> PyTree:
    """A mask of the leaves :func:`mindspore_decay_filter` decays, by their torch-style names.

    Use it as the ``mask`` of :func:`add_decayed_weights` or
    :func:`decoupled_weight_decay`.

    Args:
        params: the parameters (or any pytree of the same structure).

    Returns:
        A pytree of bools with the structure of ``params``.

    Example:
        >>> import funcopt as fo
        >>> fo.mindspore_decay_mask({'bn': {'gamma': 1.0, 'beta': 0.0}, 'fc': {'weight': 1.0}})
        {'bn': {'beta': False, 'gamma': False}, 'fc': {'weight': True}}
    """
    refuse_packed(params, "fo.mindspore_decay_mask")
    return name_mask(params, lambda name, _: mindspore_decay_filter(name))


def centralize(mask: Mask = None, channel_multiple: int | None = None) -> GradientTransformation:
    r"""Gradient centralization (Yong et al. 2020), MindSpore's ``grad_centralization``.

    For every selected leaf with more than one dimension (convolution kernels,
    dense weights), subtract the mean over all axes but the first:

    .. math:: g_{i,\ldots} \leftarrow g_{i,\ldots} - \frac{1}{m}\sum_{j} g_{i,j}

    where :math:`j` runs over the :math:`m` entries of output channel :math:`i`.
    Leaves with 0 or 1 dimension (biases, norms, scalars) pass unchanged.

    MindSpore offers it per parameter group (``'grad_centralization': True``),
    meant for convolution layers, and applies it after weight decay. Its
    recent versions also leave a leaf alone when its second dimension is not
    a multiple of 16 (an Ascend kernel constraint); ``channel_multiple=16``
    reproduces that.

    Args:
        mask: the leaves to centralize (see :data:`Mask`); all when ``None``.
        channel_multiple: when given, leaves whose ``shape[1]`` is not a
            multiple of it are left unchanged.

    Returns:
        A stateless :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.centralize()
        >>> g = {'w': jnp.array([[1.0, 3.0], [0.0, 4.0]]), 'b': jnp.array([1.0, 2.0])}
        >>> u, _ = tx.update(g, tx.init(g))
        >>> u['w'], u['b']
        (Array([[-1.,  1.], [-2.,  2.]], dtype=float32), Array([1., 2.], dtype=float32))
    """
    if channel_multiple is not None and (
        isinstance(channel_multiple, bool) or not isinstance(channel_multiple, int) or channel_multiple < 1
    ):
        raise ValueError(f"channel_multiple must be a positive integer or None, got {channel_multiple!r}")

    def leaf(u):
        u = jnp.asarray(u)
        if u.ndim < 2:
            return u
        if channel_multiple is not None and u.shape[1] % channel_multiple != 0:
            return u
        c = compute_dtype(u.dtype)
        uc = u.astype(c)
        return (uc - jnp.mean(uc, axis=tuple(range(1, u.ndim)), keepdims=True)).astype(u.dtype)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del extra
        refuse_packed(updates, "fo.centralize")
        m = _resolve_mask(mask, updates if params is None else params)
        return _map_masked(leaf, m, updates), state

    return floating_only(GradientTransformation(init, update))
