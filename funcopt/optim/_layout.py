"""How a parameter group's arrays are stored: leaf by leaf, or packed in flat buffers per dtype.

An elementwise optimizer (Adam, SGD...) computes the same numbers on one flat
buffer as on the leaves it packs, and XLA runs one fused loop over the buffer
instead of one per leaf: faster steps and a compile time that does not grow with
the number of leaves. The pytree the user sees is a view (static slices). Only
the small leaves are packed: a leaf of more than
:data:`funcopt._src.packing.MAX_PACKED_SIZE` elements is a buffer of its own, in
its shape without its unit dimensions, as packing it would only add copies (see
:mod:`funcopt._src.packing`).

Why without unit dimensions: a 1x1 convolution kernel ``(out, in, 1, 1)`` that a
loss reshapes to a matrix gets its gradient from a matrix product, and XLA:CPU
writes that product back into the 4-D shape with a whole copy of the gradient
(a layout change between two layouts of the same bytes) when it is a program's
output. The stateful ``backward`` returns its gradients from its own program,
so on a ResNet-50-like tree that copy was 12M of the 25.6M gradient elements,
about 7% of the bytes a ``backward`` + ``step`` moves. Held as ``(out, in)``, the
gradient is the product's output itself; the view of the leaf is a reshape,
free inside a jitted function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src import packing
from funcopt._src.packing import flat_layout, pack_leaves, split_leaves


class Layout:
    """Storage of one group's leaves: ``pack`` leaves into storage, ``unpack`` storage into leaves.

    With ``flat=False`` the storage is the list of leaves itself. With
    ``flat=True`` it is one 1-D buffer per dtype for the leaves of at most
    ``max_packed_size`` elements (default :data:`~funcopt._src.packing.MAX_PACKED_SIZE`)
    and each larger leaf as a buffer of its own (``kept[b]``) in its shape without unit
    dimensions (``storage_shapes[b]``; see the module's note), in order of first
    appearance; leaf ``i`` is ``storage[buffer[i]][offset[i]:offset[i] + size[i]]`` reshaped.
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[Any], flat: bool,
                 max_packed_size: int | None = None) -> None:
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.dtypes = [jnp.dtype(d) for d in dtypes]
        self.flat = flat
        self.buffer_dtypes: list[jnp.dtype] = []
        self.where: list[tuple[int, int, int]] = []  # (buffer, offset, size) per leaf
        self.members: list[list[int]] = []  # leaves of each buffer
        self.kept: list[bool] = []  # per buffer: one leaf in its own shape
        self._offsets: list[Any] = []  # see _device_offsets
        self._offsets_for: Any = None
        if flat:
            limit = packing.MAX_PACKED_SIZE if max_packed_size is None else max_packed_size
            layout = flat_layout(self.shapes, self.dtypes, limit)
            self.buffer_dtypes = list(layout.buffer_dtypes)
            self.where = list(layout.where)
            self.members = [list(m) for m in layout.members]
            self.buffer_sizes = list(layout.buffer_sizes)
            self.kept = list(layout.kept)
            # a kept leaf is stored without its unit dimensions: the layout that packs and splits
            # the storage has those shapes for kept leaves (a packed leaf is raveled either way)
            squeezed = list(layout.shapes)
            for b, members in enumerate(layout.members):
                if layout.kept[b]:
                    squeezed[members[0]] = tuple(d for d in layout.shapes[members[0]] if d != 1)
            self._flat_layout = layout._replace(shapes=tuple(squeezed))
            self.storage_shapes = [self._flat_layout.buffer_shape(b) for b in range(len(self.members))]

    def pack(self, leaves: Sequence[Any]) -> list[jax.Array]:
        """Leaves (arrays or tracers) to storage; a new array either way."""
        if not self.flat:
            return [jnp.array(x, dtype=d, copy=True) for x, d in zip(leaves, self.dtypes)]
        return pack_leaves(self._flat_layout, leaves)

    def unpack(self, storage: Sequence[Any]) -> list[Any]:
        """Storage to leaves (static slices: free inside a jitted function, and cheap outside one).

        Outside ``jit`` each packed leaf is one call of a small compiled slice shared by the
        leaves of its shape (the offset is an argument): one dispatch per leaf, where an eager
        slice and reshape are two slower ones, and one compile per distinct leaf shape, where a
        compiled split of all the leaves compiles for minutes at a thousand leaves. A kept leaf
        is its storage array itself, or a reshaped copy of it where the leaf has unit dimensions.
        """
        if not self.flat:
            return list(storage)
        if any(isinstance(x, jax.core.Tracer) for x in storage):
            return [_shaped(storage[b], shape) if self.kept[b]
                    else jax.lax.slice(storage[b], (off,), (off + size,)).reshape(shape)
                    for (b, off, size), shape in zip(self.where, self.shapes)]
        offsets = self._device_offsets(storage)
        return [_shaped(storage[b], shape) if self.kept[b] else _leaf_view(size, shape)(storage[b], offset)
                if offset is not None else jax.lax.slice(storage[b], (off,), (off + size,)).reshape(shape)
                for (b, off, size), shape, offset in zip(self.where, self.shapes, offsets)]

    def _device_offsets(self, storage: Sequence[jax.Array]) -> list[Any]:
        """Each leaf's offset as an int32 array on its buffer's device (placed once, explicitly: no
        transfer at each view); None where it does not fit in int32."""
        devices = tuple((next(iter(x.devices())), x.committed) if isinstance(x, jax.Array) and len(x.devices()) == 1
                        else None for x in storage)
        if self._offsets_for != devices:
            offsets: list[Any] = [None] * len(self.where)
            for b, members in enumerate(self.members):
                if self.kept[b] or devices[b] is None or self.buffer_sizes[b] >= 2**31:  # (device, committed)
                    continue
                # in one call; committed to the buffer's device only when the buffer is (jit's fast path)
                placed = jax.device_put([np.int32(self.where[i][1]) for i in members],
                                        devices[b][0] if devices[b][1] else None)
                for i, x in zip(members, placed):
                    offsets[i] = x
            self._offsets, self._offsets_for = offsets, devices
        return self._offsets

    def unpack_for_grad(self, storage: Sequence[Any], offsets: Sequence[Any] | None = None) -> list[Any]:
        """Storage to leaves inside a differentiated function: :meth:`unpack` with a gradient linear in the leaves.

        Each buffer is cut by one ``lax.split``: the forward pass is the same slices,
        but the transpose is one concatenate of the leaves' cotangents, where a
        ``lax.slice``'s transpose pads its cotangent to the whole buffer (a gradient
        in leaves x buffer size). Outside ``jit`` a split of many leaves compiles for
        seconds where eager slices are immediate, hence two methods.

        With ``offsets`` (:meth:`grad_offsets`, traced arguments of the jitted
        function) each packed leaf is a slice at a runtime offset instead, with the
        same concatenate as its transpose. The numbers are the same; the compile is
        shorter: XLA:CPU compiles one kernel per distinct fused computation, and a
        slice at a constant offset makes every leaf's computations distinct, where
        leaves of one shape at runtime offsets share their kernels (as the leaves of a
        per-leaf program do). Measured: a loss over 100 leaves of 256 floats compiled
        in 4.7 s through a split, 0.3 s through runtime offsets.
        """
        if not self.flat:
            return list(storage)
        if offsets is None:
            return [_shaped(x, shape) for x, shape in zip(split_leaves(self._flat_layout, storage), self.shapes)]
        out: list[Any] = [None] * len(self.shapes)
        for b, members in enumerate(self.members):
            if self.kept[b]:
                out[members[0]] = _shaped(storage[b], self.shapes[members[0]])
                continue
            parts = _cut(storage[b], tuple(offsets[i] for i in members), tuple(self.where[i][2] for i in members))
            for i, part in zip(members, parts):
                out[i] = part.reshape(self.shapes[i])
        return out

    def grad_offsets(self, storage: Sequence[Any]) -> list[Any] | None:
        """The ``offsets`` of :meth:`unpack_for_grad` for this storage (device scalars), or None for a split.

        None when the layout is not packed or a buffer has no offsets placed on its device
        (see :meth:`_device_offsets`); then :meth:`unpack_for_grad` splits.
        """
        if not self.flat or all(self.kept):
            return None
        offsets = self._device_offsets(storage)
        if any(offsets[i] is None for b, members in enumerate(self.members) if not self.kept[b] for i in members):
            return None
        return offsets

    def unpack_host(self, storage: Sequence[Any]) -> list[np.ndarray]:
        """Storage to per-leaf NumPy copies; a 0-d storage entry (a per-buffer scalar) goes to every leaf."""
        if not self.flat:
            return [None if x is None else np.array(x) for x in storage]
        host = [np.asarray(x) for x in storage]
        out = []
        for (b, off, size), shape in zip(self.where, self.shapes):
            buf = host[b]
            out.append(np.array(buf) if buf.ndim == 0 else np.array(buf.reshape(-1)[off:off + size]).reshape(shape))
        return out

    def pack_host(self, leaves: Sequence[np.ndarray], like: Sequence[Any]) -> list[jax.Array]:
        """Per-leaf arrays to storage shaped like ``like`` (a 0-d entry takes its buffer's first leaf's value)."""
        if not self.flat:
            return [None if x is None else _placed_like(x, s) for x, s in zip(leaves, like)]
        out = []
        for b, members in enumerate(self.members):
            if np.ndim(like[b]) == 0:
                out.append(jnp.asarray(np.asarray(leaves[members[0]]).reshape(()), dtype=like[b].dtype))
            else:
                flat = np.concatenate([np.ravel(leaves[i]) for i in members]).astype(like[b].dtype)
                out.append(jnp.asarray(flat.reshape(np.shape(like[b]))))
        return out

    def leaf_spec(self, storage_spec: Sequence[Any], i: int) -> tuple[tuple[int, ...], Any]:
        """(shape, dtype) of leaf ``i``'s slice of a storage pytree's entries."""
        if not self.flat:
            return tuple(storage_spec[i].shape), storage_spec[i].dtype
        b = self.where[i][0]
        spec = storage_spec[b]
        return (() if len(spec.shape) == 0 else self.shapes[i]), spec.dtype


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cut(buffer: Any, offsets: tuple[Any, ...], sizes: tuple[int, ...]) -> list[Any]:
    """``buffer`` cut into consecutive pieces of ``sizes`` starting at the traced ``offsets``.

    The offsets must be the pieces' places in the buffer (0, sizes[0], ...): the transpose
    concatenates the pieces' cotangents in order, as a split's does.
    """
    return [jax.lax.dynamic_slice_in_dim(buffer, o, n) for o, n in zip(offsets, sizes)]


