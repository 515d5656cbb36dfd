"""Checks that keep a stateful optimizer's host-side state whole.

A stateful optimizer holds its parameters, gradients and state as concrete arrays
on the host side. Called while JAX traces a function (``jax.jit``, ``vmap``,
``grad``, ``lax.scan``, ``eval_shape``...) it would store tracers in place of
those arrays: the traced call returns normally and every later use of the
optimizer fails with ``UnexpectedTracerError``. :func:`check_host_call` refuses
such a call before anything changes. :func:`check_new_names` refuses a
parameter name that would be held twice (the state_dict and ``by_name`` loading
find parameters by name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax

_EVAL_TRACE_TYPE: type | None = None


def _top_trace() -> Any:
    from jax.extend.core import find_top_trace  # public extension API: the trace that ops run on now

    return find_top_trace(())


def in_transformation() -> bool:
    """Whether JAX is tracing a function right now (inside jit, vmap, grad, scan, eval_shape...).

    ``jax.ensure_compile_time_eval()`` and host callbacks run eagerly and count as not traced.

    Example:
        >>> import jax
        >>> from funcopt.optim.guard import in_transformation
        >>> in_transformation()
        False
        >>> jax.jit(lambda: print(in_transformation()))()
        True
    """
    global _EVAL_TRACE_TYPE
    try:
        if _EVAL_TRACE_TYPE is None:
            with jax.ensure_compile_time_eval():  # eager evaluation, whatever the caller's context
                _EVAL_TRACE_TYPE = type(_top_trace())
        return not isinstance(_top_trace(), _EVAL_TRACE_TYPE)
    except (ImportError, AttributeError):  # a JAX without that API: staging traces make tracers of any op
        return isinstance(jax.numpy.zeros(()), jax.core.Tracer)


def _has_tracer(values: Iterable[Any]) -> bool:
    tracer = jax.core.Tracer  # a tracer is a pytree leaf: a plain (C++) flatten finds it
    try:
        leaves = jax.tree.leaves(values)
    except Exception:  # noqa: BLE001 - not a pytree (e.g. mixed dict keys): the caller's checks report it
        return False
    return any(isinstance(x, tracer) for x in leaves)


def functional_hint(obj: Any) -> str:
    """What to use inside a traced function instead of ``obj``, for error messages.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> from funcopt.optim.guard import functional_hint
        >>> functional_hint(fo.optim.Adam({'w': jnp.ones(2)}))
        'tx = fo.adam(...); state = tx.init(params); ...'
    """
    import funcopt

    attrs = set(dir(type(obj))) | set(getattr(obj, "__dict__", ()))  # no property is run: it may read arrays
    if "optimizer" in attrs and not {"param_groups", "parameters"} & attrs:
        return ("a schedule from funcopt.schedules (a jittable function step -> lr) given as the functional "
                "optimizer's lr: tx = fo.adam(lr=schedule); state = tx.init(params); ...")
    factory = getattr(type(obj), "factory", None)
    name = getattr(getattr(factory, "__func__", factory), "__name__", "")
    for candidate in (name, type(obj).__name__.lower()):
        if candidate and not candidate.startswith("_") and callable(getattr(funcopt, candidate, None)):
            return f"tx = fo.{candidate}(...); state = tx.init(params); ..."
    return "the functional optimizer, e.g. tx = fo.adam(...); state = tx.init(params); ..."


def check_host_call(obj: Any, method: str, *args: Any, hint: str | None = None) -> None:
    """Raise ``RuntimeError`` when ``obj.method(*args)`` is called under a JAX transformation.

    Under a transformation means: while JAX traces a function, or with a tracer
    among ``args`` (a leaked tracer included). Nothing has changed when it raises.
    ``obj`` may be a string, the namespace of a function (``'fo.optim'``);
    ``hint`` replaces the functional counterpart the message suggests.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD({'w': jnp.ones(2)}, lr=0.1)
        >>> jax.jit(lambda: opt.step())()
        Traceback (most recent call last):
        ...
        RuntimeError: SGD.step() was called under a JAX transformation ...
    """
    if not in_transformation() and not _has_tracer(args):
        return
    owner = obj if isinstance(obj, str) else obj.__name__ if isinstance(obj, type) else type(obj).__name__
    call = method if method.endswith((")", "...")) else method + "()"
    raise RuntimeError(
        f"{owner}.{call} was called under a JAX transformation (jax.jit, vmap, grad, lax.scan...) or "
        "with traced arguments. A stateful optimizer (and a scheduler that drives one) keeps its state as "
        "concrete values outside the traced function, so it cannot run inside one. Call it outside the transformation, "
        f"or use the functional API inside your jitted function: {hint or functional_hint(obj)} "
        "updates, state = tx.update(grads, state, params); params = fo.apply_updates(params, updates). "
        "Nothing was changed.")


def check_new_names(existing: Iterable[str], names: Sequence[str], param_group: Mapping[str, Any] | None = None,
                    leaves_with_path: Sequence[tuple[Any, Any]] | None = None) -> None:
    """Raise ``ValueError`` when a parameter name in ``names`` repeats or is one of ``existing``.

    ``names`` are the names of a new group's leaves, made from their key paths in
    ``leaves_with_path`` unless the group gives its own ``'param_names'``. A
    name made only of list positions (``'0'``, ``'1.2'``) numbers an unnamed
    parameter, as torch numbers the tensors of a group, and may repeat across
    groups; any other name identifies its parameter.

    Example:
        >>> from funcopt.optim.guard import check_new_names
        >>> check_new_names(['fc.weight'], ['fc.bias'])
        >>> check_new_names(['w'], ['w'])
        Traceback (most recent call last):
        ...
        ValueError: duplicate parameter name 'w': ...
    """
    paths = None
    if leaves_with_path is not None and not (param_group or {}).get("param_names"):
        paths = [p for p, _ in leaves_with_path]
    seen = set(existing)
    own: set[str] = set()
    for i, name in enumerate(names):
        positional = paths is not None and all(isinstance(k, jax.tree_util.SequenceKey) for k in paths[i])
        if not positional and (name in seen or name in own):
            raise ValueError(f"duplicate parameter name {name!r}: every parameter of an optimizer needs its own "
                             "name (state_dict() and load_state_dict(by_name=True) find parameters by name); "
                             "give the groups distinct names, e.g. nest them: {'params': {'head': {...}}}, or "
                             "pass distinct 'param_names'")
        own.add(name)
