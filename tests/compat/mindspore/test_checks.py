"""MindSpore's documented argument errors: the exception type of each bad argument, raised at construction."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from funcopt.compat import mindspore as ms
from tests.compat.mindspore.references import (
    P,
)

# ------------------------------------------------------------------------------------------ errors



@pytest.mark.parametrize("make, error", [
    (lambda: ms.Momentum(P, None, 0.9), TypeError),  # learning_rate of a wrong type
    (lambda: ms.Momentum(P, object(), 0.9), TypeError),
    (lambda: ms.Momentum(P, "0.1", 0.9), TypeError),
    (lambda: ms.Momentum(P, -0.1, 0.9), ValueError),  # negative
    (lambda: ms.Momentum(P, jnp.ones((2, 2)), 0.9), ValueError),  # a Tensor of more than 1 dimension
    (lambda: ms.Momentum(P, [[0.1, 0.2]], 0.9), ValueError),
    (lambda: ms.Momentum(P, 0.1, 0.9, weight_decay=-0.1), ValueError),  # weight_decay < 0
    (lambda: ms.Momentum(P, 0.1, 0.9, weight_decay="0.1"), TypeError),
    (lambda: ms.Momentum(P, 0.1, 0.9, weight_decay=jnp.asarray(0.1)), TypeError),
    (lambda: ms.Momentum(P, 0.1, 0.9, loss_scale=0.0), ValueError),  # loss_scale <= 0
    (lambda: ms.Momentum(P, 0.1, 0.9, loss_scale=-1.0), ValueError),
    (lambda: ms.Momentum(P, 0.1, 0.9, loss_scale="1"), TypeError),  # loss_scale not a float
    (lambda: ms.Momentum({}, 0.1, 0.9), ValueError),  # empty params
    (lambda: ms.Momentum([], 0.1, 0.9), ValueError),
    (lambda: ms.Momentum(None, 0.1, 0.9), ValueError),
    (lambda: ms.Momentum(3, 0.1, 0.9), TypeError),  # not iterable
    (lambda: ms.Momentum(jnp.ones(2), 0.1, 0.9), TypeError),  # a bare array, not a list of parameters
    (lambda: ms.Momentum({"w": 1.0}, 0.1, 0.9), TypeError),  # an element that is not a parameter
    (lambda: ms.Momentum([{"params": P}, jnp.ones(2)], 0.1, 0.9), TypeError),  # neither Parameter nor dict
    (lambda: ms.Momentum([{"params": P, "momentum": 0.5}], 0.1, 0.9), KeyError),  # a key MindSpore does not parse
    (lambda: ms.Momentum([{"params": {}}], 0.1, 0.9), ValueError),
    (lambda: ms.Momentum([{"params": P}, {"params": {"v": P["w"]}}], 0.1, 0.9), RuntimeError),  # twice
    (lambda: ms.Momentum([{"params": P}, {"order_params": P, "lr": 0.1}], 0.1, 0.9), ValueError),
    (lambda: ms.Momentum([{"params": P}, {"order_params": 3}], 0.1, 0.9), TypeError),
    (lambda: ms.Momentum([{"params": P}, {"order_params": {"w": P["w"], "v": jnp.ones(1)}}], 0.1, 0.9), ValueError),
    (lambda: ms.Momentum([{"params": P, "lr": [0.1, 0.2]}, {"params": {"v": jnp.ones(1)}, "lr": [0.1]}], 0.1,
                         0.9), ValueError),  # 1-D group learning rates of different lengths
    (lambda: ms.Momentum([{"params": P, "grad_centralization": 1}], 0.1, 0.9), TypeError),
    (lambda: ms.Momentum(P, 0.1, 1), TypeError),  # momentum must be a float
    (lambda: ms.Momentum(P, 0.1, -0.9), ValueError),
    (lambda: ms.Momentum(P, 0.1, 0.9, use_nesterov=1), TypeError),
    (lambda: ms.SGD(P, momentum="0.9"), TypeError),
    (lambda: ms.SGD(P, momentum=-0.1), ValueError),
    (lambda: ms.SGD(P, dampening=-0.1), ValueError),
    (lambda: ms.SGD(P, nesterov=True), ValueError),  # Nesterov without momentum
    (lambda: ms.SGD(P, momentum=0.9, dampening=0.1, nesterov=True), ValueError),
    (lambda: ms.SGD(P, weight_decay=ms.WarmUpLR(0.1, 2)), TypeError),  # no dynamic weight decay in SGD
    (lambda: ms.Adam(P, beta1=1.0), ValueError),
    (lambda: ms.Adam(P, beta2=0.0), ValueError),
    (lambda: ms.Adam(P, beta1=1), TypeError),
    (lambda: ms.Adam(P, eps=0.0), ValueError),
    (lambda: ms.Adam(P, eps=1), TypeError),
    (lambda: ms.Adam(P, use_nesterov="yes"), TypeError),
    (lambda: ms.Adam(P, use_lazy=True, use_offload=True), ValueError),
    (lambda: ms.Adam(P, use_amsgrad=True, use_lazy=True), ValueError),
    (lambda: ms.AdamWeightDecay(P, eps=-1e-6), ValueError),
    (lambda: ms.AdaMax(P, beta1=1.5), ValueError),
    (lambda: ms.Adagrad(P, accum=1), TypeError),
    (lambda: ms.Adagrad(P, accum=-0.1), ValueError),
    (lambda: ms.Adagrad(P, update_slots=0), TypeError),
    (lambda: ms.Adadelta(P, rho=1.5), ValueError),
    (lambda: ms.Adadelta(P, epsilon=-1.0), ValueError),
    (lambda: ms.Adadelta(P, rho=1), TypeError),
    (lambda: ms.RMSProp(P, epsilon=0.0), ValueError),
    (lambda: ms.RMSProp(P, decay=-0.9), ValueError),
    (lambda: ms.RMSProp(P, momentum=1), TypeError),
    (lambda: ms.RMSProp(P, centered=1), TypeError),
    (lambda: ms.Rprop(P, etas=[0.5, 1.2]), TypeError),
    (lambda: ms.Rprop(P, etas=(0.5, 1.2, 2.0)), ValueError),
    (lambda: ms.Rprop(P, step_sizes=(1.0, 0.1)), ValueError),
    (lambda: ms.Rprop(P, etas=(1.5, 1.2)), ValueError),
    (lambda: ms.Rprop(P, etas=(0.5, 1.0)), ValueError),
    (lambda: ms.Rprop(P, etas=(0.5, 2)), TypeError),
    (lambda: ms.ASGD(P, lambd=1), TypeError),
    (lambda: ms.FTRL(P, learning_rate=[0.1, 0.2]), ValueError),  # dynamic learning rate
    (lambda: ms.FTRL([{"params": P, "lr": 0.1}]), ValueError),  # group learning rate
    (lambda: ms.FTRL(P, learning_rate=1), TypeError),
    (lambda: ms.FTRL(P, lr_power=0.5), ValueError),
    (lambda: ms.FTRL(P, l1=-0.1), ValueError),
    (lambda: ms.FTRL(P, initial_accum=1), TypeError),
    (lambda: ms.ProximalAdagrad(P, l2=-1.0), ValueError),
    (lambda: ms.ProximalAdagrad(P, use_locking=0), TypeError),
    (lambda: ms.Lamb(P, 0.1, eps=0.0), ValueError),
])
def test_documented_errors(make, error):
    with pytest.raises(error):
        make()
