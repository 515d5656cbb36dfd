"""The functional state of a parameter group, read and rewritten per parameter.

A group's state is its functional optimizer's state (:class:`~funcopt.OptimizerState`
nodes, possibly inside a chain), over the group's :class:`~funcopt.optim._layout.Layout`
storage. These functions find the per-parameter slots in it (torch's per-parameter
state), the group-level arrays beside them, and the step count; and build states with
some of them replaced.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.hparams import OptimizerState, optimizer_states
from funcopt.optim._layout import Layout


def _is_state(x: Any) -> bool:
    return isinstance(x, OptimizerState)


def slot_names(state: Any) -> list[str]:
    """The names of the per-parameter slots of ``state`` (torch's state keys), in order.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> from funcopt.optim._state_tree import slot_names
        >>> slot_names(fo.sgd(lr=0.1, momentum=0.9).init([jnp.zeros(2)]))
        ['momentum_buffer']
    """
    return [k for s in optimizer_states(state) for k in s.slots]


def slot_leaves(tree: Any) -> list[Any]:
    """The storage leaves of one slot; None (a parameter without that slot) stays a leaf."""
    return jax.tree.leaves(tree, is_leaf=lambda x: x is None)


def slots_per_param(state: Any, layout: Layout) -> list[dict[str, np.ndarray]]:
    """Per parameter of the group, its slots as host arrays (``{'exp_avg': array, ...}``)."""
    per_param: list[dict[str, np.ndarray]] = [{} for _ in layout.shapes]
    for s in optimizer_states(state):
        for k, tree in s.slots.items():
            for i, leaf in enumerate(layout.unpack_host(slot_leaves(tree))):
                if leaf is not None:  # a slot this parameter does not have (Adafactor's row_var of a vector)
                    per_param[i][k] = leaf
    return per_param


def step_of(state: Any) -> jax.Array:
    """The step count of a group's state (its first optimizer's; 0 for a state without one)."""
    states = optimizer_states(state)
    return states[0].step if states else jnp.zeros([], jnp.int32)


def extra_leaves(state: Any) -> list[Any]:
    """Arrays of the functional state outside its per-parameter slots (e.g. schedule-free's weight sum)."""
    nodes = jax.tree.leaves(state, is_leaf=_is_state)
    return [x for x in nodes if not _is_state(x)]


def replace_extra(state: Any, values: list[Any]) -> Any:
    """``state`` with the arrays :func:`extra_leaves` lists replaced by ``values`` (cast to their dtypes)."""
    nodes, treedef = jax.tree.flatten(state, is_leaf=_is_state)
    it = iter(values)
    return treedef.unflatten([n if _is_state(n) else jnp.asarray(next(it), n.dtype) for n in nodes])


def carry_slots(old: Any, new: Any) -> Any:
    """Copy slots that exist in both the old and the rebuilt state (same names and shapes)."""
    olds = optimizer_states(old)
    if not olds:
        return new
    src = olds[0]

    def replace(node):
        if not _is_state(node):
            return node
        slots = dict(node.slots)
        for k in slots:
            if k in src.slots and jax.tree.structure(src.slots[k]) == jax.tree.structure(slots[k]):
                # in the rebuilt state's dtypes: a new state_dtype applies to the carried values
                slots[k] = jax.tree.map(lambda old, fresh: old.astype(fresh.dtype), src.slots[k], slots[k])
        return node._replace(step=src.step, slots=slots)

    return jax.tree.map(replace, new, is_leaf=_is_state)


def with_slots(state: Any, layout: Layout, new_slots: dict[str, list], step: int) -> Any:
    """``state`` with per-parameter slot values (None: keep the current one) and a new step count."""
    def replace(node):
        if not _is_state(node):
            return node
        slots = {}
        for k, tree in node.slots.items():
            storage, treedef = jax.tree.flatten(tree, is_leaf=lambda x: x is None)
            given = new_slots.get(k)
            if given is None or all(v is None for v in given):
                slots[k] = tree
                continue
            fresh = layout.unpack_host(storage)
            per_leaf = [v if v is not None else f for v, f in zip(given, fresh)]
            slots[k] = treedef.unflatten(layout.pack_host(per_leaf, storage))
        return node._replace(step=jnp.asarray(step, node.step.dtype), slots=slots)

    return jax.tree.map(replace, state, is_leaf=_is_state)


def literal_zero_decay(state: Any) -> Any:
    """``state`` with each ``weight_decay`` replaced by a literal 0 of its dtype (for tracing)."""
    def replace(node):
        if not _is_state(node) or "weight_decay" not in node.hparams:
            return node
        zero = jax.tree.map(lambda d: np.zeros((), d.dtype), node.hparams["weight_decay"])
        return node._replace(hparams={**node.hparams, "weight_decay": zero})

    return jax.tree.map(replace, state, is_leaf=_is_state)


def restore_hparams(new: Any, old: Any) -> Any:
    """``new`` with the hyperparameters of ``old`` (the traced values, not the literals)."""
    return jax.tree.map(lambda n, o: n._replace(hparams=o.hparams) if _is_state(n) else n,
                        new, old, is_leaf=_is_state)
