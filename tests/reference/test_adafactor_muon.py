"""Trajectory and state parity of fo.adafactor / fo.muon with real torch.optim.Adafactor / Muon.

torch.optim.Muon runs its Newton-Schulz iteration in bfloat16, where the
accumulation order of a matrix product (which differs between CPU kernels)
can move a result by one bfloat16 ulp. The optimizer is therefore checked in
three parts: the whole trajectory with the iteration replaced on both sides by
the same full-precision function (exact parity of everything around it), the
bfloat16 iteration itself against torch's function, and the real end-to-end
trajectory at a bfloat16-level tolerance.
"""

import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.optim._muon as torch_muon_module

import funcopt as fo
from tests.reference.harness import (
    SharedRuns,
    assert_trajectories_close,
    make_grads,
    make_params,
    precision,
    run_funcopt,
    run_funcopt_many,
    run_torch,
    tolerance,
)

STEPS = 25
DTYPES = [np.float32, np.float64]
muon_module = importlib.import_module("funcopt.optimizers.muon")


def _assert_slots_match_torch(state, opt, tparams, params, dtype, names):
    """Each slot leaf equals torch's state of the same name, with torch's exact shape; None where absent."""
    tol = tolerance(dtype)
    treedef = jax.tree.structure(params)
    for name in names:
        leaves = treedef.flatten_up_to(state.slots[name])
        for i, (ours, tp) in enumerate(zip(leaves, tparams)):
            theirs = opt.state[tp].get(name)
            if theirs is None:
                assert ours is None, f"param {i} has {name} that torch does not keep"
                continue
            assert ours is not None, f"param {i} lacks {name}"
            theirs = theirs.detach().numpy()
            assert tuple(np.shape(ours)) == theirs.shape, (name, i, np.shape(ours), theirs.shape)
            assert np.asarray(ours).dtype == theirs.dtype, (name, i)
            np.testing.assert_allclose(np.asarray(ours), theirs, err_msg=f"state {name} of param {i}", **tol)


# ----------------------------------------------------------------------------------------------- adafactor

def _adafactor_cases():
    yield {}
    yield dict(lr=0.3)  # rho_t = min(lr, 1/sqrt(t)) switches branch mid-run
    yield dict(weight_decay=0.1, lr=0.05)
    yield dict(maximize=True)
    yield dict(eps=(0.5, 1e-3))  # an explicit eps1 large enough for both floors to bind
    yield dict(eps=(None, 2.0))  # eps2 above the parameters' RMS
    yield dict(d=1.5, beta2_decay=-0.5)
    yield dict(lr=0.2, beta2_decay=-0.3, eps=(1e-2, 0.5), d=1.2, weight_decay=0.02, maximize=True)


ADAFACTOR_CASES = list(_adafactor_cases())
# every case of a dtype steps in one compiled program (the cases share parameters and gradients)
_ADAFACTOR_RUNS = SharedRuns(
    lambda params, grads, dtype: run_funcopt_many([fo.adafactor(**kw) for kw in ADAFACTOR_CASES], params, grads))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", ADAFACTOR_CASES, ids=str)
def test_adafactor_matches_torch(kw, dtype):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS)
        ours, state = _ADAFACTOR_RUNS.get((np.dtype(dtype).name,), ADAFACTOR_CASES.index(kw), params, grads)
        theirs, opt, tparams = run_torch(lambda p: torch.optim.Adafactor(p, **kw), params, grads)
        assert_trajectories_close(ours, theirs, dtype)
        _assert_slots_match_torch(state, opt, tparams, params, dtype, ("row_var", "col_var", "variance"))
        assert int(state.step) == int(opt.state[tparams[0]]["step"]) == STEPS


