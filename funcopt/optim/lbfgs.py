"""``fo.optim.LBFGS``: torch.optim.LBFGS's object API over :func:`funcopt.lbfgs`.

One ``step(closure)`` is one call of the functional update, which makes all the
inner iterations and line searches in one jitted call. That update needs the loss
as a pure function of the parameters; the class finds it in the closure's
``opt.backward(loss_fn, *args)`` call (see :class:`LBFGS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import funcopt.optimizers as F
from funcopt._src.base import apply_updates
from funcopt._src.hparams import OptimizerState
from funcopt.optim import _params, _state_dict, guard
from funcopt.optim._util import CompileCache, join_args, plain, split_args
from funcopt.optim.interop import to_numpy
from funcopt.optim.optimizer import IncompatibleKeys, Optimizer

_CACHE_SIZE = 8
_GROUPS_ERROR = "LBFGS doesn't support per-parameter options (parameter groups)"
# torch's entries of the global state, kept under the first parameter
_VECTORS = ("d", "prev_flat_grad")
_SCALARS = ("t", "H_diag", "prev_loss")
_HISTORY = ("old_dirs", "old_stps", "ro")
_COUNTERS = ("func_evals", "n_iter")


class _Call:
    """One ``backward`` call made by a closure: what it differentiated and what it returned."""

    __slots__ = ("loss_fn", "has_aux", "args", "kwargs", "grads_were_clear", "loss", "grads")

    def __init__(self, loss_fn, has_aux, args, kwargs, grads_were_clear):
        self.loss_fn, self.has_aux, self.args, self.kwargs = loss_fn, has_aux, args, kwargs
        self.grads_were_clear = grads_were_clear
        self.loss: Any = None
        self.grads: Any = None


class LBFGS(Optimizer):
    r"""torch.optim.LBFGS over :func:`funcopt.lbfgs` (one group; global state under the first parameter).

    Each :meth:`step` runs up to ``max_iter`` L-BFGS iterations from the current
    parameters :math:`x`: direction :math:`d_k = -H_k g_k` by the two-loop
    recursion over the last ``history_size`` pairs
    :math:`(s_i, y_i) = (t_i d_i,\ g_{i+1} - g_i)`, then
    :math:`x \leftarrow x + t_k d_k` with a fixed :math:`t_k` (``lr``) or one
    found by a strong-Wolfe line search; the full rule and stopping tests are
    in :func:`funcopt.lbfgs`.

    **The closure.** As in torch, ``step(closure)`` takes a closure that clears
    the gradients, computes the loss and its gradients, and returns the loss;
    ``step`` returns the closure's first loss (torch's ``orig_loss``). Here the
    closure computes the gradients with :meth:`backward`::

        def closure():
            opt.zero_grad()
            return opt.backward(loss_fn, x, y)

    ``step`` calls the closure once, at the current parameters. When, during
    that call, the closure cleared the gradients (``zero_grad`` /
    ``clear_grad``), then made exactly one ``opt.backward(loss_fn, *args,
    **kwargs)`` call, left its gradients as they were, and returned that call's
    loss (the same array, or an equal number), then the loss is the pure
    function ``params -> loss_fn(params, *args, **kwargs)`` (first output with
    ``has_aux=True``), and every further evaluation (inner iterations, line
    search) happens inside ONE jitted call of the functional update, which
    differentiates it itself. That call is compiled once per ``loss_fn`` and
    non-array arguments (as :meth:`backward` is): define ``loss_fn`` once,
    outside the closure, and pass the data as array arguments. The closure's
    other side effects (logging, counters) then happen once per step, and
    afterwards :attr:`grad` holds the gradients at the step's starting point
    (torch's hold those of its last evaluation).

    Any other closure (several ``backward`` calls, gradients accumulated over
    steps or changed after ``backward``, a returned value that is not the
    differentiated loss) runs the same compiled algorithm, but each evaluation
    calls the closure from inside the jitted update through a host callback,
    at the point torch would, and reads :attr:`grad` afterwards, exactly as
    torch calls its closure and reads ``p.grad``: the same closure calls and
    side effects as torch, much slower. An exception raised by the closure
    leaves the parameters and the state as they were before the step and
    propagates.

    ``state_dict()`` is torch's: ``{'state': {0: {'func_evals', 'n_iter', 'd',
    't', 'old_dirs', 'old_stps', 'ro', 'H_diag', 'prev_flat_grad',
    'prev_loss', 'al'}}, 'param_groups': [...]}`` with NumPy arrays, Python
    ints for the counters and lists (oldest first) for the history:
    ``old_dirs`` / ``old_stps`` / ``ro`` have one entry per stored pair and
    ``al`` has ``history_size`` entries, ``None`` past the stored pairs. Before
    the first iteration only the counters exist, and ``al`` only from the
    second iteration on, as in torch. :meth:`load_state_dict` accepts that
    format, with torch tensors or arrays (a torch ``LBFGS`` state_dict as it
    is). For torch to load ours, convert it with
    :func:`funcopt.optim.to_torch` (list entries one by one, ``None`` stays
    ``None``).

    Args:
        params: a pytree of arrays (one group; a list of several group dicts
            raises ``ValueError``, as torch does).
        lr: learning rate (the first step tried by the line search).
        max_iter: most iterations per :meth:`step`.
        max_eval: most loss evaluations per :meth:`step` (default
            ``max_iter * 5 // 4``, stored in ``param_groups`` as torch does).
        tolerance_grad: stop when :math:`\max|g| \le` ``tolerance_grad``.
        tolerance_change: stop when the loss or the parameters change less.
        history_size: number of curvature pairs kept.
        line_search_fn: ``None`` or ``'strong_wolfe'`` (anything else raises
            ``RuntimeError("only 'strong_wolfe' is supported")``).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> def loss_fn(p, a):
        ...     return (a - p['x']) ** 2 + 100 * (p['y'] - p['x'] ** 2) ** 2
        >>> opt = fo.optim.LBFGS({'x': jnp.array(-1.0), 'y': jnp.array(2.0)}, line_search_fn='strong_wolfe')
        >>> def closure():
        ...     opt.zero_grad()
        ...     return opt.backward(loss_fn, jnp.array(1.0))
        >>> for _ in range(5):
        ...     loss = opt.step(closure)
        >>> round(float(opt.params['x']), 4), round(float(opt.params['y']), 4)
        (1.0, 1.0)
        >>> sorted(opt.state_dict()['state'][0])[:4]
        ['H_diag', 'al', 'd', 'func_evals']
    """

    factory = staticmethod(F.lbfgs)
    elementwise = False  # torch's flat vector is the parameters concatenated in order
    state_has_step = False

    def __init__(self, params: Any, lr: Any = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: Any = 1e-7, tolerance_change: Any = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None, *, wrt: Any = None) -> None:
        if max_eval is None and isinstance(max_iter, int) and not isinstance(max_iter, bool):
            max_eval = max_iter * 5 // 4  # torch stores the resolved value in its groups
        self._update_cache = CompileCache(_CACHE_SIZE)
        self._callback_fn: Callable[..., Any] | None = None
        self._compiled_token: Any = None
        self._recording: list[_Call] | None = None
        self._zeroed: Any = None  # the gradient list zero_grad(set_to_none=False) made
        self._cleared_in_closure = False
        self._closure: Callable[[], Any] | None = None
        self._closure_error: BaseException | None = None
        self._x64 = False
        super().__init__(params, lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, history_size=history_size,
                         line_search_fn=line_search_fn, wrt=wrt)

    def add_param_group(self, param_group: dict[str, Any], *, _one_tree: Any = None) -> None:
        """Raises ``ValueError`` once a group exists: L-BFGS keeps one global state over one group.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.LBFGS({'w': jnp.ones(2)})
            >>> opt.add_param_group({'params': {'b': jnp.ones(1)}})
            Traceback (most recent call last):
            ...
            ValueError: LBFGS doesn't support per-parameter options (parameter groups)
        """
        if getattr(self, "_groups", None):
            if isinstance(param_group, Mapping) and "params" in param_group:
                # torch's base class checks the new group before LBFGS refuses a second one
                group, _ = _params.named_group(param_group, self._group_naming)
                ids = {id(x) for x in jax.tree.leaves(group["params"])}
                if any(ref() is not None and id(ref()) in ids for ref in self._given_ids):
                    raise ValueError("some parameters appear in more than one parameter group")
            raise ValueError(_GROUPS_ERROR)
        super().add_param_group(param_group, _one_tree=_one_tree)

    # ------------------------------------------------------------------ gradients

    def backward(self, loss_fn: Callable[..., Any], *args: Any, has_aux: bool = False, **kwargs: Any) -> Any:
        """:meth:`Optimizer.backward`; inside ``step``'s first closure call it also notes the loss function.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.LBFGS({'w': jnp.array([1.0, 2.0])})
            >>> opt.backward(lambda p: jnp.sum(p['w'] ** 2))
            Array(5., dtype=float32)
            >>> opt.grad['w']
            Array([2., 4.], dtype=float32)
        """
        record = self._recording
        if record is None:
            return super().backward(loss_fn, *args, has_aux=has_aux, **kwargs)
        before = self._groups[0].grads
        cleared = self._cleared_in_closure and (before is None or before is self._zeroed)
        call = _Call(loss_fn, has_aux, args, kwargs, cleared)
        record.append(call)
        out = super().backward(loss_fn, *args, has_aux=has_aux, **kwargs)
        call.loss = out[0] if has_aux else out
        call.grads = self._groups[0].grads
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        """:meth:`Optimizer.zero_grad`.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.LBFGS({'w': jnp.ones(2)})
            >>> opt.zero_grad(set_to_none=False)
            >>> opt.grad['w']
            Array([0., 0.], dtype=float32)
        """
        super().zero_grad(set_to_none)
        self._zeroed = self._groups[0].grads
        self._cleared_in_closure = True

    def clear_grad(self) -> LBFGS:
        """:meth:`Optimizer.clear_grad`.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.LBFGS({'w': jnp.ones(2)})
            >>> opt.clear_grad().grad is None
            True
        """
        super().clear_grad()
        self._cleared_in_closure = True
        return self

    # ------------------------------------------------------------------ stepping

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One L-BFGS step (up to ``max_iter`` iterations); returns the closure's first loss.

        See the class docstring for what the closure must do and how often it
        is called.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.LBFGS({'w': jnp.array([3.0, -1.0])}, max_iter=5)
            >>> def loss_fn(p):
            ...     return jnp.sum((p['w'] - 1.0) ** 2)
            >>> def closure():
            ...     opt.zero_grad()
            ...     return opt.backward(loss_fn)
            >>> opt.step(closure)
            Array(8., dtype=float32)
            >>> opt.params['w']
            Array([1., 1.], dtype=float32)
        """
        guard.check_host_call(self, "step")
        args, kwargs = self._call_step_pre_hooks((closure,) if closure is not None else (), {})
        closure = args[0] if args else kwargs.get("closure")
        if closure is None:
            raise TypeError("LBFGS.step() needs a closure that clears the gradients, computes the loss with "
                            "opt.backward(loss_fn, ...) and returns it")
        self._recording = calls = []
        self._cleared_in_closure = False
        try:
            orig_loss = closure()
        finally:
            self._recording = None
        group = self._groups[0]
        if group.grads is None:
            raise RuntimeError("LBFGS.step(): the closure left no gradients; it must compute them with "
                               "opt.backward(loss_fn, ...)")
        self._sync_hparams()
        value = self._pure_loss_value(calls, orig_loss)
        if value is not None:
            self._step_pure(calls[0], value)
        else:
            self._step_with_callback(closure, orig_loss)
        self._call_step_post_hooks(args, kwargs)
        return orig_loss

    def _pure_loss_value(self, calls: list[_Call], orig_loss: Any) -> Any:
        """The first loss, when the closure's one backward() call describes its loss purely; else None."""
        if len(calls) != 1:
            return None
        call = calls[0]
        if not call.grads_were_clear or self._groups[0].grads is not call.grads:
            return None
        if orig_loss is call.loss:
            return call.loss
        if float(orig_loss) == float(call.loss):
            return call.loss
        return None

    def _step_pure(self, call: _Call, value: Any) -> None:
        dynamic, static, args_def = split_args(call.args, call.kwargs)
        key = (call.loss_fn, call.has_aux, args_def, static)
        rest = None
        if self._model is not None:  # the model's carried state as the closure's backward left it
            key += (self._model.static_key(),)
            rest = self._model.rest()
        fn = self._update_cache.get(key, lambda: self._make_pure_update(call.loss_fn, call.has_aux, args_def, static))
        group = self._groups[0]
        group.params, group.state = fn(group.params, group.grads, group.state, dynamic, value, rest)
        self._params_cache = None
        self._model_stepped()

    def _make_pure_update(self, loss_fn: Callable[..., Any], has_aux: bool, args_def: Any,
                          static: tuple[Any, ...]) -> Callable[..., Any]:
        tx = self._groups[0].tx

        def run(params, grads, state, dynamic, value, rest):
            def value_fn(storage):
                args, kwargs = join_args(args_def, dynamic, static)
                if self._model is not None:
                    model = self._model.rebuild(self._by_position([storage]), rest)
                else:
                    model = self._tree_of([storage])
                out = loss_fn(model, *args, **kwargs)
                return out[0] if has_aux else out

            updates, state = tx.update(grads, state, params, value=value, value_fn=value_fn)
            return apply_updates(params, updates), state

        return jax.jit(run, donate_argnums=(0, 2))

    def _step_with_callback(self, closure: Callable[[], Any], orig_loss: Any) -> None:
        group = self._groups[0]
        if self._callback_fn is None:
            self._callback_fn = self._make_callback_update()
        start = group.params
        self._closure, self._closure_error = closure, None
        self._x64 = bool(jax.config.jax_enable_x64)
        # the closure may donate the gradient buffers (backward() accumulating into them) while the
        # update runs: the update reads a copy, or the donation would wait for the update to finish
        grads = [jnp.array(g, copy=True) for g in group.grads]
        try:
            params, state = self._callback_fn(start, grads, group.state, float(orig_loss))
            jax.block_until_ready((params, state))
        finally:
            self._closure = None
        error, self._closure_error = self._closure_error, None
        if error is not None:
            group.params = start
            self._params_cache = None
            raise error
        group.params, group.state = params, state
        self._params_cache = None
        self._model_stepped()

    def _make_callback_update(self) -> Callable[..., Any]:
        """The functional update whose loss evaluations call the closure on the host (torch's way)."""
        group = self._groups[0]
        tx = group.tx
        specs = [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in group.params]
        loss_spec = jax.ShapeDtypeStruct((), jnp.promote_types(jnp.result_type(*specs), jnp.float32))
        out_specs = (_wire_spec(loss_spec), [_wire_spec(s) for s in specs])

        def evaluate_on_host(wired):
            if self._closure_error is None:
                try:
                    storage = [_host_from_wire(x, s) for x, s in zip(wired, specs)]
                    with jax.enable_x64(self._x64):
                        group.params = [jnp.asarray(x, dtype=s.dtype) for x, s in zip(storage, specs)]
                        self._params_cache = None
                        loss = float(self._closure())
                        grads = group.grads
                        if grads is None:  # torch reads a missing gradient as zeros
                            grads = [np.zeros(s.shape, s.dtype) for s in specs]
                        grads = [np.asarray(gr) for gr in grads]
                    return _to_wire(loss, loss_spec), [_to_wire(gr, s) for gr, s in zip(grads, specs)]
                except BaseException as e:  # noqa: BLE001 -- re-raised by step() after the update returns
                    self._closure_error = e
            return _to_wire(np.nan, loss_spec), [_to_wire(np.nan, s) for s in specs]

        def evaluate(storage):
            wired = [_device_to_wire(x) for x in storage]
            loss, grads = jax.pure_callback(evaluate_on_host, out_specs, wired)
            return _from_wire(loss, loss_spec), [_from_wire(gr, s) for gr, s in zip(grads, specs)]

        @jax.custom_vjp
        def closure_loss(storage):
            return evaluate(storage)[0]

        def backward(grads, cotangent):
            return ([(cotangent * g).astype(g.dtype) for g in grads],)

        closure_loss.defvjp(evaluate, backward)

        def run(params, grads, state, value):
            updates, state = tx.update(grads, state, params, value=value, value_fn=closure_loss)
            return apply_updates(params, updates), state

        return jax.jit(run)

    def __call__(self, grads: Any) -> LBFGS:
        """Apply given gradients: only for ``max_iter=1`` without a line search (no re-evaluation needed).

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.LBFGS({'w': jnp.array([2.0])}, lr=0.5, max_iter=1)
            >>> opt({'w': jnp.array([1.0])}).params['w']
            Array([1.5], dtype=float32)
        """
        pg = self.param_groups[0]
        if pg["line_search_fn"] is not None or pg["max_iter"] > 1:
            raise RuntimeError("LBFGS re-evaluates the loss within a step: use opt.step(closure) (applying "
                               "given gradients works only with max_iter=1 and no line search)")
        g = self._groups[0]
        leaves = self._leaves_of(grads, "grads")[0]
        if any(x is None for x in leaves):  # torch's L-BFGS reads a missing gradient as zeros
            grads = g.treedef.unflatten([np.zeros(shape, dtype) if x is None else x
                                         for x, shape, dtype in zip(leaves, g.layout.shapes, g.layout.dtypes)])
        super().__call__(grads)
        return self

    # ------------------------------------------------------------------ group state

    def _build_group(self, group: Any, hp: Mapping[str, Any], old_state: Any = None, tx: Any = None) -> None:
        # a rebuild for a new max_iter / history_size... keeps the state, through torch's format
        super()._build_group(group, hp, tx=tx)
        if old_state is not None:
            entry = _torch_entry(old_state)
            slots = _slots_from_torch(entry, group.state.slots, keep_newest=True)
            group.state = group.state._replace(step=old_state.step, slots=_as_slots(slots, group.state.slots))

    def _invalidate(self) -> None:
        super()._invalidate()
        if not getattr(self, "_groups", None):
            return
        # a group rebuilt with the same static options and schedules (load_state_dict) computes the
        # same update: keep the compiled ones
        g = self._groups[0]
        schedules = tuple((k, g.hp_values[k]) for k in sorted(g.hp_values) if callable(g.hp_values[k]))
        token = (g.static_key, schedules)
        if token != self._compiled_token:
            self._update_cache.clear()
            self._callback_fn = None
            self._compiled_token = token

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        """torch's global L-BFGS state (see :meth:`state_dict`) under the first parameter's name; a copy.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> fo.optim.LBFGS({'b': jnp.ones(1), 'w': jnp.ones(2)}).state
            {'b': {'func_evals': 0, 'n_iter': 0}}
        """
        g = self._groups[0]
        return {g.names[0]: _torch_entry(g.state)}

    def state_dict(self) -> dict[str, Any]:
        """The state in torch.optim.LBFGS's format, with NumPy arrays; the state sits under parameter 0.

        Example:
            >>> import jax.numpy as jnp
            >>> import funcopt as fo
            >>> opt = fo.optim.LBFGS({'b': jnp.zeros(2), 'w': jnp.ones(3)})
            >>> sd = opt.state_dict()
            >>> sd['state']
            {0: {'func_evals': 0, 'n_iter': 0}}
            >>> sd['param_groups'][0]['max_eval'], sd['param_groups'][0]['params']
            (25, [0, 1])
        """
        return self._state_dict_with_hooks(self._build_state_dict)

    def _build_state_dict(self) -> dict[str, Any]:
        self._sync_hparams()
        g, pg = self._groups[0], self.param_groups[0]
        saved = {k: plain(v) for k, v in pg.items() if k not in ("params", "param_names")}
        saved["params"] = list(range(len(g.names)))
        saved["param_names"] = list(g.names)
        return {"state": {0: _torch_entry(g.state)}, "param_groups": [saved]}

    def _plan_load(self, state_dict: Mapping[str, Any], by_name: bool,
                   strict: bool) -> tuple[list[Any], IncompatibleKeys]:
        """As the base class; the state is one history over all parameters, so it loads whole or not at all.

        With ``strict=False``, a saved set of parameter names that differs from this
        optimizer's loads the hyperparameters and starts the whole L-BFGS state fresh.
        """
        saved_groups, saved_state = _state_dict.validate(state_dict)
        if len(saved_groups) != 1:
            raise ValueError("loaded state dict has a different number of parameter groups")
        sg, g = saved_groups[0], self._groups[0]
        keys = IncompatibleKeys([], [], [])
        if not strict:
            keys = _state_dict.incompatible(g.names, _state_dict.saved_names(saved_groups,
                                                                              "load_state_dict(strict=False)"))
            by_name = True
        fresh = bool(keys.missing_keys or keys.unexpected_keys)
        if not fresh and len(sg["params"]) != len(g.names):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        order = None
        if fresh:
            pass
        elif by_name:
            names = sg.get("param_names")
            if names is None or len(names) != len(sg["params"]):
                raise ValueError("loading by name needs 'param_names' in every saved param group")
            missing = [n for n in g.names if n not in names]
            if missing:
                raise KeyError(f"state_dict has no state for parameters {missing}")
            order = [list(names).index(n) for n in g.names]
        else:
            _params.check_names_match([g.names], saved_groups)
        hp = _state_dict.saved_hparams(sg)
        trial = {k: v for k, v in self.param_groups[0].items() if k not in ("params", "param_names")}
        trial.update(hp)
        template = jax.eval_shape(self._check_hparams(trial).init, g.params)
        if fresh:  # the state _build_group makes
            return [(g, hp, lambda state: state)], keys
        first = sg["params"][0]
        entry = saved_state.get(first, saved_state.get(str(first), {}))
        if not isinstance(entry, Mapping):
            raise TypeError(f"saved state for parameter {g.names[0]!r} must be a dict")
        if order is not None and order != list(range(len(order))):
            entry = _reorder(entry, [g.layout.shapes[i] for i in np.argsort(order)], order)
        slots = _slots_from_torch(entry, template.slots)

        def setter(state: OptimizerState) -> OptimizerState:
            return state._replace(step=jnp.zeros_like(state.step), slots=_as_slots(slots, state.slots))

        return [(g, hp, setter)], keys


# ---------------------------------------------------------------------- host callback values

# A callback's operands and outputs are converted under the callback thread's x64 setting, and
# jax.enable_x64 is per thread: 64-bit values cross as pairs of uint32, bit-cast on either side.


def _wire_spec(spec: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    if jnp.dtype(spec.dtype).itemsize == 8:
        return jax.ShapeDtypeStruct((*spec.shape, 2), np.uint32)
    return spec


def _to_wire(value: Any, spec: jax.ShapeDtypeStruct) -> np.ndarray:
    arr = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=spec.dtype), spec.shape))
    if arr.dtype.itemsize == 8:
        return arr.reshape(-1).view(np.uint32).reshape((*spec.shape, 2))
    return arr


