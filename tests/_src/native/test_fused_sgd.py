"""funcopt._src.native.fused_sgd: funcopt.sgd's arithmetic, in its order, in one pass over a buffer.

The reference is numpy: each operation rounded once, in funcopt.sgd's order. The kernel is built
with ``-ffp-contract=off`` (no fused multiply-add), so it must match bit for bit; XLA:CPU's own
step contracts multiply-add pairs into FMAs and is compared with the kernel in
tests/optim/test_fused_sgd.py, to float rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcopt._src import native
from tests.reference.harness import precision

# larger than two of the kernel's per-thread chunks (65536), and odd: the split over threads is uneven
N = 2 * 65536 + 4099


@pytest.fixture(scope="module", autouse=True)
def kernel():
    assert native.native_error() is None, native.native_error()


def _reference(p, g, b, lr, momentum, dampening, weight_decay, first, nesterov, maximize):
    """funcopt.sgd's leaf update in numpy, the hyperparameters cast to the buffers' dtype first."""
    t = p.dtype.type
    lr, momentum, dampening, weight_decay = t(lr), t(momentum), t(dampening), t(weight_decay)
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + weight_decay * p
    b = g if first else momentum * b + (t(1) - dampening) * g
    d = g + momentum * b if nesterov else b
    return p + (-lr) * d, b


CASES = [  # lr, momentum, dampening, weight_decay, step, nesterov, maximize
    (0.1, 0.9, 0.0, 0.0, 1, False, False),
    (0.1, 0.9, 0.0, 0.0, 7, False, False),
    (0.03, 0.8, 0.25, 0.0, 5, False, False),
    (0.03, 0.8, 0.25, 0.1, 1, False, True),
    (0.05, 0.7, 0.5, 0.01, 3, False, True),
    (0.05, 0.9, 0.0, 0.02, 2, True, False),
    (0.05, 0.9, 0.0, 0.0, 1, True, True),
    (0.01, 0.99, 0.0, 0.3, 9, True, True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lr, momentum, dampening, weight_decay, step, nesterov, maximize", CASES)
def test_kernel_is_funcopt_sgds_formula_bit_for_bit(dtype, lr, momentum, dampening, weight_decay, step,
                                                    nesterov, maximize):
    rng = np.random.default_rng(step)
    p, g, b = (rng.standard_normal(N).astype(dtype) for _ in range(3))
    with precision(dtype):
        fn = jax.jit(native.fused_sgd, static_argnames=("nesterov", "maximize"), donate_argnums=(0, 2))
        new_p, new_b = fn(jnp.asarray(p), jnp.asarray(g), jnp.asarray(b), lr, momentum, dampening, weight_decay,
                          step, nesterov=nesterov, maximize=maximize)
        assert new_p.dtype == dtype and new_b.dtype == dtype and new_p.shape == (N,)
    ref_p, ref_b = _reference(p, g, b, lr, momentum, dampening, weight_decay, step == 1, nesterov, maximize)
    np.testing.assert_array_equal(np.asarray(new_b), ref_b)
    np.testing.assert_array_equal(np.asarray(new_p), ref_p)


def test_without_donation_the_inputs_stay_as_they_were():
    rng = np.random.default_rng(0)
    p, g, b = (jnp.asarray(rng.standard_normal(N).astype(np.float32)) for _ in range(3))
    kept = [np.array(x) for x in (p, g, b)]
    new_p, new_b = jax.jit(native.fused_sgd)(p, g, b, 0.1, 0.9, 0.0, 0.0, 2)
    for x, k in zip((p, g, b), kept):
        assert not x.is_deleted()
        np.testing.assert_array_equal(np.asarray(x), k)
    ref_p, ref_b = _reference(*kept, 0.1, 0.9, 0.0, 0.0, False, False, False)
    np.testing.assert_array_equal(np.asarray(new_p), ref_p)
    np.testing.assert_array_equal(np.asarray(new_b), ref_b)


def test_scalars_are_traced_values(compiles):
    fn = jax.jit(native.fused_sgd)
    p, g, b = jnp.ones(5), jnp.full(5, 2.0), jnp.ones(5)
    fn(p, g, b, 0.1, 0.9, 0.0, 0.0, 2)
    before = len(compiles)
    for lr, momentum, dampening, weight_decay, step in [(0.5, 0.5, 0.5, 0.5, 1), (0.2, 0.0, 0.1, 0.0, 3)]:
        new_p, new_b = fn(p, g, b, lr, momentum, dampening, weight_decay, step)
        ref_p, ref_b = _reference(np.ones(5, np.float32), np.full(5, 2.0, np.float32), np.ones(5, np.float32),
                                  lr, momentum, dampening, weight_decay, step == 1, False, False)
        np.testing.assert_array_equal(np.asarray(new_p), ref_p)
        np.testing.assert_array_equal(np.asarray(new_b), ref_b)
    assert len(compiles) == before


def test_a_kernel_for_each_float_dtype():
    assert native.supports(np.float32) and native.supports(np.float64)
    assert not native.supports(jnp.bfloat16) and not native.supports(np.float16)
