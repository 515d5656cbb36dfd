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
