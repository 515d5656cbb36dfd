"""The stateful optimizer: torch.optim.Optimizer's object API over a functional optimizer.

Parameters, gradients and optimizer state live inside the object as JAX arrays.
``step()`` and ``backward()`` are each one jitted call over every group, with the
old buffers donated, so a step costs one dispatch whatever the number of leaves.
Hyperparameters reach the compiled step as arrays held in the functional state:
``param_groups[i]['lr'] = x`` takes effect at the next step without recompiling.
"""

from __future__ import annotations

import inspect
import numbers
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.base import GradientTransformation, PyTree, apply_updates
from funcopt._src.hparams import held_as_data, is_static_zero, optimizer_states, set_hparams
from funcopt._src.native import native_error
from funcopt._src.tree import path_name
from funcopt.optim import _fused, _model, _params, _skip, _state_dict, _state_tree, guard
from funcopt.optim._hooks import HookRegistry, RemovableHandle
from funcopt.optim._layout import Layout
from funcopt.optim._state_dict import IncompatibleKeys
from funcopt.optim._util import CompileCache, is_array, join_args, split_args
from funcopt.transforms.masking import MaskedNode

_BACKWARD_CACHE_SIZE = 8
__all__ = ["IncompatibleKeys", "Optimizer", "RemovableHandle"]


class _Group:
    """Internal record of one parameter group: structure, names, arrays and functional state."""

    __slots__ = ("treedef", "names", "layout", "params", "grads", "tx", "state", "static_key", "hp_values",
                 "static_values", "mask", "fused", "native")

    def __init__(self, treedef, names, layout, params, mask=None):
        self.treedef = treedef
        self.names: list[str] = names
        self.layout: Layout = layout
        self.params: list[jax.Array] = params  # storage: see Layout
        self.grads: list[jax.Array] | None = None
        self.tx: GradientTransformation | None = None
        self.state: Any = None
        self.static_key: Any = None
        self.hp_values: dict[str, Any] = {}
        self.static_values: dict[str, Any] = {}
        self.mask = mask  # for groups cut from one model pytree: leaf positions of the whole tree
        self.fused = False  # the group asked for fused=True (classes with a fused_step)
        self.native = False  # ... and its step runs the class's fused_step (see Optimizer.fused_step)