def _cut_fwd(buffer: Any, offsets: tuple[Any, ...], sizes: tuple[int, ...]) -> tuple[list[Any], Any]:
    return _cut(buffer, offsets, sizes), offsets


def _cut_bwd(sizes: tuple[int, ...], offsets: tuple[Any, ...], cotangents: list[Any]) -> tuple[Any, Any]:
    whole = jnp.concatenate(cotangents) if len(cotangents) > 1 else cotangents[0]
    return whole, tuple(np.zeros(np.shape(o), jax.dtypes.float0) for o in offsets)


_cut.defvjp(_cut_fwd, _cut_bwd)


def _shaped(x: Any, shape: tuple[int, ...]) -> Any:
    """A kept leaf's storage (its shape without unit dimensions) in the leaf's shape.

    Inside a jitted function the reshape is free; outside one a leaf with unit
    dimensions is a reshaped copy, and any other is the storage array itself.
    """
    return x if tuple(np.shape(x)) == shape else x.reshape(shape)


@functools.lru_cache(maxsize=4096)
def _leaf_view(size: int, shape: tuple[int, ...]) -> Callable[[jax.Array, Any], jax.Array]:
    """A compiled view of ``size`` elements of a flat buffer, from an offset given as an argument, in ``shape``."""
    return jax.jit(lambda buf, offset: jax.lax.dynamic_slice_in_dim(buf, offset, size).reshape(shape))


def _placed_like(x: Any, like: Any) -> jax.Array:
    """A host array as a device array with ``like``'s dtype and, when ``like`` is placed, its sharding."""
    if isinstance(like, jax.Array) and like.committed:
        return jax.device_put(np.asarray(x).astype(like.dtype), like.sharding)
    return jnp.asarray(x, dtype=like.dtype)
