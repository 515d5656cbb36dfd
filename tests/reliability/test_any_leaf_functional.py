"""Every functional optimizer over random pytrees with every kind of leaf a real model carries (hypothesis).

Trees nest dicts, lists, tuples and NamedTuples, with ``None`` leaves. Their array leaves are 0-d,
1-d, 2-d or empty, of floating dtypes (bfloat16, float16, float32, float64, complex64) and of the
other kinds: bool, int8 to int64, uint32 PRNG key data and typed keys (``jax.random.key``). The
gradient of a non-floating leaf is an array like it or JAX's ``float0`` (what ``jax.grad(...,
allow_int=True)`` gives). Through every functional optimizer, eagerly and under ``jax.jit``:

* nothing raises, except where the optimizer refuses a dtype (complex for Adafactor, Muon and
  L-BFGS, as torch does): then a clear error is asserted;
* floating leaves get finite updates, nonzero where their gradient is nonzero;
* every other leaf comes out of ``fo.apply_updates`` bit-identical, and its update adds to it
  without a change the way ``optax.apply_updates`` adds (zeros of its dtype);
* the state holds nothing for the non-floating leaves (as many bytes as for the floating ones alone);
* no array the caller handed in is deleted; L-BFGS's ``value_fn`` sees the whole tree.

Each optimizer runs one hand-written tree holding every kind of leaf, then ``PROPERTY_EXAMPLES``
drawn ones (default 2), with a seed fixed per optimizer (``PROPERTY_SEED`` draws others).
"""

from __future__ import annotations

import os
import zlib
from typing import Any, NamedTuple

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, seed, settings

import funcopt as fo

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "2"))
SALT = os.environ.get("PROPERTY_SEED", "")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FLOATING = ("bfloat16", "float16", "float32", "float64", "complex64")
OTHER = ("bool", "int8", "int16", "int32", "int64", "uint32", "key_data", "typed_key", "none")
SHAPES = ((), (3,), (0,), (2, 3))
MATRIX_SHAPES = ((2, 3), (3, 2))  # Muon trains 2-d parameters only
# Adafactor cannot initialize a size-0 parameter of 2+ dims under tracing, L-BFGS crashes when no
# parameter has elements (known, tested in test_regressions.py): kept out of the search as in
# test_properties.py.
ADAFACTOR_SHAPES = tuple(s for s in SHAPES if not (len(s) >= 2 and 0 in s))

# Weight decay on wherever the optimizer has one: decaying an integer leaf is the bug this guards.
FUNCTIONAL: dict[str, dict[str, Any]] = {
    "sgd": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": dict(lr=1e-2, weight_decay=0.01, amsgrad=True),
    "adamw": dict(lr=1e-2, weight_decay=0.1),
    "adagrad": dict(lr=0.1, weight_decay=0.01),
    "adadelta": dict(lr=1.0, weight_decay=0.01),
    "adamax": dict(lr=1e-2, weight_decay=0.01),
    "asgd": dict(lr=1e-2, weight_decay=0.01),
    "nadam": dict(lr=1e-2, weight_decay=0.01),
    "radam": dict(lr=1e-2, weight_decay=0.01),
    "rmsprop": dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=0.01),
    "rprop": dict(lr=1e-2),
    "adafactor": dict(lr=1e-2, weight_decay=0.01),
    "muon": dict(lr=1e-2, weight_decay=0.01, ns_steps=3),
    "lbfgs": dict(lr=0.5, max_iter=2, history_size=2),
    "lamb": dict(lr=1e-2, weight_decay=0.01),
    "lars": dict(lr=0.1, weight_decay=0.01, trust_coefficient=1.0),
    "lion": dict(lr=1e-3, weight_decay=0.01),
    "momentum": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    "ftrl": dict(lr=0.1, weight_decay=0.01),
    "proximal_adagrad": dict(lr=0.1, weight_decay=0.01),
    "schedule_free_adamw": dict(lr=1e-2, weight_decay=0.01),
}