class Optimizer(HookRegistry):
    """Base class of the stateful optimizers (torch.optim.Optimizer's role).

    A subclass binds a functional factory and nothing else::

        class SGD(Optimizer):
            factory = staticmethod(funcopt.sgd)
            torch_options = {'foreach': None, 'differentiable': False, 'fused': None}

    Its constructor takes ``params`` then the factory's keywords (torch's names
    and defaults), plus torch-only options (``foreach``, ``fused``...) that are
    accepted for drop-in compatibility and have no effect: every step is one
    compiled, fused XLA call; except that a class with a ``fused_step`` (Adam,
    AdamW) runs it for its packed CPU groups that ask for ``fused=True``.
    ``group_constants`` are keys torch stores in every group without taking them
    as arguments (AdamW's ``decoupled_weight_decay``).
    ``elementwise = True`` declares that the algorithm treats every element
    alike, so each group's small leaves are stored packed in one flat buffer per
    dtype, its large ones as they are (set it False for per-tensor rules: trust
    ratios, factored moments, matrices).

    ``params`` is a pytree of arrays (one group), a list of ``(name, array)``
    pairs (``model.named_parameters()``; kept in the user's order, as torch
    numbers them, and read back as an ``OrderedDict``), or a list of group
    dicts ``{'params': <pytree or pairs>, 'lr': ..., ...}`` whose missing keys
    fall back to the constructor's. Groups cut from ONE model pytree with
    :func:`funcopt.optim.param_groups` read back as that one pytree in
    :attr:`params`.

    ``params`` may also be a model as the user holds it: a flax ``nnx.Module``,
    an equinox ``Module``, or any pytree whose trainable arrays sit next to other
    leaves (integer and bool arrays, PRNG keys, None, functions, nnx Variables).
    The trainable leaves are ``nnx.Param`` variables for an nnx module and
    floating point or complex arrays otherwise; the keyword ``wrt`` (an nnx filter,
    a type, or a predicate ``leaf -> bool``) chooses others. Every other leaf is
    carried unchanged (never updated, decayed or donated, not in ``state_dict()``).
    ``backward`` hands ``loss_fn`` the model itself; :attr:`model` is the current
    model (the nnx module, updated in place by each step, as in torch), and
    :attr:`params` / :attr:`grad` are its trainable part: for nnx a nested dict of
    arrays (``nnx.update(model, opt.params)`` takes it), otherwise the model with
    None in place of the other leaves (equinox's ``eqx.filter``). Names are the
    attribute paths, ``'l1.kernel'``, ``'layers.0.bias'``.

    The parameters are copied at construction; read the current values from
    :attr:`params` (the arrays a step replaces are donated to it and deleted).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.array([1.0, 2.0])}, lr=0.1, momentum=0.9)
        >>> loss = opt.backward(lambda p: jnp.sum(p['w'] ** 2))
        >>> opt.step().clear_grad()
        SGD (...)
        >>> opt.params['w']
        Array([0.8, 1.6], dtype=float32)
    """

    factory: Callable[..., GradientTransformation]
    signature: str | None = None
    elementwise: bool = True
    # (params, grads, state, static_values) -> (params, state) of a packed CPU group with fused=True
    fused_step: Callable[..., Any] | None = None
    torch_options: dict[str, Any] = {}
    group_constants: dict[str, Any] = {}
    state_has_step: bool = True
    __signature__: inspect.Signature

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        factory = cls.__dict__.get("factory")
        if factory is None:
            return
        if "fused_step" not in cls.__dict__:
            cls.fused_step = None  # a native step computes its own class's rule, not a new factory's
        if isinstance(factory, staticmethod):
            factory = factory.__func__
        fsig = inspect.signature(factory)
        params = [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        order = cls.__dict__.get("signature")
        if order is None:
            params += list(fsig.parameters.values())
            for name, default in cls.torch_options.items():
                if name not in fsig.parameters:
                    params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default))
            # keyword-only parameters must follow positional ones
            positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
            keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
            params = positional + keyword
        else:
            # torch's exact order and keyword-only marker, e.g. "lr, rho, eps, weight_decay, foreach, *, maximize"
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
            names = [n.strip() for n in order.split(",")]
            known = set(fsig.parameters) | set(cls.torch_options)
            if set(names) - {"*"} != known:
                raise TypeError(f"{cls.__name__}.signature must name exactly {sorted(known)}")
            for name in names:
                if name == "*":
                    kind = inspect.Parameter.KEYWORD_ONLY
                    continue
                p = fsig.parameters.get(name)
                default = p.default if p is not None else cls.torch_options[name]
                annotation = p.annotation if p is not None else inspect.Parameter.empty
                params.append(inspect.Parameter(name, kind, default=default, annotation=annotation))
        cls.__signature__ = inspect.Signature(params)
        cls._factory_params = tuple(fsig.parameters)

    # ------------------------------------------------------------------ construction

    def __init__(self, params: Any, *args: Any, wrt: Any = None, **kwargs: Any) -> None:
        if not hasattr(type(self), "_factory_params"):
            raise TypeError(f"{type(self).__name__} does not bind a functional optimizer factory")
        try:
            bound = type(self).__signature__.bind(params, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}.__init__() {e}") from None
        bound.apply_defaults()
        defaults = {k: v for k, v in bound.arguments.items() if k != "params"}
        defaults.update(type(self).group_constants)
        if defaults.get("differentiable"):
            raise ValueError("differentiable=True is not supported: funcopt steps are pure functions; "
                             "differentiate through the functional optimizer instead")
        self._factory_fn = type(self).factory
        self._check_hparams(defaults)
        self.defaults: dict[str, Any] = defaults
        self._groups: list[_Group] = []
        self.param_groups: list[dict[str, Any]] = []
        self._one_tree: Any = None  # treedef of the single model pytree groups were cut from
        self._given_ids: list[weakref.ref] = []
        self._group_naming: list[bool | None] = []  # per group: (name, array) pairs, a plain list, other
        self._step_fn: Callable[..., Any] | None = None
        self._step_variant: tuple[bool, ...] = ()  # see _compiled_step
        self._decay_pattern: tuple[bool, ...] | None = None  # _zero_decay_groups(), kept until a value changes
        self._backward_cache = CompileCache(
            _BACKWARD_CACHE_SIZE, f"backward() has compiled more than {_BACKWARD_CACHE_SIZE} different loss "
            "functions; pass the batch as arguments (opt.backward(loss_fn, x, y)) instead of a new closure each step")
        self._params_cache: Any = None
        self._init_hooks()

        self._model: _model.Model | None = None  # set when params is a model (see funcopt.optim._model)
        groups = _model.model_groups(params, wrt)
        if groups is not None:
            self._model = _model.Model(groups[0]["params"])
        else:
            groups = self._normalize_params(params)
        one_tree = _one_tree_of(groups)
        for g in groups:
            self.add_param_group(g, _one_tree=one_tree)
        self._one_tree = one_tree

    def _check_hparams(self, hp: Mapping[str, Any]) -> GradientTransformation:
        """Validate hyperparameters by building the functional optimizer (it raises torch's errors); return it."""
        if hp.get("fused") and hp.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        return self._build_tx(hp)

    def _build_tx(self, hp: Mapping[str, Any]) -> GradientTransformation:
        kwargs = {k: hp[k] for k in self._factory_params if k in hp}
        # a weight decay stays data even at 0: the step compiles its own zero-decay variant (see
        # _compiled_step), so that setting it later in param_groups compiles nothing
        return self._factory_fn(**held_as_data(kwargs))

    @staticmethod
    def _normalize_params(params: Any) -> list[dict[str, Any]]:
        return _params.normalize_params(params)

    def add_param_group(self, param_group: dict[str, Any], *, _one_tree: Any = None) -> None:
        """Add a group of parameters, with hyperparameters that default to the constructor's.

        Raises ``ValueError`` if a parameter is already in a group, as torch does.
        Nothing changes when it raises.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(2)}, lr=0.1)
            >>> opt.add_param_group({'params': {'head': jnp.zeros(3)}, 'lr': 0.01})
            >>> [g['lr'] for g in opt.param_groups]
            [0.1, 0.01]
        """
        guard.check_host_call(self, "add_param_group", param_group)
        if not isinstance(param_group, Mapping):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise KeyError("param_group must have a 'params' key")
        positions = None  # a group cut from the optimizer's model: its leaves' places in the model
        if isinstance(param_group["params"], _model.ModelPart) or getattr(self, "_model", None) is not None:
            param_group, positions = self._model_group(param_group)
        param_group, naming = _params.named_group(param_group, self._group_naming)
        tree = param_group["params"]
        if isinstance(tree, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the "
                            "ordering of tensors in sets will change between runs. Please use a list instead.")
        if isinstance(tree, (jax.Array, np.ndarray)):
            tree = [tree]
        leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
        if not leaves_with_path:
            raise ValueError("optimizer got an empty parameter list")
        names = list(param_group.get("param_names") or [path_name(p) for p, _ in leaves_with_path])
        if len(names) != len(leaves_with_path):
            raise ValueError("all optimizer params should be with/without names. Some param names are missing")
        guard.check_new_names(self.param_names, names, param_group, leaves_with_path)
        leaves = []
        for name, (_, leaf) in zip(names, leaves_with_path):
            if not is_array(leaf) and not isinstance(leaf, numbers.Number):
                raise TypeError(f"optimizer can only optimize arrays, but parameter {name!r} is a "
                                f"{type(leaf).__name__}")
            arr_dtype = jnp.asarray(leaf).dtype if not is_array(leaf) else leaf.dtype
            if not (jnp.issubdtype(arr_dtype, jnp.floating) or jnp.issubdtype(arr_dtype, jnp.complexfloating)):
                raise ValueError(f"optimizer can only optimize floating point or complex arrays, but parameter "
                                 f"{name!r} has dtype {arr_dtype}")
            leaves.append(leaf)
        ids = [id(x) for x in leaves if is_array(x)]
        if len(set(ids)) != len(ids):
            # torch warns and steps the one tensor twice; here the two entries would become two arrays
            raise ValueError("optimizer contains a parameter group with duplicate parameters: the same array "
                             "is given twice, and funcopt copies the arrays it is given, so they would become "
                             "two independent parameters")
        if any(ref() is not None and id(ref()) in ids for ref in self._given_ids):
            raise ValueError("some parameters appear in more than one parameter group")

        bad = [k for k in param_group if not isinstance(k, str)]
        if bad:
            raise TypeError(f"param group keys must be strings, got key {bad[0]!r}")
        hp = dict(self.defaults)
        for k, v in param_group.items():
            if k not in ("params", "param_names"):
                hp[k] = v
        tx = self._check_hparams(hp)  # raises torch's errors before anything changes

        arrays = [x if is_array(x) else jnp.asarray(x) for x in leaves]
        # Packing concatenates leaves, which would gather parameters that live on several devices
        # (sharded or replicated over a mesh): such groups keep one array per leaf, each where it is.
        on_many_devices = any(isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 for x in arrays)
        # A group that asks for a native fused step packs every leaf: the kernel then makes one call per
        # dtype. With large leaves kept as buffers of their own it made one call per leaf, and XLA copied
        # around the many aliased calls (ResNet-like tree: 155 ms a step and 174 MB more, against 24 ms).
        pack_all = bool(hp.get("fused")) and type(self).fused_step is not None
        layout = Layout([np.shape(x) for x in arrays], [x.dtype for x in arrays],
                        flat=type(self).elementwise and not on_many_devices,
                        max_packed_size=sys.maxsize if pack_all else None)
        group = _Group(treedef, names, layout, layout.pack(arrays),
                       mask=(jax.tree.map(lambda x: not isinstance(x, MaskedNode), tree,
                                          is_leaf=lambda x: isinstance(x, MaskedNode))
                             if _one_tree is not None else None))
        self._build_group(group, hp, tx=tx)
        for x in leaves:
            if is_array(x):
                try:
                    self._given_ids.append(weakref.ref(x))
                except TypeError:
                    pass
        visible = {k: v for k, v in hp.items()}
        visible["params"] = None  # filled lazily from the arrays (see param_groups)
        visible["param_names"] = names
        self._groups.append(group)
        self._group_naming.append(naming)
        self.param_groups.append(_ParamGroup(self, len(self._groups) - 1, visible))
        if positions is not None:
            self._model.add_group(positions)
        if _one_tree is None and self._one_tree is not None:
            self._one_tree = None  # a group added later breaks the single-tree view
        self._invalidate()

    # ------------------------------------------------------------------ functional state per group

    def _split_hparams(self, hp: Mapping[str, Any], group: _Group,
                       tx: GradientTransformation | None = None) -> tuple[dict[str, Any], Any]:
        """Numeric hyperparameters (held in state) and a hashable key of what fixes the compiled step.

        The key holds the non-numeric options (``nesterov``, ``amsgrad``...) and the names of
        the state slots the values create (``momentum != 0`` creates ``momentum_buffer``).
        ``tx`` is the transform built from ``hp`` when the caller has it.
        """
        tx = self._build_tx(hp) if tx is None else tx
        probe = jax.eval_shape(tx.init, [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in group.params])
        numeric_names = set()
        for s in optimizer_states(probe):
            numeric_names.update(s.hparams)
        numeric = {k: hp[k] for k in numeric_names if k in hp}
        static = [(k, _freeze(hp[k])) for k in self._factory_params if k in hp and k not in numeric_names]
        return numeric, (tuple(static), tuple(_state_tree.slot_names(probe)))

    def _build_group(self, group: _Group, hp: Mapping[str, Any], old_state: Any = None,
                     tx: GradientTransformation | None = None) -> None:
        """Build a group's transform (unless ``tx``, built from ``hp``, is given) and its fresh state."""
        tx = self._build_tx(hp) if tx is None else tx
        numeric, static_key = self._split_hparams(hp, group, tx)
        state = tx.init(group.params)
        if old_state is not None:
            state = _state_tree.carry_slots(old_state, state)
        group.tx, group.state, group.static_key = tx, state, static_key
        group.hp_values = {k: _freeze(v) for k, v in numeric.items()}
        group.static_values = {k: _freeze(hp[k]) for k in self._factory_params if k in hp and k not in numeric}
        self._choose_fused(group, bool(hp.get("fused")))
        self._decay_pattern = None

    def _choose_fused(self, group: _Group, requested: bool) -> None:
        """Record ``fused=True`` and whether the group's step runs the class's native ``fused_step``.

        Groups the kernel does not cover (per-leaf storage, accelerator buffers, amsgrad, half
        precision) keep XLA's step, which on a GPU is already one kernel per buffer. When the kernel
        cannot be built (no C++ compiler) the group keeps XLA's step too, with a RuntimeWarning: a
        checkpoint saved by ``torch.optim.Adam(fused=True)`` must load anywhere.
        """
        native_step = bool(requested and type(self).fused_step is not None and group.layout.flat
                           and _fused.fusable(group.params, group.state, group.hp_values, group.static_values))
        if native_step:
            error = native_error()
            if error is not None:
                warnings.warn(f"fused=True: funcopt's native CPU kernel is unavailable ({error}); this group "
                              "runs XLA's step (same numbers, more memory traffic)", RuntimeWarning, stacklevel=3)
                native_step = False
        group.fused, group.native = requested, native_step

    def _sync_hparams(self) -> None:
        """Push hyperparameters edited in param_groups into the functional states.

        A new numeric value is written into the state (no recompile). A change that
        alters the compiled step (a flag such as ``nesterov``, or a value that creates
        or drops state, such as momentum leaving 0) rebuilds that group's optimizer,
        keeping the state slots it still has.
        """
        for group, pg in zip(self._groups, self.param_groups):
            if type(self).fused_step is not None and (fused := bool(dict.get(pg, "fused"))) != group.fused:
                self._choose_fused(group, fused)
                self._invalidate()
            changed = {}
            for k, old in group.hp_values.items():
                new = dict.get(pg, k, old)
                if _freeze(new) != old:
                    changed[k] = new
            static_changed = any(_freeze(pg.get(k)) != v for k, v in group.static_values.items())
            if not changed and not static_changed:
                continue
            # read the dict itself: the group's items() would unpack every parameter to return its "params"
            hp = {k: dict.__getitem__(pg, k) for k in pg.keys() if k not in ("params", "param_names")}
            tx = self._check_hparams(hp)
            fast = not static_changed and all(
                not callable(v) and not callable(group.hp_values[k])
                and jax.tree.map(is_static_zero, _freeze(v)) == jax.tree.map(is_static_zero, group.hp_values[k])
                for k, v in changed.items())
            if not fast:
                _, static_key = self._split_hparams(hp, group, tx)
                if static_key != group.static_key or any(callable(v) for v in changed.values()):
                    self._build_group(group, hp, old_state=group.state, tx=tx)
                    self._invalidate()
                    continue
            group.state = set_hparams(group.state, **{k: tuple(v) if isinstance(v, list) else v
                                                      for k, v in changed.items()})
            for k, v in changed.items():
                group.hp_values[k] = _freeze(v)
            if "weight_decay" in changed:
                self._decay_pattern = None

    def _invalidate(self) -> None:
        self._step_fn = None
        self._decay_pattern = None
        self._backward_cache.clear()
        self._params_cache = None

    # ------------------------------------------------------------------ views

    def _tree_of(self, storage: list[list[jax.Array]], for_grad: bool = False, offsets: Any = None) -> Any:
        """The user-facing pytree of per-group storage (works on tracers inside jit; see Layout.unpack_for_grad).

        ``offsets`` (with ``for_grad``): per group, :meth:`Layout.grad_offsets` traced, or None.
        """
        if self._model is not None:
            return self._model.view(self._by_position(storage, for_grad, offsets))
        offsets = [None] * len(self._groups) if offsets is None else offsets
        leaves_per_group = [g.layout.unpack_for_grad(s, o) if for_grad else g.layout.unpack(s)
                            for g, s, o in zip(self._groups, storage, offsets)]
        if self._one_tree is not None:
            return _merge_groups(self._one_tree, self._groups, leaves_per_group)
        trees = [g.treedef.unflatten(leaves) for g, leaves in zip(self._groups, leaves_per_group)]
        return trees[0] if len(trees) == 1 else trees

    def _leaves_of(self, tree: Any, what: str = "grads") -> list[list[jax.Array]]:
        """Split a user-facing tree into per-group leaf lists, validating structure and shapes."""
        if self._model is not None:
            values = self._model.parse(tree, what)
            out = [[values[i] for i in positions] for positions in self._model.positions]
        elif self._one_tree is not None:
            leaves = _flatten_like(tree, self._one_tree, what)
            out = [[] for _ in self._groups]
            owners = _leaf_owners(self._groups)
            for leaf, gi in zip(leaves, owners):
                out[gi].append(leaf)
        else:
            trees = [tree] if len(self._groups) == 1 else tree
            if len(self._groups) > 1 and (not isinstance(trees, (list, tuple)) or len(trees) != len(self._groups)):
                raise ValueError(f"{what} must be a list with one pytree per parameter group "
                                 f"({len(self._groups)} groups)")
            out = []
            for g, t in zip(self._groups, trees):
                if t is None and what == "grads":  # a group without gradients
                    out.append([None] * len(g.names))
                    continue
                out.append(_flatten_like(_params.conform(t, g.treedef), g.treedef, what))
        for g, leaves in zip(self._groups, out):
            for name, x, shape in zip(g.names, leaves, g.layout.shapes):
                if x is None and what == "grads":  # no gradient for this parameter: torch skips it
                    continue
                if tuple(np.shape(x)) != shape:
                    raise ValueError(f"{what} for parameter {name!r} has shape {tuple(np.shape(x))}, "
                                     f"expected {shape}")
        return out

    @property
    def params(self) -> PyTree:
        """The current parameters, in the structure given at construction."""
        if self._params_cache is None:
            if guard.in_transformation():  # read inside a traced function: views of the trace, not to keep
                return self._tree_of([g.params for g in self._groups])
            self._params_cache = self._tree_of([g.params for g in self._groups])
        return self._params_cache

    @params.setter
    def params(self, tree: PyTree) -> None:
        """Replace the parameter values (same structure and shapes; cast to each parameter's dtype).

        The optimizer state is kept, as when torch code copies new values into its
        parameters. Everything is validated before anything changes.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(2)})
            >>> opt.params = {'w': jnp.zeros(2)}
            >>> opt.params['w']
            Array([0., 0.], dtype=float32)
        """
        guard.check_host_call(self, "params = ...", tree)
        leaves = self._leaves_of(tree, "params")
        for g, gl in zip(self._groups, leaves):
            for name, x in zip(g.names, gl):
                if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact):
                    raise TypeError(f"params for parameter {name!r} must be floating point, got {jnp.asarray(x).dtype}")
        storage = [g.layout.pack(gl) for g, gl in zip(self._groups, leaves)]
        for g, st in zip(self._groups, storage):
            g.params = st
        self._params_cache = None
        self._model_stepped()

    @property
    def grad(self) -> PyTree | None:
        """The accumulated gradients in the parameters' structure, or None once cleared."""
        if any(g.grads is None for g in self._groups):
            return None
        return self._tree_of([g.grads for g in self._groups])

    @property
    def param_names(self) -> list[str]:
        """The torch-style names of all parameters, in state_dict index order."""
        return [n for g in self._groups for n in g.names]

    @property
    def state(self) -> dict[str, dict[str, jax.Array]]:
        """Per-parameter state by parameter name: ``{'fc.weight': {'exp_avg': ...}}`` (a snapshot)."""
        out = {}
        for g in self._groups:
            per_param = _state_tree.slots_per_param(g.state, g.layout)
            for name, slots in zip(g.names, per_param):
                if self.state_has_step:
                    slots = {"step": _state_tree.step_of(g.state), **slots}
                out[name] = slots
        return out

    def step_count(self, group: int = 0) -> int:
        """The number of steps parameter group ``group`` has taken (its state's ``step``).

        Each group keeps one count, which :meth:`load_state_dict` restores; a step
        skips a group that has no gradient, and its count then stays.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.Adam({'w': jnp.ones(2)})
            >>> opt({'w': jnp.ones(2)})({'w': jnp.ones(2)}).step_count()
            2
        """
        return int(_state_tree.step_of(self._groups[group].state))

    # ------------------------------------------------------------------ gradients

    def backward(self, loss_fn: Callable[..., Any], *args: Any, has_aux: bool = False, **kwargs: Any) -> Any:
        """Differentiate ``loss_fn(model, *args, **kwargs)`` and ADD the gradients into :attr:`grad`.

        ``model`` is what the optimizer was given: :attr:`params` for arrays, or the
        model itself (an nnx module, rebuilt inside the compiled call; an equinox
        module; a pytree), of which only the trainable leaves are differentiated.
        The state an nnx module changes in its forward pass (BatchNorm statistics,
        RNG counters) is kept, in the module, as in torch. Equinox's explicit state
        goes through the call: ``loss, state = opt.backward(loss_fn, state, x,
        has_aux=True)`` with ``loss_fn`` returning ``(loss, new_state)``.

        Gradients accumulate until :meth:`clear_grad` / :meth:`zero_grad`, as
        with torch's ``loss.backward()`` and MegEngine's GradManager. One jitted
        call, compiled once per ``loss_fn``: pass the batch as arguments rather
        than building a new lambda each step. Array arguments are traced; any
        other argument (a Python number, a module's static part) is a
        compile-time constant, and a new value compiles again. The gradient of a
        complex parameter is torch's (the conjugate of what ``jax.grad`` returns).

        Returns:
            The loss, or ``(loss, aux)`` with ``has_aux=True``.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.array([1.0, 2.0])}, lr=0.1)
            >>> opt.backward(lambda p, x: jnp.sum(p['w'] * x), jnp.array([3.0, 4.0]))
            Array(11., dtype=float32)
            >>> _ = opt.backward(lambda p, x: jnp.sum(p['w'] * x), jnp.array([3.0, 4.0]))
            >>> opt.grad['w']
            Array([6., 8.], dtype=float32)
        """
        guard.check_host_call(self, "backward", args, kwargs)
        # array leaves of the arguments are traced; anything else (a module's static part, a flag, a
        # function) is a compile-time constant and part of the cache key
        dynamic, static, args_def = split_args(args, kwargs)
        key = (loss_fn, has_aux, args_def, static)
        if self._model is not None:
            self._model_sync(split=True)  # an nnx module may have changed (eval(), a loaded state)
            key += (self._model.static_key(),)
        try:
            fn = self._backward_cache.get(key, lambda: self._make_backward(loss_fn, has_aux, args_def, static))
        except TypeError:
            raise TypeError("backward(): arguments that are not arrays must be hashable; pass data as arrays") from None
        params = [g.params for g in self._groups]
        grads = None if any(g.grads is None for g in self._groups) else [g.grads for g in self._groups]
        offsets = self._grad_offsets(params)
        if self._model is not None:
            out, new_grads, rest = fn(params, grads, dynamic, self._model.rest(), offsets)
            self._model.set_rest(rest)
        else:
            out, new_grads = fn(params, grads, dynamic, offsets)
        for g, leaves in zip(self._groups, new_grads):
            g.grads = leaves
        return out

    def _make_backward(self, loss_fn: Callable[..., Any], has_aux: bool, args_def: Any,
                       static: tuple[Any, ...]) -> Callable[..., Any]:
        if self._model is not None:
            def args_of(dynamic):
                return join_args(args_def, dynamic, static)

            return _model.make_backward(self._model, lambda st, offsets: self._by_position(st, True, offsets),
                                        args_of, loss_fn, has_aux)

        def objective(params, dynamic, offsets):
            args, kwargs = join_args(args_def, dynamic, static)
            out = loss_fn(self._tree_of(params, for_grad=True, offsets=offsets), *args, **kwargs)
            if has_aux:
                loss, aux = out
                return loss, (loss, aux)
            return out, out

        def run(params, grads, dynamic, offsets):
            (_, out), new = jax.value_and_grad(objective, has_aux=True)(params, dynamic, offsets)
            # torch's p.grad of a complex parameter is the conjugate of what jax.grad returns
            new = jax.tree.map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, new)
            if grads is not None:
                new = jax.tree.map(lambda a, b: a + b.astype(a.dtype), grads, new)
            return out, new

        return jax.jit(run, donate_argnums=(1,))

    def clear_grad(self) -> Optimizer:
        """Drop the accumulated gradients (MegEngine's name); returns the optimizer.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(2)})
            >>> _ = opt.backward(lambda p: jnp.sum(p['w']))
            >>> opt.clear_grad().grad is None
            True
        """
        guard.check_host_call(self, "clear_grad")
        for g in self._groups:
            g.grads = None
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients: to None (default, as torch) or to zero-filled arrays.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(2)})
            >>> opt.zero_grad(set_to_none=False)
            >>> opt.grad['w']
            Array([0., 0.], dtype=float32)
        """
        guard.check_host_call(self, "zero_grad")
        for g in self._groups:
            g.grads = None if set_to_none else [jnp.zeros_like(p) for p in g.params]

    def grad_storage(self) -> list[list[jax.Array]] | None:
        """The accumulated gradients as stored: one list of arrays per group, or None when cleared.

        Each group keeps its parameters and gradients in the same storage: for an
        elementwise optimizer one flat buffer per dtype for the small leaves and each
        large one as an array of its own (without its unit dimensions: a ``(64, 256, 1, 1)``
        kernel is stored ``(64, 256)``), else one array per parameter.
        A utility that rewrites every gradient (:func:`funcopt.optim.clip_grad_norm_`,
        a loss scaler's unscale) maps a function over this storage in one jitted call,
        whatever the layout, and hands the result to :meth:`set_grad_storage`.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'b': jnp.ones(1), 'w': jnp.ones(2)})
            >>> _ = opt.backward(lambda p: jnp.sum(p['w']) + 2 * jnp.sum(p['b']))
            >>> opt.grad_storage()
            [[Array([2., 1., 1.], dtype=float32)]]
            >>> opt.set_grad_storage([[s * 0.5 for s in group] for group in opt.grad_storage()])
            >>> opt.grad['b']
            Array([1.], dtype=float32)
        """
        if any(g.grads is None for g in self._groups):
            return None
        return [list(g.grads) for g in self._groups]

    def set_grad_storage(self, storage: list[list[jax.Array]]) -> None:
        """Store new gradients, with the shapes and dtypes :meth:`grad_storage` returned (see there)."""
        guard.check_host_call(self, "in-place gradient update (clip_grad_norm_, clip_grad_value_)", storage)
        if len(storage) != len(self._groups):
            raise ValueError(f"expected gradient storage for {len(self._groups)} groups, got {len(storage)}")
        for g, new in zip(self._groups, storage):
            g.grads = list(new)

    # ------------------------------------------------------------------ stepping

    def _compiled_step(self) -> Callable[..., Any]:
        """The jitted step ``(params, grads, states, no_decay, present, from_leaves) -> (params, states)``.

        ``present`` (static) says per group which parameters have a gradient
        (see :mod:`funcopt.optim._skip`): each pattern compiles once.

        ``from_leaves`` (static) says that ``grads`` holds each group's gradient
        leaves as the user gave them (None where missing), not its storage: they
        are packed inside the program, so ``opt(grads)`` is one dispatch however
        many leaves there are, instead of one small copy per leaf beforehand.

        ``no_decay`` (static) marks the groups traced with a literal zero weight
        decay: the parameters are then not read to add ``0 * p`` to the gradient
        (for Adam a quarter of the step's memory traffic). Two variants at most
        exist: the one for the weight decays of the first step, and the general
        one, used whenever the values differ from it. The general one compiles
        when first needed (a weight decay leaving 0: one compile, once), so the
        usual first step compiles one program, not two; lr, betas, momentum or
        nonzero weight-decay edits never compile anything.
        """
        if self._step_fn is None:
            txs = [g.tx for g in self._groups]
            native = [type(self).fused_step if g.native else None for g in self._groups]
            statics = [dict(g.static_values) for g in self._groups]
            layouts = [g.layout for g in self._groups]

            def run(params, grads, states, no_decay, present, from_leaves=False):
                if from_leaves:
                    grads = [None if here is False else layout.pack(_skip.fill_missing(layout, gl))
                             for layout, gl, here in zip(layouts, grads, present)]
                new_params, new_states = [], []
                for tx, p, gr, s, literal, fused_step, static, layout, here in zip(
                        txs, params, grads, states, no_decay, native, statics, layouts, present):
                    if here is False:  # no gradient in this group: torch skips its parameters
                        new_params.append(p)
                        new_states.append(s)
                        continue
                    if fused_step is not None:
                        new_p, new = _fused_on_vectors(fused_step, p, gr, s, static)
                    else:
                        u, new = tx.update(gr, _state_tree.literal_zero_decay(s) if literal else s, p)
                        new_p = apply_updates(p, u)
                        new = _state_tree.restore_hparams(new, s) if literal else new
                    if here is not True:
                        new_p, new = _skip.keep_skipped(layout, here, p, new_p, s, new)
                    new_params.append(new_p)
                    new_states.append(new)
                return new_params, new_states

            self._step_fn = jax.jit(run, donate_argnums=(0, 2), static_argnums=(3, 4, 5))
            self._step_variant = self._decay_pattern = self._zero_decay_groups()
        return self._step_fn

    def _zero_decay_groups(self) -> tuple[bool, ...]:
        """Per group: packed storage and a weight decay of exactly 0 right now."""
        return tuple(bool(g.layout.flat and not g.native and "weight_decay" in g.hp_values
                          and all(is_static_zero(v) for v in jax.tree.leaves(g.hp_values["weight_decay"])))
                     for g in self._groups)

    def _step_args(self, fn: Callable[..., Any], grads: list[list[jax.Array] | None],
                   present: tuple[_skip.Present, ...] | None = None, from_leaves: bool = False) -> tuple[Any, ...]:
        """The arguments of ``fn`` (the compiled step), choosing the variant (see :meth:`_compiled_step`)."""
        if present is None:  # whole groups with or without gradients
            present = tuple(gr is not None for gr in grads)
        params = [g.params for g in self._groups]
        states = [g.state for g in self._groups]
        general = (False,) * len(self._groups)
        if self._decay_pattern is None:
            self._decay_pattern = self._zero_decay_groups()
        variant = self._step_variant if self._decay_pattern == self._step_variant else general
        return params, grads, states, variant, present, from_leaves

    def _run_step(self, grads: list[list[jax.Array] | None], present: tuple[_skip.Present, ...] | None = None,
                  from_leaves: bool = False) -> None:
        """One compiled step; a group whose storage is None (or a parameter ``present`` marks) has no gradient.

        With ``from_leaves``, ``grads`` holds gradient leaves, packed inside the step (see :meth:`_compiled_step`).
        """
        self._model_sync(split=False)
        self._sync_hparams()
        self._place_state_scalars()
        fn = self._compiled_step()
        new_params, new_states = fn(*self._step_args(fn, grads, present, from_leaves))
        for g, p, s in zip(self._groups, new_params, new_states):
            g.params, g.state = p, s
        self._params_cache = None
        self._model_stepped()

    def _place_state_scalars(self) -> None:
        """Commit each group's uncommitted state arrays to the devices its step returns them on.

        A state built or edited on the host (the step count, hyperparameters just set) is
        uncommitted; a step over parameters placed on a mesh or a device returns it committed there,
        and jit compiles again for arguments placed differently: without this, the second step and
        every step after an lr edit of a sharded model would compile a program of their own.
        """
        for g in self._groups:
            placement = _scalar_placement(g.params)
            if placement is None:
                continue
            leaves, treedef = jax.tree.flatten(g.state)
            if any(isinstance(x, jax.Array) and not x.committed for x in leaves):
                g.state = treedef.unflatten([jax.device_put(x, placement)
                                             if isinstance(x, jax.Array) and not x.committed else x
                                             for x in leaves])

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the accumulated gradients; returns the optimizer, or the closure's loss.

        Without a closure, ``opt.step().clear_grad()`` chains (MegEngine). With
        one, the closure is called first (it should clear the gradients, call
        :meth:`backward` and return the loss) and its loss is returned (torch).

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.Adam({'w': jnp.ones(2)}, lr=0.1)
            >>> def closure():
            ...     opt.zero_grad()
            ...     return opt.backward(lambda p: jnp.sum(p['w'] ** 2))
            >>> opt.step(closure)
            Array(2., dtype=float32)
        """
        guard.check_host_call(self, "step")
        args, kwargs = self._call_step_pre_hooks((closure,) if closure is not None else (), {})
        closure = args[0] if args else kwargs.get("closure")
        loss = closure() if closure is not None else None
        if any(g.grads is not None for g in self._groups):  # as torch: no gradient, no step
            self._run_step([g.grads for g in self._groups])
        self._call_step_post_hooks(args, kwargs)
        return loss if closure is not None else self

    def __call__(self, grads: PyTree) -> Optimizer:
        """Apply the given gradients (MindSpore style) and return the optimizer.

        ``grads`` has the structure of :attr:`params`; :attr:`grad` is left as it was.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'w': jnp.ones(2)}, lr=0.5)
            >>> opt({'w': jnp.ones(2)}).params['w']
            Array([0.5, 0.5], dtype=float32)
        """
        guard.check_host_call(self, "__call__", grads)
        leaves = self._leaves_of(grads, "grads")
        for g, gl in zip(self._groups, leaves):
            for name, x, pdtype in zip(g.names, gl, g.layout.dtypes):
                if x is None:
                    continue
                dtype = np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype)
                if not (jnp.issubdtype(dtype, jnp.inexact)):
                    raise TypeError(f"grads for parameter {name!r} must be floating point, got {dtype}")
                if jnp.issubdtype(dtype, jnp.complexfloating) and not jnp.issubdtype(pdtype, jnp.complexfloating):
                    raise TypeError(f"grads for parameter {name!r} are complex ({dtype}) but the parameter is "
                                    f"real ({pdtype})")
        present = tuple(_skip.pattern(gl) for gl in leaves)
        # the leaves go into the compiled step as they are (packed there: one dispatch); a group or a
        # parameter without a gradient passes no array
        leaves = [None if here is False else [x for x in gl] for gl, here in zip(leaves, present)]
        self._call_step_pre_hooks((), {}, replace=False)
        if any(here is not False for here in present):  # as torch: no gradient, no step
            self._run_step(leaves, present, from_leaves=True)
        self._call_step_post_hooks((), {})
        return self

    # ------------------------------------------------------------------ state_dict

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in torch.optim's format, with NumPy arrays.

        ``{'state': {0: {'exp_avg': array(...), ...}, ...}, 'param_groups': [{'lr': ..., 'params': [0, 1],
        'param_names': [...]}, ...]}``. A torch optimizer of the same class loads
        ``funcopt.optim.to_torch(opt.state_dict())``: torch tensors of the same dtypes and bits (bfloat16
        and float8 state are ``ml_dtypes`` arrays here, which ``torch.as_tensor`` refuses).

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.SGD({'weight': jnp.zeros((2, 3)), 'bias': jnp.zeros(2)},
            ...                    lr=1e-3, momentum=0.9, weight_decay=1e-4)
            >>> sd = opt.state_dict()
            >>> sd['state'][0]['momentum_buffer']
            array([0., 0.], dtype=float32)
            >>> sd['param_groups'][0]['params'], sd['param_groups'][0]['param_names']
            ([0, 1], ['bias', 'weight'])
        """
        return self._state_dict_with_hooks(lambda: _state_dict.build(self))

    def load_state_dict(self, state_dict: Mapping[str, Any], *, by_name: bool = False,
                        strict: bool = True) -> IncompatibleKeys:
        """Load a state_dict from :meth:`state_dict` or from a torch optimizer of the same algorithm.

        Everything is validated before anything changes: the number of groups,
        their sizes, each state array's shape and dtype kind. On any error the
        optimizer is left exactly as it was. Floating state is cast to its
        parameter's dtype (as torch does), or, where the group sets a state dtype
        (``mu_dtype``, ``nu_dtype``, ``state_dtype``), rounded to nearest into it.

        By index (the default), parameter ``i`` of a saved group feeds parameter
        ``i`` here, as in torch. Where both sides name their parameters (not just
        the positions ``'0', '1', ...`` of a plain list), the names must agree,
        else ``ValueError`` (pass ``by_name=True`` to match them by name).

        With ``by_name=True`` the state of each parameter is found by its name
        (``param_names`` in the saved groups), so a state_dict still loads after
        the model's structure or grouping changed; parameters missing from it
        raise ``KeyError``.

        With ``strict=False`` (which matches by name) a state_dict of a model that
        since gained or lost parameters loads too: each parameter whose name is
        saved, with state of the same shapes and dtypes, gets its saved state; the
        others start fresh. A group takes the saved hyperparameters and step count
        of the parameters it loads (one step count per group: give new parameters
        a group of their own for their step to start at 0 too).

        Returns:
            :class:`~funcopt.optim.IncompatibleKeys`: the sorted names of the
            parameters with no saved state (``missing_keys``), of the saved ones
            this optimizer does not have (``unexpected_keys``), and of those whose
            saved state has another shape or dtype (``mismatched_keys``). A strict
            load raises instead of starting any state fresh.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.Adam({'w': jnp.ones(2)}, lr=0.1)
            >>> _ = opt({'w': jnp.ones(2)})
            >>> fresh = fo.optim.Adam({'w': jnp.ones(2)}, lr=0.5)
            >>> fresh.load_state_dict(opt.state_dict())
            IncompatibleKeys(missing_keys=[], unexpected_keys=[], mismatched_keys=[])
            >>> fresh.param_groups[0]['lr'], int(fresh.state['w']['step'])
            (0.1, 1)
            >>> grown = fo.optim.Adam({'w': jnp.ones(2), 'head': jnp.ones(3)})
            >>> grown.load_state_dict(opt.state_dict(), strict=False)
            IncompatibleKeys(missing_keys=['head'], unexpected_keys=[], mismatched_keys=[])
        """
        guard.check_host_call(self, "load_state_dict", state_dict)
        state_dict = self._call_load_state_dict_pre_hooks(state_dict)
        plans, keys = self._plan_load(state_dict, by_name, strict)
        _state_dict.apply(self, plans)  # nothing here raises on a validated plan
        self._call_load_state_dict_post_hooks()
        return keys

    def _plan_load(self, state_dict: Mapping[str, Any], by_name: bool,
                   strict: bool) -> tuple[list[_state_dict.GroupPlan], IncompatibleKeys]:
        """Validate ``state_dict`` and plan each group's new hyperparameters and state (raises, changes nothing)."""
        return _state_dict.plan(self, state_dict, by_name, strict)

    # ------------------------------------------------------------------ models (see funcopt.optim._model)

    @property
    def model(self) -> Any:
        """The current model: the nnx module itself (updated in place by each step), else rebuilt.

        An equinox module or a pytree with non-trainable leaves is immutable: read the
        trained model here after each step. Built from a list of arrays or of group
        dicts, the optimizer's model is :attr:`params`.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> model = {'w': jnp.ones(2), 'calls': jnp.array(0)}
            >>> opt = fo.optim.SGD(model, lr=0.5)
            >>> opt({'w': jnp.ones(2), 'calls': None}).model
            {'calls': Array(0, dtype=int32, weak_type=True), 'w': Array([0.5, 0.5], dtype=float32)}

        Setting it replaces an immutable model of the same structure (its trainable
        values as :attr:`params`, keeping the optimizer state, and its other leaves);
        an nnx module is updated in place instead (``nnx.update(opt.model, state)``).

            >>> opt.model = {'w': jnp.zeros(2), 'calls': jnp.array(5)}
            >>> int(opt.model['calls']), opt.params['w']
            (5, Array([0., 0.], dtype=float32))
        """
        if self._model is None:
            return self.params
        if self._model.is_nnx:
            return self._model.module
        storage = [g.params for g in self._groups]

        def values():  # fresh copies in one call: a later step donates the storage, never the model's arrays
            copies = _model.copies_fn(self._model, [g.layout for g in self._groups])(storage)
            return {i: x for positions, leaves in zip(self._model.positions, copies) for i, x in zip(positions, leaves)}

        return self._model.current(values, tuple(x for st in storage for x in st))

    @model.setter
    def model(self, model: Any) -> None:
        """Replace an immutable model (same structure): its trainable values as :attr:`params`, and the rest."""
        if self._model is None:
            self.params = model
            return
        if self._model.is_nnx:
            if model is not self._model.module:
                raise ValueError("an nnx module is updated in place: nnx.update(opt.model, new_state)")
            return
        given = _model.Flat(model)
        if given.treedef != self._model.flat.treedef:
            raise ValueError(f"the new model's structure {given.treedef} differs from the optimizer's "
                             f"{self._model.flat.treedef}")
        self.params = self._model.view({i: given.leaves[i] for i in self._model.trainable()})  # validates first
        self._model.replace_rest(model)

    def _by_position(self, storage: list[list[jax.Array]], for_grad: bool = False,
                     offsets: Any = None) -> dict[int, Any]:
        """Each group's leaves (unpacked from ``storage``) by their place in the model."""
        offsets = [None] * len(self._groups) if offsets is None else offsets
        return {i: leaf for g, st, o, positions in zip(self._groups, storage, offsets, self._model.positions)
                for i, leaf in zip(positions, g.layout.unpack_for_grad(st, o) if for_grad else g.layout.unpack(st))}

    def _grad_offsets(self, storage: list[list[jax.Array]]) -> list[Any]:
        """Per group, the traced offsets ``backward`` cuts its packed buffers at (see Layout.unpack_for_grad)."""
        return [g.layout.grad_offsets(st) for g, st in zip(self._groups, storage)]

    def _model_group(self, param_group: Mapping[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """A group dict cut from the optimizer's model as a plain group (arrays and names) and its places."""
        part = param_group["params"]
        if not isinstance(part, _model.ModelPart):
            raise ValueError("this optimizer trains a model: add a group cut from it, e.g. "
                             "opt.add_param_group({'params': fo.optim.param_groups(model, {...})[0]['params'], "
                             "'lr': ...})")
        if self._model is None:
            if self._groups:
                raise ValueError("this optimizer was built from plain parameters; a group cut from a model "
                                 "cannot join it")
            # constructed from the groups of fo.optim.param_groups
            self._model = _model.Model(part)
        if not self._model.same_model(part):
            raise ValueError("the group is cut from another model than the one this optimizer trains")
        positions, values, names = self._model.group_values(part)
        taken = set(self._model.trainable())
        if any(i in taken for i in positions) or len(set(positions)) != len(positions):
            raise ValueError("some parameters appear in more than one parameter group")
        group = {k: v for k, v in param_group.items() if k not in ("params", "param_names")}
        group["params"] = list(values)
        group["param_names"] = list(names)
        return group, positions

    def _model_sync(self, split: bool) -> None:
        """Adopt what the user changed in an nnx module: trainable values (as torch's in-place edits).

        With ``split`` the module is split again first (its graphdef, e.g. after ``eval()``,
        and its current carried state). Costs a few microseconds per parameter otherwise.
        """
        model = self._model
        if model is None or not model.is_nnx:
            return
        if split:
            model.refresh()
        edited = model.edited()
        if edited:
            values = self._by_position([g.params for g in self._groups])
            values.update(edited)
            self.params = model.view(values)

    def _model_stepped(self) -> None:
        """After new parameter values: write copies of them into an nnx module (the user's object)."""
        model = self._model
        if model is None or not model.is_nnx:
            return
        fn = _model.copies_fn(model, [g.layout for g in self._groups])
        copies = fn([g.params for g in self._groups])
        model.write({i: x for positions, leaves in zip(model.positions, copies) for i, x in zip(positions, leaves)})

    # ------------------------------------------------------------------ repr

    def __repr__(self) -> str:
        out = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            out += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key not in ("params", "param_names"):
                    out += f"    {key}: {group[key]}\n"
        return out + ")"

    def __getstate__(self) -> Any:
        raise TypeError("funcopt optimizers are not pickled; use state_dict() (NumPy arrays) or fo.save")


class _ParamGroup(dict):
    """A param group dict whose 'params' entry shows the group's current arrays."""

    def __init__(self, opt: Optimizer, index: int, values: dict[str, Any]) -> None:
        super().__init__(values)
        self._opt = weakref.ref(opt)
        self._index = index

    def _current_params(self) -> Any:
        opt = self._opt()
        if opt is None:
            return dict.get(self, "params")
        g = opt._groups[self._index]
        return g.treedef.unflatten(g.layout.unpack(g.params))

    def __getitem__(self, key: str) -> Any:
        if key == "params":
            return self._current_params()
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key == "params":
            return self._current_params()
        return super().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in ("params", "param_names"):
            raise KeyError(f"param_groups[i][{key!r}] is read-only here; use add_param_group for new parameters")
        guard.check_host_call(self._opt(), f"param_groups[i][{key!r}] = ...", value)
        super().__setitem__(key, value)

    def items(self):  # type: ignore[override]
        return [(k, self[k]) for k in self.keys()]

    def values(self):  # type: ignore[override]
        return [self[k] for k in self.keys()]

    def __repr__(self) -> str:
        return repr({k: (v if k != "params" else f"<{len(self['param_names'])} arrays>") for k, v in self.items()})


# ---------------------------------------------------------------------- helpers


def _freeze(v: Any) -> Any:
    if type(v) in (float, int, bool):  # the usual case, checked on every step
        return v
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, (jax.Array, np.ndarray, np.generic)) and np.size(v) == 1:
        return float(np.asarray(v).reshape(()))
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    try:
        hash(v)
    except TypeError:
        return id(v)
    return v


def _one_tree_of(groups: list[dict[str, Any]]) -> Any:
    """The treedef of the model pytree when every group is a masked cut of the same one, else None."""
    if len(groups) < 2:
        return None
    is_masked = lambda x: isinstance(x, MaskedNode)  # noqa: E731
    defs = []
    for g in groups:
        tree = g["params"]
        if not any(is_masked(x) for x in jax.tree.leaves(tree, is_leaf=is_masked)):
            return None
        defs.append(jax.tree.structure(jax.tree.map(lambda x: 0, tree, is_leaf=is_masked)))
    if any(d != defs[0] for d in defs):
        return None
    owners = [None] * defs[0].num_leaves
    for gi, g in enumerate(groups):
        for i, x in enumerate(jax.tree.leaves(g["params"], is_leaf=is_masked)):
            if not is_masked(x):
                if owners[i] is not None:
                    raise ValueError("some parameters appear in more than one parameter group")
                owners[i] = gi
    if any(o is None for o in owners):
        return None
    return defs[0]


def _leaf_owners(groups: list[_Group]) -> list[int]:
    masks = [jax.tree.leaves(g.mask) for g in groups]
    return [next(gi for gi, m in enumerate(masks) if m[i]) for i in range(len(masks[0]))]


def _merge_groups(treedef: Any, groups: list[_Group], leaves_per_group: list[list[Any]]) -> Any:
    owners = _leaf_owners(groups)
    iters = [iter(leaves) for leaves in leaves_per_group]
    return treedef.unflatten([next(iters[gi]) for gi in owners])


def _flatten_like(tree: Any, treedef: Any, what: str) -> list[Any]:
    """The leaves of ``tree`` where ``treedef`` has leaves; None stays a leaf there (a missing gradient)."""
    try:
        leaves = treedef.flatten_up_to(tree)
    except (ValueError, TypeError):
        leaves = None
    if leaves is None or any(_is_pytree_node(x) for x in leaves) or (what != "grads" and any(x is None
                                                                                               for x in leaves)):
        raise ValueError(f"{what} structure {jax.tree.structure(tree)} does not match the parameters' {treedef}")
    return leaves


def _is_pytree_node(x: Any) -> bool:
    return x is not None and jax.tree.structure(x).num_nodes > 1


def _scalar_placement(params: list[Any]) -> jax.sharding.Sharding | None:
    """Where a step over ``params`` puts an array it returns replicated: None for uncommitted parameters.

    Read from the group's first array only (this runs before every step, and a group of thousands of
    leaves would otherwise be scanned each time): a model is placed as a whole. A group whose first
    array is uncommitted and others placed keeps jit's own choice, which costs one more compile.
    """
    p = params[0] if params else None
    if not isinstance(p, jax.Array) or not p.committed:
        return None
    sharding = p.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    if len(sharding.device_set) == 1:
        return jax.sharding.SingleDeviceSharding(next(iter(sharding.device_set)))
    return None


def _fused_on_vectors(fused_step: Callable[..., Any], params: list[Any], grads: list[Any], state: Any,
                      static: Any) -> tuple[list[Any], Any]:
    """A native ``fused_step`` on a group's storage, each entry seen as a vector (a kept leaf has its shape).

    The kernels take 1-D buffers; inside the jitted step the reshapes are free (no copy).
    """
    def flat(xs):
        return [x.reshape(-1) for x in xs]

    def shaped(xs, like):
        return [x.reshape(np.shape(y)) for x, y in zip(xs, like)]

    if all(np.ndim(p) == 1 for p in params):
        return fused_step(params, grads, state, static)
    slots = {k: flat(v) for k, v in state.slots.items()}
    new_p, new = fused_step(flat(params), flat(grads), state._replace(slots=slots), static)
    return shaped(new_p, params), new._replace(slots={k: shaped(v, state.slots[k]) for k, v in new.slots.items()})