@pytest.mark.parametrize("dtype", DTYPES)
def test_adafactor_default_eps1_is_the_dtype_epsilon(dtype):
    # Gradients of 1e-9 put the variance far below eps1**2 for float32 (not for float64),
    # so the step depends on which epsilon the None default resolves to.
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, STEPS, scale=1e-9)
        ours, _ = run_funcopt(fo.adafactor(lr=0.1), params, grads)
        theirs, _, _ = run_torch(lambda p: torch.optim.Adafactor(p, lr=0.1), params, grads)
        assert_trajectories_close(ours, theirs, dtype)
        other_eps = float(np.finfo(np.float64 if dtype == np.float32 else np.float32).eps)
        other, _ = run_funcopt(fo.adafactor(lr=0.1, eps=(other_eps, 1e-3)), params, grads)
        assert not np.allclose(other[-1]["dense"]["bias"], ours[-1]["dense"]["bias"], rtol=1e-3)


def test_adafactor_default_eps1_follows_the_first_parameter_dtype():
    # torch resolves eps1 once per step from the first parameter; a float64 first leaf sets it for a
    # float32 leaf too.
    with precision(np.float64):
        rng = np.random.default_rng(3)
        params = (rng.standard_normal((3, 2)), rng.standard_normal(4).astype(np.float32))
        grads = [(rng.standard_normal((3, 2)) * 1e-9, (rng.standard_normal(4) * 1e-9).astype(np.float32))
                 for _ in range(STEPS)]
        ours, _ = run_funcopt(fo.adafactor(lr=0.1), params, grads)
        theirs, _, _ = run_torch(lambda p: torch.optim.Adafactor(p, lr=0.1), params, grads)
        for step, (a, b) in enumerate(zip(ours, theirs)):
            np.testing.assert_allclose(a[0], b[0], rtol=1e-10, atol=1e-12, err_msg=f"step {step + 1}")
            assert a[1].dtype == np.float32
            np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6, err_msg=f"step {step + 1}")


def test_adafactor_state_layout_and_hparams():
    params = {"w": jnp.ones((4, 3)), "t": jnp.ones((2, 4, 3)), "b": jnp.ones(3), "s": jnp.ones(())}
    state = fo.adafactor().init(params)
    assert state.slots["row_var"]["w"].shape == (4, 1)
    assert state.slots["col_var"]["w"].shape == (1, 3)
    assert state.slots["row_var"]["t"].shape == (2, 4, 1)
    assert state.slots["col_var"]["t"].shape == (2, 1, 3)
    assert state.slots["variance"]["b"].shape == (3,)
    assert state.slots["variance"]["s"].shape == ()
    assert state.slots["variance"]["w"] is None and state.slots["row_var"]["b"] is None
    eps = fo.get_hparams(state)["eps"]
    assert eps[0] is None and float(eps[1]) == pytest.approx(1e-3)
    # The None default stays None; replacing it with a number would change the state's structure.
    state2 = fo.set_hparams(state, eps=(None, 1e-2))
    assert float(fo.get_hparams(state2)["eps"][1]) == pytest.approx(1e-2)
    with pytest.raises(ValueError):
        fo.set_hparams(state, eps=(1e-30, 1e-2))


def test_adafactor_lr_change_does_not_retrace_and_schedules_apply():
    tx = fo.adafactor(lr=0.05)
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.full(2, -0.5)}
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(1)
        u, s = tx.update(grads, s, p)
        return fo.apply_updates(p, u), s

    state = tx.init(params)
    p1, s1 = step(params, state)
    p2, _ = step(params, fo.set_hparams(state, lr=0.01))
    assert len(traces) == 1
    assert not np.allclose(p1["w"], p2["w"])
    # a schedule gives the same first step as the constant it starts at
    sched = fo.adafactor(lr=lambda count: 0.05 * 0.5 ** count)
    u, s = sched.update(grads, sched.init(params), params)
    np.testing.assert_allclose(fo.apply_updates(params, u)["w"], p1["w"], rtol=1e-6)
    u2, _ = sched.update(grads, s, params)
    u_const, _ = tx.update(grads, fo.set_hparams(s1, lr=0.025), params)
    np.testing.assert_allclose(u2["w"], u_const["w"], rtol=1e-6)


