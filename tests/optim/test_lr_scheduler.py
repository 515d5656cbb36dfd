"""fo.optim.lr_scheduler against torch.optim.lr_scheduler driving a real torch optimizer.

Every scheduler runs 310 steps on three param groups with different lrs; at each step the
scheduler's ``get_last_lr()`` and the groups' lrs (and momentum / betas where cycled) are compared
with torch's bit for bit, and every 10 steps the float64 parameters (rtol 1e-10), which shows the
values reached the compiled step. The scheduler state_dicts are compared key by key. In the restore variants the funcopt
optimizer and scheduler are rebuilt at step 150 and loaded from a state_dict (our own or
torch's) while torch runs on uninterrupted; the three variants of a schedule share the torch run and
the first 150 steps (one computation, each variant still its own test).
"""

from __future__ import annotations

import copy
import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as TS

import funcopt as fo
from funcopt.optim import lr_scheduler as FS
from tests.optim import internals

LRS = (0.1, 0.03, 0.5)
STEPS = 310
RESTORE_AT = 150
N_GROUPS = len(LRS)
# lrs and momenta are Python floats computed by the same operations in the same order as torch's, so
# they are compared bit for bit (stricter than rtol 1e-12: a closed form in place of torch's recursion
# agrees to ~1e-15 and would pass a tolerance)
RTOL = 0.0
PARAM_RTOL = 1e-10  # float64 parameters


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------- two optimizers fed the same numbers


def _initial_params(n_groups=N_GROUPS):
    return [{"s": np.asarray(0.5 * i), "w": np.full((2,), 1.0 + i)} for i in range(n_groups)]


def _fixed_grads(n_groups=N_GROUPS):
    """One gradient per group, different between groups (a loss linear in the parameters)."""
    rng = np.random.default_rng(0)
    return [{"s": rng.standard_normal(()), "w": rng.standard_normal(2)} for _ in range(n_groups)]


def _fo_opt(kind="SGD", lrs=LRS, params=None, grads=None, group_extra=None, **kw):
    """A funcopt optimizer on float64 params (call under x64), holding ``grads`` ready for ``step()``."""
    params = _initial_params(len(lrs)) if params is None else params
    group_extra = group_extra or [{} for _ in lrs]
    # distinct names per group (funcopt refuses a repeated parameter name)
    groups = [{"params": jax.tree.map(jnp.asarray, p), "param_names": [f"{i}.s", f"{i}.w"], "lr": lr, **extra}
              for i, (p, lr, extra) in enumerate(zip(params, lrs, group_extra))]
    opt = getattr(fo.optim, kind)(groups, **kw)
    grads = _fixed_grads(len(lrs)) if grads is None else grads
    coefs = [jax.tree.map(jnp.asarray, g) for g in grads]
    # gradients accumulate until cleared: one backward, then every step() applies the same gradients
    opt.backward(lambda ps: sum(c["s"] * p["s"] + jnp.vdot(c["w"], p["w"]) for c, p in zip(coefs, ps)))
    return opt


def _torch_opt(kind="SGD", lrs=LRS, grads=None, group_extra=None, **kw):
    group_extra = group_extra or [{} for _ in lrs]
    groups = [{"params": [torch.nn.Parameter(torch.tensor(p["s"])), torch.nn.Parameter(torch.tensor(p["w"]))],
               "lr": lr, **extra} for p, lr, extra in zip(_initial_params(len(lrs)), lrs, group_extra)]
    opt = getattr(torch.optim, kind)(groups, **kw)
    grads = _fixed_grads(len(lrs)) if grads is None else grads
    for group, g in zip(opt.param_groups, grads):
        group["params"][0].grad = torch.tensor(g["s"])
        group["params"][1].grad = torch.tensor(g["w"])
    return opt


def _fo_params(opt):
    return [np.concatenate([np.ravel(group["s"]), group["w"]]) for group in opt.params]


def _torch_params(opt):
    return [np.concatenate([p.detach().numpy().ravel() for p in group["params"]]) for group in opt.param_groups]


def _assert_floats_close(ours, theirs, where):
    assert len(ours) == len(theirs), where
    for a, b in zip(ours, theirs):
        assert isinstance(a, float), (where, a)
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0), (where, ours, theirs)


def _assert_groups_match(fopt, topt, where):
    _assert_floats_close([g["lr"] for g in fopt.param_groups], [g["lr"] for g in topt.param_groups],
                         f"group lrs, {where}")
    for key in ("momentum", "betas", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
        if key in topt.param_groups[0]:
            ours = [np.asarray(g[key], float) for g in fopt.param_groups]
            theirs = [np.asarray(g[key], float) for g in topt.param_groups]
            np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0, err_msg=f"group {key}, {where}")