def _device_to_wire(x: jax.Array) -> jax.Array:
    if jnp.dtype(x.dtype).itemsize == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return x


def _host_from_wire(x: Any, spec: jax.ShapeDtypeStruct) -> np.ndarray:
    arr = np.asarray(x)
    if jnp.dtype(spec.dtype).itemsize == 8:
        return np.ascontiguousarray(arr, np.uint32).reshape(-1).view(spec.dtype).reshape(spec.shape)
    return arr


def _from_wire(value: jax.Array, spec: jax.ShapeDtypeStruct) -> jax.Array:
    if jnp.dtype(spec.dtype).itemsize == 8:
        return jax.lax.bitcast_convert_type(value, spec.dtype)
    return value


# ---------------------------------------------------------------------- torch's format


def _torch_entry(state: OptimizerState) -> dict[str, Any]:
    """Our circular history as torch's global state dict (NumPy arrays, lists oldest first)."""
    s = jax.device_get(state.slots)
    n_iter = int(s["n_iter"])
    entry: dict[str, Any] = {"func_evals": int(s["func_evals"]), "n_iter": n_iter}
    if n_iter == 0:
        return entry
    size = s["old_dirs"].shape[0]
    start, num_old = int(s["history_start"]), int(s["num_old"])
    rows = [(start + i) % size for i in range(num_old)]
    entry.update(
        d=np.array(s["d"]),
        t=np.array(s["t"]),
        old_dirs=[np.array(s["old_dirs"][r]) for r in rows],
        old_stps=[np.array(s["old_stps"][r]) for r in rows],
        ro=[np.array(s["ro"][r]) for r in rows],
        H_diag=np.array(s["H_diag"]),
        prev_flat_grad=np.array(s["prev_flat_grad"]),
        prev_loss=np.array(s["prev_loss"]),
    )
    if n_iter >= 2:  # torch creates 'al' at its first quasi-Newton iteration
        entry["al"] = [np.array(s["al"][r]) for r in rows] + [None] * (size - num_old)
    return entry


