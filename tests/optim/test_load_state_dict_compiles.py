"""Loading a state dict of unchanged shapes and dtypes compiles nothing (checked with ``jax.log_compiles``)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo


class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        if "compil" in record.getMessage().lower():
            self.messages.append(record.getMessage())


def _compiles(fn):
    handler, log = _Compiles(), logging.getLogger("jax")
    log.addHandler(handler)
    try:
        with jax.log_compiles():
            fn()
    finally:
        log.removeHandler(handler)
    return handler.messages


def test_the_compile_detector_sees_a_compile():
    assert _compiles(lambda: jax.jit(lambda x: x * 3.0 + 1.0)(jnp.arange(5.0)).block_until_ready())


@pytest.mark.parametrize("cls, kw", [(fo.optim.Adam, {}), (fo.optim.SGD, {"momentum": 0.9}), (fo.optim.LAMB, {})])
def test_load_state_dict_with_unchanged_shapes_compiles_nothing(cls, kw):
    params = {"a": jnp.ones((3, 2)), "b": jnp.zeros(4), "h": jnp.ones(3, jnp.bfloat16)}
    grads = jax.tree.map(jnp.ones_like, params)
    opt = cls(params, lr=0.1, **kw)
    opt(grads)
    saved = opt.state_dict()
    opt(grads)
    opt.load_state_dict(saved)  # the first load may build what later loads reuse
    opt(grads)
    saved = opt.state_dict()
    opt(grads)
    assert _compiles(lambda: opt.load_state_dict(saved)) == []
    jax.tree.map(np.testing.assert_array_equal, opt.state_dict()["state"], saved["state"])  # and it did load


@pytest.mark.parametrize("cls, kw", [(fo.optim.Adam, {}), (fo.optim.SGD, {"momentum": 0.9}), (fo.optim.LAMB, {})])
def test_the_step_and_backward_after_such_a_load_compile_nothing(cls, kw):
    params = {"a": jnp.ones((3, 2)), "b": jnp.zeros(4)}
    opt = cls(params, lr=0.1, **kw)

    def loss(p, x):
        return jnp.sum(p["a"] * x) + jnp.sum(p["b"] ** 2)

    def train():
        opt.zero_grad()
        opt.backward(loss, x)
        opt.step()

    x = jnp.float32(2.0)
    train()
    opt.load_state_dict(opt.state_dict())  # the first load may build what later loads reuse
    train()
    saved = opt.state_dict()
    saved["param_groups"][0]["lr"] = 0.05  # a new value of a traced hyperparameter
    before = jax.tree.map(jnp.array, opt.params)
    assert _compiles(lambda: opt.load_state_dict(saved)) == []
    assert _compiles(train) == []
    assert opt.param_groups[0]["lr"] == 0.05
    # the kept step runs on the loaded numbers: as an optimizer built afresh and given the same dict
    fresh = cls(before, lr=0.1, **kw)
    fresh.load_state_dict(saved)
    fresh.backward(loss, x)
    fresh.step()
    jax.tree.map(np.testing.assert_array_equal, opt.params, fresh.params)