def _assert_same_state(ours, theirs, path="state_dict"):
    """Recursive comparison of two scheduler state_dicts (floats to RTOL, the rest exactly)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), path
        assert set(ours) == set(theirs), (path, sorted(set(ours) ^ set(theirs)))
        for k in theirs:
            _assert_same_state(ours[k], theirs[k], f"{path}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _assert_same_state(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float) and math.isfinite(theirs):
        assert math.isclose(ours, theirs, rel_tol=RTOL, abs_tol=0.0), (path, ours, theirs)
    else:
        assert ours == theirs and type(ours) is type(theirs), (path, ours, theirs)


# ---------------------------------------------------------------------- the schedules


class _DecayWithMemory:
    """A callable object: its __dict__ is saved by LambdaLR.state_dict."""

    def __init__(self, rate):
        self.rate = rate
        self.calls = 0

    def __call__(self, epoch):
        self.calls += 1
        return self.rate ** epoch


class _HalvingEvery:
    def __init__(self, period):
        self.period = period

    def __call__(self, epoch):
        return 0.5 if epoch % self.period == 0 else 1.0


def _wave(x):
    return 0.5 * (1.0 + math.sin(x * math.pi / 3.0))


# name -> (optimizer class, optimizer kwargs, build(module, optimizer))
CASES = {
    "LambdaLR-one": ("SGD", {}, lambda m, o: m.LambdaLR(o, lambda t: 0.97 ** t)),
    "LambdaLR-list": ("SGD", {"momentum": 0.9}, lambda m, o: m.LambdaLR(
        o, [lambda t: 1 / (1 + t), lambda t: 0.5 ** (t // 40), lambda t: math.cos(t / 50) ** 2 + 0.1])),
    "LambdaLR-object": ("Adam", {}, lambda m, o: m.LambdaLR(o, _DecayWithMemory(0.99))),
    "MultiplicativeLR-one": ("SGD", {}, lambda m, o: m.MultiplicativeLR(o, lambda t: 0.99)),
    "MultiplicativeLR-list": ("SGD", {}, lambda m, o: m.MultiplicativeLR(
        o, (lambda t: 0.995, _HalvingEvery(50), lambda t: 1.0 + 0.01 * math.sin(t)))),
    "StepLR-30": ("SGD", {}, lambda m, o: m.StepLR(o, step_size=30)),
    "StepLR-7": ("SGD", {"momentum": 0.5}, lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    "StepLR-1": ("Adam", {}, lambda m, o: m.StepLR(o, step_size=1, gamma=0.99)),
    "MultiStepLR": ("SGD", {}, lambda m, o: m.MultiStepLR(o, milestones=[30, 80, 200])),
    "MultiStepLR-repeated": ("SGD", {}, lambda m, o: m.MultiStepLR(o, milestones=[50, 50, 120], gamma=0.5)),
    "MultiStepLR-zero": ("Adam", {}, lambda m, o: m.MultiStepLR(o, milestones=[0, 100, 305], gamma=0.3)),
    "ConstantLR-default": ("SGD", {}, lambda m, o: m.ConstantLR(o)),
    "ConstantLR-40": ("SGD", {}, lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=40)),
    "ConstantLR-long": ("Adam", {}, lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=300)),
    "LinearLR-default": ("SGD", {}, lambda m, o: m.LinearLR(o)),
    "LinearLR-warmup": ("SGD", {}, lambda m, o: m.LinearLR(o, start_factor=0.05, total_iters=40)),
    "LinearLR-decay": ("Adam", {}, lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=250)),
    "LinearLR-to-zero": ("SGD", {}, lambda m, o: m.LinearLR(o, start_factor=0.7, end_factor=0.0, total_iters=100)),
    "ExponentialLR-0.99": ("SGD", {}, lambda m, o: m.ExponentialLR(o, gamma=0.99)),
    "ExponentialLR-0.9": ("Adam", {}, lambda m, o: m.ExponentialLR(o, gamma=0.9)),
    "ExponentialLR-grow": ("SGD", {}, lambda m, o: m.ExponentialLR(o, gamma=1.003)),
    "PolynomialLR-default": ("SGD", {}, lambda m, o: m.PolynomialLR(o)),
    "PolynomialLR-0.9": ("SGD", {}, lambda m, o: m.PolynomialLR(o, total_iters=200, power=0.9)),
    "PolynomialLR-2": ("Adam", {}, lambda m, o: m.PolynomialLR(o, total_iters=300, power=2.0)),
    "CosineAnnealingLR-100": ("SGD", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=100)),
    "CosineAnnealingLR-eta": ("SGD", {"momentum": 0.9}, lambda m, o: m.CosineAnnealingLR(o, T_max=50, eta_min=1e-3)),
    "CosineAnnealingLR-long": ("Adam", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=310, eta_min=0.01)),
    "CosineAnnealingWarmRestarts-10": ("SGD", {}, lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=10)),
    "CosineAnnealingWarmRestarts-mult2": ("SGD", {}, lambda m, o: m.CosineAnnealingWarmRestarts(
        o, T_0=5, T_mult=2, eta_min=1e-3)),
    "CosineAnnealingWarmRestarts-mult3": ("Adam", {}, lambda m, o: m.CosineAnnealingWarmRestarts(
        o, T_0=50, T_mult=3)),
    "CyclicLR-triangular": ("SGD", {}, lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=20)),
    "CyclicLR-triangular2-lists": ("SGD", {"momentum": 0.9}, lambda m, o: m.CyclicLR(
        o, base_lr=[0.01, 0.001, 0.05], max_lr=[0.1, 0.02, 0.5], step_size_up=15, step_size_down=25,
        mode="triangular2", cycle_momentum=False)),
    "CyclicLR-exp_range": ("SGD", {"momentum": 0.9}, lambda m, o: m.CyclicLR(
        o, base_lr=0.01, max_lr=0.2, step_size_up=10, mode="exp_range", gamma=0.99,
        base_momentum=[0.7, 0.75, 0.8], max_momentum=0.95)),
    "CyclicLR-scale_fn-cycle": ("SGD", {"momentum": 0.9}, lambda m, o: m.CyclicLR(
        o, base_lr=0.01, max_lr=0.1, step_size_up=12, scale_fn=_wave, scale_mode="cycle")),
    "CyclicLR-scale_fn-iterations": ("Adam", {}, lambda m, o: m.CyclicLR(
        o, base_lr=1e-3, max_lr=1e-2, step_size_up=8, step_size_down=4,
        scale_fn=lambda x: 1 / (1 + 0.01 * x), scale_mode="iterations")),
    "CyclicLR-adam-betas": ("Adam", {"betas": (0.9, 0.99)}, lambda m, o: m.CyclicLR(
        o, base_lr=1e-3, max_lr=1e-2, step_size_up=25, base_momentum=0.8, max_momentum=0.95)),
    "CyclicLR-adamw-betas": ("AdamW", {}, lambda m, o: m.CyclicLR(
        o, base_lr=[1e-3, 2e-3, 3e-3], max_lr=5e-2, step_size_up=30, mode="triangular2")),
    "OneCycleLR-sgd": ("SGD", {"momentum": 0.9}, lambda m, o: m.OneCycleLR(o, max_lr=0.5, total_steps=320)),
    "OneCycleLR-sgd-momentum0": ("SGD", {}, lambda m, o: m.OneCycleLR(o, max_lr=0.2, total_steps=310)),
    "OneCycleLR-three-phase": ("SGD", {"momentum": 0.9, "nesterov": True}, lambda m, o: m.OneCycleLR(
        o, max_lr=[0.5, 0.1, 1.0], epochs=16, steps_per_epoch=20, pct_start=0.25, anneal_strategy="linear",
        three_phase=True, div_factor=10.0, final_div_factor=100.0, base_momentum=[0.8, 0.85, 0.7])),
    "OneCycleLR-adam": ("Adam", {}, lambda m, o: m.OneCycleLR(o, max_lr=0.01, total_steps=310, pct_start=0.4)),
    "OneCycleLR-adam-three-phase": ("Adam", {"betas": (0.9, 0.98)}, lambda m, o: m.OneCycleLR(
        o, max_lr=[0.01, 0.02, 0.005], total_steps=330, three_phase=True, max_momentum=0.97)),
    "OneCycleLR-no-momentum": ("SGD", {"momentum": 0.9}, lambda m, o: m.OneCycleLR(
        o, max_lr=1.0, total_steps=310, cycle_momentum=False, pct_start=0.5)),
    "SequentialLR-warmup-cosine": ("SGD", {}, lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=20), m.CosineAnnealingLR(o, T_max=100)], milestones=[20])),
    "SequentialLR-three": ("Adam", {}, lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.5, total_iters=10), m.ExponentialLR(o, gamma=0.99),
            m.StepLR(o, step_size=30, gamma=0.5)], milestones=[10, 150])),
    "ChainedScheduler-two": ("SGD", {}, lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.1, total_iters=20), m.ExponentialLR(o, gamma=0.99)])),
    "ChainedScheduler-three": ("SGD", {"momentum": 0.9}, lambda m, o: m.ChainedScheduler(
        [m.LinearLR(o, start_factor=0.5, total_iters=30), m.MultiStepLR(o, milestones=[100, 200]),
         m.StepLR(o, step_size=50, gamma=0.7)], optimizer=o)),
}


def _run_pair(kind, opt_kwargs, build, restore=None, steps=STEPS):
    """Drive both libraries through ``steps`` optimizer + scheduler steps; compare after every step."""
    lines, (topt, tsched) = _run_variants(kind, opt_kwargs, build, (restore,), steps)
    if isinstance(lines[restore], BaseException):
        raise lines[restore]
    return (*lines[restore], topt, tsched)


def _run_variants(kind, opt_kwargs, build, restores, steps=STEPS):
    """One torch run, and one funcopt run per entry of ``restores``, compared with it after every step.

    ``None`` runs uninterrupted; ``"funcopt"`` / ``"torch"`` rebuild the funcopt optimizer and scheduler at
    step ``RESTORE_AT`` from a checkpoint (the model's parameters and both state_dicts) of our own run or of
    torch's. Up to that step the variants are the same run, so it is run once. Returns, per variant, its
    ``(optimizer, scheduler)`` or the exception it failed with, and torch's ``(optimizer, scheduler)``.
    """
    results: dict = {}
    with jax.enable_x64(True):
        topt = _torch_opt(kind, **opt_kwargs)
        tsched = build(TS, topt)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the right order of calls warns about nothing
            try:
                fopt = _fo_opt(kind, **opt_kwargs)
                fsched = build(FS, fopt)
                _assert_floats_close(fsched.get_last_lr(), tsched.get_last_lr(), "after construction")
                _assert_groups_match(fopt, topt, "after construction")
                _assert_same_state(fsched.state_dict(), tsched.state_dict())
            except Exception as e:  # noqa: BLE001 - every variant fails with it
                return dict.fromkeys(restores, e), (topt, tsched)
            # before RESTORE_AT one run stands for every variant; from there, one run per variant
            lines = {tuple(restores): (fopt, fsched)}
            for t in range(1, steps + 1):
                topt.step()
                tsched.step()
                for names, (fopt, fsched) in list(lines.items()):
                    try:
                        fopt.step()
                        fsched.step()
                        _assert_floats_close(fsched.get_last_lr(), tsched.get_last_lr(), f"step {t}")
                        _assert_groups_match(fopt, topt, f"step {t}")
                        if t % 10 == 0 or t == steps:  # the lrs reached the compiled step
                            np.testing.assert_allclose(_fo_params(fopt), _torch_params(topt), rtol=PARAM_RTOL,
                                                       atol=1e-12, err_msg=f"params, step {t}")
                        if t == RESTORE_AT:
                            _assert_same_state(fsched.state_dict(), tsched.state_dict())
                            del lines[names]
                            for restore in names:
                                try:
                                    lines[(restore,)] = _restored(kind, opt_kwargs, build, restore, fopt, fsched,
                                                                  topt, tsched)
                                except Exception as e:  # noqa: BLE001 - this variant's failure
                                    results[restore] = e
                    except Exception as e:  # noqa: BLE001 - reported by the variants of this run
                        results.update(dict.fromkeys(names, e))
                        lines.pop(names, None)
            for names, (fopt, fsched) in lines.items():
                try:
                    _assert_same_state(fsched.state_dict(), tsched.state_dict())
                    results.update(dict.fromkeys(names, (fopt, fsched)))
                except Exception as e:  # noqa: BLE001
                    results.update(dict.fromkeys(names, e))
    return results, (topt, tsched)


def _restored(kind, opt_kwargs, build, restore, fopt, fsched, topt, tsched):
    """The funcopt optimizer and scheduler of variant ``restore`` at step ``RESTORE_AT`` (see _run_variants)."""
    if restore is None:  # uninterrupted: a run of its own from here (its steps must not move the checkpoint)
        return fopt, fsched
    # the checkpoint: the model's parameters and both state_dicts
    if restore == "funcopt":
        model = jax.tree.map(np.array, fopt.params)
        opt_sd, sched_sd = fopt.state_dict(), fsched.state_dict()
    else:
        model = [{"s": g["params"][0].detach().numpy().copy(),
                  "w": g["params"][1].detach().numpy().copy()} for g in topt.param_groups]
        opt_sd, sched_sd = topt.state_dict(), copy.deepcopy(tsched.state_dict())
    fopt = _fo_opt(kind, params=model, **opt_kwargs)
    fsched = build(FS, fopt)  # a fresh start writes its own lrs into the groups...
    fopt.load_state_dict(opt_sd)  # ...which the checkpoint then replaces
    fsched.load_state_dict(sched_sd)
    _assert_groups_match(fopt, topt, "after restore")
    _assert_same_state(fsched.state_dict(), tsched.state_dict())
    return fopt, fsched


RESTORES = (None, "funcopt", "torch")
# name -> per restore variant: None (passed) or the exception it failed with; the three variants of a case
# share one torch run and its first RESTORE_AT steps, computed by whichever of them runs first
_OUTCOMES: dict[str, dict] = {}


@pytest.mark.parametrize("restore", RESTORES)
@pytest.mark.parametrize("name", list(CASES))
def test_schedule_matches_torch(name, restore):
    if name not in _OUTCOMES:
        results, _ = _run_variants(*CASES[name], RESTORES)
        _OUTCOMES[name] = {k: v if isinstance(v, BaseException) else None for k, v in results.items()}
    if _OUTCOMES[name][restore] is not None:
        raise _OUTCOMES[name][restore]


def test_module_exports_torchs_names():
    assert fo.optim.lr_scheduler is FS
    assert sorted(FS.__all__) == sorted(TS.__all__)
    for name in TS.__all__:
        assert isinstance(getattr(FS, name), type)
        assert issubclass(getattr(FS, name), FS.LRScheduler)


def test_lrs_actually_vary_and_reach_the_step():
    """The parity runs are not vacuous: the schedules move, and the parameters feel it."""
    fopt, fsched, topt, _ = _run_pair(*CASES["CosineAnnealingLR-100"], steps=60)
    lrs = [g["lr"] for g in fopt.param_groups]
    assert lrs != list(LRS)
    constant = _fo_opt("SGD")
    for _ in range(60):
        constant.step()
    assert not np.allclose(_fo_params(constant), _fo_params(fopt), rtol=1e-6)


# ---------------------------------------------------------------------- momentum / beta1 cycling


MOMENTUM_CASES = {
    "OneCycleLR-SGD": ("SGD", {"momentum": 0.9}, lambda m, o: m.OneCycleLR(
        o, max_lr=[0.5, 0.2, 0.1], total_steps=300, base_momentum=0.8, max_momentum=[0.95, 0.9, 0.99])),
    "OneCycleLR-Adam": ("Adam", {"betas": (0.9, 0.99)}, lambda m, o: m.OneCycleLR(
        o, max_lr=0.05, total_steps=300, three_phase=True)),
    "CyclicLR-SGD": ("SGD", {"momentum": 0.9, "dampening": 0.1}, lambda m, o: m.CyclicLR(
        o, base_lr=0.01, max_lr=[0.1, 0.2, 0.3], step_size_up=20, base_momentum=0.75, max_momentum=0.95)),
    "CyclicLR-Adam": ("Adam", {"amsgrad": True}, lambda m, o: m.CyclicLR(
        o, base_lr=1e-3, max_lr=1e-2, step_size_up=15, step_size_down=30, mode="triangular2")),
}


@pytest.mark.parametrize("name", list(MOMENTUM_CASES))
def test_momentum_cycling_reaches_the_optimizer(name):
    """momentum / betas[0] follow torch's, and the steps use them: with gradients changing every step
    (given as ``opt(grads)``) the float64 parameters match torch's, which they do not without cycling."""
    kind, opt_kwargs, build = MOMENTUM_CASES[name]
    key = "betas" if kind == "Adam" else "momentum"
    rng = np.random.default_rng(7)
    grads = [_fixed_grads() for _ in range(3)]
    sequence = [[{k: v * rng.uniform(0.5, 1.5) for k, v in g.items()} for g in grads[t % 3]] for t in range(300)]
    topt = _torch_opt(kind, **opt_kwargs)
    tsched = build(TS, topt)
    fopt = _fo_opt(kind, **opt_kwargs)
    fsched = build(FS, fopt)
    plain = _fo_opt(kind, **opt_kwargs)  # the same lrs, the momentum left alone
    seen = []
    for t, g in enumerate(sequence):
        for group, gg in zip(topt.param_groups, g):
            group["params"][0].grad = torch.tensor(gg["s"])
            group["params"][1].grad = torch.tensor(gg["w"])
        topt.step()
        tsched.step()
        fgrads = [jax.tree.map(jnp.asarray, gg) for gg in g]
        fopt(fgrads)
        fsched.step()
        for group, lr in zip(plain.param_groups, fsched.get_last_lr()):
            group["lr"] = lr
        plain(fgrads)
        _assert_groups_match(fopt, topt, f"step {t + 1}")
        seen.append(fopt.param_groups[0][key][0] if key == "betas" else fopt.param_groups[0][key])
        np.testing.assert_allclose(_fo_params(fopt), _torch_params(topt), rtol=PARAM_RTOL, atol=1e-12,
                                   err_msg=f"params, step {t + 1}")
    assert max(seen) - min(seen) > 0.05  # the momentum really moved
    if key == "betas":
        assert all(g["betas"][1] == topt.param_groups[0]["betas"][1] for g in fopt.param_groups)
    assert not np.allclose(_fo_params(plain), _torch_params(topt), rtol=1e-6)


# ---------------------------------------------------------------------- no recompilation


NO_RECOMPILE_CASES = {
    "OneCycleLR-SGD-momentum": ("SGD", {"momentum": 0.9}, lambda m, o: m.OneCycleLR(o, max_lr=0.5, total_steps=120)),
    "CyclicLR-Adam-betas": ("Adam", {}, lambda m, o: m.CyclicLR(o, base_lr=1e-3, max_lr=1e-2, step_size_up=10)),
    "CosineAnnealingLR-through-zero": ("SGD", {"momentum": 0.9}, lambda m, o: m.CosineAnnealingLR(o, T_max=15)),
    "SequentialLR": ("AdamW", {}, lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=10), m.ExponentialLR(o, gamma=0.97)], milestones=[10])),
    "ReduceLROnPlateau": ("SGD", {"momentum": 0.9}, lambda m, o: m.ReduceLROnPlateau(o, patience=2, factor=0.5)),
}


