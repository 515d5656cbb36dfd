"""Shared machinery for parity tests against torch.optim.

Parameters and gradients are NumPy arrays generated from a seed; both libraries
consume the same numbers. Leaves come in jax's flattening order, which is the
order of the torch parameter list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import torch  # a test dependency: CI installs it, parity tests never skip

import funcopt as fo

# Shapes of the test pytree: a matrix, a vector, a 3-d tensor, a 0-d and a 1-element leaf.
SHAPES = {"dense": {"weight": (4, 3), "bias": (4,)}, "conv": (2, 3, 2), "scalar": (), "one": (1,)}

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


@contextlib.contextmanager
def precision(dtype) -> Iterator[None]:
    """Run jax in x64 mode for float64 / complex128 tests."""
    with jax.enable_x64(np.dtype(dtype).itemsize >= 8 and np.dtype(dtype) != np.complex64):
        yield


def make_params(dtype=np.float32, seed: int = 0, shapes: Any = None) -> Any:
    rng = np.random.default_rng(seed)
    shapes = SHAPES if shapes is None else shapes

    def leaf(shape):
        x = rng.standard_normal(shape)
        if np.issubdtype(np.dtype(dtype), np.complexfloating):
            x = x + 1j * rng.standard_normal(shape)
        return np.asarray(x, dtype=dtype)

    return jax.tree.map(leaf, shapes, is_leaf=lambda s: isinstance(s, tuple))


def make_grads(params: Any, steps: int, seed: int = 1, scale: float = 1.0) -> list[Any]:
    """A different gradient pytree for every step (signs change, magnitudes vary)."""
    rng = np.random.default_rng(seed)

    def leaf(p):
        x = rng.standard_normal(p.shape) * scale
        if np.iscomplexobj(p):
            x = x + 1j * rng.standard_normal(p.shape) * scale
        return np.asarray(x, dtype=p.dtype)

    return [jax.tree.map(leaf, params) for _ in range(steps)]


def run_funcopt(tx: fo.GradientTransformation, params: Any, grads: list[Any], jit: bool = True):
    """Apply the gradient sequence; returns (list of params after each step, final state)."""
    import jax.numpy as jnp

    p = jax.tree.map(jnp.asarray, params)
    state = tx.init(p)

    def step(p, state, g):
        u, state = tx.update(g, state, p)
        return fo.apply_updates(p, u), state

    if jit:
        step = jax.jit(step)
    history = []
    for g in grads:
        p, state = step(p, state, jax.tree.map(jnp.asarray, g))
        history.append(jax.tree.map(np.asarray, p))
    return history, state


def run_torch(make_opt: Callable[[list], Any], params: Any, grads: list[Any]):
    """Same with a torch optimizer built by ``make_opt(list_of_tensors)``."""
    leaves = jax.tree.leaves(params)
    treedef = jax.tree.structure(params)
    tparams = [torch.nn.Parameter(torch.tensor(np.array(x))) for x in leaves]
    opt = make_opt(tparams)
    history = []
    for g in grads:
        for tp, gl in zip(tparams, jax.tree.leaves(g)):
            tp.grad = torch.tensor(np.array(gl))
        opt.step()
        history.append(treedef.unflatten([tp.detach().numpy().copy() for tp in tparams]))
    return history, opt, tparams


def tolerance(dtype) -> dict[str, float]:
    """rtol / atol for a parameter dtype: float32 (and complex64) or float64 (and complex128)."""
    return TOL[np.float64] if np.finfo(np.dtype(dtype)).bits >= 64 else TOL[np.float32]


def assert_trajectories_close(ours: list[Any], theirs: list[Any], dtype) -> None:
    tol = tolerance(dtype)
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for (name, x), y in zip(fo.named_leaves(a), jax.tree.leaves(b)):
            assert x.dtype == y.dtype, (step, name, x.dtype, y.dtype)
            np.testing.assert_allclose(x, y, err_msg=f"step {step + 1}, leaf {name}", **tol)


def assert_close_to_reference(ours: Any, ref: Any, dtype, what: str = "") -> None:
    """A pytree of ``dtype`` against a float64 reference pytree of the same structure, at :func:`tolerance`."""
    tol = tolerance(dtype)
    for (name, x), y in zip(fo.named_leaves(ours), jax.tree.leaves(ref), strict=True):
        x = np.asarray(x)
        assert x.dtype == np.dtype(dtype), (what, name, x.dtype)
        assert x.shape == y.shape, (what, name, x.shape, y.shape)
        np.testing.assert_allclose(np.asarray(x, np.float64), y, err_msg=f"{what} {name}", **tol)


# Against a float64 NumPy reference (a paper's formula, or a framework torch has no version of): float64 runs
# match it to rounding; a float32 run carries its own rounding over the steps, so it gets rtol 1e-5 and an
# absolute 1e-5 for entries that pass near zero (the parameters are O(1)).
REFERENCE_TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def assert_follows_reference(ours: list[Any], theirs: list[list[np.ndarray]], dtype,
                             state: fo.OptimizerState | None = None,
                             ref_slots: dict[str, list[np.ndarray]] | None = None) -> None:
    """Our trajectory (pytrees of ``dtype``) against a float64 reference's (lists of leaves), then the slots."""
    tol = REFERENCE_TOL[dtype]
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for (name, x), y in zip(fo.named_leaves(a), b, strict=True):
            assert x.dtype == dtype
            np.testing.assert_allclose(x, y, err_msg=f"step {step + 1}, leaf {name}", **tol)
    for slot, ref in (ref_slots or {}).items():
        for x, y in zip(jax.tree.leaves(state.slots[slot]), ref, strict=True):
            np.testing.assert_allclose(x, y, err_msg=slot, **tol)


