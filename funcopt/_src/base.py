"""Core types of the functional API: transforms, chaining and applying updates."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.tree import floating_mask, is_floating, is_nnx_variable, zeros_like

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = PyTree


class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure pair of functions ``(init, update)`` over pytrees.

    ``init(params) -> state`` builds the optimizer state; ``update(grads, state,
    params=None, **extra) -> (updates, new_state)`` turns gradients into the
    deltas to add to the parameters (optax's sign convention). Keyword extras
    that a transform does not use (``value=``, ``grad=``, ``value_fn=`` for line
    searches) are ignored.

    The pair has the same shape as ``optax.GradientTransformation``, so a
    funcopt optimizer can be passed to code that expects optax and an optax
    transform can sit in :func:`funcopt.chain`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.sgd(lr=0.1)
        >>> params = {'w': jnp.ones(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({'w': jnp.ones(2)}, state, params)
        >>> fo.apply_updates(params, updates)['w']
        Array([0.9, 0.9], dtype=float32)
    """

    init: TransformInitFn
    update: TransformUpdateFn


class EmptyState(NamedTuple):
    """The state of a transform that keeps none."""


class MaskedNode(NamedTuple):
    """Stands for a leaf that a transform does not see (a pytree node with no leaves).

    Masked transforms (:func:`funcopt.masked`, :func:`funcopt.partition`) put
    it in place of the leaves they leave out, and every funcopt transform puts
    it in place of the leaves that are not floating (see :func:`floating_only`),
    so those leaves keep no state.
    """


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class FixedHParam:
    """A hyperparameter fixed when the optimizer was built: part of the state's structure, not an array.

    A per-leaf optimizer built with ``weight_decay=0`` (a Python number, torch's default) holds
    ``FixedHParam(0.0)`` in place of the decay array: the compiled update has no decay term and
    does not read the parameters for it (the decay term costs a read of every parameter per step,
    a quarter of Adam's memory traffic, even when its value is 0). A decay given as an array
    (``weight_decay=jnp.asarray(0.0)``), or any nonzero number, is held as data as before. SGD's
    ``dampening`` is fixed the same way: at 0 the momentum needs no select on the first step.

    :func:`funcopt.get_hparams` reads it as its number; :func:`funcopt.set_hparams` with another
    value replaces it by an array, which changes the state's structure: the next jitted step traces
    and compiles once (with the decay term), and later changes compile nothing.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> state = fo.adam(lr=0.1).init({'w': jnp.ones(2)})
        >>> state.hparams['weight_decay'], fo.get_hparams(state)['weight_decay']
        (FixedHParam(value=0.0), 0.0)
        >>> float(fo.get_hparams(fo.set_hparams(state, weight_decay=0.1))['weight_decay'])
        0.1
    """

    value: float