# (keyword arguments, exception type) that torch rejects at construction
_ADAFACTOR_BAD = [
    (dict(lr=-0.1), ValueError),
    (dict(beta2_decay=0.5), ValueError),
    (dict(eps=(-1.0, 1e-3)), ValueError),
    (dict(eps=(None, -1e-3)), ValueError),
    (dict(d=0.5), ValueError),
    (dict(weight_decay=-1.0), ValueError),
]


@pytest.mark.parametrize("kw, exc", _ADAFACTOR_BAD, ids=str)
def test_adafactor_validation_matches_torch(kw, exc):
    with pytest.raises(exc) as theirs:
        torch.optim.Adafactor([torch.zeros(2, requires_grad=True)], **kw)
    with pytest.raises(exc) as ours:
        fo.adafactor(**kw)
    assert str(ours.value) == str(theirs.value)


def test_adafactor_rejects_complex_and_missing_params():
    with pytest.raises(RuntimeError, match="Adafactor does not support complex parameters"):
        fo.adafactor().init({"w": jnp.ones(2, jnp.complex64)})
    tx = fo.adafactor()
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="params must be given"):
        tx.update(params, tx.init(params))


# ----------------------------------------------------------------------------------------------- muon

MUON_SHAPES = {"a": (4, 3), "b": (3, 5), "c": (1, 1), "d": (2, 2), "e": (5, 1)}


def _muon_cases():
    base = dict(lr=0.02)
    yield base
    yield dict(base, nesterov=False)
    yield dict(base, momentum=0.0)
    yield dict(base, momentum=0.0, nesterov=False)
    yield dict(base, weight_decay=0.0)
    yield dict(base, weight_decay=0.3)
    yield dict(base, adjust_lr_fn="original")
    yield dict(base, adjust_lr_fn="match_rms_adamw")
    yield dict(base, ns_steps=3)
    yield dict(base, ns_steps=0)
    yield dict(base, ns_coefficients=(15 / 8, -10 / 8, 3 / 8))
    yield dict(base, eps=5.0)  # above the Frobenius norm of some directions: the floor binds
    yield dict(lr=0.05, momentum=0.8, nesterov=False, weight_decay=0.05, ns_steps=4,
               ns_coefficients=(2.0, -1.5, 0.5), eps=1e-4, adjust_lr_fn="match_rms_adamw")


