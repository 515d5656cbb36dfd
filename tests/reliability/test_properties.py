"""Properties of every optimizer over drawn pytrees (hypothesis).

Each optimizer has one sequence of leaves: shapes from 0-d to 3-d, size-0 shapes included, and
dtypes float16, bfloat16, float32 and float64, all in one tree (for Muon 2-d shapes only). The
examples put it in drawn nestings of dicts, lists and tuples (their keys and depth drawn too) and
draw its values. Through every functional optimizer:

* updates, parameters and state keep their structure, shapes and dtypes, step after step;
* ``jax.jit`` and eager execution agree (to a tolerance set by the dtype: the two
  compile differently, and half precision rounds once at the end);
* zero gradients from a fresh state with zero weight decay leave the parameters unchanged,
  except where the algorithm moves them anyway (``ZERO_GRADIENT_EXEMPT``, checked too);
* the state survives ``fo.save`` / ``fo.load`` into a fresh ``init`` bit for bit.

Through every stateful class: ``opt(grads)`` keeps the structure, shapes and dtypes of
``opt.params``; ``state_dict()`` loaded into a fresh optimizer gives back the same
``state_dict()`` bit for bit, and both then take the same next step, bit for bit.

Each optimizer runs one hand-written tree, then a few drawn ones (``PROPERTY_EXAMPLES``,
default 2); raise it to search longer. The leaves are the same in every example of an
optimizer, so every drawn tree reuses the programs the first one compiled (see
tests/reliability/structures.py) and costs little more than tracing. The seed is fixed per
optimizer (runs repeat); set ``PROPERTY_SEED`` to any string to draw other trees.
"""

from __future__ import annotations

import functools
import os
import tempfile
import zlib
from typing import Any

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, seed, settings

import funcopt as fo
from tests.reliability.snapshot import canon, first_difference
from tests.reliability.structures import jit_flat, trees_over

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "2"))
SALT = os.environ.get("PROPERTY_SEED", "")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def seeded(name: str) -> Any:
    """A fixed seed per optimizer: runs repeat exactly, and each optimizer sees other trees."""
    return seed(zlib.crc32((name + SALT).encode()))

DTYPES = ("float16", "bfloat16", "float32", "float64")
SHAPES = ((), (1,), (3,), (0,), (2, 3), (0, 2), (2, 1, 2))
MATRIX_SHAPES = ((2, 3), (3, 2), (1, 4), (0, 3))  # Muon takes 2-d parameters only
# Kept out of this search (each case has its own test in test_regressions.py):
# Adafactor cannot initialize under tracing for a size-0 parameter of 2+ dims; L-BFGS crashes on
# parameters with no elements at all.
ADAFACTOR_SHAPES = tuple(s for s in SHAPES if not (len(s) >= 2 and 0 in s))


class Leaf:
    """A leaf specification (not a pytree node, so jax.tree.map treats it as a leaf)."""

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape, self.dtype = shape, dtype

    def __repr__(self) -> str:
        return f"{self.dtype}{self.shape}"


def build(spec: Any, rng: np.random.Generator, scale: float = 1.0) -> Any:
    def leaf(s: Leaf) -> jax.Array:
        return jnp.asarray(rng.standard_normal(s.shape) * scale, dtype=s.dtype)

    return jax.tree.map(leaf, spec)


def rich_spec(name: str) -> Any:
    """Every dtype, nesting of all three containers, every shape of ``shapes_for(name)``: a 0-d (or for
    Muon a 1-row), a 3-d and size-0 leaves among them."""
    if name == "muon":
        return {"w": [Leaf((2, 3), "float32"), (Leaf((3, 2), "bfloat16"), Leaf((0, 3), "float16"))],
                "b": Leaf((1, 4), "float64")}
    spec = {"w": [Leaf((2, 3), "float32"), (Leaf((), "bfloat16"), Leaf((0,), "float16"))], "b": Leaf((3,), "float64"),
            "c": (Leaf((1,), "float32"), [Leaf((2, 1, 2), "float16")])}
    if name != "adafactor":
        spec["c"][1].append(Leaf((0, 2), "bfloat16"))
    return spec


