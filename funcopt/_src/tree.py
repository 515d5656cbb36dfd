"""Pytree helpers: torch-style parameter names, masks and labels by name, tree math."""

from __future__ import annotations

import fnmatch
import numbers
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

PyTree = Any


# --- which leaves are trained ------------------------------------------------------


def is_nnx_variable(x: Any) -> bool:
    """Whether ``x`` is a flax ``nnx.Variable`` (``nnx.Param``, ``nnx.BatchStat``, an optimizer's ``OptArray``...).

    flax is never imported for this: without it loaded, no Variable can exist.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from funcopt._src.tree import is_nnx_variable
        >>> is_nnx_variable(nnx.Param(jnp.ones(2))), is_nnx_variable(jnp.ones(2))
        (True, False)
    """
    module = sys.modules.get("flax.nnx.variablelib")
    variable = getattr(module, "Variable", None)
    return variable is not None and isinstance(x, variable)


def _leaf_dtype(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_)):
        return np.dtype(bool)
    if isinstance(x, numbers.Number) and not hasattr(x, "dtype"):
        return jnp.result_type(type(x))
    return getattr(x, "dtype", None)


def is_floating(x: Any) -> bool:
    r"""Whether a leaf is trained by the functional API: an array or number of a floating or complex dtype.

    This is the one rule every funcopt transform and optimizer follows (see
    :func:`funcopt.floating_only`): leaves of other kinds are never read by the
    arithmetic, never enter norms, averages or finiteness checks, keep no
    state, and come out of :func:`funcopt.apply_updates` bit-identical.
    Those are integer and bool arrays (step counters, masks), ``uint32`` PRNG
    key data and typed keys (``jax.random.key``), ``float0`` gradients,
    ``None`` and any other object (functions, strings). An ``nnx.Variable``
    is judged by its value.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from funcopt._src.tree import is_floating
        >>> [is_floating(x) for x in (jnp.ones(2, jnp.bfloat16), jnp.ones(2, jnp.complex64), 1.0)]
        [True, True, True]
        >>> [is_floating(x) for x in (jnp.arange(3), jax.random.key(0), jax.random.PRNGKey(0), None, 1)]
        [False, False, False, False, False]
    """
    if is_nnx_variable(x):
        leaves = jax.tree.leaves(x)
        return len(leaves) == 1 and is_floating(leaves[0])
    dtype = _leaf_dtype(x)
    if dtype is None:
        return False
    try:
        return bool(jnp.issubdtype(dtype, jnp.inexact))
    except TypeError:  # dtypes numpy cannot compare (float0, extended ones such as keys): not floating
        return False


def variable_value(x: Any) -> Any:
    """The value an ``nnx.Variable`` holds; any other object is returned as it is.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from funcopt._src.tree import variable_value
        >>> variable_value(nnx.Param(jnp.ones(2)))
        Array([1., 1.], dtype=float32)
    """
    if not is_nnx_variable(x):
        return x
    # one level of flattening: a Variable's only child is its value
    return jax.tree_util.tree_flatten(x, is_leaf=lambda y: y is not x)[0][0]


def strip_variables(tree: PyTree) -> PyTree:
    """``tree`` with every ``nnx.Variable`` replaced by the value it holds.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from funcopt._src.tree import strip_variables
        >>> strip_variables({'w': nnx.Param(jnp.ones(2))})
        {'w': Array([1., 1.], dtype=float32)}
    """
    return jax.tree.map(variable_value, tree, is_leaf=is_nnx_variable)


def floating_mask(tree: PyTree) -> PyTree:
    """A pytree of bools, :func:`is_floating` for each leaf; an ``nnx.Variable`` counts as one leaf.

    The result is a prefix of ``tree`` and of the same tree with its Variables
    replaced by their values, so it can select from either.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.tree import floating_mask
        >>> floating_mask({'w': jnp.ones(2), 'count': jnp.zeros([], jnp.int32), 'none': None})
        {'count': False, 'none': None, 'w': True}
    """
    return jax.tree.map(is_floating, tree, is_leaf=is_nnx_variable)


