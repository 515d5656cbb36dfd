"""Model adapters: which leaves of a model the stateful optimizers train, and how the model is rebuilt.

A model is what the user holds: a flax ``nnx.Module``, an equinox ``Module``, or
any pytree whose trainable arrays sit next to other leaves (integer and bool
arrays, PRNG keys, None, functions, static fields, nnx Variables). The adapter
flattens it once into a list of leaves (nnx Variables unwrapped, so names never
end in ``.value``), remembers which are trainable, and rebuilds the model from
new trainable values and the carried rest, inside a jitted function or on the
host.

flax and equinox are never imported here: an nnx module is recognised through
``sys.modules`` (if flax.nnx was never imported, nothing can be an nnx module).
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

from funcopt._src.tree import path_name
from funcopt.optim._util import is_array


def _nnx() -> Any:
    return sys.modules.get("flax.nnx")


def is_nnx_module(x: Any) -> bool:
    nnx = _nnx()
    return nnx is not None and isinstance(x, nnx.Module)


def _is_variable(x: Any) -> bool:
    nnx = _nnx()
    return nnx is not None and isinstance(x, nnx.Variable)


def _dtype(x: Any) -> Any:
    return x.dtype if is_array(x) else None


def is_inexact(x: Any) -> bool:
    """A floating or complex array (PRNG key arrays and their uint32 data are not)."""
    d = _dtype(x)
    if d is None or jax.dtypes.issubdtype(d, jax.dtypes.prng_key):
        return False
    return bool(jnp.issubdtype(d, jnp.inexact))


def _raw_key(k: Any) -> Any:
    if isinstance(k, DictKey):
        return k.key
    if isinstance(k, SequenceKey):
        return k.idx
    if isinstance(k, GetAttrKey):
        return k.name
    if isinstance(k, FlattenedIndexKey):
        return k.key
    return getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))


class Flat:
    """A pytree flattened to leaves, with nnx Variables unwrapped.

    ``leaves[i]`` is the i-th leaf of ``treedef`` (``treedef.unflatten(leaves)`` rebuilds the
    tree, Variables included); ``names[i]`` its torch-style name without ``.value``;
    ``keys[i]`` its path as raw keys (what nnx filters see); ``holders[i]`` the nnx
    Variable that holds it, or None.
    """

    def __init__(self, tree: Any) -> None:
        units, self.top_def = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)
        self.treedef = jax.tree.structure(tree)
        self.leaves: list[Any] = []
        self.names: list[str] = []
        self.keys: list[tuple[Any, ...]] = []
        self.holders: list[Any] = []
        self.units: list[tuple[Any, int] | None] = []  # per unit: (Variable treedef, leaf count) or None
        for path, unit in units:
            if _is_variable(unit):
                sub, sub_def = jax.tree_util.tree_flatten_with_path(unit)
                self.units.append((sub_def, len(sub)))
                for sub_path, leaf in sub:
                    # a Variable's value sits under the attribute 'value': not part of the name
                    if sub_path and isinstance(sub_path[0], GetAttrKey) and sub_path[0].name == "value":
                        sub_path = sub_path[1:]
                    self._add(path + tuple(sub_path), leaf, unit)
            else:
                self.units.append(None)
                self._add(path, unit, None)

    def _add(self, path: Sequence[Any], leaf: Any, holder: Any) -> None:
        self.leaves.append(leaf)
        self.names.append(path_name(path))
        self.keys.append(tuple(_raw_key(k) for k in path))
        self.holders.append(holder)

    def rebuild(self, leaves: Sequence[Any]) -> Any:
        return self.treedef.unflatten(list(leaves))

    def copy(self) -> Flat:
        new = object.__new__(Flat)
        new.__dict__.update({k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()})
        return new

    def filtered(self, values: Mapping[int, Any]) -> Any:
        """The tree with ``values`` at their leaves and None everywhere else (equinox's ``filter``)."""
        out, i = [], 0
        for unit in self.units:
            if unit is None:
                out.append(values.get(i))
                i += 1
                continue
            sub_def, n = unit
            sub = [values.get(j) for j in range(i, i + n)]
            out.append(sub_def.unflatten(sub) if any(v is not None for v in sub) else None)
            i += n
        return self.top_def.unflatten(out)


def nested_dict(keys: Sequence[tuple[Any, ...]], values: Sequence[Any]) -> dict[Any, Any]:
    """``{('l1', 'kernel'): v}`` -> ``{'l1': {'kernel': v}}`` (nnx's pure-dict form)."""
    out: dict[Any, Any] = {}
    for path, v in zip(keys, values):
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def _wrt_predicate(wrt: Any, nnx_kind: bool) -> Callable[[tuple[Any, ...], Any, Any], bool]:
    """``(keys, leaf, holder) -> bool`` from ``wrt`` (None: the default rule)."""
    if wrt is None:
        nnx = _nnx()

        def default(keys, leaf, holder):
            if holder is not None:
                return isinstance(holder, nnx.Param) and is_inexact(leaf)
            return not nnx_kind and is_inexact(leaf)

        return default
    if nnx_kind:
        pred = _nnx().filterlib.to_predicate(wrt)
        return lambda keys, leaf, holder: holder is not None and bool(pred(keys, holder))
    if isinstance(wrt, type) or (isinstance(wrt, tuple) and all(isinstance(t, type) for t in wrt)):
        return lambda keys, leaf, holder: isinstance(holder if holder is not None else leaf, wrt)
    if callable(wrt):
        return lambda keys, leaf, holder: bool(wrt(holder if holder is not None else leaf))
    raise TypeError(f"wrt must be an nnx filter (for an nnx module), a type or a predicate leaf -> bool, got {wrt!r}")


def trainable_mask(flat: Flat, wrt: Any, nnx_kind: bool) -> list[bool]:
    """Which leaves are trained; raises if ``wrt`` picks a leaf no optimizer can train."""
    pred = _wrt_predicate(wrt, nnx_kind)
    mask = []
    for name, keys, leaf, holder in zip(flat.names, flat.keys, flat.leaves, flat.holders):
        chosen = pred(keys, leaf, holder)
        if chosen and wrt is not None:
            if not is_array(leaf):
                raise TypeError(f"optimizer can only optimize arrays, but parameter {name!r} is a "
                                f"{type(leaf).__name__}")
            if not is_inexact(leaf):
                raise ValueError(f"optimizer can only optimize floating point or complex arrays, but parameter "
                                 f"{name!r} has dtype {leaf.dtype}")
        mask.append(chosen)
    return mask


def is_model(params: Any, wrt: Any) -> bool:
    """True for what needs an adapter: a module, or a pytree with leaves that are not plain parameters.

    A list or pytree of floating arrays (and Python floats) keeps the direct path: it is
    its own parameter view, as before models were supported.
    """
    if wrt is not None or is_nnx_module(params):
        return True
    eqx = sys.modules.get("equinox")
    if eqx is not None and isinstance(params, eqx.Module):
        return True
    if isinstance(params, (jax.Array, np.ndarray, set, frozenset)):
        return False
    if isinstance(params, list) and params and all(isinstance(g, Mapping) and "params" in g for g in params):
        return False
    if isinstance(params, list) and any(isinstance(g, tuple) and len(g) == 2 and isinstance(g[0], str)
                                        for g in params):
        return False  # torch's (name, array) pairs, or a list mixing them with arrays (torch's error follows)
    try:
        leaves = jax.tree.leaves(params, is_leaf=_is_variable)
    except Exception:  # noqa: BLE001 - not a pytree: the direct path reports it
        return False
    if not leaves:
        return False
    return not all((is_array(x) and is_inexact(x)) or (isinstance(x, (float, complex)) and not isinstance(x, bool))
                   for x in leaves)


class ModelPart:
    """The parameters of one group cut from a model by :func:`funcopt.optim.param_groups`.

    An optimizer reads it as the ``'params'`` of a group dict; groups cut from one
    model give that one model back (:attr:`~funcopt.optim.Optimizer.model`).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> model = {'w': jnp.ones(2), 'b': jnp.zeros(2), 'count': jnp.array(0)}
        >>> groups = fo.optim.param_groups(model, {'b': {'lr': 0.0}})
        >>> groups[0]['params']
        ModelPart(['b'])
    """

    def __init__(self, source: Any, flat: Flat, positions: Sequence[int]) -> None:
        self.source = source  # the nnx module itself, else None
        self.flat = flat
        self.positions = list(positions)

    @property
    def names(self) -> list[str]:
        """The names of the part's parameters."""
        return [self.flat.names[i] for i in self.positions]

    def __repr__(self) -> str:
        return f"ModelPart({self.names})"


def split_model(model: Any, wrt: Any) -> tuple[Any, Flat, list[bool]]:
    """``(source, flat, mask)``: the nnx module (else None), its flattened state or tree, the trainable mask."""
    if is_nnx_module(model):
        _, state = _nnx().split(model)
        flat = Flat(state)
        return model, flat, trainable_mask(flat, wrt, nnx_kind=True)
    flat = Flat(model)
    return None, flat, trainable_mask(flat, wrt, nnx_kind=False)


def cut(model: Any, wrt: Any = None) -> ModelPart:
    """The trainable leaves of ``model`` as one part."""
    source, flat, mask = split_model(model, wrt)
    return ModelPart(source, flat, [i for i, m in enumerate(mask) if m])


def model_groups(params: Any, wrt: Any) -> list[dict[str, Any]] | None:
    """The group dicts of a model given to an optimizer (one :class:`ModelPart` each), or None for plain params."""
    if isinstance(params, list) and params and all(isinstance(g, Mapping) and "params" in g for g in params) \
            and any(isinstance(g["params"], ModelPart) for g in params):
        if wrt is not None:
            raise TypeError("wrt= chooses the trainable leaves of a model; groups from fo.optim.param_groups were "
                            "cut with their own wrt")
        if not all(isinstance(g["params"], ModelPart) for g in params):
            raise ValueError("groups cut from a model (fo.optim.param_groups) cannot be mixed with groups of other "
                             "parameters")
        return [dict(g) for g in params]
    if not is_model(params, wrt):
        return None
    part = cut(params, wrt)
    if not part.positions:
        no_trainable(part, wrt)
    return [{"params": part}]


def no_trainable(part: ModelPart, wrt: Any) -> None:
    """Raise for a model without a trainable leaf, naming a leaf that shows why.

    A plain pytree gets the error of its first leaf, as before mixed pytrees were
    accepted (``ValueError`` for an array of another dtype, ``TypeError`` for a
    non-array); a module, or a ``wrt`` that selects nothing, gets torch's
    "empty parameter list".
    """
    flat = part.flat
    eqx = sys.modules.get("equinox")
    is_module = part.source is not None or (eqx is not None and flat.leaves
                                            and isinstance(flat.rebuild(flat.leaves), eqx.Module))
    if wrt is None and not is_module and flat.leaves:
        name, leaf = flat.names[0], flat.leaves[0]
        if is_array(leaf):
            raise ValueError(f"optimizer can only optimize floating point or complex arrays, but parameter "
                             f"{name!r} has dtype {leaf.dtype}")
        raise TypeError(f"optimizer can only optimize arrays, but parameter {name!r} is a {type(leaf).__name__}")
    rule = "nnx.Param variables" if part.source is not None else "floating point or complex arrays"
    raise ValueError(f"optimizer got an empty parameter list: the model has no trainable leaf; the optimizers "
                     f"train {rule} unless wrt= chooses others")


def match_rules(names: Sequence[str], leaves: Sequence[Any], preds: Sequence[Callable[[str, Any], bool]],
                specs: Sequence[Any]) -> list[int]:
    """The index of the first rule matching each parameter (``len(preds)`` for none); an unmatched rule raises."""
    labels = [next((i for i, p in enumerate(preds) if p(n, x)), len(preds)) for n, x in zip(names, leaves)]
    used = set()
    for n, x in zip(names, leaves):
        used.update(i for i, p in enumerate(preds) if p(n, x))
    for i, spec in enumerate(specs):
        if i not in used:
            shown = ", ".join(repr(n) for n in list(names)[:5]) + (", ..." if len(names) > 5 else "")
            raise ValueError(f"param_groups: the rule {spec!r} matches no trainable parameter; the parameters "
                             f"are named like {shown}")
    return labels


def pattern_predicate(pattern: str) -> Callable[[str, Any], bool]:
    return lambda name, leaf: fnmatch.fnmatchcase(name, pattern)


class Model:
    """The model an optimizer trains: its leaves, which groups own which trainable leaf, how to rebuild it.

    ``positions[g]`` are the leaf indices of group ``g`` (in its ``param_names`` order).
    For an nnx module the module is the source of truth for everything but the
    trainable values: it is split again before each ``backward`` (a ``model.eval()``
    or a loaded checkpoint is seen), and ``step`` writes the new values into it.
    """

    def __init__(self, part: ModelPart) -> None:
        self.module = part.source
        self.flat = part.flat.copy()
        self.graphdef = _nnx().graphdef(self.module) if self.module is not None else None
        self.positions: list[list[int]] = []
        self.written: dict[int, Any] = {}  # nnx: the arrays last written into the module, by leaf
        self._model_cache: tuple[tuple[Any, ...], Any] | None = None
        self._copy_fn: tuple[tuple[Any, ...], Callable[..., Any]] | None = None

    # -------------------------------------------------------------- structure

    @property
    def is_nnx(self) -> bool:
        return self.module is not None

    def trainable(self) -> list[int]:
        return sorted(i for ps in self.positions for i in ps)

    def same_model(self, part: ModelPart) -> bool:
        if self.is_nnx:
            return part.source is self.module
        return part.source is None and part.flat.treedef == self.flat.treedef

    def group_values(self, part: ModelPart) -> tuple[list[int], list[Any], list[str]]:
        """``(positions, values, names)`` of a part's leaves in this model (for nnx: read from the module now)."""
        if self.is_nnx:
            self.refresh()
        where = {n: i for i, n in enumerate(self.flat.names)}
        missing = [n for n in part.names if n not in where]
        if missing:
            raise ValueError(f"the group's parameters {missing[:5]} are not in the optimizer's model")
        positions = [where[n] for n in part.names]
        if self.is_nnx:
            return positions, [self.flat.leaves[i] for i in positions], part.names
        return positions, [part.flat.leaves[i] for i in part.positions], part.names

    def static_key(self) -> Any:
        """What fixes a compiled backward besides the loss function: the structure and the non-array leaves."""
        statics = tuple((i, _hashable(x)) for i, x in enumerate(self.flat.leaves) if not is_array(x))
        return (self.graphdef, self.flat.treedef, statics)

    def replace_rest(self, tree: Any) -> list[int]:
        """Take the non-trainable leaves of ``tree`` (same structure as the model); returns the trainable places."""
        flat = Flat(tree)
        if flat.treedef != self.flat.treedef:
            raise ValueError(f"the new model's structure {flat.treedef} differs from the optimizer's "
                             f"{self.flat.treedef}")
        trained = set(self.trainable())
        for i, x in enumerate(flat.leaves):
            if i not in trained:
                self.flat.leaves[i] = x
        self._model_cache = None
        return sorted(trained)

    def rest_positions(self) -> list[int]:
        trained = set(self.trainable())
        return [i for i, x in enumerate(self.flat.leaves) if i not in trained and is_array(x)]

    def rest(self) -> list[Any]:
        return [self.flat.leaves[i] for i in self.rest_positions()]

    # -------------------------------------------------------------- nnx: the module is the truth

    def add_group(self, positions: Sequence[int]) -> None:
        self.positions.append(list(positions))
        if self.is_nnx:
            for i in positions:
                self.written[i] = self.flat.leaves[i]
        self._model_cache = None

    def refresh(self) -> None:
        """Split the nnx module again (new graphdef, current carried state); positions follow the names.

        Raises ``RuntimeError`` when a trained variable left the module.
        """
        if not self.is_nnx:
            return
        graphdef, state = _nnx().split(self.module)
        leaves, treedef = jax.tree.flatten(state)
        if treedef == self.flat.treedef:  # the usual case: same variables, new values
            units = jax.tree.leaves(state, is_leaf=_is_variable)
            holders: list[Any] = []
            for unit, spec in zip(units, self.flat.units):
                holders.extend([unit] * spec[1] if spec is not None else [None])
            self.graphdef, self.flat.leaves, self.flat.holders = graphdef, leaves, holders
            return
        flat = Flat(state)
        if flat.names != self.flat.names:
            where = {n: i for i, n in enumerate(flat.names)}
            missing = [self.flat.names[i] for ps in self.positions for i in ps if self.flat.names[i] not in where]
            if missing:
                raise RuntimeError(f"the nnx module no longer holds the trained variables {missing[:5]}")
            self.positions = [[where[self.flat.names[i]] for i in ps] for ps in self.positions]
            self.written = {where[self.flat.names[i]]: v for i, v in self.written.items()}
        self.graphdef, self.flat = graphdef, flat

    def edited(self) -> dict[int, Any]:
        """Trainable values the user replaced in the nnx module since the optimizer last wrote them."""
        if not self.is_nnx:
            return {}
        out = {}
        for i, old in self.written.items():
            now = self.flat.holders[i].get_raw_value()
            if now is not old:
                out[i] = now
        return out

    def write(self, values: Mapping[int, Any]) -> None:
        """Set nnx variables in place: the module the user holds sees the new values."""
        for i, v in values.items():
            self.flat.holders[i].set_value(v)
            self.flat.leaves[i] = v
            if i in self.written:
                self.written[i] = v

    # -------------------------------------------------------------- views

    def view(self, values: Mapping[int, Any]) -> Any:
        """The trainable leaves in the user-facing structure: nnx's pure dict, else the filtered model."""
        if self.is_nnx:
            order = self.trainable()
            return nested_dict([self.flat.keys[i] for i in order], [values[i] for i in order])
        return self.flat.filtered(values)

    def parse(self, tree: Any, what: str) -> dict[int, Any]:
        """Leaves by position from a tree shaped like :meth:`view` (an nnx State or a pure dict for nnx)."""
        nnx = _nnx()
        if self.is_nnx and nnx is not None and isinstance(tree, nnx.State):
            tree = nnx.to_pure_dict(tree)
        given = Flat(tree)
        order = self.trainable()
        expected = [self.flat.names[i] for i in order]
        names = given.names if self.is_nnx else [n for n, x in zip(given.names, given.leaves) if x is not None]
        leaves = given.leaves if self.is_nnx else [x for x in given.leaves if x is not None]
        if self.is_nnx:
            pairs = dict(zip(names, leaves))
            if set(pairs) != set(expected) or len(pairs) != len(names):
                self._mismatch(what, names, expected)
            return {i: pairs[self.flat.names[i]] for i in order}
        if names != expected:
            self._mismatch(what, names, expected)
        return dict(zip(order, leaves))

    @staticmethod
    def _mismatch(what: str, names: Sequence[str], expected: Sequence[str]) -> None:
        missing = [n for n in expected if n not in set(names)]
        extra = [n for n in names if n not in set(expected)]
        raise ValueError(f"{what} must have the structure of opt.params (the trainable parameters "
                         f"{list(expected)[:5]}{'...' if len(expected) > 5 else ''}); missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")

    def rebuild(self, values: Mapping[int, Any], rest: Sequence[Any] | None = None) -> Any:
        """The whole model from trainable ``values`` and the rest (traced or not)."""
        leaves = list(self.flat.leaves)
        if rest is not None:
            for i, x in zip(self.rest_positions(), rest):
                leaves[i] = x
        for i, v in values.items():
            leaves[i] = v
        tree = self.flat.rebuild(leaves)
        if self.is_nnx:
            return _nnx().merge(self.graphdef, tree)
        return tree

    def rest_reader(self) -> Callable[[Any], list[Any] | None]:
        """A function reading the carried state back from a model after its forward pass (nnx only)."""
        if not self.is_nnx:
            return lambda model: None
        positions = self.rest_positions()
        treedef = self.flat.treedef
        names = [self.flat.names[i] for i in positions]

        def read(model):
            _, state = _nnx().split(model)
            leaves, new_def = jax.tree.flatten(state)
            if new_def == treedef:
                return [leaves[i] for i in positions]
            flat = Flat(state)  # the forward added variables (sown intermediates): match by name
            where = dict(zip(flat.names, flat.leaves))
            return [where.get(n) for n in names]

        return read

    def current(self, values: Callable[[], Mapping[int, Any]], storage_refs: tuple[Any, ...]) -> Any:
        """The current model on the host (the nnx module itself; else rebuilt, cached per storage)."""
        if self.is_nnx:
            return self.module
        cached = self._model_cache
        if cached is not None and len(cached[0]) == len(storage_refs) and all(
                a is b for a, b in zip(cached[0], storage_refs)):
            return cached[1]
        model = self.rebuild(values())
        self._model_cache = (storage_refs, model)
        return model

    def set_rest(self, rest: Sequence[Any] | None) -> None:
        """Store the carried state a forward pass produced (nnx: into the module)."""
        if rest is None:
            return
        positions = self.rest_positions()
        updates = {i: x for i, x in zip(positions, rest) if x is not None}
        if self.is_nnx:
            self.write(updates)
        else:
            for i, x in updates.items():
                self.flat.leaves[i] = x
            self._model_cache = None


def _hashable(x: Any) -> Any:
    try:
        hash(x)
        return ("eq", x)
    except TypeError:
        return ("id", id(x))


def make_backward(model: Model, values_of: Callable[[Any, Any], dict[int, Any]],
                  args_of: Callable[[Any], tuple[Any, Any]], loss_fn: Callable[..., Any],
                  has_aux: bool) -> Callable[..., Any]:
    """The jitted ``(params, grads, dynamic, rest, offsets) -> (out, grads, rest)`` of a model's backward.

    ``loss_fn`` gets the model as the user built it, rebuilt from the traced trainable
    leaves and carried rest; only the trainable leaves are differentiated. For nnx,
    the state the forward pass changed (BatchNorm statistics, RNG counters) comes back
    as the new rest. Gradients are added to ``grads`` (donated, as they are the
    optimizer's own buffers); the rest is never donated.
    """
    read_rest = model.rest_reader()

    def objective(params, rest, dynamic, offsets):
        args, kwargs = args_of(dynamic)
        m = model.rebuild(values_of(params, offsets), rest)
        out = loss_fn(m, *args, **kwargs)
        new_rest = read_rest(m)
        loss = out[0] if has_aux else out
        return loss, (out, new_rest)

    def run(params, grads, dynamic, rest, offsets):
        (_, (out, new_rest)), new = jax.value_and_grad(objective, has_aux=True)(params, rest, dynamic, offsets)
        if grads is not None:
            new = jax.tree.map(lambda a, b: a + b.astype(a.dtype), grads, new)
        return out, new, new_rest

    return jax.jit(run, donate_argnums=(1,))


def copies_fn(model: Model, layouts: Sequence[Any]) -> Callable[[Any], list[list[Any]]]:
    """A jitted function giving fresh per-leaf copies of every group's storage (what nnx modules hold).

    The module must not hold the optimizer's own buffers: those are donated by the next
    step, and a reference the user kept (``nnx.state(model)``) would then be deleted.
    """
    key = tuple(layouts)
    if model._copy_fn is not None and len(model._copy_fn[0]) == len(key) and all(
            a is b for a, b in zip(model._copy_fn[0], key)):
        return model._copy_fn[1]
    fn = jax.jit(lambda storage: [[jnp.array(x, copy=True) for x in layout.unpack(s)]
                                  for layout, s in zip(layouts, storage)])
    model._copy_fn = (key, fn)
    return fn
