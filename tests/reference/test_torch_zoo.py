"""Trajectory and state parity of the torch.optim family beyond SGD/Adam with real torch.optim.

Covers fo.adagrad, adadelta, adamax, asgd, nadam, radam, rmsprop and rprop: every
option torch has on and off (all pairs of option values, so every flag meets every
other flag both ways), nonzero weight decay and maximize, 25 steps on the harness
pytree, float32 and float64, trajectory and per-parameter state field by field,
plus complex parameters, hyperparameters changed mid-run and the defaults.

ASGD's ``eta``/``mu`` and NAdam's ``mu_product`` are per-parameter scalars that
torch keeps in its default dtype; funcopt keeps them in the parameter's precision.
The 64-bit runs therefore set torch's default dtype to float64 (JAX's x64 mode
and torch's default dtype are the same switch), and
``test_float64_params_with_float32_torch_scalars`` bounds the difference torch's
float32 default makes.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
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

# Optimizers whose torch state holds per-parameter scalars in torch's default dtype.
SCALAR_STATE = {"asgd", "nadam"}


# Every pair of values of any two (two-valued) options occurs in some row: a pairwise covering array.
_PAIRWISE_ROWS = ((0, 0, 0, 0), (0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0))


def _pairwise(**options) -> list[dict]:
    """Option combinations covering every pair of values of every two options (2 to 4 options)."""
    names = list(options)
    assert 2 <= len(names) <= 4 and all(len(v) == 2 for v in options.values())
    rows = _PAIRWISE_ROWS if len(names) == 4 else _PAIRWISE_ROWS[:4]
    cases = [{k: options[k][r[i]] for i, k in enumerate(names)} for r in rows]
    for a, b in itertools.combinations(names, 2):
        seen = {(repr(c[a]), repr(c[b])) for c in cases}
        assert len(seen) == 4, (a, b)
    return cases


def _cases() -> dict[str, tuple[type, list[dict]]]:
    # Each table turns every option on and off (weight decay nonzero, maximize, the flags
    # deciding which state exists), with the numeric options away from their defaults in
    # some rows; the last entries add the options the pairwise rows leave at one value.
    return {
        "adagrad": (torch.optim.Adagrad, [
            dict(lr=0.05, **kw) for kw in _pairwise(
                lr_decay=[0.0, 0.02], weight_decay=[0.0, 0.05], initial_accumulator_value=[0.0, 0.1],
                maximize=[False, True])
        ] + [dict(eps=1e-3)]),
        "adadelta": (torch.optim.Adadelta, [
            dict(lr=0.5, **kw) for kw in _pairwise(
                rho=[0.9, 0.5], weight_decay=[0.0, 0.05], maximize=[False, True])
        ] + [dict(eps=1e-3)]),
        "adamax": (torch.optim.Adamax, [
            dict(lr=0.01, **kw) for kw in _pairwise(
                betas=[(0.9, 0.999), (0.4, 0.8)], weight_decay=[0.0, 0.05], maximize=[False, True])
        ] + [dict(eps=1e-2)]),
        "asgd": (torch.optim.ASGD, [
            dict(lr=0.05, **kw) for kw in _pairwise(
                lambd=[1e-4, 0.05], t0=[1e6, 10.0], weight_decay=[0.0, 0.05], maximize=[False, True])
        ] + [dict(alpha=0.5, t0=3.0, lambd=0.1)]),
        "nadam": (torch.optim.NAdam, [
            dict(lr=0.01, **kw) for kw in _pairwise(
                betas=[(0.9, 0.999), (0.8, 0.95)], weight_decay=[0.0, 0.1],
                decoupled_weight_decay=[False, True], maximize=[False, True])
        ] + [dict(momentum_decay=0.05, eps=1e-3, weight_decay=0.1, decoupled_weight_decay=True)]),
        "radam": (torch.optim.RAdam, [
            dict(lr=0.01, **kw) for kw in _pairwise(
                betas=[(0.9, 0.999), (0.8, 0.9)], weight_decay=[0.0, 0.1],
                decoupled_weight_decay=[False, True], maximize=[False, True])
        ] + [dict(betas=(0.5, 0.5)), dict(eps=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
             # rho_5 is just under 5 (4.9976, 4.99964), so torch does not rectify step 5; float32
             # arithmetic on the textbook formula gives 5.02 for the first, and 5.002 for the second
             # even with 1 - beta2**t computed accurately.
             dict(lr=0.01, betas=(0.9, 0.9994)), dict(lr=0.01, betas=(0.9, 0.99991))]),
        "rmsprop": (torch.optim.RMSprop, [
            dict(lr=0.01, alpha=0.9, **kw) for kw in _pairwise(
                momentum=[0.0, 0.9], centered=[False, True], weight_decay=[0.0, 0.05],
                maximize=[False, True])
        ] + [dict(alpha=0.3, momentum=0.5, eps=1e-3)]),
        "rprop": (torch.optim.Rprop, [
            dict(lr=0.01, **kw) for kw in _pairwise(
                etas=[(0.5, 1.2), (0.3, 2.0)], step_sizes=[(1e-6, 50), (4e-3, 0.03)],
                maximize=[False, True])
        ]),
    }


ZOO = _cases()
CASES = [(name, kw) for name, (_, cases) in ZOO.items() for kw in cases]


def _case_id(case) -> str:
    name, kw = case if isinstance(case, tuple) else (None, case)
    body = ",".join(f"{k}={v}" for k, v in kw.items())
    return f"{name}[{body}]" if name else body


@contextlib.contextmanager
def torch_default_dtype(dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _torch_scalars_like(name: str, dtype):
    """torch's default dtype matching funcopt's precision for per-parameter scalars."""
    wide = np.finfo(np.dtype(dtype)).bits >= 64
    return torch_default_dtype(torch.float64 if wide and name in SCALAR_STATE else torch.float32)


def _check_state(name, state, opt, tparams, dtype):
    torch_names = set(opt.state[tparams[0]]) - {"step"}
    assert set(state.slots) == torch_names, (name, sorted(state.slots), sorted(torch_names))
    assert_state_close(state, opt, tparams, dtype)
    assert int(state.step) == int(opt.state[tparams[0]]["step"]) == STEPS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_torch(case, dtype):
    name, kw = case
    tcls = ZOO[name][0]
    with precision(dtype), _torch_scalars_like(name, dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(getattr(fo, name)(**kw), params, grads)
        theirs, opt, tparams = run_torch(lambda p: tcls(p, **kw), params, grads)
        assert_trajectories_close(ours, theirs, dtype)
        _check_state(name, state, opt, tparams, dtype)


# One case per optimizer with its options on, for complex parameters.
COMPLEX_CASES = {
    "adagrad": dict(lr=0.05, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1),
    "adadelta": dict(lr=0.5, weight_decay=0.05, maximize=True),
    "adamax": dict(lr=0.01, weight_decay=0.05),
    "asgd": dict(lr=0.05, lambd=0.05, t0=10.0, weight_decay=0.05),
    "nadam": dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "radam": dict(lr=0.01, weight_decay=0.1),
    "rmsprop": dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.05),
    "rprop": dict(lr=0.01, step_sizes=(1e-3, 0.05), maximize=True),
}


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("name", sorted(COMPLEX_CASES))
def test_complex_params_match_torch(name, dtype):
    kw = COMPLEX_CASES[name]
    tcls = ZOO[name][0]
    with precision(dtype), _torch_scalars_like(name, dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = run_funcopt(getattr(fo, name)(**kw), params, grads)
        theirs, opt, tparams = run_torch(lambda p: tcls(p, **kw), params, grads)
        assert_trajectories_close(ours, theirs, dtype)
        _check_state(name, state, opt, tparams, dtype)
        for slot, tree in state.slots.items():
            for x, tp in zip(jax.tree.leaves(tree), tparams):
                assert np.iscomplexobj(x) == torch.is_complex(opt.state[tp][slot]), slot


@pytest.mark.parametrize("name", sorted(SCALAR_STATE))
def test_float64_params_with_float32_torch_scalars(name):
    """Under torch's float32 default, the scalars round to float32 each step: a bounded difference."""
    kw = COMPLEX_CASES[name]
    tcls = ZOO[name][0]
    with precision(np.float64), torch_default_dtype(torch.float32):
        params = make_params(np.float64)
        grads = make_grads(params, STEPS)
        ours, _ = run_funcopt(getattr(fo, name)(**kw), params, grads)
        theirs, opt, tparams = run_torch(lambda p: tcls(p, **kw), params, grads)
        assert opt.state[tparams[0]]["mu_product" if name == "nadam" else "eta"].dtype == torch.float32
        for a, b in zip(ours, theirs):
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


