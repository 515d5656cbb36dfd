"""Sharded parameters and optimizer state over a ``jax.sharding.Mesh``.

Every funcopt optimizer keeps each state leaf on its parameter's sharding, in
``init`` and ``update``, eagerly and under ``jax.jit`` (see :func:`shard_like`):
with parameters sharded for model parallelism, the state is sharded the same
way and nothing gathers to one device.

This module adds the other common layout, ZeRO stage 1 (MaxText's "shard the
optimizer over data"): parameters stay replicated over the data-parallel mesh
axis while the optimizer state is split over it, so each device keeps
``1 / n`` of the state. :func:`shard_optimizer_state` wraps an optimizer (or
places an existing state) that way. Its ``update`` slices the (replicated)
gradients and parameters to the local shard, which needs no communication,
updates the local shard of the state, and gathers only the updates, once, to
the parameters' sharding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from funcopt._src.base import GradientTransformation, PyTree, with_extra_args_support
from funcopt._src.tree import shard_like, zeros_like

AxisNames = str | Sequence[str]
ParamSharding = PartitionSpec | NamedSharding | PyTree | None

__all__ = [
    "bytes_per_device",
    "optimizer_state_sharding",
    "shard_like",
    "shard_optimizer_state",
    "zero1_spec",
    "zeros_like",
]


def _axes(axis: AxisNames) -> tuple[str, ...]:
    return (axis,) if isinstance(axis, str) else tuple(axis)


def _names(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _is_spec(x: Any) -> bool:
    return x is None or isinstance(x, (PartitionSpec, Sharding))


def _spec_of(x: Any) -> PartitionSpec:
    if x is None:
        return PartitionSpec()
    if isinstance(x, PartitionSpec):
        return x
    if isinstance(x, NamedSharding):
        return x.spec
    raise TypeError(f"param_sharding entries must be PartitionSpec, NamedSharding or None, got {type(x).__name__}")


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))


def zero1_spec(shape: Sequence[int], mesh: Mesh, axis: AxisNames = "data",
               base: PartitionSpec | None = None) -> PartitionSpec:
    """The spec of an array of ``shape`` laid out as ``base`` and further split over ``axis``.

    The first dimension that ``base`` leaves unsharded and whose size the
    ``axis`` size divides is split over ``axis``; failing that, the first
    dimension that can take ``axis`` on top of its own mesh axes. An array with
    no such dimension (a scalar, an odd-sized bias), or already split over
    ``axis``, keeps ``base``.

    Args:
        shape: the array's shape.
        mesh: the device mesh.
        axis: the mesh axis (or axes) to split over.
        base: the array's layout without the split; replicated when None.

    Returns:
        A ``PartitionSpec``.

    Example:
        >>> import jax
        >>> from jax.sharding import PartitionSpec as P
        >>> import funcopt as fo
        >>> mesh = jax.make_mesh((1,), ('data',))
        >>> fo.sharding.zero1_spec((3, 4), mesh, 'data', P(None, 'data'))
        P(None, 'data')
        >>> fo.sharding.zero1_spec((5, 4), mesh, 'data')
        P('data', None)
    """
    axes = _axes(axis)
    n = math.prod(mesh.shape[a] for a in axes)
    base = PartitionSpec() if base is None else base
    entries = list(base) + [None] * (len(shape) - len(base))
    if any(a in _names(e) for e in entries for a in axes):
        return base
    new = axes[0] if len(axes) == 1 else axes
    for d, size in enumerate(shape):
        if entries[d] is None and size >= n and size % n == 0:
            entries[d] = new
            return PartitionSpec(*entries)
    for d, size in enumerate(shape):
        have = _names(entries[d])
        if have and size % (n * math.prod(mesh.shape[a] for a in have)) == 0:
            entries[d] = (*have, *axes)
            return PartitionSpec(*entries)
    return base


def _collapsed_spec(spec: PartitionSpec, shape: tuple[int, ...], param_shape: tuple[int, ...]) -> PartitionSpec:
    # a keepdims reduction of the parameter (Adafactor's factored moments): reduced dimensions are not split
    entries = list(spec) + [None] * (len(shape) - len(spec))
    return PartitionSpec(*[e if d == p else None for e, d, p in zip(entries, shape, param_shape)])


def _param_specs(param_sharding: ParamSharding, params_def: Any) -> list[PartitionSpec]:
    if _is_spec(param_sharding):
        return [_spec_of(param_sharding)] * params_def.num_leaves
    leaves, treedef = jax.tree.flatten(param_sharding, is_leaf=_is_spec)
    if treedef.num_leaves != params_def.num_leaves:
        raise ValueError(f"param_sharding has {treedef.num_leaves} entries but the parameters have "
                         f"{params_def.num_leaves} leaves")
    return [_spec_of(x) for x in leaves]


def _state_specs(state: PyTree, mesh: Mesh, axis: AxisNames, params: PyTree | None,
                 param_sharding: ParamSharding) -> PyTree:
    """A PartitionSpec for every leaf of ``state`` (None where the state holds None)."""
    if params is not None:
        p_leaves, p_def = jax.tree.flatten(params, is_leaf=lambda x: x is None)
        p_shapes = [_shape(x) for x in p_leaves]
        p_specs = _param_specs(param_sharding, p_def)
        p_zero1 = [zero1_spec(s, mesh, axis, b) for s, b in zip(p_shapes, p_specs)]
    else:
        p_def = None
        if param_sharding is not None:
            raise ValueError("param_sharding needs params= to match the parameters to their state")

    def own(x):
        return zero1_spec(_shape(x), mesh, axis, PartitionSpec())

    def per_param(node):
        leaves, treedef = jax.tree.flatten(node, is_leaf=lambda x: x is None)
        out = []
        for x, shape, spec in zip(leaves, p_shapes, p_zero1):
            if x is None:
                out.append(None)
            elif _shape(x) == shape:
                out.append(spec)
            elif len(_shape(x)) == len(shape) and all(d in (1, p) for d, p in zip(_shape(x), shape)):
                out.append(_collapsed_spec(spec, _shape(x), shape))
            else:
                out.append(own(x))
        return treedef.unflatten(out)

    def is_param_tree(node):
        if node is None or p_def is None:
            return node is None
        return jax.tree.structure(node, is_leaf=lambda x: x is None) == p_def

    def visit(node):
        if node is None:
            return None
        if p_def is not None and is_param_tree(node):
            return per_param(node)
        return own(node)  # not a parameter's state (a step count, a flat history): by its own shape

    return jax.tree.map(visit, state, is_leaf=is_param_tree)


def optimizer_state_sharding(state: PyTree, mesh: Mesh, axis: AxisNames = "data", *,
                             params: PyTree | None = None,
                             param_sharding: ParamSharding = None) -> PyTree:
    """ZeRO-1 shardings of an optimizer state: each leaf split over ``axis`` (see :func:`zero1_spec`).

    A state leaf shaped like its parameter takes the parameter's layout
    (``param_sharding``, replicated by default) split over ``axis``; a
    ``keepdims`` reduction of it (Adafactor's factored moments) takes the same
    layout on its other dimensions. Pass ``params`` (arrays or
    ``jax.ShapeDtypeStruct``) to match state leaves to their parameters;
    without it every leaf is judged by its own shape. The result can be given
    to ``jax.jit(..., out_shardings=...)`` or ``jax.device_put``.

    Args:
        state: an optimizer state, or its ``jax.eval_shape``.
        mesh: the device mesh.
        axis: the data-parallel mesh axis (or axes) to split the state over.
        params: the parameters (or their shapes), to match state leaves to them.
        param_sharding: the parameters' layout (needs ``params``): None
            (replicated), one ``PartitionSpec`` / ``NamedSharding`` for all,
            or a pytree of them with the parameters' structure.

    Returns:
        A pytree of ``NamedSharding`` with the structure of ``state``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import funcopt as fo
        >>> mesh = jax.make_mesh((1,), ('data',))
        >>> params = {'w': jnp.zeros((4, 3))}
        >>> state = fo.adam().init(params)
        >>> fo.sharding.optimizer_state_sharding(state, mesh, params=params).slots['exp_avg']['w'].spec
        P('data', None)
    """
    specs = _state_specs(state, mesh, axis, params, param_sharding)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def _explicit(mesh: Mesh) -> bool:
    return any("Explicit" in str(t) for t in getattr(mesh, "axis_types", ()))


def _place(tree: PyTree, shardings: PyTree, mesh: Mesh) -> PyTree:
    def place(x, sharding):
        if _explicit(mesh):
            return jax.sharding.reshard(x, sharding)
        return jax.lax.with_sharding_constraint(x, sharding)

    return jax.tree.map(place, tree, shardings)


def shard_optimizer_state(tx_or_state: GradientTransformation | PyTree, mesh: Mesh, axis: AxisNames = "data", *,
                          params: PyTree | None = None,
                          param_sharding: ParamSharding = None) -> GradientTransformation | PyTree:
    r"""ZeRO-1: split the optimizer state over the data-parallel ``axis``; parameters keep their layout.

    Given a :class:`~funcopt.GradientTransformation`, returns one whose state
    is split over ``axis`` (each leaf on :func:`optimizer_state_sharding`),
    eagerly and under ``jax.jit``. Its ``update(grads, state, params)``

    .. math::

        g_{\text{local}} = \mathrm{slice}_{\text{axis}}(g), \quad
        (u_{\text{local}}, s'_{\text{local}}) = \mathrm{update}(g_{\text{local}}, s_{\text{local}},
            \theta_{\text{local}}), \quad
        u = \mathrm{all\_gather}_{\text{axis}}(u_{\text{local}})

    slices the gradients and parameters (replicated over ``axis`` in data
    parallelism: no communication), updates the local shard of the state and
    gathers the updates once to the parameters' layout: the state never moves.
    Elementwise optimizers give exactly the numbers of the unsharded run;
    per-tensor reductions (LAMB's trust ratio, Adafactor) sum across shards and
    may differ in the last bits.

    Given a state instead, returns it placed on those shardings
    (``jax.device_put``).

    Args:
        tx_or_state: an optimizer (funcopt or optax), or an optimizer state.
        mesh: the device mesh.
        axis: the data-parallel mesh axis (or axes).
        params: for a state: the parameters (or shapes), to match state leaves
            to them (needed for Adafactor's factored moments to line up).
        param_sharding: the parameters' layout: None (replicated over the
            mesh, the ZeRO-1 setting), one ``PartitionSpec`` for all, or a
            pytree of ``PartitionSpec`` / ``NamedSharding`` with the
            parameters' structure (e.g. model-parallel weights).

    Returns:
        A :class:`~funcopt.GradientTransformation`, or the placed state.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import funcopt as fo
        >>> mesh = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
        >>> tx = fo.shard_optimizer_state(fo.adam(lr=0.1), mesh, 'data')
        >>> params = {'w': jnp.ones((2, 3))}
        >>> state = jax.jit(tx.init)(params)
        >>> updates, state = jax.jit(tx.update)({'w': jnp.ones((2, 3))}, state, params)
        >>> updates['w'][0]
        Array([-0.1, -0.1, -0.1], dtype=float32)
    """
    if not isinstance(tx_or_state, GradientTransformation) and not (
            isinstance(tx_or_state, tuple) and len(tx_or_state) == 2 and all(map(callable, tx_or_state))):
        shardings = optimizer_state_sharding(tx_or_state, mesh, axis, params=params, param_sharding=param_sharding)
        return jax.device_put(tx_or_state, shardings)
    tx = with_extra_args_support(tx_or_state)
    axes = _axes(axis)
    for a in axes:
        if a not in mesh.shape:
            raise ValueError(f"mesh has no axis {a!r}; its axes are {tuple(mesh.axis_names)}")

    def layouts(tree):
        # each parameter's own layout, and its layout split over the axis (where its state lives)
        leaves, treedef = jax.tree.flatten(tree)
        specs = _param_specs(param_sharding, treedef)
        own = [NamedSharding(mesh, s) for s in specs]
        split = [NamedSharding(mesh, zero1_spec(_shape(x), mesh, axes, s)) for x, s in zip(leaves, specs)]
        return treedef.unflatten(own), treedef.unflatten(split)

    def place_state(state, like):
        return _place(state, optimizer_state_sharding(state, mesh, axes, params=like,
                                                      param_sharding=param_sharding), mesh)

    def init(params):
        return place_state(tx.init(params), params)

    def update(updates, state, params=None, **extra):
        own, split = layouts(updates)
        state = place_state(state, updates)
        local_grads = _place(updates, split, mesh)
        local_params = None if params is None else _place(params, split, mesh)
        new_updates, new_state = tx.update(local_grads, state, local_params, **extra)
        return _place(new_updates, own, mesh), place_state(new_state, updates)

    return GradientTransformation(init, update)


def bytes_per_device(tree: PyTree) -> dict[Any, int]:
    """The bytes each device holds for the arrays of ``tree`` (its addressable shards).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import funcopt as fo
        >>> list(fo.sharding.bytes_per_device({'w': jnp.zeros((4, 2))}).values())
        [32]
    """
    out: dict[Any, int] = {}
    for x in jax.tree.leaves(tree):
        if isinstance(x, jax.Array):
            for shard in x.addressable_shards:
                out[shard.device] = out.get(shard.device, 0) + shard.data.size * x.dtype.itemsize
    return out
