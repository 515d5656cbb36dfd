"""Scalar work done once per step, however many leaves a per-leaf rule runs on.

A per-leaf rule recomputes its step-dependent scalars for every leaf (``1 - beta1**t``, ``lr / (1 -
beta1**t)``, the hyperparameters cast to the leaf's dtype...). On thousands of leaves that is thousands of
identical scalar equations, which XLA has to compile and merge again (and which cost as much compile time
as the leaves' own arithmetic). :func:`split_scalar_work` cuts a rule traced for one leaf into its scalar
work and its array work, so the scalar work is evaluated once per step and the array work once per leaf
(how the per-leaf optimizers run, :class:`funcopt._src.hparams.LeafPrograms`); :func:`once_per_step`
instead traces a whole loop and keeps the first of each set of identical scalar equations. Either way
the program that reaches XLA does the scalar work once, whatever the rule, so no optimizer has to split
its formula in two to get there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, DebugInfo, DropVar, Jaxpr, Literal, jaxpr_as_fun


def _atom_key(v: Any) -> Any:
    if isinstance(v, Literal):
        val = np.asarray(v.val)
        return ("literal", val.dtype.str, val.shape, val.tobytes(), str(v.aval))
    return v  # a variable: by identity (merged variables were replaced by their first copy)


def _equation_key(eqn: Any) -> Any:
    """A hashable key of a scalar, effect-free equation; None for any equation not to merge."""
    if eqn.effects or not eqn.outvars:
        return None
    if any(isinstance(v, DropVar) or getattr(v.aval, "shape", None) != () for v in eqn.outvars):
        return None
    try:
        key = (eqn.primitive, tuple(_atom_key(v) for v in eqn.invars), tuple(sorted(eqn.params.items())))
        hash(key)
    except TypeError:  # unhashable parameters (sub-programs, arrays): leave the equation as it is
        return None
    return key


def merge_scalar_equations(jaxpr: Jaxpr) -> Jaxpr:
    """``jaxpr`` with each repeated scalar equation (same primitive, inputs and parameters) computed once.

    Only equations whose outputs are all 0-d and that have no effects are merged, so the result
    computes the same values; array equations are kept as they are.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from funcopt._src.scalar_work import merge_scalar_equations
        >>> f = lambda s, x, y: ((1 - s) * x, (1 - s) * y)
        >>> closed = jax.make_jaxpr(f)(jnp.float32(0.5), jnp.ones(2), jnp.ones(3))
        >>> len(closed.jaxpr.eqns), len(merge_scalar_equations(closed.jaxpr).eqns)
        (4, 3)
    """
    subst: dict[Any, Any] = {}
    seen: dict[Any, list[Any]] = {}
    eqns = []
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in subst for v in eqn.invars):
            eqn = eqn.replace(invars=[v if isinstance(v, Literal) else subst.get(v, v) for v in eqn.invars])
        key = _equation_key(eqn)
        if key is not None:
            first = seen.get(key)
            if first is not None:
                subst.update(zip(eqn.outvars, first))
                continue
            seen[key] = list(eqn.outvars)
        eqns.append(eqn)
    outvars = [v if isinstance(v, Literal) else subst.get(v, v) for v in jaxpr.outvars]
    return jaxpr.replace(eqns=eqns, outvars=outvars)


def once_per_step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its repeated scalar work done once: traced, merged (:func:`merge_scalar_equations`), evaluated.

    ``fn`` takes pytrees of arrays and Python values and returns pytrees of arrays. Only values
    already traced are traced again; the others stay constants, as they would without this wrapper.
    ``fn`` must be traceable (no Python branch on array values), as under ``jax.jit``. The result
    is the same values, computed by a program in which the scalar equations that ``fn`` repeats
    (per leaf, say) appear once.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from funcopt._src.scalar_work import once_per_step
        >>> def per_leaf(s, leaves):
        ...     return [x * (1 - s**2) for x in leaves]
        >>> once_per_step(per_leaf)(jnp.float32(0.5), [jnp.ones(2), jnp.ones(3)])[1]
        Array([0.75, 0.75, 0.75], dtype=float32)
        >>> args = (jnp.float32(0.5), [jnp.ones(2), jnp.ones(3)])
        >>> len(jax.make_jaxpr(per_leaf)(*args).eqns), len(jax.make_jaxpr(once_per_step(per_leaf))(*args).eqns)
        (6, 4)
    """

    def run(*args: Any) -> Any:
        leaves, treedef = jax.tree.flatten(args)
        # Only values already traced are traced again: a number or a concrete array stays a constant,
        # so a rule can still branch on it as it would without this wrapper (a weight decay built as
        # a static 0 skips its term and never reads the parameters).
        dynamic = [i for i, x in enumerate(leaves) if isinstance(x, jax.core.Tracer)]

        def traced(*values: Any) -> Any:
            full = list(leaves)
            for i, v in zip(dynamic, values):
                full[i] = v
            return fn(*jax.tree.unflatten(treedef, full))

        values = [leaves[i] for i in dynamic]
        closed, out_shape = jax.make_jaxpr(traced, return_shape=True)(*values)
        merged = ClosedJaxpr(merge_scalar_equations(closed.jaxpr), closed.consts)
        outs = jaxpr_as_fun(merged)(*values)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return run