def _exact_ns_jax(update, ns_coefficients, ns_steps, eps):
    a, b, c = ns_coefficients
    x = update.T if update.shape[0] > update.shape[1] else update
    x = x / jnp.maximum(jnp.sqrt(jnp.sum(x * x)), eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if update.shape[0] > update.shape[1] else x


def _exact_ns_torch(grad, ns_coefficients, ns_steps, eps):
    a, b, c = ns_coefficients
    x = grad.T if grad.size(0) > grad.size(1) else grad
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if grad.size(0) > grad.size(1) else x


MUON_CASES = list(_muon_cases())


def _muon_runs() -> SharedRuns:
    return SharedRuns(
        lambda params, grads, dtype: run_funcopt_many([fo.muon(**kw) for kw in MUON_CASES], params, grads))


# one compiled program per dtype for all cases: with both sides' orthogonalization replaced (the
# replacement is in place while the first case traces it), and as it is
_MUON_SHARED_RUNS, _MUON_RUNS = _muon_runs(), _muon_runs()


def _run_muon(kw, dtype, runs):
    params = make_params(dtype, shapes=MUON_SHAPES)
    grads = make_grads(params, STEPS)
    ours, state = runs.get((np.dtype(dtype).name,), MUON_CASES.index(kw), params, grads)
    theirs, opt, tparams = run_torch(lambda p: torch.optim.Muon(p, **kw), params, grads)
    return params, ours, state, theirs, opt, tparams


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", MUON_CASES, ids=str)
def test_muon_matches_torch_with_a_shared_orthogonalization(kw, dtype, monkeypatch):
    monkeypatch.setattr(muon_module, "_zeropower_via_newtonschulz", _exact_ns_jax)
    monkeypatch.setattr(torch_muon_module, "_zeropower_via_newtonschulz", _exact_ns_torch)
    with precision(dtype):
        params, ours, state, theirs, opt, tparams = _run_muon(kw, dtype, _MUON_SHARED_RUNS)
        assert_trajectories_close(ours, theirs, dtype)
        _assert_slots_match_torch(state, opt, tparams, params, dtype, ("momentum_buffer",))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", MUON_CASES, ids=str)
def test_muon_matches_torch_end_to_end(kw, dtype):
    with precision(dtype):
        params, ours, state, theirs, opt, tparams = _run_muon(kw, dtype, _MUON_RUNS)
        # The momentum does not depend on the orthogonalization: exact parity.
        _assert_slots_match_torch(state, opt, tparams, params, dtype, ("momentum_buffer",))
        # Parameters: each step moves by lr * ratio * O with |O| of order 1, computed in bfloat16;
        # allow a few bfloat16 ulps of that per step, and require most entries to agree to float precision.
        tol = tolerance(dtype)
        ratio = max(np.sqrt(max(r, c)) for r, c in MUON_SHAPES.values())
        atol = STEPS * kw["lr"] * ratio * 4 * 2.0**-8
        close = total = 0
        for a, b in zip(ours, theirs):
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                assert x.dtype == y.dtype
                np.testing.assert_allclose(x, y, rtol=0, atol=atol)
                close += int(np.isclose(x, y, **tol).sum())
                total += x.size
        assert close >= 0.9 * total, (close, total)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps, coefficients", [(5, muon_module.DEFAULT_NS_COEFFICIENTS),
                                                 (3, (2.0, -1.5, 0.5))])
def test_muon_newton_schulz_matches_torch_bfloat16(steps, coefficients, dtype):
    shapes = [(4, 3), (3, 4), (2, 2), (1, 1), (1, 5), (6, 2), (8, 8), (16, 5), (32, 7)]
    rng = np.random.default_rng(7)
    with precision(dtype):
        # one program orthogonalizes one matrix of every shape (the same function, traced per shape):
        # the matrices, drawn in the order below, are run in 12 calls of one of each shape
        ns = jax.jit(lambda gs: [muon_module._zeropower_via_newtonschulz(
            g, tuple(jnp.asarray(c) for c in coefficients), steps, jnp.asarray(1e-7)) for g in gs])
        identical = 0
        cases = [(shape, scale) for shape in shapes for scale in (1e-3, 1.0, 50.0) for _ in range(4)]
        drawn = [(rng.standard_normal(shape) * scale).astype(dtype) for shape, scale in cases]
        per_shape = len(cases) // len(shapes)
        results = [None] * len(cases)
        for k in range(per_shape):
            batch = list(range(k, len(cases), per_shape))  # one case of every shape
            for i, out in zip(batch, ns([jnp.asarray(drawn[i]) for i in batch])):
                results[i] = np.asarray(out, np.float64)
        for g, ours in zip(drawn, results):
            theirs = torch_muon_module._zeropower_via_newtonschulz(
                torch.tensor(g), coefficients, steps, 1e-7).double().numpy()
            # every entry within a few bfloat16 ulps, most matrices bit for bit
            np.testing.assert_allclose(ours, theirs, rtol=2.0**-6, atol=2.0**-8 * np.abs(theirs).max())
            identical += int(np.array_equal(ours, theirs))
        assert identical >= 0.9 * len(cases), (identical, len(cases))


def test_muon_orthogonalizes():
    g = jax.random.normal(jax.random.PRNGKey(0), (6, 4))
    # one compiled program rather than one per operation
    o = jax.jit(lambda g: muon_module._zeropower_via_newtonschulz(g, muon_module.DEFAULT_NS_COEFFICIENTS, 5, 1e-7))(g)
    singular = np.linalg.svd(np.asarray(o), compute_uv=False)
    # Keller Jordan's coefficients land the singular values roughly in [0.7, 1.2]
    assert singular.min() > 0.6 and singular.max() < 1.25, singular


