"""Any leaf is safe in the stateful optimizers: random mixed pytrees through every class (hypothesis).

A model carries more than weights. The drawn trees nest dicts, lists, tuples and NamedTuples and
mix trainable leaves (float16, bfloat16, float32, float64, and complex64 where the optimizer
supports complex numbers; 0-d and size-0 arrays included) with leaves no optimizer may touch:
bool and int8..int64 arrays (NumPy or JAX), uint32 PRNG key data, typed PRNG keys and None.
Through every class of ``fo.optim``, with ``backward`` + ``step`` and then ``opt(grads)``:

* nothing raises;
* every non-empty floating leaf is finite, keeps its dtype and shape, and moved;
* every other leaf comes back as the very object given (so bit-identical), None stays None;
* ``opt.params`` / ``opt.grad`` are the trainable part (None elsewhere), and no array the
  caller handed in is deleted.

A few examples per class (``PROPERTY_EXAMPLES``, default 2) keep the file near a minute.
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
from hypothesis import HealthCheck, Phase, given, seed, settings

import funcopt as fo

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "2"))
# no shrinking: each example compiles, and the failing tree is printed as drawn
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Hyperparameters large enough that one step moves half-precision leaves too.
CLASSES: dict[str, dict[str, Any]] = {
    "SGD": dict(lr=0.1, momentum=0.9), "Adam": dict(lr=0.05), "AdamW": dict(lr=0.05),
    "Adagrad": dict(lr=0.1), "Adadelta": dict(lr=1.0), "Adamax": dict(lr=0.05), "ASGD": dict(lr=0.1),
    "NAdam": dict(lr=0.05), "RAdam": dict(lr=0.05), "RMSprop": dict(lr=0.05), "Rprop": dict(lr=0.05),
    "Adafactor": dict(lr=0.05), "Muon": dict(lr=0.05), "LBFGS": dict(lr=0.5, max_iter=1, history_size=2),
    "LAMB": dict(lr=0.05), "LARS": dict(lr=0.1), "Lion": dict(lr=0.05), "Momentum": dict(lr=0.1, momentum=0.9),
    "FTRL": dict(lr=0.1), "ProximalAdagrad": dict(lr=0.1), "ScheduleFreeAdamW": dict(lr=0.05),
}
NO_COMPLEX = {"Adafactor", "Muon", "LBFGS"}  # they refuse complex parameters, as torch does
# LARS scales its step by eta * ||p|| / ||g|| (1e-3 here): half-precision leaves may round back
SMALL_STEPS = {"LARS"}
SHAPES = ((), (0,), (3,), (2, 3), (1, 2, 2))
MATRIX_SHAPES = ((2, 3), (3, 2), (0, 3))  # Muon trains 2-d parameters only
ADAFACTOR_SHAPES = ((), (0,), (3,), (2, 3))  # a size-0 matrix is kept out (tests/reliability/test_properties.py)


class Pair(NamedTuple):
    first: Any
    second: Any


class Float:
    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape, self.dtype = shape, dtype


class Other:
    def __init__(self, kind: str, numpy: bool) -> None:
        self.kind, self.numpy = kind, numpy


def float_specs(name: str, nonempty: bool = False) -> st.SearchStrategy[Float]:
    shapes = {"Muon": MATRIX_SHAPES, "Adafactor": ADAFACTOR_SHAPES}.get(name, SHAPES)
    if nonempty:
        shapes = tuple(s for s in shapes if 0 not in s)
    dtypes = ["float16", "bfloat16", "float32", "float64"] + ([] if name in NO_COMPLEX else ["complex64"])
    return st.builds(Float, st.sampled_from(shapes), st.sampled_from(dtypes))


OTHERS = st.builds(Other, st.sampled_from(["bool", "int8", "int16", "int32", "int64", "uint8", "key_data", "key",
                                           "scalar_int", "none"]), st.booleans())


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.dictionaries(st.sampled_from(("a", "b", "weight", "bias", "count")), children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=2).map(tuple),
        st.builds(Pair, children, children),
    )


def model_specs(name: str) -> st.SearchStrategy[Any]:
    leaves = st.one_of(float_specs(name), OTHERS)
    rest = st.recursive(leaves, containers, max_leaves=6)
    # one non-empty trainable leaf at least (a model without one raises, tested elsewhere)
    return st.builds(lambda main, more, shape: {"main": main, "more": more} if shape == "dict"
                     else [main, more] if shape == "list" else Pair(main, more),
                     float_specs(name, nonempty=True), rest, st.sampled_from(["dict", "list", "pair"]))


def build(spec: Any, rng: np.random.Generator) -> Any:
    def leaf(s):
        if isinstance(s, Float):
            values = rng.uniform(0.1, 0.3, s.shape)
            if s.dtype == "complex64":
                values = values + 1j * rng.uniform(0.1, 0.3, s.shape)
            return jnp.asarray(values, dtype=s.dtype)
        kind = s.kind
        if kind == "none":
            return None
        if kind == "key":
            return jax.random.key(int(rng.integers(100)))
        if kind == "key_data":
            return jax.random.key_data(jax.random.key(int(rng.integers(100))))
        if kind == "bool":
            x = rng.integers(0, 2, (3,)).astype(bool)
        elif kind == "scalar_int":
            x = np.int32(rng.integers(-5, 5))
        else:
            x = rng.integers(0, 100, (2,)).astype(kind)
        return x if s.numpy else jnp.asarray(x)

    return jax.tree.map(leaf, spec, is_leaf=lambda s: isinstance(s, (Float, Other)))


def uses_64(spec: Any) -> bool:
    return any((isinstance(s, Float) and s.dtype == "float64") or (isinstance(s, Other) and s.kind == "int64")
               for s in jax.tree.leaves(spec, is_leaf=lambda s: isinstance(s, (Float, Other))))


def is_trainable(x: Any) -> bool:
    return (isinstance(x, (jax.Array, np.ndarray)) and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
            and jnp.issubdtype(x.dtype, jnp.inexact))


def loss_fn(model: Any) -> jax.Array:
    total = jnp.zeros((), jnp.float32)
    for x in jax.tree.leaves(model):
        if is_trainable(x):
            z = x.astype(jnp.complex64) if jnp.iscomplexobj(x) else x.astype(jnp.float32)
            total = total + jnp.sum(jnp.abs(z - 0.5) ** 2)
    return total


def check(name: str, model: Any, opt: Any) -> None:
    given_leaves, given_def = jax.tree.flatten(model)
    out_leaves, out_def = jax.tree.flatten(opt.model)
    assert out_def == given_def
    for i, (old, new) in enumerate(zip(given_leaves, out_leaves)):
        if isinstance(old, jax.Array):
            assert not old.is_deleted(), f"leaf {i}: the caller's array was deleted"
        if not is_trainable(old):
            assert new is old, f"leaf {i} ({type(old).__name__}) was not carried as given"
            continue
        new = np.asarray(new)
        assert new.dtype == old.dtype and new.shape == old.shape
        assert np.isfinite(new).all(), f"leaf {i}: not finite"
        small = name in SMALL_STEPS and jnp.finfo(old.dtype).bits < 32
        if old.size and not small:
            assert not np.array_equal(new, np.asarray(old)), f"leaf {i} ({old.dtype}{old.shape}) did not move"
    trainable = [x for x in given_leaves if is_trainable(x)]
    assert len(jax.tree.leaves(opt.params)) == len(trainable) == len(opt.param_names)


def run(name: str, spec: Any, data_seed: int) -> None:
    cls = getattr(fo.optim, name)
    with jax.enable_x64(uses_64(spec)):
        model = build(spec, np.random.default_rng(data_seed))
        opt = cls(model, **CLASSES[name])
        if name == "LBFGS":
            def closure():
                opt.zero_grad()
                return opt.backward(loss_fn)

            opt.step(closure)
        else:
            opt.backward(loss_fn)
            assert jax.tree.structure(opt.grad) == jax.tree.structure(opt.params)
            opt.step().clear_grad()
        # the loss's gradient is negative on every trainable leaf: these push the same way (a sign-based
        # step such as Lion's would otherwise come back exactly)
        opt(jax.tree.map(lambda x: jnp.full_like(x, -1), opt.params))
        check(name, model, opt)


def test_every_class_is_covered():
    classes = {n for n in fo.optim.__all__ if isinstance(getattr(fo.optim, n), type)
               and issubclass(getattr(fo.optim, n), fo.optim.Optimizer) and n != "Optimizer"}
    assert classes == set(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_mixed_pytrees_through_every_class(name):
    @SETTINGS
    @seed(zlib.crc32(name.encode()))
    @given(spec=model_specs(name), data_seed=st.integers(0, 2**16))
    def search(spec, data_seed):
        run(name, spec, data_seed)

    search()