def floating_leaves(tree: PyTree) -> list[Any]:
    """The leaves of ``tree`` that :func:`is_floating` accepts, in flattening order.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.tree import floating_leaves
        >>> floating_leaves({'w': jnp.ones(2), 'count': jnp.zeros([], jnp.int32)})
        [Array([1., 1.], dtype=float32)]
    """
    return [x for x in jax.tree.leaves(tree) if is_floating(x)]


def _key_name(k: Any) -> str:
    if isinstance(k, DictKey):
        return str(k.key)
    if isinstance(k, SequenceKey):
        return str(k.idx)
    if isinstance(k, GetAttrKey):
        return k.name
    if isinstance(k, FlattenedIndexKey):
        return str(k.key)
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def path_name(path: Sequence[Any]) -> str:
    """Write a jax key path the torch way: ``('layers', 0, 'weight') -> 'layers.0.weight'``.

    Example:
        >>> from jax.tree_util import DictKey, SequenceKey
        >>> import funcopt as fo
        >>> fo.path_name((DictKey('layers'), SequenceKey(0), DictKey('weight')))
        'layers.0.weight'
    """
    return ".".join(_key_name(k) for k in path)


def _map_with_name(fn: Callable[[str, Any], Any], tree: PyTree,
                   is_leaf: Callable[[Any], bool] | None = None) -> PyTree:
    """``fn(name, leaf)`` over the leaves; an nnx Variable is one leaf, named without its inner key."""

    def stop(x):
        return is_nnx_variable(x) or (is_leaf is not None and is_leaf(x))

    def visit(path, x):
        if not is_nnx_variable(x):
            return fn(path_name(path), x)
        inner, inner_def = jax.tree_util.tree_flatten_with_path(x)
        if len(inner) == 1:
            # the Variable's own key ('value') is not part of the parameter's name
            return fn(path_name(path), inner[0][1])
        return inner_def.unflatten([fn(path_name(tuple(path) + tuple(p[1:])), leaf) for p, leaf in inner])

    return jax.tree_util.tree_map_with_path(visit, tree, is_leaf=stop)


def named_leaves(tree: PyTree, is_leaf: Callable[[Any], bool] | None = None) -> list[tuple[str, Any]]:
    """The leaves of ``tree`` with their torch-style dotted names, in flattening order.

    An ``nnx.Variable`` counts as one leaf: its name is its attribute path
    (``'linear.kernel'``, not ``'linear.kernel.value'``) and its value is
    returned, so a tree of Variables and the same tree of plain arrays give
    the same list.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> params = {'layers': [{'weight': jnp.ones((2, 2)), 'bias': jnp.zeros(2)}]}
        >>> [name for name, _ in fo.named_leaves(params)]
        ['layers.0.bias', 'layers.0.weight']
    """
    out: list[tuple[str, Any]] = []

    def collect(name, leaf):
        out.append((name, leaf))
        return leaf

    _map_with_name(collect, tree, is_leaf)
    return out


def param_names(tree: PyTree) -> list[str]:
    """The dotted names of the leaves of ``tree``, in flattening order.

    Example:
        >>> import funcopt as fo
        >>> fo.param_names({'fc': {'weight': 1.0, 'bias': 0.0}})
        ['fc.bias', 'fc.weight']
    """
    return [name for name, _ in named_leaves(tree)]


def names_tree(tree: PyTree) -> PyTree:
    """A pytree of the same structure whose leaves are their dotted names.

    An ``nnx.Variable`` counts as one leaf (see :func:`named_leaves`): its
    name stands where the Variable is.

    Example:
        >>> import funcopt as fo
        >>> fo.names_tree({'fc': {'weight': 1.0}})
        {'fc': {'weight': 'fc.weight'}}
    """
    return _map_with_name(lambda name, _: name, tree)


NameSpec = Callable[[str, Any], Any] | str | Iterable[str]


