"""Parameters without a gradient in a step: torch skips them, and so does the compiled step here.

torch.optim steps only the parameters whose ``.grad`` is not None: the others keep their values
and their state (no update, no weight decay, no new moments). A step here is one compiled call per
pattern of present gradients: a group with none is passed through, and a group with some computes
its update on zeros in the missing places, then keeps the old values there (parameters and every
per-parameter state slot). The group's step count (one per group here, one per parameter in torch)
advances when any of its parameters has a gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.hparams import OptimizerState
from funcopt.optim._layout import Layout

Present = bool | tuple[bool, ...]
"""Per group: True (every parameter has a gradient), False (none has), or one flag per parameter."""


def pattern(leaves: Sequence[Any]) -> Present:
    """The presence flags of one group's gradient leaves (None where a parameter has no gradient)."""
    flags = tuple(x is not None for x in leaves)
    return True if all(flags) else (False if not any(flags) else flags)


def fill_missing(layout: Layout, leaves: Sequence[Any]) -> list[Any]:
    """Gradient leaves with zeros where a gradient is missing (traced in the step that packs them)."""
    return [jnp.zeros(shape, dtype) if x is None else x for x, shape, dtype in zip(leaves, layout.shapes,
                                                                                  layout.dtypes)]


def _choose(layout: Layout, present: tuple[bool, ...], new: Sequence[Any], old: Sequence[Any]) -> list[Any]:
    """Storage entries: the new value where the parameter has a gradient, the old one elsewhere."""
    out = []
    for j, (n, o) in enumerate(zip(new, old)):
        if n is None or o is None:
            out.append(n)
            continue
        if not layout.flat:
            out.append(n if present[j] else o)
            continue
        members = layout.members[j]
        flags = [present[i] for i in members]
        if all(flags) or jnp.ndim(n) == 0:  # a per-buffer scalar advances with its buffer's steps
            out.append(n)
        elif not any(flags):
            out.append(o)
        else:
            mask = np.concatenate([np.full(layout.where[i][2], present[i]) for i in members])
            out.append(jnp.where(mask, n, o))
    return out


def keep_skipped(layout: Layout, present: tuple[bool, ...], old_params: list[Any], new_params: list[Any],
                 old_state: Any, new_state: Any) -> tuple[list[Any], Any]:
    """The step's result with the parameters that had no gradient (and their state slots) as they were."""
    params = _choose(layout, present, new_params, old_params)

    def keep(new, old):
        if not isinstance(new, OptimizerState):
            return new
        slots = {}
        for k, tree in new.slots.items():
            entries, treedef = jax.tree.flatten(tree, is_leaf=lambda x: x is None)
            before = jax.tree.flatten(old.slots[k], is_leaf=lambda x: x is None)[0]
            slots[k] = treedef.unflatten(_choose(layout, present, entries, before))
        return new._replace(slots=slots)

    state = jax.tree.map(keep, new_state, old_state, is_leaf=lambda x: isinstance(x, OptimizerState))
    return params, state