def split_scalar_work(jaxpr: Jaxpr, scalar_inputs: int) -> tuple[Jaxpr, Jaxpr]:
    """``jaxpr`` cut in two: a prelude of its scalar work and a body of the rest.

    The first ``scalar_inputs`` inputs of ``jaxpr`` (and its constants) are the values the
    scalar work depends on (hyperparameters, the step); the others are a leaf's arrays. The
    prelude takes the constants, then those inputs, and computes every effect-free equation
    with 0-d outputs that depends on nothing else; it returns the values the body needs. The
    body takes those values, then the remaining inputs, and returns ``jaxpr``'s outputs. So
    ``body(*prelude(*consts, *scalars), *arrays) == jaxpr(*scalars, *arrays)`` and the prelude,
    which does not depend on the leaf, can be evaluated once for many leaves.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax.extend.core import jaxpr_as_fun, ClosedJaxpr
        >>> from funcopt._src.scalar_work import split_scalar_work
        >>> closed = jax.make_jaxpr(lambda s, x: x * (1 - s**2))(jnp.float32(0.5), jnp.ones(2))
        >>> prelude, body = split_scalar_work(closed.jaxpr, 1)
        >>> len(prelude.eqns), len(body.eqns)
        (2, 1)
        >>> scalars = jaxpr_as_fun(ClosedJaxpr(prelude, []))(jnp.float32(0.5))
        >>> jaxpr_as_fun(ClosedJaxpr(body, []))(*scalars, jnp.ones(2))[0]
        Array([0.75, 0.75], dtype=float32)
    """
    known = set(jaxpr.constvars) | set(jaxpr.invars[:scalar_inputs])
    prelude_eqns, body_eqns = [], []
    for eqn in jaxpr.eqns:
        scalar = (not eqn.effects and all(getattr(v.aval, "shape", None) == () for v in eqn.outvars)
                  and all(isinstance(v, Literal) or v in known for v in eqn.invars))
        if scalar:
            prelude_eqns.append(eqn)
            known.update(v for v in eqn.outvars if not isinstance(v, DropVar))
        else:
            body_eqns.append(eqn)
    needed: list[Any] = []
    seen: set[Any] = set()
    for v in [v for e in body_eqns for v in e.invars] + list(jaxpr.outvars):
        if not isinstance(v, Literal) and v in known and v not in seen:
            seen.add(v)
            needed.append(v)
    prelude_in = list(jaxpr.constvars) + list(jaxpr.invars[:scalar_inputs])
    body_in = needed + list(jaxpr.invars[scalar_inputs:])
    prelude = Jaxpr(constvars=[], invars=prelude_in, outvars=needed, eqns=prelude_eqns,
                    debug_info=_debug_info("scalar_work", len(prelude_in), len(needed)))
    body = Jaxpr(constvars=[], invars=body_in, outvars=list(jaxpr.outvars), eqns=body_eqns, effects=jaxpr.effects,
                 debug_info=_debug_info("leaf_work", len(body_in), len(jaxpr.outvars)))
    return prelude, body


def _debug_info(name: str, args: int, results: int) -> DebugInfo:
    return DebugInfo("jit", name, tuple(f"x{i}" for i in range(args)), tuple(f"r{i}" for i in range(results)))
