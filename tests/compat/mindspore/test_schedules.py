"""MindSpore's LearningRateSchedule classes and dynamic_lr functions, against MindSpore's documented examples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcopt.compat import mindspore as ms

# ------------------------------------------------------------------------------------------ schedules


def test_learning_rate_schedule_documented_examples():
    global_step = jnp.asarray(2, jnp.int32)
    printed = [(ms.ExponentialDecayLR(0.1, 0.9, 4), 0.09486833), (ms.NaturalExpDecayLR(0.1, 0.9, 4, True), 0.1),
               (ms.InverseDecayLR(0.1, 0.9, 4), 0.06896552), (ms.CosineDecayLR(0.01, 0.1, 4), 0.055),
               (ms.PolynomialDecayLR(0.1, 0.01, 4, 0.5), 0.07363961), (ms.WarmUpLR(0.1, 2), 0.1)]
    for sched, value in printed:
        out = sched(global_step)
        assert isinstance(sched, ms.LearningRateSchedule)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(float(out), value, rtol=1e-6)
        np.testing.assert_allclose(float(jax.jit(sched)(global_step)), value, rtol=1e-6)
    with pytest.raises(TypeError):
        ms.ExponentialDecayLR(1, 0.9, 4)
    with pytest.raises(ValueError):
        ms.WarmUpLR(0.1, 0)


def test_dynamic_lr_functions_documented_examples():
    assert ms.piecewise_constant_lr([2, 5, 10], [0.1, 0.05, 0.01]) == [0.1, 0.1, 0.05, 0.05, 0.05, 0.01, 0.01, 0.01,
                                                                       0.01, 0.01]
    np.testing.assert_allclose(ms.exponential_decay_lr(0.1, 0.9, 6, 2, 1), [0.1, 0.1, 0.09, 0.09, 0.081, 0.081])
    np.testing.assert_allclose(ms.natural_exp_decay_lr(0.1, 0.9, 6, 2, 2, True),
                               [0.1, 0.1, 0.1, 0.1, 0.016529888822158657, 0.016529888822158657])
    np.testing.assert_allclose(ms.inverse_decay_lr(0.1, 0.5, 6, 1, 1, True),
                               [0.1, 0.06666666666666667, 0.05, 0.04, 0.03333333333333333, 0.028571428571428574])
    np.testing.assert_allclose(ms.cosine_decay_lr(0.01, 0.1, 6, 2, 2), [0.1, 0.1, 0.055, 0.055, 0.01, 0.01])
    np.testing.assert_allclose(ms.polynomial_decay_lr(0.1, 0.01, 6, 2, 2, 0.5),
                               [0.1, 0.1, 0.07363961030678928, 0.07363961030678928, 0.01, 0.01])
    np.testing.assert_allclose(ms.warmup_lr(0.1, 6, 2, 2), [0.0, 0.0, 0.05, 0.05, 0.1, 0.1])
    assert ms.dynamic_lr.warmup_lr is ms.warmup_lr


def test_dynamic_lr_list_drives_the_optimizer():
    lrs = ms.cosine_decay_lr(0.01, 0.1, 8, 2, 4)
    opt = ms.Momentum({"w": jnp.zeros(1)}, lrs, 0.0)
    for t in range(10):
        assert float(opt.get_lr()) == pytest.approx(lrs[min(t, 7)])
        opt({"w": jnp.ones(1)})