# Optimizers that refuse complex parameters (torch's Adafactor and Muon raise; L-BFGS works on one
# real vector), with the error they raise.
REFUSES_COMPLEX = {
    "adafactor": (RuntimeError, "Adafactor does not support complex parameters"),
    "muon": (RuntimeError, "Muon does not support complex parameters"),
    "lbfgs": (ValueError, "lbfgs: parameters must be real"),
}


class Pair(NamedTuple):
    first: Any
    second: Any


class Leaf:
    """A leaf specification (not a pytree node, so jax.tree.map treats it as a leaf)."""

    def __init__(self, shape: tuple[int, ...], kind: str) -> None:
        self.shape, self.kind = shape, kind

    def __repr__(self) -> str:
        return f"{self.kind}{self.shape}"


def test_every_optimizer_is_covered():
    functional = {n for n in fo.optimizers.__all__ if callable(getattr(fo, n)) and n[0].islower()
                  and n != "schedule_free_eval_params"}
    assert functional == set(FUNCTIONAL)


def leaf_specs(float_shapes: tuple[tuple[int, ...], ...]) -> st.SearchStrategy[Leaf]:
    return st.one_of(st.builds(Leaf, st.sampled_from(float_shapes), st.sampled_from(FLOATING)),
                     st.builds(Leaf, st.sampled_from(SHAPES), st.sampled_from(OTHER)))


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.dictionaries(st.sampled_from(("a", "b", "weight", "bias")), children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3).map(tuple),
        st.builds(Pair, children, children),
    )


def tree_specs(float_shapes: tuple[tuple[int, ...], ...]) -> st.SearchStrategy[Any]:
    return containers(st.recursive(leaf_specs(float_shapes), containers, max_leaves=5))


def rich_spec(name: str) -> Any:
    """Every kind of leaf once, floating ones 0-d, empty and 2-d, in every container."""
    matrix = name == "muon"
    w = (2, 3)
    return {
        "layer": Pair(Leaf(w, "float32"), [Leaf((3, 2) if matrix else (), "bfloat16"),
                                           Leaf(w if matrix else (0,), "float16"),
                                           Leaf(w, "float64")]),
        "complex": Leaf(w, "complex64"),
        "other": (Leaf((3,), "bool"), Leaf((), "int8"), Leaf((2, 3), "int16"), Leaf((3,), "int32"),
                  Leaf((0,), "int64"), Leaf((3,), "uint32"), Leaf((), "key_data"), Leaf((3,), "key_data"),
                  Leaf((), "typed_key"), Leaf((3,), "typed_key"), Leaf((), "none")),
    }


def _keys(shape: tuple[int, ...], seed_: int) -> jax.Array:
    base = jax.random.key(seed_)
    return jax.random.split(base, shape[0]) if shape else base


def build_leaf(s: Leaf, rng: np.random.Generator, scale: float = 1.0) -> Any:
    if s.kind == "none":
        return None
    if s.kind == "typed_key":
        return _keys(s.shape, int(rng.integers(2**16)))
    if s.kind == "key_data":
        return jax.random.key_data(_keys(s.shape, int(rng.integers(2**16))))
    if s.kind == "bool":
        return jnp.asarray(rng.random(s.shape) < 0.5)
    if s.kind.startswith(("int", "uint")):
        return jnp.asarray(rng.integers(-100 if s.kind.startswith("int") else 0, 100, s.shape), dtype=s.kind)
    if s.kind == "complex64":
        return jnp.asarray((rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape)) * scale, s.kind)
    return jnp.asarray(rng.standard_normal(s.shape) * scale + 1.0, dtype=s.kind)


def build(spec: Any, rng: np.random.Generator) -> Any:
    return jax.tree.map(lambda s: build_leaf(s, rng), spec)


def grads_like(spec: Any, rng: np.random.Generator) -> Any:
    """Gradients: random for floating leaves; for the others an array like them or float0."""
    def leaf(s: Leaf) -> Any:
        if s.kind in FLOATING or s.kind == "none":
            return build_leaf(s, rng)
        shape = s.shape + ((2,) if s.kind == "key_data" else ())
        return np.zeros(shape, jax.dtypes.float0) if rng.random() < 0.5 else build_leaf(s, rng)

    return jax.tree.map(leaf, spec)