def assert_hparam_edit_does_not_retrace(tx: fo.GradientTransformation, params: Any, grads: Any,
                                        edit: dict[str, Any], scale: float, rtol: float = 1e-6) -> None:
    """A jitted update traced once serves an edited hyperparameter, which scales the update by ``scale``."""
    traces = []

    @jax.jit
    def step(state):
        traces.append(1)
        return tx.update(grads, state, params)[0]

    state = tx.init(params)
    u1 = step(state)
    u2 = step(fo.set_hparams(state, **edit))
    assert len(traces) == 1
    for x, y in zip(jax.tree.leaves(u2), jax.tree.leaves(u1), strict=True):
        np.testing.assert_allclose(x, scale * np.asarray(y), rtol=rtol)


def assert_state_close(state: fo.OptimizerState, opt: Any, tparams: list, dtype,
                       names: dict[str, str] | None = None) -> None:
    """Compare funcopt slots with torch's per-parameter state, field by field under torch's names."""
    tol = tolerance(dtype)
    names = names or {k: k for k in state.slots}
    for ours_name, torch_name in names.items():
        ours_leaves = jax.tree.leaves(state.slots[ours_name])
        for i, (x, tp) in enumerate(zip(ours_leaves, tparams)):
            y = opt.state[tp][torch_name]
            y = y.detach().numpy() if hasattr(y, "detach") else np.asarray(y)
            x = np.asarray(x)
            if np.size(y) == np.size(x):
                y = y.reshape(x.shape)
            np.testing.assert_allclose(x, y, err_msg=f"state {torch_name} of param {i}", **tol)


def _update_program(tx: fo.GradientTransformation, params: Any, state: Any, grads: Any) -> tuple:
    """What ``tx.update`` computes from (grads, state, params): its jaxpr, its constants, the state's structure.

    Two transformations with equal programs compute the same function of their states (hyperparameters
    that differ live in the states as data), so one traced update serves both.
    """
    closed = jax.make_jaxpr(lambda g, s, p: tx.update(g, s, p))(grads, state, params)
    consts = tuple((np.asarray(c).dtype.str, np.shape(c), np.asarray(c).tobytes()) for c in closed.consts)
    return str(closed.jaxpr), consts, jax.tree.structure(state)