@pytest.mark.parametrize("name", list(NO_RECOMPILE_CASES))
def test_scheduler_never_recompiles_the_step(name, compiles):
    kind, opt_kwargs, build = NO_RECOMPILE_CASES[name]
    opt = _fo_opt(kind, **opt_kwargs)
    sched = build(FS, opt)
    grads = [jax.tree.map(jnp.asarray, g) for g in _fixed_grads()]
    opt(grads)
    assert compiles, "the compile detector saw the first step compile"
    compiled = len(compiles)
    lrs = []
    for t in range(100):
        opt(grads)
        sched.step(1.0) if isinstance(sched, FS.ReduceLROnPlateau) else sched.step()
        assert len(compiles) == compiled, f"the step compiled again at step {t + 1}"
        lrs.append(opt.param_groups[0]["lr"])
    assert len(set(lrs)) >= 5  # the lr did change while the step stayed compiled once
    if name == "CosineAnnealingLR-through-zero":
        assert 0.0 in lrs


# ---------------------------------------------------------------------- ReduceLROnPlateau


def _metrics(n=STEPS, seed=3, sign=1.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    trend = np.where(t < 60, 2.0 - t / 40, 0.5) + np.where(t > 200, -0.2, 0.0)  # a decrease, then plateaus
    return list(sign * (trend + 0.02 * rng.standard_normal(n)))


PLATEAU_CASES = {
    "default": ({}, 1.0),
    "max-abs-cooldown": (dict(mode="max", threshold=0.01, threshold_mode="abs", patience=3, factor=0.5,
                              cooldown=5), -1.0),
    "min_lr-list-eps": (dict(factor=0.3, patience=2, min_lr=[1e-3, 1e-4, 0.01], eps=1e-3), 1.0),
    "patience0-min_lr": (dict(patience=0, min_lr=0.01, threshold=0.0), 1.0),
    "max-rel": (dict(mode="max", factor=0.7, patience=5, threshold=0.05), -1.0),
}


@pytest.mark.parametrize("restore", [None, "funcopt", "torch"])
@pytest.mark.parametrize("name", list(PLATEAU_CASES))
def test_reduce_lr_on_plateau_matches_torch(name, restore):
    kwargs, sign = PLATEAU_CASES[name]
    metrics = _metrics(sign=sign)
    topt = _torch_opt("SGD", momentum=0.9)
    tsched = TS.ReduceLROnPlateau(topt, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fopt = _fo_opt("SGD", momentum=0.9)
        fsched = FS.ReduceLROnPlateau(fopt, **kwargs)
        _assert_same_state(fsched.state_dict(), tsched.state_dict())
        reductions = 0
        for t, value in enumerate(metrics, start=1):
            topt.step()
            fopt.step()
            if t % 3 == 0:  # 0-d arrays are accepted as metrics
                tsched.step(torch.tensor(value))
                fsched.step(jnp.asarray(value))
            else:
                tsched.step(value)
                fsched.step(value)
            _assert_floats_close(fsched.get_last_lr(), tsched.get_last_lr(), f"step {t}")
            _assert_groups_match(fopt, topt, f"step {t}")
            reductions += [g["lr"] for g in topt.param_groups] != list(LRS)
            if t % 10 == 0:
                np.testing.assert_allclose(_fo_params(fopt), _torch_params(topt), rtol=PARAM_RTOL, atol=1e-12)
            if t == RESTORE_AT:
                _assert_same_state(fsched.state_dict(), tsched.state_dict())
                if restore is not None:
                    if restore == "funcopt":
                        model = jax.tree.map(np.array, fopt.params)
                        opt_sd, sched_sd = fopt.state_dict(), fsched.state_dict()
                    else:
                        model = [{"s": g["params"][0].detach().numpy().copy(),
                                  "w": g["params"][1].detach().numpy().copy()} for g in topt.param_groups]
                        opt_sd, sched_sd = topt.state_dict(), copy.deepcopy(tsched.state_dict())
                    fopt = _fo_opt("SGD", params=model, momentum=0.9)
                    fsched = FS.ReduceLROnPlateau(fopt, **kwargs)
                    fopt.load_state_dict(opt_sd)
                    fsched.load_state_dict(sched_sd)
                    _assert_same_state(fsched.state_dict(), tsched.state_dict())
        _assert_same_state(fsched.state_dict(), tsched.state_dict())
    assert reductions > 0  # the lr was reduced at least once


@pytest.mark.parametrize("min_lr", [0.001, [0.001, 0.002, 0.003]])
def test_reduce_lr_on_plateau_after_a_new_param_group(min_lr):
    def run(m, opt, new_group):
        sched = m.ReduceLROnPlateau(opt, patience=0, min_lr=min_lr)
        sched.step(1.0)
        opt.add_param_group(new_group)
        sched.step(2.0)  # a bad epoch: reduces every group, the new one included
        return [g["lr"] for g in opt.param_groups], sched.min_lrs

    extra_w = np.ones(2)
    outcomes = []
    for m, opt, group in [(TS, _torch_opt(), {"params": [torch.nn.Parameter(torch.tensor(extra_w))], "lr": 0.7}),
                          (FS, _fo_opt(), {"params": {"w": jnp.asarray(extra_w)}, "lr": 0.7})]:
        try:
            outcomes.append(("ok", run(m, opt, group)))
        except RuntimeError as e:
            outcomes.append(("error", str(e)))
    assert outcomes[0][0] == ("ok" if isinstance(min_lr, float) else "error")
    if outcomes[0][0] == "ok":
        assert outcomes[1][0] == "ok"
        _assert_floats_close(outcomes[1][1][0], outcomes[0][1][0], "lrs")
        assert outcomes[1][1][1] == outcomes[0][1][1]
    else:
        assert outcomes[1] == outcomes[0]


# ---------------------------------------------------------------------- step(epoch), resuming


CLOSED_FORM_CASES = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=4, gamma=0.5),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[3, 3, 20, 50], gamma=0.5),
    "ConstantLR": lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=10),
    "LinearLR": lambda m, o: m.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=30),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0.95),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o, total_iters=60, power=1.5),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=30, eta_min=0.001),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lambda t: 1 / (1 + t)),
    "MultiplicativeLR": lambda m, o: m.MultiplicativeLR(o, lambda t: 0.9),
    "CosineAnnealingWarmRestarts-1": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=7),
    "CosineAnnealingWarmRestarts-2": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.01),
    "CosineAnnealingWarmRestarts-3": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=3),
}

