"""Parameter groups cut from one model pytree."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from funcopt._src.base import PyTree
from funcopt._src.tree import path_name
from funcopt.optim import _model
from funcopt.transforms.masking import MaskedNode


def param_groups(
    params: PyTree,
    rules: Mapping[str, Mapping[str, Any]] | Sequence[tuple[Any, Mapping[str, Any]]] = (),
    *,
    wrt: Any = None,
) -> list[dict[str, Any]]:
    """Split ONE model into torch-style param groups by parameter name.

    ``rules`` maps a shell-style name pattern (``'*.bias'``) or a predicate
    ``(name, leaf) -> bool`` to the group's hyperparameters; the first matching
    rule wins and unmatched parameters form a last group with the optimizer's
    defaults. A rule that matches no trainable parameter raises ``ValueError``
    (a typo such as ``'*.bais'`` would otherwise change nothing, silently).

    ``params`` is a model as the optimizers take it: a pytree of arrays, an nnx
    module, an equinox module, or a pytree with non-trainable leaves; ``wrt``
    chooses its trainable leaves as for the optimizers. Names are attribute paths
    written the torch way (``'layers.0.bias'``, never ending in ``.value``). The
    optimizer built from the groups still trains ONE model: ``opt.params`` and
    ``opt.model`` have its structure and ``backward`` hands the loss function the
    whole model. Groups come in the order of the rules, so a group cut later from
    the same model can be added to a running optimizer (unfreezing a part that
    ``wrt`` left out): ``opt.add_param_group(param_groups(model, {'backbone.*': {'lr': 1e-4}})[0])``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> model = {'fc': {'weight': jnp.ones((2, 2)), 'bias': jnp.zeros(2)}}
        >>> groups = fo.optim.param_groups(model, {'*.bias': {'weight_decay': 0.0}})
        >>> opt = fo.optim.AdamW(groups, lr=1e-3, weight_decay=0.1)
        >>> [g['weight_decay'] for g in opt.param_groups], sorted(opt.params['fc'])
        ([0.0, 0.1], ['bias', 'weight'])
        >>> fo.optim.param_groups(model, {'*.bais': {'weight_decay': 0.0}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: param_groups: the rule '*.bais' matches no trainable parameter; ...
    """
    items = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    preds: list[Callable[[str, Any], bool]] = []
    for spec, hp in items:
        if not isinstance(hp, Mapping):
            raise TypeError(f"the hyperparameters of a group must be a dict, got {type(hp).__name__}")
        if "params" in hp:
            raise ValueError("a rule's hyperparameters cannot contain 'params'")
        if callable(spec):
            preds.append(spec)
        elif isinstance(spec, str):
            preds.append(_model.pattern_predicate(spec))
        else:
            raise TypeError(f"a rule is a name pattern or a predicate (name, leaf) -> bool, got {spec!r}")
    specs = [spec for spec, _ in items]
    if _model.is_model(params, wrt):
        source, flat, mask = _model.split_model(params, wrt)
        positions = [i for i, m in enumerate(mask) if m]
        part = _model.ModelPart(source, flat, positions)
        if not positions:
            _model.no_trainable(part, wrt)
        labels = _model.match_rules(part.names, [flat.leaves[i] for i in positions], preds, specs)
        groups = []
        for i in range(len(preds) + 1):
            chosen = [p for p, lab in zip(positions, labels) if lab == i]
            if chosen:
                groups.append({"params": _model.ModelPart(source, flat, chosen),
                               **(dict(items[i][1]) if i < len(items) else {})})
        return groups
    with_path = jax.tree_util.tree_flatten_with_path(params)[0]
    label_list = _model.match_rules([path_name(p) for p, _ in with_path], [x for _, x in with_path], preds, specs)
    labelled = jax.tree.unflatten(jax.tree.structure(params), label_list)
    labels = jax.tree.leaves(labelled)
    groups = []
    for i in range(len(preds) + 1):
        if i not in labels:
            continue
        cut = jax.tree.map(lambda lab, leaf, i=i: leaf if lab == i else MaskedNode(), labelled, params)
        group = {"params": cut}
        if i < len(items):
            group.update(items[i][1])
        groups.append(group)
    return groups
