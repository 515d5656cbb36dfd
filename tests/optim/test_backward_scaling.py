"""Guards of the stateful backward's design (no timings): its gradient is linear in the number of leaves.

The leaves ``backward`` hands to the loss are views of the packed flat buffers. If each
view were a ``lax.slice``, its transpose would pad the leaf's cotangent to the whole
buffer and the gradient would add N buffer-sized arrays: (leaves x buffer size) work,
which made backward + step 13x slower than optax at 400 leaves. The views are one
``lax.split`` per buffer, whose transpose is one concatenate. These tests lower (not run)
the jitted backward for 50..400 small leaves and check the program's cost and its ops.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import funcopt as fo
from tests.optim import internals

SIZES = (50, 100, 200, 400)


def _loss(p, x):
    return sum(jnp.sum(v * x) for v in jax.tree.leaves(p))


def _tree(n):
    return {f"l{i:04d}": jnp.full((4,), 0.5 + i, jnp.float32) for i in range(n)}


def _lowered_backward(opt, *args):
    """The jitted backward ``opt.backward(_loss, *args)`` would run, lowered for its current arguments."""
    return internals.lowered_backward(opt, _loss, *args)


def _cost(lowered):
    text = lowered.as_text()
    return lowered.cost_analysis()["flops"], text.count("stablehlo.pad"), text.count("stablehlo.concatenate")


def _assert_linear(costs):
    flops = {n: c[0] for n, c in costs.items()}
    # linear: 4x the leaves is ~4x the work; (leaves x buffer) would be ~16x
    assert flops[400] / flops[100] < 5.5, flops
    assert flops[200] / flops[50] < 5.5, flops
    for n, (_, pads, concats) in costs.items():
        assert pads == 0, (n, pads)  # no leaf's cotangent is padded to the buffer
        assert 1 <= concats <= n, (n, concats)  # packed by concatenation


def test_backward_of_packed_params_is_linear_in_the_leaves():
    x = jnp.float32(2.0)
    _assert_linear({n: _cost(_lowered_backward(fo.optim.Adam(_tree(n), lr=0.1), x)) for n in SIZES})


class _Stack(eqx.Module):
    ws: list

    def __init__(self, n):
        self.ws = [jnp.full((4,), 0.5 + i, jnp.float32) for i in range(n)]


def test_backward_of_a_model_is_linear_in_the_leaves():
    x = jnp.float32(2.0)
    _assert_linear({n: _cost(_lowered_backward(fo.optim.Adam(_Stack(n), lr=0.1), x)) for n in SIZES})


def test_split_views_give_the_gradients_of_slice_views_bit_for_bit():
    rng = np.random.default_rng(0)
    shapes = [(3, 5), (), (7,), (0,), (2, 2, 2), (11,)]
    params = {f"p{i}": jnp.asarray(rng.standard_normal(s), jnp.float32) for i, s in enumerate(shapes)}
    params["h"] = jnp.asarray(rng.standard_normal(6), jnp.bfloat16)  # a second buffer
    x = jnp.asarray(rng.standard_normal(), jnp.float32)

    def loss(p, x):
        return sum(jnp.sum(jnp.sin(v.astype(jnp.float32) * x) ** 2) for v in jax.tree.leaves(p))

    opt = fo.optim.SGD(params, lr=0.1)
    layout, storage = internals.layout(opt), internals.storage(opt)
    treedef = jax.tree.structure(params)

    def by_slices(buffers):  # the per-leaf static slices the views replaced
        return [jax.lax.slice(buffers[b], (off,), (off + size,)).reshape(shape)
                for (b, off, size), shape in zip(layout.where, layout.shapes)]

    want = jax.jit(jax.grad(lambda s: loss(treedef.unflatten(by_slices(s)), x)))(storage)
    assert opt.backward(loss, x).dtype == jnp.float32
    for got, ref in zip(opt.grad_storage()[0], want):
        np.testing.assert_array_equal(np.asarray(got).view(np.uint8), np.asarray(ref).view(np.uint8))
    # and the leaves of the view are the leaves
    jax.tree.map(np.testing.assert_array_equal, opt.params, params)