def _accepts_extra_kwargs(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def with_extra_args_support(tx: Any) -> GradientTransformation:
    """Return ``tx`` as a :class:`GradientTransformation` whose ``update`` accepts extras.

    Transforms from other libraries (e.g. a plain ``optax.GradientTransformation``)
    whose ``update`` takes only ``(updates, state, params)`` are wrapped so that
    keyword extras are dropped before the call.

    Example:
        >>> import optax, funcopt as fo
        >>> tx = fo.with_extra_args_support(optax.scale(2.0))
        >>> tx.update({'a': 1.0}, tx.init({'a': 1.0}), None, value=3.0)[0]
        {'a': 2.0}
    """
    if isinstance(tx, GradientTransformation) or _accepts_extra_kwargs(tx.update):
        return GradientTransformation(tx.init, tx.update)

    def update(updates, state, params=None, **extra):
        del extra
        return tx.update(updates, state, params)

    return GradientTransformation(tx.init, update)


def chain(*transforms: Any) -> GradientTransformation:
    """Compose transforms: each one's updates feed the next.

    The state is the tuple of the transforms' states, in order. Keyword extras
    reach every transform that accepts them. Transforms from optax are accepted;
    like every funcopt transform, the chain hands them only the floating
    leaves (see :func:`floating_only`).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.chain(fo.clip_by_global_norm(1.0), fo.sgd(lr=1.0))
        >>> params = {'w': jnp.zeros(2)}
        >>> updates, _ = tx.update({'w': jnp.array([3.0, 4.0])}, tx.init(params), params)
        >>> updates['w']
        Array([-0.6, -0.8], dtype=float32)
    """
    txs = tuple(with_extra_args_support(t) for t in transforms)

    def init(params):
        return tuple(t.init(params) for t in txs)

    def update(updates, state, params=None, **extra):
        if len(state) != len(txs):
            raise ValueError(
                f"chain of {len(txs)} transforms got a state of length {len(state)}"
            )
        new_state = []
        for t, s in zip(txs, state):
            updates, s = t.update(updates, s, params, **extra)
            new_state.append(s)
        return updates, tuple(new_state)

    return floating_only(GradientTransformation(init, update))


def identity() -> GradientTransformation:
    """A transform that returns the updates unchanged and keeps no state.

    Example:
        >>> import funcopt as fo
        >>> tx = fo.identity()
        >>> tx.update({'a': 1.0}, tx.init({'a': 0.0}))[0]
        {'a': 1.0}
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del params, extra
        return updates, state

    return floating_only(GradientTransformation(init, update))


def stateless(f: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transform from a function ``f(updates, params) -> updates`` with no state.

    ``f`` receives the trees with :class:`MaskedNode` in place of the leaves
    that are not floating (see :func:`floating_only`).

    Example:
        >>> import jax, funcopt as fo
        >>> tx = fo.stateless(lambda u, p: jax.tree.map(lambda x: -x, u))
        >>> tx.update({'a': 1.0}, tx.init(None))[0]
        {'a': -1.0}
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra):
        del extra
        return f(updates, params), state

    return floating_only(GradientTransformation(init, update))


def stateless_with_tree_map(f: Callable[[jax.Array, jax.Array | None], jax.Array]) -> GradientTransformation:
    """A stateless transform from a per-leaf function ``f(update, param) -> update``.

    ``f`` sees the floating leaves only (see :func:`floating_only`).

    Example:
        >>> import funcopt as fo
        >>> tx = fo.stateless_with_tree_map(lambda u, p: 2 * u)
        >>> tx.update({'a': 1.0, 'b': 2.0}, tx.init(None))[0]
        {'a': 2.0, 'b': 4.0}
    """

    def g(updates, params):
        if params is None:
            return jax.tree.map(lambda u: f(u, None), updates)
        return jax.tree.map(f, updates, params)

    return stateless(g)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates``, each leaf cast back to its parameter's dtype.

    Leaves whose update is ``None``, and parameters that are not floating
    (integer, bool, PRNG keys, ``None``, other objects: see
    :func:`floating_only`), are returned as they are, bit-identical.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.apply_updates({'w': jnp.ones(2, jnp.bfloat16)}, {'w': jnp.full(2, 0.5)})['w']
        Array([1.5, 1.5], dtype=bfloat16)
        >>> fo.apply_updates({'n': jnp.array([5, 7])}, {'n': jnp.array([1, 1])})['n']
        Array([5, 7], dtype=int32)
    """

    def add(u, p):
        if u is None or not is_floating(p):
            return p
        p = jnp.asarray(p)
        return jnp.asarray(p + u).astype(p.dtype)

    return jax.tree.map(add, updates, params, is_leaf=lambda x: x is None)


# --- the leaves a transform sees ------------------------------------------------------------------------


def select_leaves(tree: PyTree, mask: PyTree) -> PyTree:
    """``tree`` with :class:`MaskedNode` in place of the leaves (or subtrees) whose ``mask`` is False.

    ``mask`` is a pytree of bools that is a prefix of ``tree``.

    Example:
        >>> from funcopt._src.base import select_leaves
        >>> select_leaves({'a': 1.0, 'b': 2}, {'a': True, 'b': False})
        {'a': 1.0, 'b': MaskedNode()}
    """
    return jax.tree.map(lambda m, x: x if m else MaskedNode(), mask, tree)


def merge_leaves(mask: PyTree, selected: PyTree, rest: PyTree) -> PyTree:
    """The leaves of ``selected`` where ``mask`` is True and those of ``rest`` elsewhere.

    Example:
        >>> from funcopt._src.base import MaskedNode, merge_leaves
        >>> merge_leaves({'a': True, 'b': False}, {'a': 3.0, 'b': MaskedNode()}, {'a': 1.0, 'b': 2})
        {'a': 3.0, 'b': 2}
    """
    return jax.tree.map(lambda m, s, r: s if m else r, mask, selected, rest)


def unchanged_update(update: Any, param: Any = None) -> Any:
    """The update of a leaf that is not trained: adding it leaves the parameter bit-identical.

    Zeros of the parameter's shape and dtype for integer, bool and ``uint32``
    key-data leaves (so ``optax.apply_updates`` leaves them alone too); a
    ``float0`` array (JAX's tangent of a key) for typed keys and ``float0``
    gradients; ``None`` for a ``None`` gradient; any other object is returned
    as given. ``param`` is None when ``update()`` got no parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.base import unchanged_update
        >>> unchanged_update(jnp.array([1, 1]), jnp.array([5, 7]))
        Array([0, 0], dtype=int32)
    """
    if update is None:
        return None
    ref = update if param is None else param
    if is_nnx_variable(ref):
        ref = jax.tree.leaves(ref)[0]
    dtype = getattr(ref, "dtype", None)
    if dtype is None and not isinstance(ref, (bool, int, np.bool_, np.integer)):
        return update  # not an array: nothing to add
    shape = np.shape(ref)
    if dtype is not None and (jax.dtypes.issubdtype(dtype, jax.dtypes.extended) or dtype == jax.dtypes.float0):
        return np.zeros(shape, jax.dtypes.float0)
    return zeros_like(ref)


def floating_only(tx: Any) -> GradientTransformation:
    """``tx`` acting on the floating leaves only: every other leaf passes through unchanged.

    This is the rule of every funcopt optimizer and transform (each is built
    with it): a leaf is trained when it is an array or number of a floating
    or complex dtype (:func:`funcopt.tree_utils.is_floating`). The other
    leaves a real model carries (integer and bool arrays, ``uint32`` PRNG key
    data, typed keys from ``jax.random.key``, ``float0`` gradients, ``None``,
    functions...) are replaced by :class:`MaskedNode` before ``tx`` sees them,
    so they are never read by its arithmetic, never enter a norm, an average
    or a finiteness check, and keep no state (like ``optax.masked``). Their
    update is :func:`unchanged_update` (zeros of their dtype, which
    ``optax.apply_updates`` adds without a change; ``float0`` for keys), and
    :func:`funcopt.apply_updates` returns such parameters bit-identical.
    Which leaves are floating is read from ``params`` when given, else from
    the gradients. The extras ``grad=`` and ``value_fn=`` of line searches
    are narrowed and widened to match. A tree whose leaves are all floating
    goes to ``tx`` as it is.

    Wrap an optax transform with it to give it the same rule.

    Args:
        tx: a funcopt or optax transform.

    Returns:
        A :class:`GradientTransformation` with ``tx``'s state.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import funcopt as fo
        >>> tx = fo.floating_only(optax.adamw(0.1, weight_decay=0.5))
        >>> params = {'w': jnp.ones(2), 'n': jnp.array([5, 7, 9]), 'key': jax.random.key(0)}
        >>> grads = {'w': jnp.ones(2), 'n': jnp.ones(3, jnp.int32), 'key': jax.random.key(1)}
        >>> updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
        >>> new = fo.apply_updates(params, updates)
        >>> new['n'], new['w']
        (Array([5, 7, 9], dtype=int32), Array([0.85, 0.85], dtype=float32))
    """
    tx = with_extra_args_support(tx)

    def init(params):
        mask = floating_mask(params)
        if all(jax.tree.leaves(mask)):
            return tx.init(params)
        return tx.init(select_leaves(params, mask))

    def update(updates, state, params=None, **extra):
        mask = floating_mask(updates if params is None else params)
        if all(jax.tree.leaves(mask)):
            return tx.update(updates, state, params, **extra)
        if extra.get("grad") is not None:
            extra["grad"] = select_leaves(extra["grad"], mask)
        value_fn = extra.get("value_fn")
        if value_fn is not None and params is not None:
            # the caller's loss sees the whole tree: the leaves left out come back as they were
            extra["value_fn"] = lambda selected: value_fn(merge_leaves(mask, selected, params))
        selected = select_leaves(updates, mask)
        new, state = tx.update(selected, state, None if params is None else select_leaves(params, mask), **extra)
        if params is None:
            out = jax.tree.map(lambda m, n, u: n if m else unchanged_update(u), mask, new, updates)
        else:
            out = jax.tree.map(lambda m, n, u, p: n if m else unchanged_update(u, p), mask, new, updates, params)
        return out, state

    return GradientTransformation(init, update)
