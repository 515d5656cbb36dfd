"""How the stateful optimizers read their ``params`` argument: torch's forms, in torch's order.

torch numbers parameters in the order the user lists them: ``state_dict()['state'][i]`` and
``param_names`` follow ``model.named_parameters()``. A list of ``(name, array)`` pairs is
therefore kept as an ordered mapping (``collections.OrderedDict``, which JAX flattens in
insertion order, where a ``dict`` is flattened by sorted keys), so index ``i`` here is index ``i``
in torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from funcopt.optim._util import is_array

_MIXED_NAMES = "all optimizer params should be with/without names. Some param names are missing"


def _is_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)


def _is_registered_pytree(x: Any) -> bool:
    leaves = jax.tree.leaves(x)
    return not (len(leaves) == 1 and leaves[0] is x)


def normalize_params(params: Any) -> list[dict[str, Any]]:
    """The constructor's ``params`` as a list of group dicts, with torch's errors for what torch refuses.

    A single array, a set, and a list mixing ``(name, array)`` pairs with bare arrays raise as in
    torch. A list of group dicts is copied; anything else (a pytree, a model, a list of arrays or of
    pairs) is one group.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optim._params import normalize_params
        >>> [g['params'] for g in normalize_params([('weight', 1.0), ('bias', 0.0)])]
        [[('weight', 1.0), ('bias', 0.0)]]
    """
    if isinstance(params, (jax.Array, np.ndarray)):
        raise TypeError("params argument given to the optimizer should be an iterable of Tensors or "
                        f"dicts, but got {type(params).__module__}.{type(params).__name__}; wrap a single "
                        "array in a list or dict")
    if isinstance(params, (set, frozenset)):
        raise TypeError("optimizer parameters need to be organized in ordered collections, but the "
                        "ordering of tensors in sets will change between runs. Please use a list instead.")
    if isinstance(params, Iterable) and not isinstance(params, (Mapping, list, tuple)) \
            and not _is_registered_pytree(params):
        params = list(params)  # a generator such as model.named_parameters()
    if isinstance(params, list) and params and all(isinstance(g, Mapping) and "params" in g for g in params):
        return [dict(g) for g in params]
    return [{"params": params}]


def named_group(param_group: Mapping[str, Any], namings: Sequence[bool | None]) -> tuple[dict[str, Any], bool | None]:
    """A group whose ``(name, array)`` pairs become an ordered name -> array mapping, and whether it is named.

    Returns the group and its naming: True for pairs (or explicit ``param_names``), False for a
    plain list of arrays, None for any other pytree (a dict or a model names its leaves itself).
    As torch does, raises ``ValueError`` for a list that names only some of its parameters, and for
    a named group next to an unnamed one (``namings`` are those of the groups already there).

    Example:
        >>> from funcopt.optim._params import named_group
        >>> group, named = named_group({'params': [('weight', 1.0), ('bias', 0.0)], 'lr': 0.1}, [])
        >>> list(group['params']), named
        (['weight', 'bias'], True)
    """
    group = dict(param_group)
    params = group["params"]
    naming: bool | None = None
    if isinstance(params, (list, tuple)) and len(params) > 0:
        pairs = [_is_pair(x) for x in params]
        if all(pairs):
            names = [name for name, _ in params]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"parameter names must be unique within the optimizer, but {repeated[0]!r} "
                                 "names more than one parameter")
            given = group.pop("param_names", None)
            if given is not None and list(given) != names:
                raise ValueError("param_names given next to (name, array) pairs must be the pairs' names")
            group["params"] = OrderedDict(params)
            naming = True
        elif any(pairs):
            raise ValueError(_MIXED_NAMES)
        elif all(is_array(x) for x in params):
            naming = "param_names" in group
    elif "param_names" in group:
        naming = True
    if naming is not None and any(other is not None and other != naming for other in namings):
        raise ValueError("all optimizer param groups should be with/without names. cannot add param group "
                         f"{'with' if naming else 'without'} names to the optimizer")
    return group, naming


def conform(tree: Any, treedef: Any) -> Any:
    """``tree`` in the container of named parameters, when it is given as a dict or as (name, value) pairs.

    Parameters given as ``(name, array)`` pairs are held in an ordered mapping; gradients or values
    for them may come as a plain ``dict`` or as pairs, in any order. Anything else is returned as is
    (and checked against the parameters' structure by the caller).

    Example:
        >>> import jax
        >>> from collections import OrderedDict
        >>> from funcopt.optim._params import conform
        >>> treedef = jax.tree.structure(OrderedDict([('weight', 0), ('bias', 0)]))
        >>> list(conform({'bias': 2.0, 'weight': 1.0}, treedef).items())
        [('weight', 1.0), ('bias', 2.0)]
    """
    data = treedef.node_data()
    if data is None or data[0] is not OrderedDict:
        return tree
    keys = list(data[1])
    if isinstance(tree, list) and tree and all(_is_pair(x) for x in tree):
        tree = dict(tree)
    if isinstance(tree, Mapping) and not (isinstance(tree, OrderedDict) and list(tree) == keys) \
            and len(tree) == len(keys) and all(k in tree for k in keys):
        return OrderedDict((k, tree[k]) for k in keys)
    return tree


def is_index_names(names: Sequence[str]) -> bool:
    """Whether ``names`` are the positions ``'0', '1', ...`` a list of arrays without names gets.

    Such names say nothing about which parameter is which, so loading by index does not compare them.

    Example:
        >>> from funcopt.optim._params import is_index_names
        >>> is_index_names(['0', '1']), is_index_names(['weight', 'bias'])
        (True, False)
    """
    return [str(n) for n in names] == [str(i) for i in range(len(names))]


def check_names_match(ours: Sequence[Sequence[str]], saved: Sequence[Any]) -> None:
    """Refuse loading by index when both sides name their parameters and a name differs.

    ``ours``: the optimizer's parameter names per group; ``saved``: the saved param groups.

    Example:
        >>> from funcopt.optim._params import check_names_match
        >>> check_names_match([['weight', 'bias']], [{'params': [0, 1], 'param_names': ['bias', 'weight']}])
        Traceback (most recent call last):
        ...
        ValueError: loaded state dict names parameter 0 of group 0 'bias', but it is 'weight' here; ...
    """
    for gi, (names, sg) in enumerate(zip(ours, saved)):
        theirs = sg.get("param_names") if isinstance(sg, Mapping) else None
        if theirs is None or len(theirs) != len(names) or is_index_names(names) or is_index_names(theirs):
            continue
        for i, (a, b) in enumerate(zip(names, theirs)):
            if str(a) != str(b):
                raise ValueError(f"loaded state dict names parameter {i} of group {gi} {str(b)!r}, but it is "
                                 f"{str(a)!r} here; the parameters are in another order or are other "
                                 "parameters: load with load_state_dict(state_dict, by_name=True) to match "
                                 "them by name")