def _name_predicate(spec: Callable[[str, Any], bool] | str | Iterable[str]) -> Callable[[str, Any], bool]:
    if callable(spec):
        return spec
    patterns = [spec] if isinstance(spec, str) else list(spec)
    for pat in patterns:
        if not isinstance(pat, str):
            raise TypeError(f"name patterns must be strings, got {type(pat).__name__}")
    return lambda name, leaf: any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def name_mask(tree: PyTree, spec: Callable[[str, Any], bool] | str | Iterable[str]) -> PyTree:
    """A pytree of bools selecting leaves by name.

    ``spec`` is a predicate ``(name, leaf) -> bool``, or one or several
    shell-style patterns matched against the dotted names (``'*.bias'``,
    ``'encoder.*'``). An ``nnx.Variable`` counts as one leaf, named by its
    attribute path (see :func:`named_leaves`); its bool stands where the
    Variable is, so the mask selects from the tree of Variables and from the
    same tree of plain arrays alike.

    Example:
        >>> import funcopt as fo
        >>> params = {'fc': {'weight': 1.0, 'bias': 0.0}, 'norm': {'gamma': 1.0}}
        >>> fo.name_mask(params, ['*.bias', 'norm.*'])
        {'fc': {'bias': True, 'weight': False}, 'norm': {'gamma': True}}
    """
    _refuse_packed(tree, "fo.name_mask")
    pred = _name_predicate(spec)
    return _map_with_name(lambda name, leaf: bool(pred(name, leaf)), tree)


def name_labels(tree: PyTree, label_fn: Callable[[str, Any], Any]) -> PyTree:
    """A pytree of labels computed from each leaf's name: ``label_fn(name, leaf)``.

    The result feeds :func:`funcopt.partition`. An ``nnx.Variable`` counts as
    one leaf, as in :func:`name_mask`.

    Example:
        >>> import funcopt as fo
        >>> params = {'fc': {'weight': 1.0, 'bias': 0.0}}
        >>> fo.name_labels(params, lambda name, _: 'no_decay' if name.endswith('bias') else 'decay')
        {'fc': {'bias': 'no_decay', 'weight': 'decay'}}
    """
    _refuse_packed(tree, "fo.name_labels")
    return _map_with_name(label_fn, tree)


def _refuse_packed(tree: PyTree, who: str) -> None:
    # imported here: the packing module builds on this one
    from funcopt._src.packing import refuse_packed

    refuse_packed(tree, who)


# --- tree math -----------------------------------------------------------------


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a + b``.

    Example:
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_add({'a': 1.0}, {'a': 2.0})
        {'a': 3.0}
    """
    return jax.tree.map(lambda x, y: x + y, a, b)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    """Leafwise ``a - b``.

    Example:
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_sub({'a': 1.0}, {'a': 2.0})
        {'a': -1.0}
    """
    return jax.tree.map(lambda x, y: x - y, a, b)


def tree_scale(scalar: Any, tree: PyTree) -> PyTree:
    """Leafwise ``scalar * x``, keeping each leaf's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_scale(2.0, {'a': jnp.ones(2, jnp.bfloat16)})['a'].dtype
        dtype(bfloat16)
    """
    return jax.tree.map(lambda x: (scalar * x).astype(jnp.asarray(x).dtype), tree)


def tree_add_scaled(a: PyTree, scalar: Any, b: PyTree) -> PyTree:
    """Leafwise ``a + scalar * b``.

    Example:
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_add_scaled({'a': 1.0}, 0.5, {'a': 2.0})
        {'a': 2.0}
    """
    return jax.tree.map(lambda x, y: x + scalar * y, a, b)


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """The inner product of two pytrees, summed over all leaves (conjugating ``a``).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_vdot({'a': jnp.array([1., 2.])}, {'a': jnp.array([3., 4.])})
        Array(11., dtype=float32)
    """
    parts = [jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return sum(parts[1:], parts[0]) if parts else jnp.zeros([])


def tree_sum(tree: PyTree) -> jax.Array:
    """The sum of all elements of all leaves.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_sum({'a': jnp.ones(3), 'b': jnp.ones(2)})
        Array(5., dtype=float32)
    """
    parts = [jnp.sum(x) for x in jax.tree.leaves(tree)]
    return sum(parts[1:], parts[0]) if parts else jnp.zeros([])


def tree_norm(tree: PyTree, ord: float | str = 2) -> jax.Array:
    """The norm of all floating leaves taken as one vector: ``ord`` 2 (default), 1, or ``inf``.

    Leaves that are not floating (see :func:`is_floating`) do not count.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_norm({'a': jnp.array([3.]), 'b': jnp.array([4.])})
        Array(5., dtype=float32)
    """
    leaves = [jnp.asarray(x) for x in floating_leaves(tree)]
    if not leaves:
        return jnp.zeros([])
    if ord in (float("inf"), "inf"):
        return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) if x.size else jnp.zeros([], jnp.abs(x).dtype)
                                  for x in leaves]))
    if ord == 1:
        return sum(jnp.sum(jnp.abs(x)) for x in leaves)
    if ord == 2:
        return jnp.sqrt(sum(jnp.sum(jnp.real(x * jnp.conj(x))) for x in leaves))
    p = float(ord)
    return sum(jnp.sum(jnp.abs(x) ** p) for x in leaves) ** (1.0 / p)


def tree_zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros with the shape (and dtype, unless given) and the sharding of each leaf, also under ``jax.jit``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_zeros_like({'a': jnp.ones(2)})
        {'a': Array([0., 0.], dtype=float32)}
    """
    return jax.tree.map(lambda x: zeros_like(x, dtype=dtype), tree)