EPOCHS = [None, None, 5, None, 17, 3, None, None, 40, None, 0, 100, None, 29, 30, 31, None]
FRACTIONAL = [0.5, 1.25, None, 26, None, 3.7, 100.1, None, 12.999, 13.0, None, 7.5, 0.0, None]


@pytest.mark.parametrize("name", list(CLOSED_FORM_CASES))
def test_step_with_epoch_matches_torch(name):
    build = CLOSED_FORM_CASES[name]
    epochs = EPOCHS + (FRACTIONAL if name.startswith("CosineAnnealingWarmRestarts") else [])
    topt, fopt = _torch_opt(), _fo_opt()
    tsched, fsched = build(TS, topt), build(FS, fopt)
    for i, epoch in enumerate(epochs):
        topt.step()
        fopt.step()
        with warnings.catch_warnings(record=True) as tw:
            warnings.simplefilter("always")
            tsched.step(epoch)
        with warnings.catch_warnings(record=True) as fw:
            warnings.simplefilter("always")
            fsched.step(epoch)
        assert [str(w.message) for w in fw] == [str(w.message) for w in tw]
        if epoch is not None and not name.startswith("CosineAnnealingWarmRestarts"):
            assert [str(w.message) for w in fw] == [FS.EPOCH_DEPRECATION_WARNING]
        _assert_floats_close(fsched.get_last_lr(), tsched.get_last_lr(), f"call {i} (epoch {epoch})")
        _assert_groups_match(fopt, topt, f"call {i}")
        _assert_same_state(fsched.state_dict(), tsched.state_dict())


