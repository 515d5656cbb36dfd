"""Hyperparameters held in the optimizer state, and the builder of per-leaf optimizers.

Every numeric hyperparameter (``lr``, ``betas``, ``weight_decay``...) lives in the
state as an array, so a jitted step takes it as data: changing it, by hand with
:func:`set_hparams` or through a schedule, never retraces or recompiles. One
exception: a weight decay given as the number 0 is no term at all (see
:class:`FixedHParam`), so the update never reads the parameters for it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

from funcopt._src.base import FixedHParam, GradientTransformation, PyTree, floating_only
from funcopt._src.scalar_work import split_scalar_work
from funcopt._src.state_dtype import StatePrecision
from funcopt._src.tree import shard_like, strip_variables

Schedule = Callable[[jax.Array], Any]
"""A jittable function of the step count (0 for the first update) to a value."""

HParam = float | jax.Array | np.ndarray | Schedule
"""A number, a 0-d array, or a :data:`Schedule`."""


class OptimizerState(NamedTuple):
    """State of a funcopt optimizer or transform with hyperparameters.

    Attributes:
        step: int32 count of updates applied so far (torch's ``step`` after it).
        hparams: the numeric hyperparameters as arrays, by torch's names; a
            tuple hyperparameter such as ``betas`` is a tuple of arrays.
        slots: per-parameter state by torch's names (``'exp_avg'``...), each a
            pytree with the structure of the parameters.
        rng: the key of stochastic rounding (raw uint32 key data) when an
            optimizer stores bfloat16 state with ``state_rounding='stochastic'``;
            else None. It stays fixed: each update draws from it and the step.
    """

    step: jax.Array
    hparams: dict[str, Any]
    slots: dict[str, PyTree]
    rng: jax.Array | None = None


FIXED_WHEN_ZERO = ("weight_decay", "dampening")
"""Hyperparameters that become a :class:`FixedHParam` when built as the number 0: their term vanishes."""


def _number_zero(v: Any) -> bool:
    # a Python number (not an array, a NumPy scalar or a bool) equal to 0
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.generic)) and v == 0


def fixed_hparams(specs: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (evaluated hyperparameters) with a :class:`FixedHParam` for each zero of :data:`FIXED_WHEN_ZERO`.

    Only a Python number equal to 0 in ``specs`` (as given to the factory) is fixed; an array, a
    schedule or a nonzero number stays data.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.hparams import fixed_hparams
        >>> fixed_hparams({'lr': 0.1, 'weight_decay': 0}, {'lr': jnp.array(0.1), 'weight_decay': jnp.array(0.0)})
        {'lr': Array(0.1, dtype=float32, weak_type=True), 'weight_decay': FixedHParam(value=0.0)}
    """
    out = dict(values)
    for k in FIXED_WHEN_ZERO:
        v = specs.get(k)
        if _number_zero(v):
            out[k] = FixedHParam(0.0)
    return out


def held_as_data(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` of an optimizer factory with each zero of :data:`FIXED_WHEN_ZERO` given as an array.

    The optimizer built from them holds that hyperparameter as data (never a :class:`FixedHParam`),
    for callers that change it later without compiling again, such as the stateful optimizers'
    ``param_groups``.

    Example:
        >>> from funcopt._src.hparams import held_as_data
        >>> held_as_data({'lr': 0.1, 'weight_decay': 0})['weight_decay']
        array(0.)
    """
    out = dict(kwargs)
    for k in FIXED_WHEN_ZERO:
        v = out.get(k)
        if _number_zero(v):
            out[k] = np.asarray(0.0)
    return out


def float_dtype() -> jnp.dtype:
    """The default float dtype: float64 when jax's x64 mode is on, else float32."""
    return jnp.result_type(float)


def _is_schedule(v: Any) -> bool:
    return callable(v) and not isinstance(v, (jax.Array, np.ndarray))


def _is_hparam_leaf(v: Any) -> bool:
    return _is_schedule(v) or isinstance(v, (numbers.Number, jax.Array, np.ndarray))


def _hparam_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    return jax.tree.map(fn, tree, is_leaf=_is_hparam_leaf)


def has_schedule(tree: Any) -> bool:
    """Whether any leaf of a hyperparameter tree is a schedule."""
    return any(_is_schedule(v) for v in jax.tree.leaves(tree, is_leaf=_is_hparam_leaf))


def evaluate_hparams(hparams: Mapping[str, Any], step: jax.Array) -> dict[str, Any]:
    """Evaluate a tree of hyperparameter specs at ``step`` as float arrays."""
    dtype = float_dtype()

    def value(v):
        if _is_schedule(v):
            v = v(step)
        return hparam_array(v, dtype)

    return {k: _hparam_map(value, v) for k, v in hparams.items()}


# numbers whose conversion to a float32 / float64 hyperparameter is one rounding, done alike by NumPy and XLA
_HOST_NUMBERS = (int, float, np.integer, np.floating)
_HOST_ROUNDED = (np.dtype(np.float32), np.dtype(np.float64))


def hparam_array(v: Any, dtype: Any) -> jax.Array:
    """``v`` as a 0-d array of ``dtype`` that the state owns.

    A 1-element array (torch accepts ``torch.tensor([0.1])`` as a learning rate) becomes 0-d. A
    concrete array is copied: the stateful optimizers donate their state to each step, and the
    user's own array (``lr=jnp.asarray(0.1)``) must survive that.

    A Python or NumPy number bound for float32 or float64 is rounded on the host, once, as
    ``jnp.asarray`` rounds it, and copied to the device: an lr scheduler writes new values before
    every step, and the eager conversion is a dispatch of its own (about twice the time).
    """
    if isinstance(v, _HOST_NUMBERS):
        target = jax.dtypes.canonicalize_dtype(dtype)
        if target in _HOST_ROUNDED:
            return jnp.asarray(np.asarray(v, dtype=target))  # a fresh host array: nothing else holds it
    x = jnp.asarray(v, dtype=dtype)
    if x.ndim and x.size == 1:
        x = x.reshape(())
    if isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer):
        x = jnp.array(x, copy=True)
    return x


def concrete_value(v: Any) -> float | None:
    """A Python float for a number or concrete 0-d array; None for schedules and tracers."""
    if _is_schedule(v):
        return None
    if isinstance(v, jax.core.Tracer):
        return None
    try:
        arr = np.asarray(v)
    except Exception:  # noqa: BLE001 - anything not convertible is not concrete
        return None
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        return None
    return float(arr.reshape(()))


def is_static_zero(v: Any) -> bool:
    """True when ``v`` is a concrete number equal to 0 (not a schedule)."""
    c = concrete_value(v)
    return c is not None and c == 0.0


def check_hparam(v: Any, name: str, message: str, ok: Callable[[float], bool]) -> None:
    """Raise ``ValueError(message.format(v))`` when concrete ``v`` fails ``ok``.

    Schedules and traced values are checked for type only: they must be
    callables or numbers.
    """
    if _is_schedule(v):
        return
    if isinstance(v, bool) or not (isinstance(v, (numbers.Real, jax.Array, np.ndarray))):
        raise TypeError(f"{name} must be a number, a 0-d array or a schedule, got {type(v).__name__}")
    c = concrete_value(v)
    if c is None:
        if isinstance(v, (jax.Array, np.ndarray)) and np.size(v) != 1:
            raise ValueError(f"Tensor {name} must be 1-element")  # torch's words
        return
    if not ok(c):
        raise ValueError(message.format(v))


LeafUpdate = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
LeafInit = Callable[[jax.Array, dict[str, Any]], dict[str, jax.Array]]


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The dtype arithmetic on a leaf runs in: half precision in float32, integers in the default float.

    Half-precision leaves are computed in float32 and rounded once at the end.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.hparams import compute_dtype
        >>> compute_dtype(jnp.bfloat16), compute_dtype(jnp.float32)
        (dtype('float32'), dtype('float32'))
    """
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.promote_types(dtype, jnp.complex64)
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.promote_types(dtype, jnp.float32)
    return float_dtype()


def real_view(x: jax.Array | None) -> jax.Array | None:
    """A complex array as real pairs (a trailing axis of 2: real, imaginary); other arrays and None as given.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.hparams import complex_view, real_view
        >>> real_view(jnp.array([1 + 2j])), complex_view(real_view(jnp.array([1 + 2j])))
        (Array([[1., 2.]], dtype=float32), Array([1.+2.j], dtype=complex64))
    """
    if x is None or not jnp.iscomplexobj(x):
        return x
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def complex_view(x: jax.Array) -> jax.Array:
    """The inverse of :func:`real_view`: real pairs on the last axis as complex numbers."""
    return jax.lax.complex(x[..., 0], x[..., 1])


def per_leaf_optimizer(
    *,
    hparams: Mapping[str, Any],
    slots: Sequence[str],
    leaf_update: LeafUpdate,
    leaf_init: LeafInit | None = None,
    needs_params: bool = False,
    complex_as_real: bool = True,
    precision: StatePrecision | None = None,
    name: str = "optimizer",
) -> GradientTransformation:
    """Build an optimizer from a per-leaf update rule.

    ``leaf_update(g, p, slots, hp, step)`` receives one gradient leaf, its
    parameter (or None when no params were given and ``needs_params`` is
    False; also None, with ``needs_params`` False, when the weight decay is a
    :class:`FixedHParam` zero, so the update never reads the parameters), a
    dict of that leaf's state by slot name, the hyperparameters cast to the
    leaf's compute dtype (a :class:`FixedHParam` as its number), and ``step`` (the int32 count including this
    update, torch's ``step``). It returns the update (delta) and the new slots.
    Complex leaves are handed over as real views (torch's ``view_as_real``)
    when ``complex_as_real``. Half-precision leaves are computed in float32.

    ``leaf_init(p, hp)`` returns the initial slots of one leaf; by default each
    slot is ``zeros_like(p)``.

    ``precision`` (from :func:`funcopt._src.state_dtype.state_precision`) sets the
    dtype slots are stored in: ``leaf_update`` still computes in the leaf's compute
    dtype, and each new slot is rounded into its buffer's dtype on the way out.

    ``leaf_update`` is traced once per kind of leaf (:class:`LeafPrograms`), not
    once per leaf: what it computes from the hyperparameters and the step alone
    (casts, bias corrections) is computed once per step, however many leaves
    there are, and each leaf is one call of its kind's compiled array work. So a
    rule is written for one leaf without a cost per leaf for its scalars, in
    tracing or in compiling.

    Only floating leaves reach ``leaf_update`` and ``leaf_init`` (see
    :func:`funcopt.floating_only`): the others keep no slots and
    their update leaves them unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> from funcopt._src.hparams import per_leaf_optimizer
        >>> tx = per_leaf_optimizer(hparams={'lr': 0.5}, slots=(),
        ...     leaf_update=lambda g, p, s, hp, step: (-hp['lr'] * g, {}))
        >>> tx.update({'w': jnp.ones(2)}, tx.init({'w': jnp.ones(2)}))[0]['w']
        Array([-0.5, -0.5], dtype=float32)
    """
    hparams = dict(hparams)
    scheduled = has_schedule(hparams)
    slots = tuple(slots)

    def default_init(p, hp):
        del hp
        return {k: jnp.zeros_like(p) for k in slots}

    init_leaf = leaf_init or default_init

    def init(params):
        hp = fixed_hparams(hparams, evaluate_hparams(hparams, jnp.zeros([], jnp.int32)))
        leaves, treedef = jax.tree.flatten(params)
        per_leaf = []
        for p in map(jnp.asarray, leaves):
            leaf_slots = init_leaf(p, cast_hparams(hp, compute_dtype(p.dtype)))
            if precision is not None:
                leaf_slots = {k: v.astype(precision.dtype_for(k, p.dtype)) if k in precision.names else v
                              for k, v in leaf_slots.items()}
            # State follows its parameter's sharding, also under jax.jit (fresh constants would not).
            per_leaf.append({k: v if v is None else _own_buffer(shard_like(v, p)) for k, v in leaf_slots.items()})
        slot_trees = {k: treedef.unflatten([s[k] for s in per_leaf]) for k in slots}
        rng = precision.key() if precision is not None and precision.stochastic else None
        return OptimizerState(step=jnp.zeros([], jnp.int32), hparams=hp, slots=slot_trees, rng=rng)

    def one_leaf(g, p, leaf_slots, leaf_keys, hp, step):
        """The update of one leaf: cast to the compute dtype, ``leaf_update``, cast back and store."""
        out_dtype = (p if p is not None else g).dtype
        cdtype = compute_dtype(out_dtype)
        g_c = g.astype(cdtype)
        p_c = None if p is None else p.astype(cdtype)
        s_c = {k: v.astype(compute_dtype(v.dtype)) for k, v in leaf_slots.items()}
        is_complex = complex_as_real and jnp.issubdtype(cdtype, jnp.complexfloating)
        if is_complex:
            g_c, p_c = real_view(g_c), real_view(p_c)
            s_c = {k: real_view(v) for k, v in s_c.items()}
            hp_leaf = cast_hparams(hp, jnp.finfo(cdtype).dtype)
        else:
            hp_leaf = cast_hparams(hp, cdtype)
        u, s_new = leaf_update(g_c, p_c, s_c, hp_leaf, step)
        if is_complex:
            u = complex_view(u)
            s_new = {k: complex_view(v) if jnp.iscomplexobj(leaf_slots[k]) else v for k, v in s_new.items()}
        stored = []
        for j, k in enumerate(slots):
            if precision is None:
                stored.append(s_new[k].astype(leaf_slots[k].dtype))
            else:
                stored.append(precision.store(s_new[k], leaf_slots[k].dtype, leaf_keys[j]))
        return u.astype(out_dtype), stored

    programs = LeafPrograms(one_leaf, slots, name)

    def update_leaves(g_leaves, p_leaves, s_leaves, hp, step, keys):
        new_updates, new_slots = [], {k: [] for k in slots}
        scalars = programs.scalars(hp, step)
        for i, g in enumerate(g_leaves):
            p = None if p_leaves[i] is None else jnp.asarray(p_leaves[i])
            leaf_keys = keys[i * len(slots):(i + 1) * len(slots)]
            u, stored = programs(scalars, jnp.asarray(g), p, [s_leaves[k][i] for k in slots], leaf_keys)
            new_updates.append(u)
            for k, v in zip(slots, stored):
                new_slots[k].append(v)
        return new_updates, new_slots

    def update(grads, state, params=None, **extra):
        del extra
        if not isinstance(state, OptimizerState):
            raise TypeError(f"{name}: expected an OptimizerState, got {type(state).__name__}")
        if set(state.hparams) != set(hparams) or set(state.slots) != set(slots):
            raise ValueError(f"{name}: this state was made by another optimizer (hyperparameters "
                             f"{sorted(state.hparams)}, slots {sorted(state.slots)}; {name} has "
                             f"{sorted(hparams)}, {sorted(slots)})")
        if params is None and needs_params:
            raise ValueError(f"{name}: params must be given to update() with these hyperparameters "
                             "(e.g. a nonzero weight_decay)")
        hp = state.hparams
        if params is not None and not needs_params and isinstance(hp.get("weight_decay"), FixedHParam):
            # the parameters enter only the decay term, and there is none: the update never reads them
            params = None
        if scheduled:
            fresh = evaluate_hparams(hparams, state.step)
            hp = {k: (fresh[k] if has_schedule(hparams[k]) else hp[k]) for k in hparams}
        step = state.step + 1
        g_leaves, treedef = jax.tree.flatten(grads)
        p_leaves = treedef.flatten_up_to(params) if params is not None else [None] * len(g_leaves)
        s_leaves = {k: treedef.flatten_up_to(state.slots[k]) for k in slots}
        keys = [None] * (len(g_leaves) * len(slots))
        if precision is not None and precision.stochastic:
            keys = precision.update_keys(state.rng, step, len(keys))
        new_updates, new_slots = update_leaves(g_leaves, p_leaves, s_leaves, hp, step, keys)
        updates = treedef.unflatten(new_updates)
        slot_trees = {k: treedef.unflatten(v) for k, v in new_slots.items()}
        return updates, OptimizerState(step=step, hparams=hp, slots=slot_trees, rng=state.rng)

    return floating_only(GradientTransformation(init, update))


class LeafPrograms:
    """A per-leaf rule traced once per kind of leaf, its scalar work done once per step.

    ``one_leaf(g, p, slots, keys, hp, step) -> (update, new slot values)`` is traced once for each
    kind of leaf (the shapes, dtypes and shardings of its arrays, whether it has a parameter) and
    cut in two (:func:`funcopt._src.scalar_work.split_scalar_work`): the scalar work, which depends
    only on the hyperparameters and the step (their casts to the leaf's dtype, bias corrections),
    and the leaf's array work. :meth:`scalars` evaluates the scalar work once per step; each
    leaf is then one call of its kind's compiled array work (a ``jax.jit`` function, so a program
    of many leaves holds one call per leaf and one body per kind, and XLA receives no repeated
    scalar work). Tracing costs one trace per kind of leaf, not one per leaf.

    Hyperparameters held as arrays (traced or not) are inputs of the program; the others (NumPy
    or Python numbers, :class:`FixedHParam`) are constants the rule can branch on: a weight decay
    that is a constant 0 skips its term.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.hparams import LeafPrograms
        >>> def one_leaf(g, p, slots, keys, hp, step):
        ...     return -hp['lr'] * g / (1 - 0.5 ** step.astype(g.dtype)), []
        >>> programs = LeafPrograms(one_leaf, (), 'sgd')
        >>> scalars = programs.scalars({'lr': jnp.array(0.5)}, jnp.array(1))
        >>> programs(scalars, jnp.ones(2), None, [], [])[0]
        Array([-1., -1.], dtype=float32)
    """

    _LIMIT = 256  # kinds of leaf kept traced

    def __init__(self, one_leaf: Callable[..., Any], slots: Sequence[str], name: str) -> None:
        self.one_leaf, self.slots, self.name = one_leaf, tuple(slots), name
        self._programs: dict[Any, tuple[Any, Callable[..., Any], Callable[..., Any]]] = {}

    def scalars(self, hp: Mapping[str, Any], step: jax.Array) -> dict[str, Any]:
        """What a step's leaves share: the hyperparameters split into inputs and constants, each kind's scalar work."""
        flat, tree = jax.tree.flatten(hp)
        dynamic = [i for i, x in enumerate(flat) if isinstance(x, jax.Array)]
        constants = tuple((i, np.asarray(x).dtype.str, np.shape(x), np.asarray(x).tobytes())
                          for i, x in enumerate(flat) if not isinstance(x, jax.Array))
        return {"flat": flat, "tree": tree, "dynamic": dynamic, "inputs": [flat[i] for i in dynamic] + [step],
                "key": (tree, constants, tuple(jax.typeof(x) for x in [flat[i] for i in dynamic] + [step])),
                "values": {}}

    def __call__(self, shared: dict[str, Any], g: jax.Array, p: jax.Array | None, leaf_slots: list[jax.Array],
                 leaf_keys: list[jax.Array | None]) -> tuple[jax.Array, list[jax.Array]]:
        """``(update, new slot values)`` of one leaf."""
        leaf, leaf_tree = jax.tree.flatten((g, p, leaf_slots, list(leaf_keys)))
        key = (shared["key"], leaf_tree, tuple(jax.typeof(x) for x in leaf))
        program = self._programs.get(key)
        if program is None:
            program = self._trace(shared, leaf_tree, leaf)
            if len(self._programs) >= self._LIMIT:
                self._programs.clear()
            self._programs[key] = program
        same, prelude, body = program
        # the scalar work once per step: kinds of leaf whose scalar work is the same program share it
        values = shared["values"].get(same)
        if values is None:
            values = shared["values"][same] = prelude(*shared["inputs"])
        outs = body(*values, *leaf)
        return outs[0], list(outs[1:])

    def _trace(self, shared: dict[str, Any], leaf_tree: Any, leaf: list[jax.Array]) -> tuple[Any, Any]:
        flat, tree, dynamic = list(shared["flat"]), shared["tree"], shared["dynamic"]
        n_scalar = len(shared["inputs"])

        def traced(*args):
            full = list(flat)
            for i, v in zip(dynamic, args[:n_scalar - 1]):
                full[i] = v
            g, p, leaf_slots, leaf_keys = jax.tree.unflatten(leaf_tree, args[n_scalar:])
            u, stored = self.one_leaf(g, p, dict(zip(self.slots, leaf_slots)), leaf_keys,
                                      jax.tree.unflatten(tree, full), args[n_scalar - 1])
            return [u, *stored]

        closed = jax.make_jaxpr(traced)(*shared["inputs"], *leaf)
        prelude_jaxpr, body_jaxpr = split_scalar_work(closed.jaxpr, n_scalar)
        consts = list(closed.consts)
        prelude_fn = jaxpr_as_fun(ClosedJaxpr(prelude_jaxpr, []))
        body_fn = jaxpr_as_fun(ClosedJaxpr(body_jaxpr, []))

        def prelude(*scalars):
            return prelude_fn(*consts, *scalars)

        def leaf_work(*args):
            return body_fn(*args)

        leaf_work.__name__ = leaf_work.__qualname__ = f"{self.name}_leaf"
        # the printed program names what it computes (with no constants, it computes from the inputs alone)
        same = str(prelude_jaxpr) if not consts else object()
        return same, prelude, jax.jit(leaf_work)


def _own_buffer(x: jax.Array) -> jax.Array:
    # A 0-d slot can come back as a hyperparameter array itself (a fill value, ASGD's eta): copy it, so
    # that a donated state never holds one buffer twice.
    if x.ndim == 0 and not isinstance(x, jax.core.Tracer):
        return jnp.array(x, copy=True)
    return x


def cast_hparams(hp: Mapping[str, Any], dtype: jnp.dtype) -> dict[str, Any]:
    """The hyperparameter arrays of ``hp`` cast to ``dtype`` (the compute dtype of the leaf they act on).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.hparams import cast_hparams
        >>> cast_hparams({'lr': jnp.array(0.5)}, jnp.bfloat16)['lr'].dtype
        dtype(bfloat16)
    """
    # a FixedHParam is no array: the rule gets its number, a constant it can branch on
    return {k: v.value if isinstance(v, FixedHParam) else jax.tree.map(lambda v: v.astype(dtype), v)
            for k, v in hp.items()}


def optimizer_states(state: PyTree) -> list[OptimizerState]:
    """The :class:`OptimizerState` nodes of ``state`` (a chain, a partition, one optimizer's state), in order.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> from funcopt._src.hparams import optimizer_states
        >>> [sorted(s.slots) for s in optimizer_states(fo.adam(lr=1e-3).init({'w': jnp.zeros(3)}))]
        [['exp_avg', 'exp_avg_sq']]
    """
    return [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, OptimizerState))
            if isinstance(s, OptimizerState)]


def get_hparams(state: PyTree) -> dict[str, Any]:
    """Read the hyperparameters held in an optimizer state.

    Searches ``state`` (a chain, a partition, or one optimizer's state) for
    hyperparameters; where two parts hold the same name, the first one found
    wins. A scheduled hyperparameter shows the value used at the last update;
    a :class:`FixedHParam` (a weight decay built as the number 0), its number.
    A state whose arrays are wrapped in ``nnx.Variable`` (the ``opt_state`` of
    flax's ``nnx.Optimizer``) is read the same way; the values come back as
    plain arrays.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> state = fo.adam(lr=1e-3).init({'w': jnp.zeros(3)})
        >>> float(fo.get_hparams(state)['lr'])
        0.001
    """
    out: dict[str, Any] = {}
    for s in optimizer_states(state):
        for k, v in s.hparams.items():
            out.setdefault(k, v.value if isinstance(v, FixedHParam) else strip_variables(v))
    return out


def _shaped(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return x if x.shape == shape else x.reshape(shape)  # an eager reshape would compile, even a no-op one


def _like_sibling(hp: Mapping[str, Any], x: jax.Array) -> Any:
    """``x`` wrapped as the state's other scalar hyperparameters are (an ``nnx.Variable`` in flax's ``opt_state``)."""
    for v in hp.values():
        if not isinstance(v, FixedHParam) and not isinstance(v, tuple) and len(jax.tree.leaves(v)) == 1:
            return jax.tree.structure(v).unflatten([x])
    return x


def set_hparams(state: PyTree, **values: Any) -> PyTree:
    """Return ``state`` with new hyperparameter values; the input is not modified.

    Every part of the state that holds a named hyperparameter gets the new
    value, cast to the dtype it had, so the new state has the same shapes and
    dtypes and a jitted step does not retrace. A name held nowhere raises
    ``KeyError``. A hyperparameter that was given as a schedule is recomputed
    from the schedule at the next update, which overrides a value set here.

    A weight decay built as the number 0 is no term of the compiled update
    (:class:`FixedHParam`): setting another value puts an array in its place,
    so the next jitted step traces and compiles once, with the decay term;
    later changes compile nothing. Build with ``weight_decay=jnp.asarray(0.0)``
    to hold a zero decay as data from the start.

    In a state whose arrays are wrapped in ``nnx.Variable`` (the ``opt_state``
    of flax's ``nnx.Optimizer``) the new values come in new Variables of the
    same type and metadata; assign the result back
    (``optimizer.opt_state = fo.set_hparams(optimizer.opt_state, lr=...)``)
    and an ``nnx.jit`` step uses it without recompiling.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> state = fo.sgd(lr=0.1, momentum=0.9).init({'w': jnp.zeros(3)})
        >>> state = fo.set_hparams(state, lr=0.01, momentum=0.5)
        >>> float(fo.get_hparams(state)['momentum'])
        0.5
    """
    found: set[str] = set()

    def replace(node):
        if not isinstance(node, OptimizerState):
            return node
        hp = dict(node.hparams)
        for k, v in values.items():
            if k in hp:
                found.add(k)
                old = hp[k]
                if isinstance(old, FixedHParam):
                    if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and v == old.value):
                        hp[k] = _like_sibling(node.hparams, _shaped(hparam_array(v, float_dtype()), ()))
                    continue
                try:
                    new = jax.tree.map(lambda o, n: _shaped(hparam_array(n, o.dtype), o.shape),
                                       strip_variables(old), v)
                    # rebuilt in the old structure, so wrappers such as nnx Variables stay as they were
                    hp[k] = jax.tree.structure(old).unflatten(jax.tree.leaves(new))
                except (ValueError, TypeError) as e:
                    raise ValueError(f"hyperparameter {k!r}: cannot set {v!r} in place of a value "
                                     f"of structure {jax.tree.structure(old)}: {e}") from None
        return node._replace(hparams=hp)

    new_state = jax.tree.map(replace, state, is_leaf=lambda x: isinstance(x, OptimizerState))
    missing = set(values) - found
    if missing:
        known = sorted({k for s in optimizer_states(state) for k in s.hparams})
        raise KeyError(f"unknown hyperparameter(s) {sorted(missing)}; this state holds {known}")
    return new_state
