"""Non-finite gradients: what each optimizer does with them, and ``fo.apply_if_finite`` skipping them.

The behaviour checked here is the one documented in docs/nonfinite.md: a ``nan`` or ``inf`` in
the gradient propagates into the parameters (no optimizer hides it), except where the algorithm's
own arithmetic maps it to a finite value (Lion's sign, FTRL's proximal threshold); per-tensor
rules (Adafactor, Muon, LARS) spread it over the whole tensor. ``fo.apply_if_finite`` skips such
steps: zero updates, inner state untouched, and the next finite step is the inner optimizer's
next step as if the bad one never happened.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from tests.reliability.snapshot import canon
from tests.reliability.test_properties import FUNCTIONAL

# What one step with a non-finite value at element [0, 0] of leaf 'a' does to the parameters:
#   "element": that element of 'a' becomes non-finite, every other element stays finite;
#   "tensor": all of 'a' becomes non-finite (the rule is per tensor), 'b' stays finite;
#   "finite": every parameter stays finite;
#   "zero": that element becomes exactly 0 (its accumulators become nan), the rest stays finite;
#   "zero or element": 0 or non-finite, depending on the signs of the gradient and the parameter.
NAN_EFFECT = {name: "element" for name in FUNCTIONAL}
NAN_EFFECT.update(adafactor="tensor", muon="tensor", lars="tensor", ftrl="zero")
INF_EFFECT = {name: "element" for name in FUNCTIONAL}
INF_EFFECT.update(adafactor="tensor", muon="tensor", lion="finite", ftrl="zero or element")


def params() -> dict[str, jax.Array]:
    return {"a": jnp.array([[1.0, -2.0], [0.5, 3.0], [1.5, -0.5]]), "b": jnp.array([[0.3, 0.2], [1.0, -1.0]])}


def grads(bad: float | None = None) -> dict[str, jax.Array]:
    g = {"a": jnp.array([[0.5, 1.0], [-1.0, 0.25], [2.0, -0.5]]), "b": jnp.array([[0.1, -0.2], [0.3, 0.4]])}
    if bad is not None:
        g["a"] = g["a"].at[0, 0].set(bad)
    return g


def loss_fn(p: Any) -> jax.Array:
    return sum(jnp.sum((x - 0.25) ** 2) for x in jax.tree.leaves(p))


@functools.cache
def make(name: str) -> tuple[fo.GradientTransformation, dict[str, Any]]:
    """One functional optimizer per name for the whole file.

    A GradientTransformation is pure (its state lives in what ``init`` returns), so the tests may share
    one; they then share the programs it traced for these shapes instead of tracing them per test.
    """
    extra = {"value_fn": loss_fn} if name == "lbfgs" else {}
    return getattr(fo, name)(**FUNCTIONAL[name]), extra


def test_the_tables_cover_every_optimizer():
    assert set(NAN_EFFECT) == set(INF_EFFECT) == set(FUNCTIONAL)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_a_nonfinite_gradient_reaches_the_parameters(name: str, bad: float) -> None:
    tx, extra = make(name)
    p = params()
    state = tx.init(p)
    updates, new_state = tx.update(grads(bad), state, p, **extra)
    new = fo.apply_updates(p, updates)
    a, b = np.asarray(new["a"]), np.asarray(new["b"])
    effect = (NAN_EFFECT if np.isnan(bad) else INF_EFFECT)[name]
    assert np.isfinite(b).all(), f"{name}: a non-finite value in 'a' reached 'b'"
    rest = np.ones(a.shape, bool)
    rest[0, 0] = False
    if effect == "element":
        assert not np.isfinite(a[0, 0]) and np.isfinite(a[rest]).all(), a
    elif effect == "tensor":
        assert not np.isfinite(a).any(), a
    elif effect == "finite":
        assert np.isfinite(a).all(), a
    elif effect == "zero or element":
        assert (a[0, 0] == 0.0 or not np.isfinite(a[0, 0])) and np.isfinite(a[rest]).all(), a
    else:  # "zero"
        assert a[0, 0] == 0.0 and np.isfinite(a[rest]).all(), a
        accum = np.asarray(new_state.slots["accum"]["a"])
        assert np.isnan(accum[0, 0]), "FTRL's accumulator keeps the nan"
        # and the element stays at 0 whatever comes next
        again = fo.apply_updates(new, tx.update(grads(), new_state, new)[0])
        assert np.asarray(again["a"])[0, 0] == 0.0


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_a_nan_in_the_state_stays(name: str) -> None:
    """After a nan gradient, finite gradients do not bring the parameter back (no optimizer heals it)."""
    tx, extra = make(name)
    p = params()
    state = tx.init(p)
    updates, state = tx.update(grads(np.nan), state, p, **extra)
    p = fo.apply_updates(p, updates)
    updates, state = tx.update(jax.grad(loss_fn)(p) if name == "lbfgs" else grads(), state, p, **extra)
    p = fo.apply_updates(p, updates)
    value = np.asarray(p["a"])[0, 0]
    if NAN_EFFECT[name] == "zero":
        assert value == 0.0
    else:
        assert np.isnan(value), f"{name}: the parameter came back to {value}"


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_apply_if_finite_skips_the_step(name: str, bad: float) -> None:
    inner, extra = make(name)
    tx = fo.apply_if_finite(inner)
    p = params()
    state = tx.init(p)
    updates, skipped = tx.update(grads(bad), state, p, **extra)
    for u in jax.tree.leaves(updates):
        np.testing.assert_array_equal(np.asarray(u), np.zeros(u.shape, u.dtype))
    assert canon(skipped.inner_state) == canon(state.inner_state), "the inner state changed on a skipped step"
    assert int(skipped.total_notfinite) == 1 and int(skipped.notfinite_count) == 1
    assert not bool(skipped.last_finite)

    # the next finite step is the inner optimizer's first step
    good = jax.grad(loss_fn)(p) if name == "lbfgs" else grads()
    updates, after = tx.update(good, skipped, p, **extra)
    expected, inner_state = inner.update(good, inner.init(p), p, **extra)
    for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(e), rtol=1e-6, atol=1e-7)
    assert int(after.notfinite_count) == 0 and bool(after.last_finite)
    assert int(jax.tree.leaves(after.inner_state)[0]) == int(jax.tree.leaves(inner_state)[0])  # the step count


def test_apply_if_finite_skips_under_jit_and_gives_up_when_told():
    inner = fo.adam(lr=0.1)
    tx = fo.apply_if_finite(inner, max_consecutive_errors=2)
    p = params()
    update = jax.jit(tx.update)
    state = tx.init(p)
    for i in range(2):  # skipped
        updates, state = update(grads(np.nan), state, p)
        assert all(not np.asarray(u).any() for u in jax.tree.leaves(updates)), i
    updates, state = update(grads(np.nan), state, p)  # the third in a row is applied
    assert np.isnan(np.asarray(updates["a"])[0, 0])
    assert int(state.total_notfinite) == 3


@pytest.mark.parametrize("cls", ["SGD", "Adam", "Adafactor", "Lion", "FTRL"])
def test_stateful_classes_behave_like_their_functional_optimizer(cls: str) -> None:
    name = {"SGD": "sgd", "Adam": "adam", "Adafactor": "adafactor", "Lion": "lion", "FTRL": "ftrl"}[cls]
    opt = getattr(fo.optim, cls)(params(), **FUNCTIONAL[name])
    a = np.asarray(opt(grads(np.nan)).params["a"])
    if NAN_EFFECT[name] == "zero":
        assert a[0, 0] == 0.0
    elif NAN_EFFECT[name] == "tensor":
        assert np.isnan(a).all()
    else:
        assert np.isnan(a[0, 0]) and np.isfinite(a.reshape(-1)[1:]).all()


def test_global_norm_clipping_spreads_a_nan_to_every_parameter():
    """A nan makes the global norm nan, and every gradient is scaled by it; an inf makes the scale 0,
    so the step is lost for every other parameter and the inf element itself becomes nan (inf * 0)."""
    tx = fo.chain(fo.clip_by_global_norm(1.0), fo.sgd(lr=0.1))
    p = params()
    updates, _ = tx.update(grads(np.nan), tx.init(p), p)
    assert all(np.isnan(np.asarray(u)).all() for u in jax.tree.leaves(updates))
    updates, _ = tx.update(grads(np.inf), tx.init(p), p)
    a = np.asarray(updates["a"])
    assert np.isnan(a[0, 0]) and not a.reshape(-1)[1:].any() and not np.asarray(updates["b"]).any()