def test_warm_restarts_rejects_a_negative_epoch():
    topt, fopt = _torch_opt(), _fo_opt()
    _same_error(lambda: TS.CosineAnnealingWarmRestarts(topt, T_0=5).step(-1),
                lambda: FS.CosineAnnealingWarmRestarts(fopt, T_0=5).step(-1))


_WITH_INITIAL = [{"initial_lr": 0.2}, {"initial_lr": 0.05}, {"initial_lr": 1.0}]
_WITH_ONE_CYCLE = [dict(initial_lr=0.02, max_lr=0.5, min_lr=2e-6, max_momentum=0.95, base_momentum=0.85),
                   dict(initial_lr=0.01, max_lr=0.25, min_lr=1e-6, max_momentum=0.9, base_momentum=0.8),
                   dict(initial_lr=0.04, max_lr=1.0, min_lr=4e-6, max_momentum=0.99, base_momentum=0.85)]

RESUME_CASES = {
    "StepLR": (_WITH_INITIAL, lambda m, o, e: m.StepLR(o, step_size=10, gamma=0.5, last_epoch=e)),
    "MultiStepLR": (_WITH_INITIAL, lambda m, o, e: m.MultiStepLR(o, milestones=[30, 45], last_epoch=e)),
    "ExponentialLR": (_WITH_INITIAL, lambda m, o, e: m.ExponentialLR(o, gamma=0.9, last_epoch=e)),
    "LambdaLR": (_WITH_INITIAL, lambda m, o, e: m.LambdaLR(o, lambda t: 0.98 ** t, last_epoch=e)),
    "LinearLR": (_WITH_INITIAL, lambda m, o, e: m.LinearLR(o, start_factor=0.1, total_iters=40, last_epoch=e)),
    "PolynomialLR": (_WITH_INITIAL, lambda m, o, e: m.PolynomialLR(o, total_iters=50, power=2.0, last_epoch=e)),
    "CosineAnnealingLR": (_WITH_INITIAL, lambda m, o, e: m.CosineAnnealingLR(o, T_max=40, eta_min=0.001,
                                                                            last_epoch=e)),
    "CosineAnnealingWarmRestarts": (_WITH_INITIAL, lambda m, o, e: m.CosineAnnealingWarmRestarts(
        o, T_0=9, T_mult=2, last_epoch=e)),
    "CyclicLR": (_WITH_INITIAL, lambda m, o, e: m.CyclicLR(o, 0.01, 0.1, step_size_up=7, last_epoch=e)),
    "OneCycleLR": (_WITH_ONE_CYCLE, lambda m, o, e: m.OneCycleLR(o, max_lr=0.5, total_steps=100, last_epoch=e)),
}


