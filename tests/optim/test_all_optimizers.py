"""Every stateful optimizer class: the torch loop, the MegEngine loop, state_dict resume, no recompile."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import funcopt as fo
from funcopt._src.state_dtype import STATE_DTYPE_ARGS

# class, constructor keywords (a required lr where the class has no default)
CLASSES = [
    (fo.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (fo.optim.Adam, dict(lr=0.05)),
    (fo.optim.AdamW, dict(lr=0.05)),
    (fo.optim.Adagrad, dict(lr=0.1)),
    (fo.optim.Adadelta, dict(lr=1.0)),
    (fo.optim.Adamax, dict(lr=0.05)),
    (fo.optim.ASGD, dict(lr=0.05)),
    (fo.optim.NAdam, dict(lr=0.05)),
    (fo.optim.RAdam, dict(lr=0.05)),
    (fo.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (fo.optim.Rprop, dict(lr=0.01)),
    (fo.optim.Adafactor, dict(lr=0.05)),
    (fo.optim.Muon, dict(lr=0.05)),
    (fo.optim.LAMB, dict(lr=0.05, weight_decay=0.01)),
    (fo.optim.LARS, dict(lr=0.5, momentum=0.9, weight_decay=1e-4)),
    (fo.optim.Lion, dict(lr=0.01)),
    (fo.optim.Momentum, dict(lr=0.05, momentum=0.9)),
    (fo.optim.FTRL, dict(lr=0.1)),
    (fo.optim.ProximalAdagrad, dict(lr=0.1)),
    (fo.optim.ScheduleFreeAdamW, dict(lr=0.05)),
]
IDS = [c.__name__ for c, _ in CLASSES]


def _model(cls):
    rng = np.random.default_rng(0)
    shapes = {"w1": (4, 3), "w2": (3, 2)} if cls is fo.optim.Muon else {"w1": (4, 3), "b": (3,), "s": ()}
    return {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}


def _loss(params, x):
    return sum(jnp.sum((p - x) ** 2) for p in jax.tree.leaves(params))


def test_every_class_is_listed():
    listed = {c for c, _ in CLASSES}
    exported = {getattr(fo.optim, n) for n in fo.optim.__all__
                if inspect.isclass(getattr(fo.optim, n)) and issubclass(getattr(fo.optim, n), fo.optim.Optimizer)
                and getattr(fo.optim, n) is not fo.optim.Optimizer}
    assert exported - {getattr(fo.optim, "LBFGS", None)} <= listed


@pytest.mark.parametrize("cls, kw", CLASSES, ids=IDS)
def test_torch_closure_loop_decreases_loss(cls, kw):
    opt = cls(_model(cls), **kw)
    x = jnp.asarray(0.5)

    def closure():
        opt.zero_grad()
        return opt.backward(_loss, x)

    losses = [float(opt.step(closure)) for _ in range(30)]
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("cls, kw", CLASSES, ids=IDS)
def test_megengine_chain_and_resume_from_state_dict_is_exact(cls, kw):
    x = jnp.asarray(0.5)
    a = cls(_model(cls), **kw)
    for _ in range(4):
        a.backward(_loss, x)
        a.step().clear_grad()
    b = cls(jax.tree.map(jnp.array, a.params), **kw)
    b.load_state_dict(a.state_dict())
    for _ in range(4):
        for o in (a, b):
            o.backward(_loss, x)
            o.step().clear_grad()
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    sa, sb = a.state_dict(), b.state_dict()
    jax.tree.map(np.testing.assert_array_equal, sa["state"], sb["state"])


@pytest.mark.parametrize("cls, kw", CLASSES, ids=IDS)
def test_lr_change_every_step_never_recompiles(cls, kw, compiles):
    opt = cls(_model(cls), **kw)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), opt.params)
    opt(grads)
    first = len(compiles)
    for i in range(20):
        opt.param_groups[0]["lr"] = kw["lr"] / (i + 2)
        opt(grads)
    assert len(compiles) == first
    assert repr(opt).startswith(cls.__name__ + " (")


TORCH_NAMED = [(c, kw) for c, kw in CLASSES if hasattr(torch.optim, c.__name__)]


@pytest.mark.parametrize("cls, kw", TORCH_NAMED, ids=[c.__name__ for c, _ in TORCH_NAMED])
def test_signature_matches_torch(cls, kw):
    # funcopt's state-dtype options come last, keyword-only, after torch's
    ours = {k: v for k, v in inspect.signature(cls).parameters.items() if k not in STATE_DTYPE_ARGS}
    theirs = inspect.signature(getattr(torch.optim, cls.__name__)).parameters
    assert list(ours) == list(theirs) or set(ours) == set(theirs), (list(ours), list(theirs))
    for name, p in theirs.items():
        if name == "params":
            continue
        assert ours[name].default == p.default, (name, ours[name].default, p.default)
        assert ours[name].kind == p.kind, name