# Hyperparameters changed after step 10, through set_hparams here and param_groups in torch.
CHANGES = {
    "adagrad": (dict(lr=0.05, lr_decay=0.01), dict(lr=0.2, lr_decay=0.1, eps=1e-3, weight_decay=0.1)),
    "adadelta": (dict(), dict(lr=0.3, rho=0.5, eps=1e-4, weight_decay=0.1)),
    "adamax": (dict(), dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1)),
    # eta was computed from the old lr at step 10; the new one enters from step 11's eta on.
    "asgd": (dict(lr=0.05, t0=5.0), dict(lr=0.1, lambd=0.01, alpha=0.5, t0=8.0, weight_decay=0.1)),
    "nadam": (dict(), dict(lr=0.05, betas=(0.8, 0.9), momentum_decay=0.05, weight_decay=0.1)),
    "radam": (dict(), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1)),
    # momentum set to 0: torch stops updating the buffer it created at the start.
    "rmsprop": (dict(momentum=0.9, centered=True), dict(lr=0.05, alpha=0.5, momentum=0.0, weight_decay=0.1)),
    # torch reads lr only when it creates the step sizes: changing it later does nothing.
    "rprop": (dict(), dict(lr=1.0, etas=(0.3, 1.5), step_sizes=(1e-3, 0.02))),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_hparams_changed_mid_run_match_torch(name):
    dtype = np.float64
    first, later = CHANGES[name]
    tcls = ZOO[name][0]
    with precision(dtype), _torch_scalars_like(name, dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        tx = getattr(fo, name)(**first)

        @jax.jit
        def step(p, state, g):
            updates, state = tx.update(g, state, p)
            return fo.apply_updates(p, updates), state

        p = jax.tree.map(jnp.asarray, params)
        state = tx.init(p)
        tparams = [torch.nn.Parameter(torch.tensor(np.array(x))) for x in jax.tree.leaves(params)]
        opt = tcls(tparams, **first)
        for i, g in enumerate(grads):
            if i == 10:
                state = fo.set_hparams(state, **later)
                opt.param_groups[0].update(later)
            p, state = step(p, state, jax.tree.map(jnp.asarray, g))
            for tp, gl in zip(tparams, jax.tree.leaves(g)):
                tp.grad = torch.tensor(np.array(gl))
            opt.step()
            ours = jax.tree.map(np.asarray, p)
            theirs = jax.tree.structure(params).unflatten([tp.detach().numpy() for tp in tparams])
            assert_trajectories_close([ours], [theirs], dtype)
        _check_state(name, state, opt, tparams, dtype)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_defaults_match_torch_signature(name):
    tcls = ZOO[name][0]
    ours = {k: v for k, v in inspect.signature(getattr(fo, name)).parameters.items() if k not in STATE_DTYPE_ARGS}
    theirs = inspect.signature(tcls).parameters
    assert set(ours) <= set(theirs), f"fo.{name} has keywords torch lacks: {set(ours) - set(theirs)}"
    for k in ours:
        assert ours[k].default == theirs[k].default, (k, ours[k].default, theirs[k].default)
        assert type(ours[k].default) is type(theirs[k].default), (k, ours[k].default, theirs[k].default)
    # torch's options that are not about CPU/GPU execution are all here.
    execution = {"params", "foreach", "capturable", "differentiable", "fused"}
    assert set(theirs) - execution == set(ours), (name, set(theirs) - execution - set(ours))
    # Positional arguments bind to the same names as in torch (after torch's ``params``).
    positional = [k for k, v in ours.items() if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    torch_positional = [k for k, v in theirs.items() if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == torch_positional[1:len(positional) + 1]