@pytest.mark.parametrize("name", list(RESUME_CASES))
def test_resuming_with_last_epoch_matches_torch(name):
    extra, build = RESUME_CASES[name]
    topt = _torch_opt("SGD", momentum=0.9, group_extra=copy.deepcopy(extra))
    fopt = _fo_opt("SGD", momentum=0.9, group_extra=copy.deepcopy(extra))
    tsched, fsched = build(TS, topt, 20), build(FS, fopt, 20)
    _assert_floats_close(fsched.get_last_lr(), tsched.get_last_lr(), "after construction")
    for t in range(50):
        topt.step()
        tsched.step()
        fopt.step()
        fsched.step()
        _assert_floats_close(fsched.get_last_lr(), tsched.get_last_lr(), f"step {t + 1}")
        _assert_groups_match(fopt, topt, f"step {t + 1}")
    _assert_same_state(fsched.state_dict(), tsched.state_dict())


def test_initial_lr_is_kept_and_base_lrs_come_from_it():
    fopt = _fo_opt()
    first = FS.StepLR(fopt, step_size=1, gamma=0.5)
    assert [g["initial_lr"] for g in fopt.param_groups] == list(LRS) == first.base_lrs
    fopt.step()
    first.step()
    second = FS.ExponentialLR(fopt, gamma=0.9)  # a second scheduler keeps the initial lrs
    assert second.base_lrs == list(LRS)
    assert [g["initial_lr"] for g in fopt.param_groups] == list(LRS)
    assert second.get_last_lr() == [lr * 0.5 for lr in LRS]


# ---------------------------------------------------------------------- errors


def _same_error(torch_call, fo_call, exact=True):
    """Both calls raise the same exception type with the same message (or the same start of it)."""
    with pytest.raises(Exception) as theirs:
        torch_call()
    with pytest.raises(type(theirs.value)) as ours:
        fo_call()
    assert type(ours.value) is type(theirs.value)
    if exact:
        assert str(ours.value) == str(theirs.value)
    else:
        prefix = str(theirs.value).split(" has ")[0]
        assert str(ours.value).startswith(prefix), (str(ours.value), prefix)


class _FoNoMomentum(fo.optim.Optimizer):
    """An optimizer with neither ``momentum`` nor ``betas`` (torch: Adagrad)."""

    factory = staticmethod(lambda lr=1e-3: fo.sgd(lr=lr))