_MUON_BAD = [
    (dict(lr=-0.1), ValueError),
    (dict(momentum=-0.5), ValueError),
    (dict(weight_decay=-0.1), ValueError),
    (dict(adjust_lr_fn="bogus"), ValueError),
]


@pytest.mark.parametrize("kw, exc", _MUON_BAD, ids=str)
def test_muon_validation_matches_torch(kw, exc):
    with pytest.raises(exc) as theirs:
        torch.optim.Muon([torch.zeros(2, 2, requires_grad=True)], **kw)
    with pytest.raises(exc) as ours:
        fo.muon(**kw)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("kw", [dict(ns_steps=100), dict(ns_coefficients=(1.0, 2.0))], ids=str)
def test_muon_step_time_errors_raised_at_construction(kw):
    # torch raises these on the first step; funcopt raises them before anything runs.
    p = torch.zeros(2, 2, requires_grad=True)
    p.grad = torch.ones(2, 2)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Muon([p], **kw).step()
    with pytest.raises(ValueError) as ours:
        fo.muon(**kw)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("shape", [(3,), (), (2, 2, 2)])
def test_muon_rejects_non_matrix_parameters(shape):
    with pytest.raises(ValueError) as theirs:
        torch.optim.Muon([torch.zeros(shape, requires_grad=True)])
    with pytest.raises(ValueError) as ours:
        fo.muon().init({"w": jnp.zeros(shape)})
    prefix = "Muon only supports 2D parameters whereas we found a parameter with size: "
    assert str(theirs.value).startswith(prefix) and str(ours.value) == prefix + str(shape)


def test_muon_rejects_complex_parameters():
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        fo.muon().init({"w": jnp.zeros((2, 2), jnp.complex64)})


def test_muon_weight_decay_needs_params_and_zero_decay_does_not():
    params = {"w": jnp.ones((2, 3))}
    tx = fo.muon()
    with pytest.raises(ValueError, match="params must be given"):
        tx.update(params, tx.init(params))
    tx0 = fo.muon(weight_decay=0.0)
    u_without, _ = tx0.update(params, tx0.init(params))
    u_with, _ = tx0.update(params, tx0.init(params), params)
    np.testing.assert_array_equal(u_without["w"], u_with["w"])


# ----------------------------------------------------------------------------------------------- signatures

@pytest.mark.parametrize("name, tcls", [("adafactor", torch.optim.Adafactor), ("muon", torch.optim.Muon)])
def test_defaults_match_torch_signature(name, tcls):
    ours = inspect.signature(getattr(fo, name)).parameters
    theirs = inspect.signature(tcls).parameters
    assert set(ours) <= set(theirs), f"fo.{name} has keywords torch lacks: {set(ours) - set(theirs)}"
    assert set(theirs) - set(ours) <= {"params", "foreach"}, set(theirs) - set(ours)
    for k in ours:
        assert ours[k].default == theirs[k].default, (k, ours[k].default, theirs[k].default)
        assert (ours[k].kind == inspect.Parameter.KEYWORD_ONLY) == \
            (theirs[k].kind == inspect.Parameter.KEYWORD_ONLY), k


def test_every_muon_option_is_exercised():
    cases = list(_muon_cases())
    defaults = {k: v.default for k, v in inspect.signature(fo.muon).parameters.items()}
    for k, default in defaults.items():
        assert any(case.get(k, default) != default for case in cases), f"no case changes {k}"
    assert {case.get("adjust_lr_fn") for case in cases} == {None, "original", "match_rms_adamw"}
    cases = list(_adafactor_cases())
    defaults = {k: v.default for k, v in inspect.signature(fo.adafactor).parameters.items()}
    for k, default in defaults.items():
        assert any(case.get(k, default) != default for case in cases), f"no case changes {k}"

