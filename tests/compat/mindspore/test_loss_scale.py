"""MindSpore's loss-scale managers against MindSpore's update rule, and their update cells in funcopt.loss_scaled."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import mindspore as ms

# ------------------------------------------------------------------------------------------ loss scale


def test_fixed_loss_scale_manager():
    manager = ms.FixedLossScaleManager()
    assert manager.get_loss_scale() == 128.0 and manager.get_drop_overflow_update() is True
    manager.update_loss_scale(True)
    assert manager.get_loss_scale() == 128.0
    cell = manager.get_update_cell()
    assert isinstance(cell, fo.StaticLossScale) and float(cell.loss_scale) == 128.0
    # drop_overflow_update=False: the optimizer is given the same loss_scale and divides by it
    manager = ms.FixedLossScaleManager(1024.0, False)
    assert manager.get_update_cell() is None
    opt = ms.Momentum({"w": jnp.zeros(1)}, 0.1, 0.9, loss_scale=manager.get_loss_scale())
    opt({"w": jnp.full(1, 1024.0)})
    np.testing.assert_allclose(opt.parameters["w"], -0.1)
    with pytest.raises(ValueError):
        ms.FixedLossScaleManager(0.5)


def mindspore_dynamic_manager(overflows, init, factor, window):
    """DynamicLossScaleManager.update_loss_scale as MindSpore writes it."""
    scale, cur_iter, last_overflow, out = init, 1, 0, []
    for overflow in overflows:
        if overflow:
            scale = max(scale / factor, 1)
            last_overflow = cur_iter
        elif (cur_iter - last_overflow) % window == 0:
            scale *= factor
        cur_iter += 1
        out.append(scale)
    return out


def test_dynamic_loss_scale_manager_follows_mindspore():
    rng = np.random.default_rng(0)
    overflows = list(rng.random(300) < 0.15)
    manager = ms.DynamicLossScaleManager(init_loss_scale=2**10, scale_factor=2, scale_window=5)
    got = []
    for overflow in overflows:
        manager.update_loss_scale(bool(overflow))
        got.append(manager.get_loss_scale())
    assert got == mindspore_dynamic_manager(overflows, 2**10, 2, 5)
    assert manager.get_drop_overflow_update() is True
    assert isinstance(manager.get_update_cell(), fo.DynamicLossScale)
    assert ms.DynamicLossScaleManager().get_loss_scale() == 2.0**24


def test_dynamic_loss_scale_manager_errors():
    with pytest.raises(ValueError):
        ms.DynamicLossScaleManager(init_loss_scale=0.5)
    with pytest.raises(ValueError):
        ms.DynamicLossScaleManager(scale_factor=0)
    with pytest.raises(ValueError):
        ms.DynamicLossScaleManager(scale_window=0)
    with pytest.raises(TypeError):
        ms.DynamicLossScaleManager(scale_window=2.5)
    manager = ms.DynamicLossScaleManager(init_loss_scale=4)
    for _ in range(1000):
        manager.update_loss_scale(True)
    with pytest.raises(RuntimeError):
        manager.update_loss_scale(True)


def test_update_cell_drives_loss_scaled():
    manager = ms.DynamicLossScaleManager(init_loss_scale=2.0**8, scale_window=3)
    tx = fo.loss_scaled(fo.momentum(lr=0.1, momentum=0.9), manager.get_update_cell())
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    grads = {"w": jnp.asarray([jnp.inf, 1.0])}
    updates, state = tx.update(grads, state, params)
    np.testing.assert_array_equal(updates["w"], 0.0)
    assert float(fo.get_loss_scale(state).loss_scale) == 2.0**7