def tree_full_like(tree: PyTree, value: Any, dtype: Any = None) -> PyTree:
    """Arrays filled with ``value`` with the shape (and dtype, unless given) and sharding of each leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_full_like({'a': jnp.ones(2)}, 3.0)
        {'a': Array([3., 3.], dtype=float32)}
    """
    return jax.tree.map(lambda x: shard_like(jnp.full_like(x, value, dtype=dtype), x), tree)


def tree_cast(tree: PyTree, dtype: Any) -> PyTree:
    """Cast every floating leaf to ``dtype``; other leaves are kept.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.tree_utils.tree_cast({'a': jnp.ones(2)}, jnp.bfloat16)['a'].dtype
        dtype(bfloat16)
    """
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.inexact) else x

    return jax.tree.map(cast, tree)


def tree_all_finite(tree: PyTree) -> jax.Array:
    """A bool scalar: whether every element of every floating leaf is finite.

    Leaves that are not floating (see :func:`is_floating`) are not checked.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> bool(fo.tree_utils.tree_all_finite({'a': jnp.array([1.0, jnp.inf])}))
        False
    """
    checks = [jnp.all(jnp.isfinite(x)) for x in floating_leaves(tree)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


# --- placement ------------------------------------------------------------------


def _collapses_to(shape: tuple[int, ...], ref_shape: tuple[int, ...]) -> bool:
    """Whether ``shape`` is ``ref_shape`` with some dimensions reduced to 1 (keepdims)."""
    return len(shape) == len(ref_shape) and all(d in (1, r) for d, r in zip(shape, ref_shape))


def _collapsed(sharding: Any, shape: tuple[int, ...], ref_shape: tuple[int, ...]) -> Any:
    # A NamedSharding of ref_shape, for its keepdims reduction to shape: reduced dimensions are not split.
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
    spec = tuple(None if d != r else s for s, d, r in zip(spec, shape, ref_shape))
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec),
                                      memory_kind=sharding.memory_kind)


def _placed_like_host(x: jax.Array, ref: jax.Array) -> jax.Array:
    # Concrete arrays: the sharding is known, so move ``x`` when it is not already there.
    if not getattr(ref, "committed", True):
        return x  # ref sits on the default device and may move freely; so may x
    sharding = ref.sharding
    if x.shape != ref.shape:
        if isinstance(sharding, jax.sharding.NamedSharding):
            sharding = _collapsed(sharding, x.shape, ref.shape)
        elif not sharding.is_fully_replicated:
            return x  # a device layout with no per-dimension meaning: leave x where it is
    if x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
    return jax.device_put(x, sharding)