def _count(entry: Mapping[str, Any], key: str) -> int:
    if key not in entry:
        return 0
    arr = to_numpy(entry[key])
    if arr.size != 1 or not np.isfinite(arr).all() or float(arr.reshape(())) < 0 \
            or float(arr.reshape(())) != int(arr.reshape(())):
        raise ValueError(f"saved LBFGS state {key!r} must be a non-negative integer, got {entry[key]!r}")
    return int(arr.reshape(()))


def _real(value: Any, key: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = to_numpy(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ValueError(f"saved LBFGS state {key!r} must be real numbers, got dtype {arr.dtype}")
    if shape and not np.issubdtype(arr.dtype, np.floating) and arr.dtype != jnp.bfloat16:
        # vectors hold float state, as every optimizer's state does (torch's scalars such as H_diag=1 may be ints)
        raise ValueError(f"loaded state {key!r} has dtype {arr.dtype}, which cannot hold the optimizer's "
                         "floating point state")
    if arr.size == int(np.prod(shape)) and (arr.ndim <= 1 or arr.shape == shape):
        return arr.reshape(shape)
    raise ValueError(f"saved LBFGS state {key!r} has shape {tuple(arr.shape)}, expected {shape}")


def _rows(value: Any, key: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    arr = to_numpy(value)
    if arr.ndim >= 1:  # rows of a stacked array
        return list(arr)
    raise ValueError(f"saved LBFGS state {key!r} must be a list, got {type(value).__name__}")


def _slots_from_torch(entry: Mapping[str, Any], template: Mapping[str, Any],
                      keep_newest: bool = False) -> dict[str, np.ndarray]:
    """Validate torch's global state against our slots' shapes; NumPy values for the slots it sets."""
    size, n = template["old_dirs"].shape
    out: dict[str, np.ndarray] = {k: np.asarray(_count(entry, k), np.int32) for k in _COUNTERS}
    required = _VECTORS + _SCALARS + _HISTORY
    present = [k for k in required if k in entry]
    if not present:
        return out
    if len(present) != len(required):
        missing = [k for k in required if k not in entry]
        raise ValueError(f"saved LBFGS state has {present} but not {missing}: it needs all or none of them")
    for k in _VECTORS:
        out[k] = _real(entry[k], k, (n,))
    for k in _SCALARS:
        out[k] = _real(entry[k], k, ())
    lists = {k: _rows(entry[k], k) for k in _HISTORY}
    num_old = len(lists["old_dirs"])
    if any(len(v) != num_old for v in lists.values()):
        raise ValueError("saved LBFGS state: old_dirs, old_stps and ro must have the same length, got "
                         f"{[len(v) for v in lists.values()]}")
    al = None
    if entry.get("al") is not None:
        al = _rows(entry["al"], "al")
        if len(al) < num_old:
            raise ValueError(f"saved LBFGS state 'al' has {len(al)} entries for {num_old} stored pairs")
        al = al[:num_old]
    if num_old > size:
        if not keep_newest:
            raise ValueError(f"saved LBFGS state holds {num_old} curvature pairs, more than "
                             f"history_size={size}")
        lists = {k: v[num_old - size:] for k, v in lists.items()}
        al = None if al is None else al[num_old - size:]
        num_old = size
    for k, shape in (("old_dirs", (n,)), ("old_stps", (n,)), ("ro", ())):
        rows = np.zeros(template[k].shape, template[k].dtype)
        for i, v in enumerate(lists[k]):
            rows[i] = _real(v, f"{k}[{i}]", shape)
        out[k] = rows
    rows = np.zeros(template["al"].shape, template["al"].dtype)
    for i, v in enumerate(al or []):
        if v is not None:
            rows[i] = _real(v, f"al[{i}]", ())
    out["al"] = rows
    out["num_old"] = np.asarray(num_old, np.int32)
    out["history_start"] = np.asarray(0, np.int32)
    return out


def _as_slots(values: Mapping[str, np.ndarray], like: Mapping[str, Any]) -> dict[str, Any]:
    slots = dict(like)
    for k, v in values.items():
        slots[k] = jnp.asarray(np.asarray(v).astype(like[k].dtype))
    return slots


def _reorder(entry: Mapping[str, Any], saved_shapes: list[tuple[int, ...]],
             order: list[int]) -> dict[str, Any]:
    """torch's flat vectors, saved in another parameter order, in ours (``order[i]``: saved index of ours)."""
    sizes = [int(np.prod(s)) for s in saved_shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    index = np.concatenate([np.arange(offsets[j], offsets[j + 1]) for j in order]).astype(int)
    n = int(offsets[-1])

    def permute(v):
        arr = to_numpy(v).reshape(-1)
        if arr.size != n:
            raise ValueError(f"saved LBFGS state vector has size {arr.size}, expected {n}")
        return arr[index]

    out = dict(entry)
    for k in _VECTORS:
        if k in out:
            out[k] = permute(out[k])
    for k in ("old_dirs", "old_stps"):
        if k in out:
            out[k] = [permute(v) for v in _rows(out[k], k)]
    return out
