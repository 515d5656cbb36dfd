"""How ``backward``'s program reads the storage: copy-free gradients and kernels shared between leaves.

A large leaf with unit dimensions (a 1x1 convolution kernel) is stored without them.

A loss that reshapes a ``(out, in, 1, 1)`` kernel to a matrix gets its gradient from a matrix product;
written back in the 4-D shape as the output of ``backward``'s program, XLA:CPU adds a whole copy of that
gradient (a layout change between two layouts of the same bytes). Stored as ``(out, in)``, the gradient is
the product's output itself. These tests guard that design through the compiled program (no copy of a
gradient) and check that nothing the user sees changes: the leaf views, gradients, state_dict and the
numbers of a per-leaf optimizer.

The packed leaves are cut from their buffer at offsets given to the program as arguments, so that the
computations of leaves of one shape are the same and XLA:CPU compiles one kernel for all of them (as for the
leaves of a per-leaf program); at constant offsets each leaf's computations were distinct kernels, a compile
time growing with the leaves at tens of milliseconds each.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt._src import packing
from tests.optim import internals


@pytest.fixture
def limit8(monkeypatch):
    monkeypatch.setattr(packing, "MAX_PACKED_SIZE", 8)


def _tree():
    rng = np.random.default_rng(0)
    return {"conv": jnp.asarray(rng.standard_normal((16, 12, 1, 1)), jnp.float32),  # kept, unit dimensions
            "fc": jnp.asarray(rng.standard_normal((1, 12, 5)), jnp.float32),  # kept, a leading unit dimension
            "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}  # packed


X = jnp.asarray(np.random.default_rng(1).standard_normal((8, 12)), jnp.float32)


def _loss(p, x):
    w = p["conv"].reshape(p["conv"].shape[0], -1)
    y = jnp.tanh(x @ w.T)
    z = x @ p["fc"].reshape(12, 5)
    return jnp.mean(y ** 2) + jnp.mean(jnp.sin(z)) + jnp.sum(p["b"] ** 2)


def _entry_ops(text: str) -> list[str]:
    entry = text[text.index("ENTRY"):]
    return re.findall(r"= \S+ ([\w-]+)\(", entry)


def test_kept_leaves_are_stored_without_unit_dimensions(limit8):
    opt = fo.optim.Adam(_tree(), lr=0.1)
    assert sorted(x.shape for x in internals.storage(opt)) == [(4,), (12, 5), (16, 12)]
    assert {k: v.shape for k, v in opt.params.items()} == {"b": (4,), "conv": (16, 12, 1, 1), "fc": (1, 12, 5)}
    opt.backward(_loss, X)
    assert {k: v.shape for k, v in opt.grad.items()} == {"b": (4,), "conv": (16, 12, 1, 1), "fc": (1, 12, 5)}
    assert {k: v.shape for k, v in opt.state_dict()["state"][1].items()} == {"step": (), "exp_avg": (16, 12, 1, 1),
                                                                             "exp_avg_sq": (16, 12, 1, 1)}


def test_backward_writes_no_copy_of_a_gradient(limit8):
    """The compiled ``backward`` returns each kept gradient as its matrix product wrote it (no copy op)."""
    opt = fo.optim.Adam(_tree(), lr=0.1)
    ops = _entry_ops(internals.lowered_backward(opt, _loss, X).compile().as_text())
    assert ops.count("dot") >= 2 and "copy" not in ops, ops
    # the fused copies XLA:CPU wraps are named after them: none either
    text = internals.lowered_backward(opt, _loss, X).compile().as_text()
    assert "wrapped_copy" not in text[text.index("ENTRY"):]


def test_same_numbers_as_per_leaf_storage(limit8):
    """Gradients, steps, state_dict and a load into a fresh optimizer match the per-leaf layout bit for bit."""
    per_leaf_cls = type("PerLeafAdam", (fo.optim.Adam,), {"elementwise": False})
    opts = [fo.optim.Adam(_tree(), lr=0.1, weight_decay=0.01), per_leaf_cls(_tree(), lr=0.1, weight_decay=0.01)]
    for opt in opts:
        for i in range(3):
            opt.zero_grad(set_to_none=i != 1)
            opt.backward(_loss, X * (i + 1))
            opt.backward(_loss, X)  # accumulates into the stored gradient
            opt.step()
        opt({"conv": jnp.ones((16, 12, 1, 1)), "fc": None, "b": jnp.ones(4)})  # a missing gradient
    a, b = opts
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    jax.tree.map(np.testing.assert_array_equal, a.grad, b.grad)
    jax.tree.map(np.testing.assert_array_equal, a.state_dict()["state"], b.state_dict()["state"])
    fresh = fo.optim.Adam(_tree(), lr=0.1, weight_decay=0.01)
    fresh.load_state_dict(a.state_dict())
    fresh.params = a.params
    jax.tree.map(np.testing.assert_array_equal, fresh.state_dict()["state"], a.state_dict()["state"])
    for opt in (fresh, a):
        opt.zero_grad()
        opt.backward(_loss, X)
        opt.step()
    jax.tree.map(np.testing.assert_array_equal, fresh.state_dict()["state"], a.state_dict()["state"])


def _distinct_kernels(text: str) -> int:
    """How many different fused computations the program calls, up to names (what XLA:CPU compiles)."""
    entry = text[text.index("ENTRY"):]
    called = set(re.findall(r"calls=(%?[\w.\-]+)", entry))
    bodies = set()
    for m in re.finditer(r"\n(%?[\w.\-]+) \((.*?)\) -> (.*?) \{\n(.*?)\n\}", text, re.S):
        if m.group(1) in called:
            body = re.sub(r"%[\w.\-]+", "%v", re.sub(r", metadata=\{[^}]*\}", "", m.group(4)))
            bodies.add((re.sub(r"[\w.\-]+:", "", m.group(2)), m.group(3), body))
    return len(bodies)


def test_backward_kernels_do_not_grow_with_same_shape_leaves():
    """20 or 40 packed leaves of one shape: the same few distinct kernels (a constant offset each: 23 and 43)."""
    def loss(p, x):
        return sum(jnp.mean(jnp.tanh(x * v) ** 2) for v in jax.tree.leaves(p))

    counts = []
    for n in (20, 40):
        opt = fo.optim.Adam({f"l{i:03d}": jnp.full((16,), 0.5 + i) for i in range(n)}, lr=0.1)
        assert internals.is_packed(opt)
        counts.append(_distinct_kernels(internals.lowered_backward(opt, loss, jnp.ones(16)).compile().as_text()))
        # and the gradients are the leaves' own (d/dv of mean(tanh(v) ** 2))
        opt.backward(loss, jnp.ones(16))
        v = 0.5 + np.arange(n, dtype=np.float32)[:, None] * np.ones(16, np.float32)
        want = 2 * np.tanh(v) * (1 - np.tanh(v) ** 2) / 16
        np.testing.assert_allclose(np.stack([opt.grad[f"l{i:03d}"] for i in range(n)]), want, rtol=1e-5, atol=1e-7)
    assert counts[0] == counts[1] <= 6, counts