def shard_like(x: jax.Array, ref: jax.Array) -> jax.Array:
    r"""``x`` placed the way ``ref`` is: same values, ``ref``'s sharding.

    ``x`` must have ``ref``'s shape, or ``ref``'s shape with some dimensions
    reduced to 1 (a ``keepdims`` reduction, e.g. Adafactor's factored moments),
    which then follows ``ref``'s sharding on the other dimensions; any other
    ``x`` is returned unchanged. It fixes what ``jnp.zeros_like`` loses under
    ``jax.jit``: zeros do not depend on their input, so XLA places them on one
    device (what ``jax.jit(optax.adam(...).init)`` does to sharded parameters).

    Outside ``jit`` the sharding is known and ``x`` is ``device_put`` to it
    when it is elsewhere. Under ``jit``, in a process with one device, ``x``
    is returned as it is; with several, ``x`` and ``ref`` are tied with
    ``jax.experimental.shard_alike``, which XLA's sharding propagation honours
    and then removes: no run-time cost, no communication, the same values.
    With explicit mesh axes (``jax.set_mesh``) the sharding is part of the
    type and ``x`` is resharded to it. Inside ``shard_map`` (manual axes) each
    array is already one device's block and ``x`` is returned unchanged.

    Args:
        x: the array to place (typically fresh optimizer state).
        ref: the array whose placement ``x`` should follow (its parameter).

    Returns:
        ``x``, with ``ref``'s sharding.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from funcopt._src.tree import shard_like
        >>> p = jnp.arange(4.0)
        >>> z = jax.jit(lambda p: shard_like(jnp.zeros_like(p), p))(p)
        >>> z, z.sharding.is_equivalent_to(p.sharding, 1)
        (Array([0., 0., 0., 0.], dtype=float32), True)
    """
    x, ref = jnp.asarray(x), jnp.asarray(ref)
    if not _collapses_to(x.shape, ref.shape):
        return x
    if ref.size == 0 and x.shape != ref.shape:
        return x  # e.g. Adafactor's (1, n) moment of a (0, n) parameter: no elements of ref to align with
    if not isinstance(x, jax.core.Tracer) and not isinstance(ref, jax.core.Tracer):
        return _placed_like_host(x, ref)
    typeof = getattr(jax, "typeof", None)
    ref_sharding = getattr(typeof(ref), "sharding", None) if typeof is not None else None
    axis_types = [str(t) for t in getattr(getattr(ref_sharding, "mesh", None), "axis_types", ())]
    if any("Manual" in t for t in axis_types):
        return x  # inside shard_map: a per-device block, nothing to place
    if any("Explicit" in t for t in axis_types):
        # Explicit axes: the sharding is part of the type; reshard to it when it differs.
        target = _collapsed(ref_sharding, x.shape, ref.shape)
        if typeof(x).sharding.is_equivalent_to(target, x.ndim):
            return x
        return jax.sharding.reshard(x, target)
    if jax.process_count() == 1 and jax.device_count() == 1 and jax.device_count("cpu") == 1:
        # one device: nothing to place. shard_alike would still number its pair from a process-wide
        # counter, so the same function traced twice would lower to different text and miss the
        # compilation cache (a fresh optimizer's init would compile anew in every jit)
        return x
    src = ref if x.shape == ref.shape else jax.lax.slice(ref, (0,) * ref.ndim, x.shape)
    from jax.experimental.shard_alike import shard_alike

    return shard_alike(src, x)[1]


def zeros_like(x: jax.Array, dtype: Any = None) -> jax.Array:
    """``jnp.zeros_like`` that keeps ``x``'s sharding, also under ``jax.jit`` (see :func:`shard_like`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from funcopt._src.tree import zeros_like
        >>> jax.jit(zeros_like)(jnp.ones(2))
        Array([0., 0.], dtype=float32)
    """
    x = jnp.asarray(x)
    return shard_like(jnp.zeros_like(x, dtype=dtype), x)