def is_floating_kind(kind: str) -> bool:
    return kind in FLOATING


def specs_of(spec: Any) -> list[Leaf]:
    return [s for s in jax.tree.leaves(spec) if s.kind != "none"]


def uses_x64(spec: Any) -> bool:
    return any(s.kind in ("float64", "int64") for s in jax.tree.leaves(spec))


def floating_loss(params: Any) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(params) if fo.tree_utils.is_floating(x)]
    return sum((jnp.sum((jnp.abs(x).astype(jnp.float32) - 0.5) ** 2) for x in leaves), jnp.zeros([]))


def state_bytes(state: Any) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)
               if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended))


def bits(x: Any) -> np.ndarray:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def run_once(name: str, tx: fo.GradientTransformation, spec: Any, params: Any, grads: Any, jit: bool) -> None:
    seen_structures = []
    extra: dict[str, Any] = {}
    if name == "lbfgs":
        def value_fn(p):
            seen_structures.append(jax.tree.structure(p))
            return floating_loss(p)

        extra = {"value_fn": value_fn}
    init = jax.jit(tx.init) if jit else tx.init
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra)) if jit else (
        lambda g, s, p: tx.update(g, s, p, **extra))
    state = init(params)
    updates, state = update(grads, state, params)
    updates, state = update(grads, state, params)  # a second step, from a state with history
    new = fo.apply_updates(params, updates)
    how = f"{name} ({'jit' if jit else 'eager'})"
    assert jax.tree.structure(new) == jax.tree.structure(params), how
    assert jax.tree.structure(updates, is_leaf=lambda x: x is None) == jax.tree.structure(
        params, is_leaf=lambda x: x is None), how
    flat_spec = jax.tree.leaves(spec)
    flat = lambda t: jax.tree.leaves(t, is_leaf=lambda x: x is None)  # noqa: E731
    for s, p, g, u, n in zip(flat_spec, flat(params), flat(grads), flat(updates), flat(new)):
        if s.kind == "none":
            assert p is None and u is None and n is None, how
        elif is_floating_kind(s.kind):
            u = np.asarray(u)
            assert u.dtype == np.asarray(p).dtype and u.shape == p.shape, (how, s)
            assert np.all(np.isfinite(u)), (how, s, u)
            if np.any(np.asarray(g) != 0):
                assert np.any(u != 0), (how, s, "not updated")
        else:
            assert n.dtype == p.dtype and n.shape == p.shape, (how, s)
            np.testing.assert_array_equal(bits(n), bits(p), err_msg=f"{how}: {s} changed")
            if s.kind != "typed_key":
                # zeros of the leaf's dtype: optax.apply_updates (p + u, cast back) leaves it as it is
                assert u.dtype == p.dtype and u.shape == p.shape, (how, s, u.dtype)
                np.testing.assert_array_equal(np.asarray(jnp.asarray(p + u).astype(p.dtype)), np.asarray(p))
    # nothing held for the non-floating leaves
    only_floating = jax.tree.map(lambda s, p: p if is_floating_kind(s.kind) else None, spec, params,
                                 is_leaf=lambda x: isinstance(x, Leaf))
    assert state_bytes(state) == state_bytes(tx.init(only_floating)), how
    for x in jax.tree.leaves(params) + jax.tree.leaves(grads):
        if isinstance(x, jax.Array):
            assert not x.is_deleted(), how
    if name == "lbfgs":
        assert seen_structures and all(t == jax.tree.structure(params) for t in seen_structures), how


