"""Trajectory and state parity of fo.sgd / fo.adam / fo.adamw with real torch.optim."""

import inspect
import itertools

import numpy as np
import pytest
import torch

import funcopt as fo
from funcopt._src.state_dtype import STATE_DTYPE_ARGS
from tests.reference.harness import (
    assert_state_close,
    assert_trajectories_close,
    make_grads,
    make_params,
    precision,
    run_funcopt,
    run_torch,
)

STEPS = 25
DTYPES = [np.float32, np.float64]


def _sgd_cases():
    for momentum, dampening, nesterov, wd, maximize in itertools.product(
        [0.0, 0.9], [0.0, 0.3], [False, True], [0.0, 0.05], [False, True]
    ):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        yield dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov,
                   weight_decay=wd, maximize=maximize)


def _adam_cases():
    for amsgrad, wd, maximize, decoupled in itertools.product(
        [False, True], [0.0, 0.1], [False, True], [False, True]
    ):
        yield dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd, amsgrad=amsgrad,
                   maximize=maximize, decoupled_weight_decay=decoupled)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", list(_sgd_cases()), ids=str)
def test_sgd_matches_torch(kw, dtype):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(fo.sgd(**kw), params, grads)
        theirs, opt, tparams = run_torch(lambda p: torch.optim.SGD(p, **kw), params, grads)
        assert_trajectories_close(ours, theirs, dtype)
        if kw["momentum"]:
            assert_state_close(state, opt, tparams, dtype)
        else:
            assert state.slots == {}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", list(_adam_cases()), ids=str)
def test_adam_matches_torch(kw, dtype):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(fo.adam(**kw), params, grads)
        theirs, opt, tparams = run_torch(lambda p: torch.optim.Adam(p, **kw), params, grads)
        assert_trajectories_close(ours, theirs, dtype)
        assert_state_close(state, opt, tparams, dtype)
        assert int(state.step) == int(opt.state[tparams[0]]["step"]) == STEPS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_matches_torch(amsgrad, dtype):
    kw = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.3, amsgrad=amsgrad)
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(fo.adamw(**kw), params, grads)
        theirs, opt, tparams = run_torch(lambda p: torch.optim.AdamW(p, **kw), params, grads)
        assert_trajectories_close(ours, theirs, dtype)
        assert_state_close(state, opt, tparams, dtype)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_complex_params_match_torch(name, dtype):
    kw = dict(lr=0.03, momentum=0.9, weight_decay=0.01) if name == "sgd" else dict(lr=0.03, amsgrad=True)
    tcls = torch.optim.SGD if name == "sgd" else torch.optim.Adam
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, _ = run_funcopt(getattr(fo, name)(**kw), params, grads)
        theirs, _, _ = run_torch(lambda p: tcls(p, **kw), params, grads)
        assert_trajectories_close(ours, theirs, dtype)


@pytest.mark.parametrize("name, tcls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                        ("adamw", torch.optim.AdamW)])
def test_defaults_match_torch_signature(name, tcls):
    ours = {k: v for k, v in inspect.signature(getattr(fo, name)).parameters.items() if k not in STATE_DTYPE_ARGS}
    theirs = inspect.signature(tcls).parameters
    shared = [k for k in ours if k in theirs]
    assert len(shared) == len(ours), f"fo.{name} has keywords torch lacks: {set(ours) - set(theirs)}"
    for k in shared:
        assert ours[k].default == theirs[k].default, (k, ours[k].default, theirs[k].default)