ERROR_CASES = {
    "not-an-optimizer": lambda m, o: m.StepLR(object(), step_size=3),
    "not-an-optimizer-cyclic": lambda m, o: m.CyclicLR("sgd", 0.1, 1.0),
    "not-an-optimizer-onecycle": lambda m, o: m.OneCycleLR(None, 0.1, total_steps=10),
    "not-an-optimizer-plateau": lambda m, o: m.ReduceLROnPlateau(3.0),
    "resume-without-initial_lr": lambda m, o: m.StepLR(o, step_size=3, last_epoch=5),
    "LambdaLR-count": lambda m, o: m.LambdaLR(o, [lambda t: 1.0, lambda t: 1.0]),
    "MultiplicativeLR-count": lambda m, o: m.MultiplicativeLR(o, (lambda t: 1.0,) * 4),
    "MultiplicativeLR-not-callable": lambda m, o: m.MultiplicativeLR(o, [lambda t: 1.0, 0.5, lambda t: 1.0]),
    "ConstantLR-factor-high": lambda m, o: m.ConstantLR(o, factor=1.5),
    "ConstantLR-factor-negative": lambda m, o: m.ConstantLR(o, factor=-0.1),
    "LinearLR-start-zero": lambda m, o: m.LinearLR(o, start_factor=0.0),
    "LinearLR-start-high": lambda m, o: m.LinearLR(o, start_factor=1.2),
    "LinearLR-end-high": lambda m, o: m.LinearLR(o, end_factor=1.5),
    "LinearLR-end-negative": lambda m, o: m.LinearLR(o, end_factor=-0.5),
    "WarmRestarts-T_0-zero": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=0),
    "WarmRestarts-T_0-float": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=2.5),
    "WarmRestarts-T_mult-zero": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0),
    "WarmRestarts-T_mult-float": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=1.5),
    "WarmRestarts-eta_min-str": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, eta_min="0.1"),
    "CyclicLR-base_lr-count": lambda m, o: m.CyclicLR(o, base_lr=[0.1, 0.2], max_lr=1.0),
    "CyclicLR-max_lr-count": lambda m, o: m.CyclicLR(o, base_lr=0.1, max_lr=[1.0] * 4),
    "CyclicLR-mode": lambda m, o: m.CyclicLR(o, 0.1, 1.0, mode="sawtooth"),
    "CyclicLR-base_momentum-count": lambda m, o: m.CyclicLR(o, 0.1, 1.0, base_momentum=[0.8, 0.8]),
    "CyclicLR-max_momentum-count": lambda m, o: m.CyclicLR(o, 0.1, 1.0, max_momentum=(0.9,)),
    "OneCycleLR-total_steps-zero": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=0),
    "OneCycleLR-total_steps-float": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10.5),
    "OneCycleLR-epochs": lambda m, o: m.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=5),
    "OneCycleLR-epochs-float": lambda m, o: m.OneCycleLR(o, 0.1, epochs=2.0, steps_per_epoch=5),
    "OneCycleLR-steps_per_epoch": lambda m, o: m.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-1),
    "OneCycleLR-no-length": lambda m, o: m.OneCycleLR(o, 0.1, epochs=3),
    "OneCycleLR-pct_start-high": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10, pct_start=1.5),
    "OneCycleLR-pct_start-int": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10, pct_start=0),
    "OneCycleLR-anneal": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10, anneal_strategy="exp"),
    "OneCycleLR-max_lr-count": lambda m, o: m.OneCycleLR(o, [0.1, 0.2], total_steps=10),
    "OneCycleLR-max_momentum-count": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10, max_momentum=[0.9]),
    "OneCycleLR-base_momentum-count": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10, base_momentum=[0.8] * 2),
    "SequentialLR-empty": lambda m, o: m.SequentialLR(o, [], milestones=[]),
    "SequentialLR-milestones": lambda m, o: m.SequentialLR(
        o, [m.StepLR(o, 3), m.ExponentialLR(o, 0.9)], milestones=[3, 6]),
    "SequentialLR-plateau": lambda m, o: m.SequentialLR(
        o, [m.StepLR(o, 3), m.ReduceLROnPlateau(o)], milestones=[3]),
    "SequentialLR-no-optimizer": lambda m, o: m.SequentialLR(o, [m.StepLR(o, 3), object()], milestones=[3]),
    "ChainedScheduler-empty": lambda m, o: m.ChainedScheduler([]),
    "ChainedScheduler-plateau": lambda m, o: m.ChainedScheduler([m.StepLR(o, 3), m.ReduceLROnPlateau(o)]),
    "ChainedScheduler-no-optimizer": lambda m, o: m.ChainedScheduler([m.StepLR(o, 3), 42]),
    "ReduceLROnPlateau-factor": lambda m, o: m.ReduceLROnPlateau(o, factor=1.0),
    "ReduceLROnPlateau-mode": lambda m, o: m.ReduceLROnPlateau(o, mode="avg"),
    "ReduceLROnPlateau-threshold_mode": lambda m, o: m.ReduceLROnPlateau(o, threshold_mode="pct"),
    "ReduceLROnPlateau-min_lr-count": lambda m, o: m.ReduceLROnPlateau(o, min_lr=[0.0, 0.0]),
}


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_errors_match_torch(name):
    build = ERROR_CASES[name]
    topt, fopt = _torch_opt("SGD"), _fo_opt("SGD")
    _same_error(lambda: build(TS, topt), lambda: build(FS, fopt))


@pytest.mark.parametrize("cls", ["CyclicLR", "OneCycleLR"])
def test_cycle_momentum_needs_momentum_or_betas(cls):
    args = (0.1, 1.0) if cls == "CyclicLR" else (1.0, 10)
    topt = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    fopt = _FoNoMomentum({"w": jnp.zeros(2)}, lr=0.1)
    _same_error(lambda: getattr(TS, cls)(topt, *args), lambda: getattr(FS, cls)(fopt, *args))
    getattr(FS, cls)(fopt, *args, cycle_momentum=False)  # fine without cycling
    assert "momentum" not in fopt.param_groups[0] and "betas" not in fopt.param_groups[0]


@pytest.mark.parametrize("combinator", ["SequentialLR", "ChainedScheduler"])
def test_combinators_reject_schedulers_of_another_optimizer(combinator):
    def build(m, a, b):
        schedulers = [m.StepLR(a, 3), m.StepLR(b, 3)]
        if combinator == "SequentialLR":
            return m.SequentialLR(a, schedulers, milestones=[3])
        return m.ChainedScheduler(schedulers)

    _same_error(lambda: build(TS, _torch_opt(), _torch_opt()), lambda: build(FS, _fo_opt(), _fo_opt()),
                exact=False)


def test_one_cycle_stepping_past_total_steps_raises():
    topt, fopt = _torch_opt(), _fo_opt()
    tsched = TS.OneCycleLR(topt, max_lr=0.1, total_steps=5)
    fsched = FS.OneCycleLR(fopt, max_lr=0.1, total_steps=5)
    for _ in range(5):
        topt.step()
        tsched.step()
        fopt.step()
        fsched.step()
    topt.step()
    fopt.step()
    _same_error(tsched.step, fsched.step)
    assert fsched.last_epoch == tsched.last_epoch == 6  # the epoch counts even though the step failed
    with pytest.raises(ValueError, match=re.escape("Tried to step 7 times")):
        fsched.step()


# ---------------------------------------------------------------------- warnings