def drawn_specs(name: str) -> st.SearchStrategy[Any]:
    """The leaves of ``rich_spec(name)``, in flatten order, in drawn nestings."""
    leaves = jax.tree.leaves(rich_spec(name))
    assert {s.shape for s in leaves} == set(shapes_for(name)) and {s.dtype for s in leaves} == set(DTYPES)
    return trees_over(leaves)


def loosest_dtype(spec: Any) -> str:
    return max((s.dtype for s in jax.tree.leaves(spec)), key=lambda d: TOLERANCE[d]["rtol"])


def uses_float64(spec: Any) -> bool:
    return any(s.dtype == "float64" for s in jax.tree.leaves(spec))


def loss_fn(params: Any) -> jax.Array:
    return sum(jnp.sum((x.astype(jnp.promote_types(x.dtype, jnp.float32)) - 0.5) ** 2)
               for x in jax.tree.leaves(params))


# ---------------------------------------------------------------------- the optimizers

# Hyperparameters that switch on every piece of state the algorithm has. Weight decay is zero
# so that the zero-gradient property applies (weight decay moves parameters by design).
FUNCTIONAL: dict[str, dict[str, Any]] = {
    "sgd": dict(lr=0.1, momentum=0.9, nesterov=True),
    "adam": dict(lr=1e-2, amsgrad=True),
    "adamw": dict(lr=1e-2, weight_decay=0.0),
    "adagrad": dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "adadelta": dict(lr=1.0),
    "adamax": dict(lr=1e-2),
    "asgd": dict(lr=1e-2, t0=1.0),
    "nadam": dict(lr=1e-2),
    "radam": dict(lr=1e-2),
    "rmsprop": dict(lr=1e-2, momentum=0.5, centered=True),
    "rprop": dict(lr=1e-2),
    "adafactor": dict(lr=1e-2),
    "muon": dict(lr=1e-2, weight_decay=0.0, ns_steps=3),
    "lbfgs": dict(lr=0.5, max_iter=2, history_size=2),
    "lamb": dict(lr=1e-2),
    "lars": dict(lr=0.1),
    "lion": dict(lr=1e-3),
    "momentum": dict(lr=0.1, momentum=0.9, use_nesterov=True),
    "ftrl": dict(lr=0.1),
    "proximal_adagrad": dict(lr=0.1),
    "schedule_free_adamw": dict(lr=1e-2, warmup_steps=2),
}

# Optimizers whose parameters move under zero gradients from a fresh state, even with zero
# weight decay, and the rule they follow instead (checked in test_functional_properties):
ZERO_GRADIENT_EXEMPT = {
    # torch's ASGD shrinks every parameter by (1 - lambd * eta) each step: a decay built into the
    # algorithm, separate from weight_decay. With lambd = 0 zero gradients change nothing.
    "asgd": "params unchanged only with lambd=0",
    # FTRL-proximal recomputes the parameters from its accumulators at every step instead of adding
    # a delta: with the linear term still 0 (and l1 = 0), the first step sets them to 0.
    "ftrl": "params become 0",
}
# Schedule-free AdamW is NOT exempt from a fresh state (y = x = z there, and zero gradients move
# none of them); mid-training, zero gradients still move y towards the average x.

STATEFUL: dict[str, str] = {
    "SGD": "sgd", "Adam": "adam", "AdamW": "adamw", "Adagrad": "adagrad", "Adadelta": "adadelta",
    "Adamax": "adamax", "ASGD": "asgd", "NAdam": "nadam", "RAdam": "radam", "RMSprop": "rmsprop",
    "Rprop": "rprop", "Adafactor": "adafactor", "Muon": "muon", "LBFGS": "lbfgs", "LAMB": "lamb",
    "LARS": "lars", "Lion": "lion", "Momentum": "momentum", "FTRL": "ftrl", "ProximalAdagrad": "proximal_adagrad",
    "ScheduleFreeAdamW": "schedule_free_adamw",
}

