"""SGD(fused=True): one native pass per packed CPU buffer, following torch.optim.SGD and funcopt's XLA step.

Tolerances: the kernel computes funcopt.sgd's formula in its order with each operation rounded
once (tests/_src/native/test_fused_sgd.py checks it bit for bit). XLA:CPU's step contracts each
multiply-add into a fused multiply-add and torch's fused kernel uses its vectorized fmadd in places,
so the three agree to float rounding: per step at most one rounding per multiply-add, which over
the 40 steps here stays within rtol 1e-5 / atol 1e-6 in float32 and rtol 1e-12 / atol 1e-13 in
float64 (of parameters and buffers of order 1).
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import funcopt as fo
from funcopt._src import native
from tests.optim import internals
from tests.reference.harness import precision

STEPS = 40
SHAPES = [(4, 3), (5,), (2, 2, 2), ()]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _trajectory(dtype, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _torch_step(topt, tparams, grads):
    for tp, g in zip(tparams, grads):
        tp.grad = torch.tensor(g)
    topt.step()


CASES = [
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.8, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=0.02, momentum=0.5, dampening=0.5, weight_decay=0.1, maximize=True),
    dict(lr=0.05, momentum=0.95, nesterov=True, maximize=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_fused_follows_torch_fused_torch_foreach_and_the_xla_step(kw, dtype):
    tol = TOL[dtype]
    with precision(dtype):
        params, grads = _trajectory(dtype)
        fused = fo.optim.SGD([jnp.asarray(p) for p in params], fused=True, **kw)
        plain = fo.optim.SGD([jnp.asarray(p) for p in params], **kw)
        assert internals.runs_native(fused) and not internals.runs_native(plain)
        torch_runs = {}
        for how in ("fused", "foreach"):
            tparams = [torch.nn.Parameter(torch.tensor(p)) for p in params]
            torch_runs[how] = (tparams, torch.optim.SGD(tparams, **{how: True}, **kw))
        for step, g in enumerate(grads, start=1):
            fused([jnp.asarray(x) for x in g])
            plain([jnp.asarray(x) for x in g])
            for tparams, topt in torch_runs.values():
                _torch_step(topt, tparams, g)
            for i, (a, b) in enumerate(zip(fused.params, plain.params)):
                assert a.dtype == dtype and a.shape == SHAPES[i]
                np.testing.assert_allclose(a, b, err_msg=f"XLA's step, step {step}, param {i}", **tol)
                for how, (tparams, _) in torch_runs.items():
                    np.testing.assert_allclose(a, tparams[i].detach().numpy(), err_msg=f"torch {how}, step {step}, "
                                               f"param {i}", **tol)
        ours = fused.state_dict()["state"]
        for how, (_, topt) in torch_runs.items():
            theirs = topt.state_dict()["state"]
            for i in range(len(SHAPES)):
                assert set(ours[i]) == set(theirs[i]) == {"momentum_buffer"}
                np.testing.assert_allclose(ours[i]["momentum_buffer"], theirs[i]["momentum_buffer"].numpy(),
                                           err_msg=f"torch {how}, buffer {i}", **tol)


def _compiled_text(opt):
    return internals.step_hlo(opt)


def test_fused_step_is_one_native_call_per_buffer_in_place():
    opt = fo.optim.SGD({"w": jnp.ones((64, 32)), "b": jnp.zeros(32)}, lr=0.1, momentum=0.9, fused=True)
    opt.zero_grad(set_to_none=False)
    opt.step()
    text = _compiled_text(opt)
    assert text.count("funcopt_fused_sgd_f32") == 1 and "funcopt_fused_adam" not in text  # one buffer, one call
    with precision(np.float64):
        mixed = fo.optim.SGD([jnp.ones(3, jnp.float32), jnp.ones(2, jnp.float64)], momentum=0.9, fused=True)
        mixed.zero_grad(set_to_none=False)
        text = _compiled_text(mixed)
        assert text.count("funcopt_fused_sgd_f32") == 1 and text.count("funcopt_fused_sgd_f64") == 1
    internals.assert_step_writes_in_place(opt, ["momentum_buffer"])


def test_hyperparameter_edits_do_not_compile_and_fused_can_be_switched(compiles):
    params, grads = _trajectory(np.float32, steps=9)
    kw = dict(lr=0.1, momentum=0.9)
    opt = fo.optim.SGD([jnp.asarray(p) for p in params], fused=True, **kw)
    ref = fo.optim.SGD([jnp.asarray(p) for p in params], **kw)
    per_step = []
    for i, g in enumerate(grads):
        for o in (opt, ref):
            o.param_groups[0]["lr"] = 0.1 / (i + 1)
            o.param_groups[0]["momentum"] = [0.9, 0.5, 0.7][i % 3]
            o.param_groups[0]["dampening"] = [0.0, 0.2][i % 2]
            o.param_groups[0]["weight_decay"] = [0.01, 0.0, 0.3][i % 3]
        opt.param_groups[0]["fused"] = i < 7  # the last two steps leave the kernel
        before = len(compiles)
        opt([jnp.asarray(x) for x in g])
        per_step.append(len(compiles) - before)
        ref([jnp.asarray(x) for x in g])
        for a, b in zip(opt.params, ref.params):
            np.testing.assert_allclose(a, b, **TOL[np.float32])
    assert not internals.runs_native(opt)
    assert per_step[1:7] == [0] * 6, per_step  # lr, momentum, dampening, weight decay edits: nothing compiled
    assert per_step[7] > 0  # turning fused off builds XLA's step


def test_state_dict_round_trip_with_torch():
    params, grads = _trajectory(np.float32, steps=12)
    kw = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)
    tparams = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    topt = torch.optim.SGD(tparams, fused=True, **kw)
    for g in grads[:4]:  # torch first
        _torch_step(topt, tparams, g)
    ours = fo.optim.SGD([jnp.asarray(t.detach().numpy()) for t in tparams], fused=True, **kw)
    ours.load_state_dict(topt.state_dict())
    assert internals.runs_native(ours)
    for g in grads[4:8]:  # then funcopt from torch's state, and torch on
        ours([jnp.asarray(x) for x in g])
        _torch_step(topt, tparams, g)
    for a, t in zip(ours.params, tparams):
        np.testing.assert_allclose(a, t.detach().numpy(), **TOL[np.float32])
    back = [torch.nn.Parameter(torch.tensor(np.asarray(a))) for a in ours.params]  # then torch from ours
    tback = torch.optim.SGD(back, fused=True, **kw)
    tback.load_state_dict(fo.optim.to_torch(ours.state_dict()))
    for g in grads[8:]:
        ours([jnp.asarray(x) for x in g])
        _torch_step(tback, back, g)
        _torch_step(topt, tparams, g)
    for a, b, t in zip(ours.params, back, tparams):
        np.testing.assert_allclose(a, b.detach().numpy(), **TOL[np.float32])
        np.testing.assert_allclose(a, t.detach().numpy(), **TOL[np.float32])


def test_a_fresh_momentum_buffer_starts_as_the_gradient_after_a_load():
    # torch's state without a buffer (no step taken yet) loads as a fresh one: the next step starts it
    params, grads = _trajectory(np.float32, steps=3)
    kw = dict(lr=0.1, momentum=0.9, dampening=0.5)
    tparams = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    topt = torch.optim.SGD(tparams, fused=True, **kw)
    ours = fo.optim.SGD([jnp.asarray(p) for p in params], fused=True, **kw)
    ours.load_state_dict(topt.state_dict())
    for g in grads:
        ours([jnp.asarray(x) for x in g])
        _torch_step(topt, tparams, g)
    for a, t in zip(ours.params, tparams):
        np.testing.assert_allclose(a, t.detach().numpy(), **TOL[np.float32])


def test_groups_the_kernel_does_not_cover_keep_xlas_step():
    params = [jnp.ones(3)]
    assert internals.runs_native(fo.optim.SGD(params, momentum=0.9, fused=True))
    assert not internals.runs_native(fo.optim.SGD(params, lr=0.1, fused=True))  # no momentum: one XLA loop already
    assert not internals.runs_native(fo.optim.SGD(params, momentum=0.9))  # fused=None: XLA
    assert not internals.runs_native(fo.optim.SGD([jnp.ones(3, jnp.bfloat16)], momentum=0.9, fused=True))
    assert not internals.runs_native(fo.optim.SGD(params, momentum=0.9, mu_dtype=jnp.bfloat16, fused=True))
    assert not internals.runs_native(fo.optim.SGD(params, momentum=0.9, state_dtype=jnp.bfloat16,
                                                  state_rounding="stochastic", fused=True))
    assert not internals.runs_native(fo.optim.SGD(params, lr=lambda step: 0.1, momentum=0.9, fused=True))  # a schedule

    class Other(fo.optim.SGD):  # another rule under SGD's class: the kernel computes SGD's
        factory = staticmethod(fo.adagrad)
        signature = None

    assert not internals.runs_native(Other(params, fused=True))


def test_momentum_leaving_zero_switches_the_kernel_on_and_off():
    params, grads = _trajectory(np.float32, steps=4)
    opt = fo.optim.SGD([jnp.asarray(p) for p in params], lr=0.1, fused=True)
    ref = fo.optim.SGD([jnp.asarray(p) for p in params], lr=0.1)
    assert not internals.runs_native(opt)
    for i, g in enumerate(grads):
        for o in (opt, ref):
            o.param_groups[0]["momentum"] = [0.0, 0.9, 0.9, 0.0][i]
        opt([jnp.asarray(x) for x in g])
        ref([jnp.asarray(x) for x in g])
        assert internals.runs_native(opt) == (i in (1, 2))
        for a, b in zip(opt.params, ref.params):
            np.testing.assert_allclose(a, b, **TOL[np.float32])


def test_without_the_kernel_fused_true_warns_and_runs_xlas_step(monkeypatch):
    monkeypatch.setattr(native, "_state", {"error": "no C++ compiler found (install one, or name it in CXX)"})
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found.*runs XLA's step"):
        opt = fo.optim.SGD([jnp.ones(2)], lr=0.1, momentum=0.9, fused=True)
    assert opt.param_groups[0]["fused"] is True and not internals.runs_native(opt)
    ref = fo.optim.SGD([jnp.ones(2)], lr=0.1, momentum=0.9)
    for _ in range(2):
        opt([jnp.ones(2)])
        ref([jnp.ones(2)])
    np.testing.assert_array_equal(opt.params[0], ref.params[0])