def _warnings_during(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [(w.category, str(w.message)) for w in caught]


WARNING_SCENARIOS = {
    # scheduler.step() before optimizer.step(): torch's UserWarning, once
    "scheduler-first": lambda m, o: [m.StepLR(o, 2).step(), o.step()],
    "scheduler-first-twice": lambda m, o: (lambda s: [s.step(), s.step(), o.step(), s.step()])(m.StepLR(o, 2)),
    "optimizer-first": lambda m, o: (lambda s: [o.step(), s.step(), o.step(), s.step()])(m.ExponentialLR(o, 0.9)),
    # optimizer steps before the scheduler existed do not count
    "stepped-before-scheduler": lambda m, o: [o.step(), m.CosineAnnealingLR(o, 10).step()],
    # two schedulers on one optimizer: both see the optimizer's steps
    "two-schedulers": lambda m, o: (lambda a, b: [o.step(), a.step(), b.step()])(m.StepLR(o, 2),
                                                                                 m.LinearLR(o)),
    "sequential-first": lambda m, o: m.SequentialLR(o, [m.ConstantLR(o), m.ExponentialLR(o, 0.9)], [5]).step(),
    "chained-first": lambda m, o: m.ChainedScheduler([m.ConstantLR(o), m.ExponentialLR(o, 0.9)]).step(),
    "epoch-argument": lambda m, o: (lambda s: [o.step(), s.step(7)])(m.StepLR(o, 2)),
    "plateau-epoch-argument": lambda m, o: m.ReduceLROnPlateau(o).step(1.0, epoch=3),
    "plateau-needs-no-order": lambda m, o: m.ReduceLROnPlateau(o).step(1.0),
    "get_lr-outside-step": lambda m, o: m.StepLR(o, 2).get_lr(),
    "warm-restarts-never-warn": lambda m, o: m.CosineAnnealingWarmRestarts(o, 3).step(),
}


@pytest.mark.parametrize("name", list(WARNING_SCENARIOS))
def test_warnings_match_torch(name):
    scenario = WARNING_SCENARIOS[name]
    theirs = _warnings_during(lambda: scenario(TS, _torch_opt()))
    ours = _warnings_during(lambda: scenario(FS, _fo_opt()))
    assert ours == theirs
    expected = {"scheduler-first": 1, "scheduler-first-twice": 1, "stepped-before-scheduler": 1,
                "sequential-first": 1, "chained-first": 2, "epoch-argument": 1, "plateau-epoch-argument": 1,
                "get_lr-outside-step": 1}
    assert len(ours) == expected.get(name, 0), ours
    assert all(category is UserWarning for category, _ in ours)


def test_step_before_optimizer_warns_with_either_way_of_stepping():
    for step in (lambda o: o.step(), lambda o: o([jax.tree.map(jnp.asarray, g) for g in _fixed_grads()])):
        opt = _fo_opt()
        sched = FS.StepLR(opt, 2)
        with pytest.warns(UserWarning, match=re.escape("Detected call of `lr_scheduler.step()` before")):
            sched.step()
        opt = _fo_opt()
        sched = FS.StepLR(opt, 2)
        step(opt)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sched.step()


def test_replacing_optimizer_step_after_the_scheduler_warns():
    def scenario(m, o):
        sched = m.StepLR(o, 2)
        original = o.step
        o.step = lambda *args, **kwargs: original(*args, **kwargs)
        o.step()
        sched.step()

    theirs = _warnings_during(lambda: scenario(TS, _torch_opt()))
    ours = _warnings_during(lambda: scenario(FS, _fo_opt()))
    assert ours == theirs
    assert len(ours) == 1 and "has been overridden" in ours[0][1]


def test_one_hook_per_optimizer():
    opt = _fo_opt()
    hooks = internals.step_post_hook_count(opt)
    FS.StepLR(opt, 2)
    FS.ExponentialLR(opt, 0.9)
    FS.OneCycleLR(opt, 0.1, total_steps=10)
    assert internals.step_post_hook_count(opt) == hooks + 1


# ---------------------------------------------------------------------- state_dict details


def test_state_dict_is_a_snapshot():
    opt = _fo_opt()
    sched = FS.MultiStepLR(opt, milestones=[2, 4])
    saved = sched.state_dict()
    for _ in range(5):
        opt.step()
        sched.step()
    assert saved["last_epoch"] == 0 and saved["_last_lr"] == list(LRS)
    sched.load_state_dict(saved)
    saved["milestones"][99] = 1  # loading copied it
    assert 99 not in sched.milestones and sched.last_epoch == 0


def test_lambda_state_dict_saves_callable_objects_only():
    opt = _fo_opt()
    fn = _DecayWithMemory(0.9)
    sched = FS.LambdaLR(opt, [fn, lambda t: 1.0, _HalvingEvery(3)])
    for _ in range(4):
        opt.step()
        sched.step()
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"rate": 0.9, "calls": 5}, None, {"period": 3}]
    fresh_fn = _DecayWithMemory(0.9)
    fresh = FS.LambdaLR(_fo_opt(), [fresh_fn, lambda t: 1.0, _HalvingEvery(5)])
    fresh.load_state_dict(sd)
    assert fresh_fn.calls == 5 and fresh.lr_lambdas[2].period == 3
    assert "lr_lambdas" in sd  # the argument is left whole


def test_cyclic_state_dict_drops_functions_and_restores_the_scale():
    opt = _fo_opt("SGD", momentum=0.9)
    sched = FS.CyclicLR(opt, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.9)
    sd = sched.state_dict()
    assert "_scale_fn_ref" not in sd and sd["_scale_fn_custom"] is None
    other = FS.CyclicLR(_fo_opt("SGD", momentum=0.9), 0.01, 0.1, step_size_up=3)
    other.load_state_dict(sd)
    assert other.mode == "exp_range" and other.scale_mode == "iterations"
    assert other.scale_fn(2) == pytest.approx(0.81)


def test_plateau_load_validates_the_mode_like_torch():
    topt, fopt = _torch_opt(), _fo_opt()
    tsched, fsched = TS.ReduceLROnPlateau(topt), FS.ReduceLROnPlateau(fopt)
    bad = {**fsched.state_dict(), "mode": "avg"}
    _same_error(lambda: tsched.load_state_dict(dict(bad)), lambda: fsched.load_state_dict(dict(bad)))
    maximize = FS.ReduceLROnPlateau(_fo_opt(), mode="max", threshold_mode="abs").state_dict()
    fsched.load_state_dict(maximize)
    assert (fsched.mode, fsched.threshold_mode, fsched.mode_worse) == ("max", "abs", -math.inf)


TORCH_LOADS_OURS = {
    "OneCycleLR": ("SGD", {"momentum": 0.9}, lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=80)),
    "CyclicLR": ("Adam", {}, lambda m, o: m.CyclicLR(o, 1e-3, 1e-2, step_size_up=6, mode="triangular2")),
    "SequentialLR": ("SGD", {}, lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=20)], milestones=[5])),
    "CosineAnnealingWarmRestarts": ("SGD", {}, lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2)),
}


@pytest.mark.parametrize("name", list(TORCH_LOADS_OURS))
def test_torch_continues_from_our_state_dicts(name):
    """The other direction: a torch optimizer + scheduler loaded from ours follow our run."""
    kind, opt_kwargs, build = TORCH_LOADS_OURS[name]
    fopt = _fo_opt(kind, **opt_kwargs)
    fsched = build(FS, fopt)
    for _ in range(30):
        fopt.step()
        fsched.step()
    topt = _torch_opt(kind, **opt_kwargs)
    tsched = build(TS, topt)
    with torch.no_grad():
        for group, params in zip(topt.param_groups, fopt.params):
            group["params"][0].copy_(torch.tensor(np.asarray(params["s"])))
            group["params"][1].copy_(torch.tensor(np.asarray(params["w"])))
    opt_sd = fopt.state_dict()
    opt_sd["state"] = {k: {n: torch.as_tensor(v) for n, v in entry.items()} for k, entry in opt_sd["state"].items()}
    topt.load_state_dict(opt_sd)
    tsched.load_state_dict(fsched.state_dict())
    for t in range(40):
        fopt.step()
        fsched.step()
        topt.step()
        tsched.step()
        _assert_floats_close(fsched.get_last_lr(), tsched.get_last_lr(), f"step {t + 1}")
        _assert_groups_match(fopt, topt, f"step {t + 1}")
    np.testing.assert_allclose(_fo_params(fopt), _torch_params(topt), rtol=PARAM_RTOL, atol=1e-12)