TOLERANCE = {
    "float16": dict(rtol=4e-3, atol=4e-3),
    "bfloat16": dict(rtol=3e-2, atol=3e-2),
    "float32": dict(rtol=2e-5, atol=2e-6),
    "float64": dict(rtol=1e-10, atol=1e-12),
}


def test_every_optimizer_is_covered():
    functional = {n for n in fo.optimizers.__all__ if callable(getattr(fo, n)) and n[0].islower()
                  and n != "schedule_free_eval_params"}
    assert functional == set(FUNCTIONAL)
    classes = {n for n in fo.optim.__all__ if isinstance(getattr(fo.optim, n), type)
               and issubclass(getattr(fo.optim, n), fo.optim.Optimizer) and n != "Optimizer"}
    assert classes == set(STATEFUL)
    assert set(STATEFUL.values()) == set(FUNCTIONAL)


@functools.cache
def functional_optimizer(name: str, **changes: Any) -> fo.GradientTransformation:
    """One optimizer per name (and changes) for all examples: it is pure, and keeps the programs it
    traced for each kind of leaf, which every example then reuses."""
    return getattr(fo, name)(**{**FUNCTIONAL[name], **changes})


def shapes_for(name: str) -> tuple[tuple[int, ...], ...]:
    return {"muon": MATRIX_SHAPES, "adafactor": ADAFACTOR_SHAPES}.get(name, SHAPES)


def searchable(name: str, spec: Any) -> bool:
    return name != "lbfgs" or any(0 not in s.shape for s in jax.tree.leaves(spec))


def extra_args(name: str) -> dict[str, Any]:
    return {"value_fn": loss_fn} if name == "lbfgs" else {}


def grads_for(name: str, params: Any, spec: Any, rng: np.random.Generator) -> Any:
    if name == "lbfgs":  # L-BFGS needs the gradient of the loss it evaluates
        return jax.grad(loss_fn)(params)
    return build(spec, rng)


def assert_like(tree: Any, ref: Any, what: str) -> None:
    assert jax.tree.structure(tree) == jax.tree.structure(ref), what
    for x, r in zip(jax.tree.leaves(tree), jax.tree.leaves(ref)):
        assert (x.shape, x.dtype) == (r.shape, r.dtype), f"{what}: {x.dtype}{x.shape}, expected {r.dtype}{r.shape}"


def assert_close(a: Any, b: Any, what: str, loosest: str | None = None) -> None:
    """Leaf by leaf, to the tolerance of the leaf's dtype, or of ``loosest`` where that is looser."""
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, what
        if x.dtype.kind not in "fc" and x.dtype.name != "bfloat16":
            np.testing.assert_array_equal(x, y, err_msg=what)
            continue
        tol = TOLERANCE[x.dtype.name if x.dtype.name in TOLERANCE else "float64"]
        if loosest is not None and TOLERANCE[loosest]["rtol"] > tol["rtol"]:
            tol = TOLERANCE[loosest]
        np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), equal_nan=True, err_msg=what, **tol)