def float_shapes_for(name: str) -> tuple[tuple[int, ...], ...]:
    return {"muon": MATRIX_SHAPES, "adafactor": ADAFACTOR_SHAPES}.get(name, SHAPES)


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_any_leaf(name: str) -> None:
    @seed(zlib.crc32((name + SALT).encode()))
    @SETTINGS
    @given(spec=tree_specs(float_shapes_for(name)), seed_=st.integers(0, 2**16))
    @example(spec=rich_spec(name), seed_=7)
    def check(spec: Any, seed_: int) -> None:
        floating = [s for s in specs_of(spec) if is_floating_kind(s.kind)]
        if name == "lbfgs":
            assume(any(0 not in s.shape for s in floating))
        with jax.enable_x64(uses_x64(spec)):
            rng = np.random.default_rng(seed_)
            params = build(spec, rng)
            grads = grads_like(spec, rng)
            tx = getattr(fo, name)(**FUNCTIONAL[name])
            if name in REFUSES_COMPLEX and any(s.kind == "complex64" for s in floating):
                error, message = REFUSES_COMPLEX[name]
                with pytest.raises(error, match=message):
                    tx.init(params)
                return
            for jit in (False, True):
                run_once(name, tx, spec, params, grads, jit)

    check()


def test_transforms_leave_other_leaves_alone():
    """Clipping, decay, centralization, averaging, accumulation, finiteness, loss scaling, masking,
    partition and mixed precision: non-floating leaves stay bit-identical and out of every norm."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((2, 3)), jnp.float32), "n": jnp.array([5, 7, 9]),
              "flag": jnp.array(True), "key": jax.random.key(3), "raw": jax.random.PRNGKey(4), "none": None}
    # integer "gradients" as large as possible: they must not enter the global norm or the finiteness check
    grads = {"w": jnp.full((2, 3), 0.1), "n": jnp.array([10**6] * 3), "flag": jnp.array(True),
             "key": np.zeros((), jax.dtypes.float0), "raw": jnp.array([2**31, 7], jnp.uint32), "none": None}
    transforms = {
        "clip_by_global_norm": fo.chain(fo.clip_by_global_norm(1.0), fo.sgd(lr=1.0)),
        "clip_grad_norm": fo.chain(fo.clip_grad_norm(1.0, norm_type="inf"), fo.sgd(lr=1.0)),
        "clip": fo.chain(fo.clip(1.0), fo.sgd(lr=1.0)),
        "clip_by_value": fo.chain(fo.clip_by_value(-1.0, 1.0), fo.sgd(lr=1.0)),
        "clip_by_leaf_norm": fo.chain(fo.clip_by_leaf_norm(1.0), fo.sgd(lr=1.0)),
        "add_decayed_weights": fo.chain(fo.add_decayed_weights(0.5), fo.sgd(lr=1.0)),
        "decoupled_weight_decay": fo.chain(fo.sgd(lr=1.0), fo.decoupled_weight_decay(1.0, 0.5)),
        "centralize": fo.chain(fo.centralize(), fo.sgd(lr=1.0)),
        "ema": fo.chain(fo.sgd(lr=1.0), fo.ema(0.9)),
        "swa": fo.chain(fo.sgd(lr=1.0), fo.swa()),
        "lookahead": fo.lookahead(fo.sgd(lr=1.0), sync_period=1),
        "multi_steps": fo.multi_steps(fo.sgd(lr=1.0), every_k=1),
        "apply_if_finite": fo.apply_if_finite(fo.sgd(lr=1.0)),
        "loss_scaled": fo.loss_scaled(fo.sgd(lr=1.0), fo.static_loss_scale(1.0)),
        "masked": fo.masked(fo.sgd(lr=1.0), lambda p: jax.tree.map(lambda _: True, p)),
        "partition": fo.partition({"a": fo.sgd(lr=1.0), "b": fo.adam(lr=1.0)},
                                  fo.label_fn_from_names({"w": "a"}, default="b")),
        "mixed_precision": fo.mixed_precision(fo.sgd(lr=1.0), param_dtype=None),
        "identity": fo.identity(),
    }
    w0 = np.asarray(params["w"])
    expected_w = {name: w0 - 0.1 for name in transforms}  # a plain SGD step of the float gradient
    expected_w.update({
        "clip_grad_norm": w0 - 0.1 * min(1.0, 1.0 / (0.1 + 1e-6)),  # inf-norm 0.1: no clipping
        "add_decayed_weights": w0 - (0.1 + 0.5 * w0),
        "decoupled_weight_decay": w0 - 0.1 - 0.5 * w0,
        "centralize": w0,  # constant rows centralize to zero
        "lookahead": w0 - 0.05,  # the slow weights move half way, every step
        "identity": w0 + 0.1,
    })
    for name, tx in transforms.items():
        for jit in (False, True):
            update = jax.jit(tx.update) if jit else tx.update
            state = tx.init(params)
            updates, state = update(grads, state, params)
            new = fo.apply_updates(params, updates)
            for k in ("n", "flag", "raw"):
                np.testing.assert_array_equal(np.asarray(new[k]), np.asarray(params[k]), err_msg=f"{name}: {k}")
                assert updates[k].dtype == params[k].dtype and not np.any(np.asarray(updates[k])), name
            np.testing.assert_array_equal(jax.random.key_data(new["key"]), jax.random.key_data(params["key"]))
            assert new["none"] is None
            np.testing.assert_allclose(np.asarray(new["w"]), expected_w[name], rtol=1e-5, err_msg=name)
    # the readers fill the leaves they do not hold from the parameters given
    state = transforms["ema"].init(params)
    average = fo.ema_params(state, params)
    assert average["n"] is params["n"] and average["key"] is params["key"]
    assert isinstance(fo.ema_params(state)["n"], fo.MaskedNode)
    for reader, tx in [(fo.swa_params, transforms["swa"]), (fo.lookahead_slow_params, transforms["lookahead"]),
                       (fo.master_params, transforms["mixed_precision"])]:
        filled = reader(tx.init(params), params)
        assert filled["n"] is params["n"] and jax.tree.structure(filled) == jax.tree.structure(params)
    # the norm helpers skip what is not floating
    np.testing.assert_allclose(fo.global_norm(grads), np.sqrt(6) * 0.1, rtol=1e-6)
    assert bool(fo.tree_utils.tree_all_finite({"w": jnp.ones(2), "n": jnp.array([2**31 - 1])}))


def test_apply_if_finite_ignores_integer_leaves_but_catches_nan():
    tx = fo.apply_if_finite(fo.sgd(lr=1.0))
    params = {"w": jnp.ones(2), "n": jnp.array([1, 2])}
    updates, state = tx.update({"w": jnp.array([jnp.nan, 1.0]), "n": jnp.array([1, 1])}, tx.init(params), params)
    assert int(state.total_notfinite) == 1
    np.testing.assert_array_equal(np.asarray(updates["w"]), [0.0, 0.0])


def test_optax_transforms_get_the_same_rule():
    import optax

    params = {"w": jnp.ones(3), "n": jnp.array([5, 7, 9]), "key": jax.random.key(0)}
    grads = {"w": jnp.ones(3), "n": jnp.array([1, 1, 1]), "key": np.zeros((), jax.dtypes.float0)}
    for tx in (fo.floating_only(optax.adamw(0.1, weight_decay=0.5)),
               fo.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.5))):
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        new = fo.apply_updates(params, updates)
        np.testing.assert_array_equal(np.asarray(new["n"]), [5, 7, 9])
        np.testing.assert_array_equal(np.asarray(updates["n"]), [0, 0, 0])
        assert new["key"] is params["key"]
    # optax alone decays the integers (what funcopt's rule prevents)
    raw = optax.adamw(0.1, weight_decay=0.5)
    raw_updates, _ = raw.update({"n": grads["n"]}, raw.init({"n": params["n"]}), {"n": params["n"]})
    assert not np.array_equal(np.asarray(optax.apply_updates({"n": params["n"]}, raw_updates)["n"]), [5, 7, 9])
    # the clipped run matches optax on the float leaf alone
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.5))
    ref_updates, _ = ref.update({"w": grads["w"]}, ref.init({"w": params["w"]}), {"w": params["w"]})
    np.testing.assert_allclose(np.asarray(updates["w"]), np.asarray(ref_updates["w"]), rtol=1e-6)
