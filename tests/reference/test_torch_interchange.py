"""torch.optim state_dicts load into funcopt and back, and training continues on torch's trajectory."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import funcopt as fo
from funcopt._src.state_dtype import STATE_DTYPE_ARGS
from tests.reference.harness import make_grads, make_params, precision, tolerance

# (funcopt class, torch class, keyword arguments shared by both)
CASES = [
    (fo.optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    (fo.optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (fo.optim.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    (fo.optim.AdamW, torch.optim.AdamW, dict(lr=0.01, betas=(0.8, 0.9))),
    (fo.optim.Adagrad, torch.optim.Adagrad, dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1)),
    (fo.optim.Adadelta, torch.optim.Adadelta, dict(lr=0.5, rho=0.8, weight_decay=0.01)),
    (fo.optim.Adamax, torch.optim.Adamax, dict(lr=0.01, weight_decay=0.01)),
    (fo.optim.ASGD, torch.optim.ASGD, dict(lr=0.05, t0=3, lambd=1e-3)),
    (fo.optim.NAdam, torch.optim.NAdam, dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
    (fo.optim.RAdam, torch.optim.RAdam, dict(lr=0.01, weight_decay=0.01)),
    (fo.optim.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (fo.optim.Rprop, torch.optim.Rprop, dict(lr=0.01, etas=(0.4, 1.3))),
    (fo.optim.Adafactor, torch.optim.Adafactor, dict(lr=0.01, weight_decay=0.01)),
]


@pytest.fixture(autouse=True)
def _torch_default_dtype(request):
    """torch keeps per-parameter scalars (ASGD's eta, mu) in its default dtype: match the run's precision."""
    dtype = request.node.callspec.params.get("dtype") if hasattr(request.node, "callspec") else None
    old = torch.get_default_dtype()
    if dtype is np.float64:
        torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _to_torch(sd):
    return {"state": {k: {n: torch.as_tensor(v) for n, v in s.items()} for k, s in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def _torch_run(cls, kw, params, grads, tparams=None, opt=None):
    if tparams is None:
        tparams = [torch.nn.Parameter(torch.tensor(np.array(x))) for x in jax.tree.leaves(params)]
        opt = cls(tparams, **kw)
    for g in grads:
        for tp, gl in zip(tparams, jax.tree.leaves(g)):
            tp.grad = torch.tensor(np.array(gl))
        opt.step()
    return tparams, opt


def _ids(case):
    return f"{case[0].__name__}-{sorted(case[2])}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ours_cls, torch_cls, kw", CASES, ids=[_ids(c) for c in CASES])
def test_torch_to_funcopt_continues_torch_trajectory(ours_cls, torch_cls, kw, dtype):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, 10)
        ref, _ = _torch_run(torch_cls, kw, params, grads)
        tparams, topt = _torch_run(torch_cls, kw, params, grads[:5])
        treedef = jax.tree.structure(params)
        ours = ours_cls(treedef.unflatten([jnp.asarray(t.detach().numpy()) for t in tparams]), **kw)
        ours.load_state_dict(topt.state_dict())  # tensors straight from torch
        for g in grads[5:]:
            ours(jax.tree.map(jnp.asarray, g))
        for x, t in zip(jax.tree.leaves(ours.params), ref):
            np.testing.assert_allclose(np.asarray(x), t.detach().numpy(), **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ours_cls, torch_cls, kw", CASES, ids=[_ids(c) for c in CASES])
def test_funcopt_to_torch_continues_the_same_trajectory(ours_cls, torch_cls, kw, dtype):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, 10)
        ref, _ = _torch_run(torch_cls, kw, params, grads)
        ours = ours_cls(jax.tree.map(jnp.asarray, params), **kw)
        for g in grads[:5]:
            ours(jax.tree.map(jnp.asarray, g))
        tparams = [torch.nn.Parameter(torch.tensor(np.array(x))) for x in jax.tree.leaves(ours.params)]
        topt = torch_cls(tparams, **kw)
        topt.load_state_dict(_to_torch(ours.state_dict()))
        _torch_run(torch_cls, kw, params, grads[5:], tparams, topt)
        for t, r in zip(tparams, ref):
            np.testing.assert_allclose(t.detach().numpy(), r.detach().numpy(), **tolerance(dtype))


@pytest.mark.parametrize("ours_cls, torch_cls, kw", CASES, ids=[_ids(c) for c in CASES])
def test_state_dict_matches_torch_field_by_field(ours_cls, torch_cls, kw):
    params = make_params(np.float32)
    grads = make_grads(params, 3)
    tparams, topt = _torch_run(torch_cls, kw, params, grads)
    ours = ours_cls(jax.tree.map(jnp.asarray, params), **kw)
    for g in grads:
        ours(jax.tree.map(jnp.asarray, g))
    a, b = ours.state_dict(), topt.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert set(a["state"][i]) == set(b["state"][i]), i
        for k in a["state"][i]:
            np.testing.assert_allclose(a["state"][i][k], b["state"][i][k].numpy(), rtol=1e-5, atol=1e-6)
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        # funcopt's own options (state dtypes) join torch's keys, at their defaults here
        assert {k: v for k, v in ga.items() if k != "param_names" and k not in STATE_DTYPE_ARGS} == gb
        assert {k: ga[k] for k in STATE_DTYPE_ARGS if k in ga} == {
            k: p.default for k, p in inspect.signature(ours_cls).parameters.items() if k in STATE_DTYPE_ARGS}