def run_funcopt_many(txs: list[fo.GradientTransformation], params: Any, grads: list[Any]) -> list[tuple[list, Any]]:
    """:func:`run_funcopt` for several transformations at once: one jitted program steps them all.

    Each transformation keeps its own state and trajectory, exactly as alone; only compilation is shared.
    XLA compiles one program for a whole parametrized table much faster than one program per case, and
    cases whose updates are the same program (:func:`_update_program`: they differ only in hyperparameter
    values, which are state) run through one traced copy of it, mapped over their stacked states with
    ``lax.map`` (a loop, not a batched computation: each case sees the operations it would see alone).
    Returns ``(history, state)`` per transformation, in order (the final states as NumPy arrays).
    """
    import jax.numpy as jnp

    p = jax.tree.map(jnp.asarray, params)
    g0 = jax.tree.map(jnp.asarray, grads[0])
    states = jax.jit(lambda p: [tx.init(p) for tx in txs])(p)  # one program, not one per eager operation
    groups: dict[tuple, list[int]] = {}
    for i, (tx, s) in enumerate(zip(txs, states)):
        groups.setdefault(_update_program(tx, p, s, g0), []).append(i)
    members = list(groups.values())

    def stack(trees):  # on the host: an eager jnp.stack would compile a program per shape
        return jax.tree.map(lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs])), *trees)

    @jax.jit
    def step(ps, ss, g):
        out = []
        for idx, q, s in zip(members, ps, ss):
            tx = txs[idx[0]]

            def one(qs, tx=tx):
                u, s = tx.update(g, qs[1], qs[0])
                return fo.apply_updates(qs[0], u), s

            out.append(jax.lax.map(one, (q, s)))
        return [q for q, _ in out], [s for _, s in out]

    ps = [stack([p] * len(idx)) for idx in members]
    ss = [stack([states[i] for i in idx]) for idx in members]
    histories: list[list[Any]] = [[] for _ in txs]
    for g in grads:
        ps, ss = step(ps, ss, jax.tree.map(jnp.asarray, g))
        for idx, q in zip(members, jax.device_get(ps)):
            for k, i in enumerate(idx):
                histories[i].append(jax.tree.map(lambda x, k=k: np.asarray(x[k]), q))
    final = [None] * len(txs)
    for idx, s in zip(members, jax.device_get(ss)):
        for k, i in enumerate(idx):
            final[i] = jax.tree.map(lambda x, k=k: np.asarray(x[k]), s)
    return list(zip(histories, final))


class SharedRuns:
    """The funcopt trajectories of a parametrized table, computed together when the first case asks.

    ``SharedRuns(build)``: ``build(params, grads, *key)`` returns the list of ``(history, state)`` of
    every case of the table, in table order (usually through :func:`run_funcopt_many`). A test asks with
    ``runs.get(key, index, params, grads)``; the table's runs are computed once per ``key`` (dtype, x64
    mode, ...) and every later case reads its own entry. The parameters and gradients a case passes must be
    those the table ran on (checked), so each case still compares its own inputs.
    """

    def __init__(self, build: Callable[..., list[tuple[list, Any]]]):
        self._build = build
        self._runs: dict[Any, tuple[Any, list[Any], list[tuple[list, Any]]]] = {}

    def get(self, key: tuple, index: int, params: Any, grads: list[Any]) -> tuple[list, Any]:
        key = (*key, bool(jax.config.jax_enable_x64))
        if key not in self._runs:
            self._runs[key] = (params, grads, self._build(params, grads, *key[:-1]))
        ran_params, ran_grads, runs = self._runs[key]
        for x, y in zip(jax.tree.leaves((ran_params, ran_grads)), jax.tree.leaves((params, grads)), strict=True):
            np.testing.assert_array_equal(x, y)
        return runs[index]