def assert_bits(a: Any, b: Any, what: str) -> None:
    diff = first_difference(canon(a), canon(b))
    assert diff is None, f"{what}: {diff}"


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_functional_properties(name: str) -> None:
    @seeded(name)
    @SETTINGS
    @given(spec=drawn_specs(name), seed=st.integers(0, 2**16))
    @example(spec=rich_spec(name), seed=7)
    def check(spec: Any, seed: int) -> None:
        assume(searchable(name, spec))
        with jax.enable_x64(uses_float64(spec)):
            rng = np.random.default_rng(seed)
            params = build(spec, rng)
            tx = functional_optimizer(name)
            extra = extra_args(name)
            # jitted through a flat signature: the trees of every example share one compiled program
            update = jit_flat(lambda g, s, p: tx.update(g, s, p, **extra))  # value_fn is closed over
            apply = jit_flat(fo.apply_updates)

            # two jitted steps
            init_state = tx.init(params)
            states, steps, grads, all_updates = [init_state], [params], [], []
            for _ in range(2):
                grads.append(grads_for(name, steps[-1], spec, rng))
                updates, state = update(grads[-1], states[-1], steps[-1])
                all_updates.append(updates)
                states.append(state)
                steps.append(apply(steps[-1], updates))
            # the second step again, eagerly, from the same inputs
            eager_updates, eager_state = tx.update(grads[1], states[1], steps[1], **extra)
            eager_params = fo.apply_updates(steps[1], eager_updates)

            # structure, shapes and dtypes are preserved
            for updates in all_updates + [eager_updates]:
                assert_like(updates, params, f"{name}: updates")
            for p in steps[1:] + [eager_params]:
                assert_like(p, params, f"{name}: params")
            for state in states[1:] + [eager_state]:
                assert_like(state, init_state, f"{name}: state")

            # jit and eager agree (L-BFGS works on one vector of all leaves: the least precise one sets
            # the tolerance of everything)
            loosest = loosest_dtype(spec) if name == "lbfgs" else None
            assert_close(all_updates[1], eager_updates, f"{name}: updates, jit vs eager", loosest)
            assert_close(steps[2], eager_params, f"{name}: params, jit vs eager", loosest)
            assert_close(states[2], eager_state, f"{name}: state, jit vs eager", loosest)

            # zero gradients from a fresh state (same shapes as above: no new compile)
            zeros = jax.tree.map(jnp.zeros_like, params)
            moved = apply(params, update(zeros, init_state, params)[0])
            expected = params
            assert set(ZERO_GRADIENT_EXEMPT) == {"ftrl", "asgd"}  # each handled here
            if name == "ftrl":
                expected = jax.tree.map(jnp.zeros_like, params)
            elif name == "asgd":
                lambd0 = functional_optimizer(name, lambd=0.0)
                moved = fo.apply_updates(params, lambd0.update(zeros, lambd0.init(params), params)[0])
            for m, e in zip(jax.tree.leaves(moved), jax.tree.leaves(expected)):
                np.testing.assert_array_equal(np.asarray(m), np.asarray(e), err_msg=f"{name}: zero gradients")

            # the state round-trips through a checkpoint bit for bit
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "state.npz")
                fo.save(path, states[2])
                restored = fo.load(path, target=init_state)
            assert_bits(restored, states[2], f"{name}: state through fo.save / fo.load")

    check()


def _stateful_steps(opt: Any, grads: list[Any]) -> None:
    if isinstance(opt, fo.optim.LBFGS):
        def closure():
            opt.zero_grad()
            return opt.backward(loss_fn)
        for _ in grads:
            opt.step(closure)
    else:
        for g in grads:
            opt(g)


@pytest.mark.parametrize("cls_name", list(STATEFUL))
def test_stateful_properties(cls_name: str) -> None:
    cls = getattr(fo.optim, cls_name)
    name = STATEFUL[cls_name]

    @seeded(name)
    @SETTINGS
    @given(spec=drawn_specs(name), seed=st.integers(0, 2**16))
    @example(spec=rich_spec(name), seed=7)
    def check(spec: Any, seed: int) -> None:
        assume(searchable(name, spec))
        with jax.enable_x64(uses_float64(spec)):
            rng = np.random.default_rng(seed)
            params = build(spec, rng)
            kw = FUNCTIONAL[name]
            opt = cls(params, **kw)
            _stateful_steps(opt, [build(spec, rng) for _ in range(2)])
            assert_like(opt.params, params, f"{cls_name}: params")
            assert opt.grad is None or cls_name == "LBFGS"

            sd = opt.state_dict()
            fresh = cls(build(spec, rng), **kw)
            fresh.load_state_dict(sd)
            assert_bits(fresh.state_dict(), sd, f"{cls_name}: state_dict after a round trip")
            fresh.params = opt.params
            assert_bits(fresh.params, opt.params, f"{cls_name}: params copied")

            last = [build(spec, rng)]
            _stateful_steps(opt, last)
            _stateful_steps(fresh, last)
            assert_bits(fresh.params, opt.params, f"{cls_name}: params one step after the round trip")
            assert_bits(fresh.state_dict(), opt.state_dict(), f"{cls_name}: state one step after the round trip")

    check()
