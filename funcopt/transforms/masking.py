"""Masking and partition: the functional form of parameter groups."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax

from funcopt._src.base import GradientTransformation, MaskedNode, PyTree, floating_only, with_extra_args_support
from funcopt._src.packing import refuse_packed
from funcopt._src.tree import name_mask

__all__ = ["MaskedNode", "MaskedState", "PartitionState", "label_fn_from_names", "masked", "partition"]


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner transform's state over the selected leaves."""

    inner_state: Any


class PartitionState(NamedTuple):
    """State of :func:`partition`: one inner state per label."""

    inner_states: dict[Hashable, Any]


def _is_patterns(spec: Any) -> bool:
    if isinstance(spec, str):
        return True
    return isinstance(spec, (list, tuple)) and len(spec) > 0 and all(isinstance(s, str) for s in spec)


def _resolve_mask(mask: Any, params: PyTree) -> PyTree:
    if _is_patterns(mask):
        return name_mask(params, mask)
    return mask(params) if callable(mask) else mask


def _select(tree: PyTree, mask: PyTree) -> PyTree:
    return jax.tree.map(lambda m, x: x if m else MaskedNode(), mask, tree)


def _merge(mask: PyTree, selected: PyTree, rest: PyTree) -> PyTree:
    return jax.tree.map(
        lambda m, s, r: s if m else r, mask, selected, rest,
        is_leaf=lambda x: isinstance(x, MaskedNode),
    )


def masked(inner: Any, mask: Any) -> GradientTransformation:
    """Apply ``inner`` only to the selected leaves; the other updates pass unchanged.

    ``mask`` is a pytree of bools with the structure of the parameters, a
    callable ``params -> pytree of bools``, or one or several shell-style
    patterns matched against the torch-style names (``'*.bias'``).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> params = {'w': jnp.ones(2), 'b': jnp.ones(2)}
        >>> tx = fo.masked(fo.sgd(lr=1.0), ['w'])
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> updates['w'], updates['b']
        (Array([-1., -1.], dtype=float32), Array([1., 1.], dtype=float32))
    """
    inner = with_extra_args_support(inner)

    def init(params):
        refuse_packed(params, "fo.masked")
        m = _resolve_mask(mask, params)
        return MaskedState(inner.init(_select(params, m)))

    def update(updates, state, params=None, **extra):
        refuse_packed(updates, "fo.masked")
        m = _resolve_mask(mask, updates if params is None else params)
        sel_params = None if params is None else _select(params, m)
        new_sel, inner_state = inner.update(_select(updates, m), state.inner_state, sel_params, **extra)
        return _merge(m, new_sel, updates), MaskedState(inner_state)

    return floating_only(GradientTransformation(init, update))


def partition(transforms: Mapping[Hashable, Any], labels: Any) -> GradientTransformation:
    """Apply a different transform to each labelled part of one pytree.

    ``labels`` is a pytree of labels with the structure of the parameters, or a
    callable ``params -> pytree of labels`` (see :func:`funcopt.name_labels`).
    Every label must have a transform. This is how one model pytree gets
    groups with their own hyperparameters in the functional API.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> params = {'w': jnp.ones(2), 'b': jnp.ones(2)}
        >>> labels = fo.name_labels(params, lambda name, _: 'bias' if name == 'b' else 'weight')
        >>> tx = fo.partition({'weight': fo.sgd(lr=1.0), 'bias': fo.sgd(lr=0.5)}, labels)
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> updates['w'], updates['b']
        (Array([-1., -1.], dtype=float32), Array([-0.5, -0.5], dtype=float32))
    """
    txs = {k: with_extra_args_support(t) for k, t in transforms.items()}

    def resolve(params):
        refuse_packed(params, "fo.partition")
        lab = labels(params) if callable(labels) else labels
        unknown = set(jax.tree.leaves(lab)) - set(txs)
        if unknown:
            raise ValueError(f"partition: labels {sorted(map(str, unknown))} have no transform; "
                             f"transforms are given for {sorted(map(str, txs))}")
        return lab

    def init(params):
        lab = resolve(params)
        return PartitionState({
            k: t.init(_select(params, jax.tree.map(lambda x, k=k: x == k, lab)))
            for k, t in txs.items()
        })

    def update(updates, state, params=None, **extra):
        lab = resolve(updates if params is None else params)
        new_states = {}
        out = updates
        for k, t in txs.items():
            m = jax.tree.map(lambda x, k=k: x == k, lab)
            sel_params = None if params is None else _select(params, m)
            new_sel, new_states[k] = t.update(_select(updates, m), state.inner_states[k], sel_params, **extra)
            out = _merge(m, new_sel, out)
        return out, PartitionState(new_states)

    return floating_only(GradientTransformation(init, update))


def label_fn_from_names(rules: Mapping[str, Any], default: Any) -> Callable[[PyTree], PyTree]:
    """Labels by the first matching name pattern, for :func:`partition`.

    ``rules`` maps shell-style patterns over the torch-style names
    (``'*.bias'``, ``'encoder.*'``; see :func:`funcopt.named_leaves`) to
    labels; a leaf no pattern matches gets ``default``. Names are the same for
    a tree of plain arrays and for one of ``nnx.Variable`` (flax's
    ``nnx.Optimizer`` initializes with the latter and updates with the
    former). A pattern that matches no leaf of the tree the function is
    called with raises ``ValueError`` naming it and some of the names, as a
    misspelt rule would otherwise change nothing silently.

    Example:
        >>> import funcopt as fo
        >>> fn = fo.label_fn_from_names({'*.bias': 'no_decay'}, default='decay')
        >>> fn({'fc': {'weight': 1.0, 'bias': 0.0}})
        {'fc': {'bias': 'no_decay', 'weight': 'decay'}}
    """
    import fnmatch

    from funcopt._src.tree import name_labels

    rules = dict(rules)
    for pat in rules:
        if not isinstance(pat, str):
            raise TypeError(f"label_fn_from_names: rules must map name patterns (strings) to labels, got {pat!r}")

    def labels(params):
        used: set[str] = set()
        names: list[str] = []

        def label(name, _):
            names.append(name)
            for pat, lab in rules.items():
                if fnmatch.fnmatchcase(name, pat):
                    used.add(pat)
                    return lab
            return default

        refuse_packed(params, "fo.label_fn_from_names")
        out = name_labels(params, label)
        unused = [pat for pat in rules if pat not in used
                  and not any(fnmatch.fnmatchcase(n, pat) for n in names)]
        if unused:
            shown = ", ".join(repr(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
            raise ValueError(f"label_fn_from_names: rule {unused[0]!r} matched no parameter; names are "
                             f"{shown} ({len(names)} in all)")
        return out

    return labels
