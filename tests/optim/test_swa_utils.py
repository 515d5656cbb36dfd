"""fo.optim.swa_utils (AveragedModel, averaging functions, SWALR) against torch.optim.swa_utils."""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import swa_utils as tswa

import funcopt as fo
from funcopt.optim import swa_utils as swa
from tests.reference.harness import make_params, precision, tolerance

DTYPES = [np.float32, np.float64]
UPDATES = 20


class _TorchModel(torch.nn.Module):
    """Parameters in jax's leaf order, so that torch's parameters() lines up with jax.tree.leaves."""

    def __init__(self, leaves):
        super().__init__()
        self.params = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(np.array(x))) for x in leaves])

    def set(self, leaves):
        with torch.no_grad():
            for p, x in zip(self.params, leaves):
                p.copy_(torch.tensor(np.array(x)))


def _sequence(params, n, seed=3):
    """``n`` parameter pytrees: a drifting trajectory with noise (each one different)."""
    rng = np.random.default_rng(seed)
    out, cur = [], params
    for _ in range(n):
        cur = jax.tree.map(lambda x: np.asarray(x + 0.3 * rng.standard_normal(np.shape(x)) + 0.05, x.dtype),
                           cur)
        out.append(cur)
    return out


def _compare(ours, theirs_model, dtype, n_expected):
    leaves = jax.tree.leaves(ours.params)
    tleaves = list(theirs_model.module.parameters())
    assert len(leaves) == len(tleaves)
    for i, (x, t) in enumerate(zip(leaves, tleaves)):
        assert x.dtype == np.dtype(dtype)
        np.testing.assert_allclose(np.asarray(x), t.detach().numpy(), err_msg=f"leaf {i}", **tolerance(dtype))
    assert int(ours.n_averaged) == int(theirs_model.n_averaged) == n_expected


def _kinds():
    yield "mean", {}, {}
    yield "ema_multi", dict(multi_avg_fn=swa.get_ema_multi_avg_fn(0.9)), dict(
        multi_avg_fn=tswa.get_ema_multi_avg_fn(0.9))
    yield "ema", dict(avg_fn=swa.get_ema_avg_fn(0.8)), dict(avg_fn=tswa.get_ema_avg_fn(0.8))
    yield "swa_multi", dict(multi_avg_fn=swa.get_swa_multi_avg_fn()), dict(
        multi_avg_fn=tswa.get_swa_multi_avg_fn())
    yield "swa_single", dict(avg_fn=swa.get_swa_avg_fn()), dict(avg_fn=tswa.get_swa_avg_fn())
    custom = lambda avg, cur, n: 0.25 * avg + 0.75 * cur  # noqa: E731 - the same expression works in both
    yield "custom", dict(avg_fn=custom), dict(avg_fn=custom)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,ours_kw,theirs_kw", list(_kinds()),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_averaged_model_matches_torch(kind, ours_kw, theirs_kw, dtype, compiles):
    with precision(dtype):
        params = make_params(dtype)
        model = _TorchModel(jax.tree.leaves(params))
        ours = swa.AveragedModel(jax.tree.map(jnp.asarray, params), **ours_kw)
        theirs = tswa.AveragedModel(model, **theirs_kw)
        _compare(ours, theirs, dtype, 0)
        compiled = []
        for i, p in enumerate(_sequence(params, UPDATES)):
            model.set(jax.tree.leaves(p))
            before = len(compiles)
            ours.update_parameters(jax.tree.map(jnp.asarray, p))
            compiled.append(len(compiles) - before)
            theirs.update_parameters(model)
            _compare(ours, theirs, dtype, i + 1)
        assert compiled[1:] == [0] * (len(compiled) - 1), compiled  # one compiled update for all of them
        if kind == "mean":  # the running mean is the plain mean of the updates
            seq = _sequence(params, UPDATES)
            mean = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *seq)
            rtol = 1e-4 if dtype == np.float32 else 1e-10
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol),
                         jax.tree.map(np.asarray, ours.params), mean)


def test_averaging_function_errors_match_torch():
    for decay in (-0.1, 1.5):
        for ours_fn, theirs_fn in ((swa.get_ema_avg_fn, tswa.get_ema_avg_fn),
                                   (swa.get_ema_multi_avg_fn, tswa.get_ema_multi_avg_fn)):
            with pytest.raises(ValueError) as theirs:
                theirs_fn(decay)
            with pytest.raises(ValueError) as ours:
                ours_fn(decay)
            assert str(ours.value) == str(theirs.value)
    fn = swa.get_ema_avg_fn()
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn should be provided"):
        swa.AveragedModel({"w": jnp.ones(2)}, avg_fn=fn, multi_avg_fn=swa.get_ema_multi_avg_fn())
    avg = swa.AveragedModel({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="structure"):
        avg.update_parameters({"v": jnp.ones(2)})
    with pytest.raises(ValueError, match="shape"):
        avg.update_parameters({"w": jnp.ones(3)})
    in_place = swa.AveragedModel({"w": jnp.ones(2)}, multi_avg_fn=lambda a, c, n: None)
    with pytest.raises(TypeError, match="return the list"):  # found at the first update (it is traced then)
        in_place.update_parameters({"w": jnp.ones(2)})
    assert int(in_place.n_averaged) == 0


def test_averaged_model_from_optimizer_keeps_its_own_copy_and_dtype():
    params = {"w": jnp.array([1.0, 2.0]), "h": jnp.array([1.0, -1.0], jnp.bfloat16)}
    opt = fo.optim.SGD(params, lr=0.5)
    avg = swa.AveragedModel(opt)
    avg.update_parameters(opt)
    for _ in range(3):  # steps donate the optimizer's buffers; the average must not share them
        opt({"w": jnp.ones(2), "h": jnp.ones(2, jnp.bfloat16)})
        avg.update_parameters(opt)
    assert avg.params["h"].dtype == jnp.bfloat16 and avg.params["w"].dtype == jnp.float32
    # parameters after 0..3 steps of -0.5: the mean moves by -0.75
    np.testing.assert_allclose(np.asarray(avg.params["w"]), [0.25, 1.25])
    np.testing.assert_allclose(np.asarray(avg.params["h"], np.float32), [0.25, -1.75])
    assert avg.module is not None and int(avg.n_averaged) == 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_averaged_model_state_dict_interchange_with_torch(dtype):
    with precision(dtype):
        params = make_params(dtype)
        model = _TorchModel(jax.tree.leaves(params))
        names = fo.param_names(params)
        ours = swa.AveragedModel(jax.tree.map(jnp.asarray, params))
        theirs = tswa.AveragedModel(model)
        for p in _sequence(params, 5):
            ours.update_parameters(jax.tree.map(jnp.asarray, p))
            model.set(jax.tree.leaves(p))
            theirs.update_parameters(model)
        sd = ours.state_dict()
        assert list(sd) == ["n_averaged"] + ["module." + n for n in names]
        assert sd["n_averaged"].dtype == np.int64 and int(sd["n_averaged"]) == 5
        # torch's keys differ only in the module's naming (params.0 ...): rename to load across
        to_torch = {"n_averaged": "n_averaged",
                    **{f"module.{n}": f"module.params.{i}" for i, n in enumerate(names)}}
        fresh_torch = tswa.AveragedModel(_TorchModel(jax.tree.leaves(params)))
        fresh_torch.load_state_dict({to_torch[k]: torch.as_tensor(v) for k, v in sd.items()})
        _compare(ours, fresh_torch, dtype, 5)
        from_torch = {k: v for k, v in theirs.state_dict().items()}
        fresh = swa.AveragedModel(jax.tree.map(jnp.zeros_like, params))
        fresh.load_state_dict({k: from_torch[v] for k, v in to_torch.items()})
        _compare(fresh, theirs, dtype, 5)
        # and the average goes on from there, as torch's
        p = _sequence(params, 1, seed=9)[0]
        fresh.update_parameters(jax.tree.map(jnp.asarray, p))
        model.set(jax.tree.leaves(p))
        theirs.update_parameters(model)
        _compare(fresh, theirs, dtype, 6)


def test_averaged_model_load_state_dict_errors_leave_it_unchanged():
    avg = swa.AveragedModel({"w": jnp.ones(2), "b": jnp.zeros(())})
    avg.update_parameters({"w": jnp.ones(2), "b": jnp.zeros(())})
    good = avg.state_dict()
    bad_cases = [
        ({k: v for k, v in good.items() if k != "module.w"}, 'Missing key\\(s\\) in state_dict: "module.w"'),
        ({**good, "extra": np.ones(1)}, 'Unexpected key\\(s\\) in state_dict: "extra"'),
        ({**good, "module.w": np.ones(3, np.float32)}, "size mismatch for module.w"),
        ({**good, "n_averaged": np.array(-1)}, "n_averaged"),
    ]
    for sd, message in bad_cases:
        with pytest.raises(RuntimeError, match=message):
            avg.load_state_dict(sd)
        assert int(avg.n_averaged) == 1
        np.testing.assert_array_equal(np.asarray(avg.params["w"]), [1.0, 1.0])


# --- SWALR ------------------------------------------------------------------------------------------------


def _swalr_cases():
    for anneal_epochs, strategy, swa_lr, n_groups in itertools.product(
            [0, 1, 3, 10], ["cos", "linear"], ["scalar", "list"], [1, 3]):
        value = 0.05 if swa_lr == "scalar" else [0.05, 0.2, 0.011][:n_groups]
        yield dict(swa_lr=value, anneal_epochs=anneal_epochs, anneal_strategy=strategy), n_groups


def _both_optimizers(n_groups, base_lr=0.1):
    lrs = [0.1, 0.02, 0.5][:n_groups]
    ours = fo.optim.SGD([{"params": {"w": jnp.zeros(2)}, "param_names": [f"{i}.w"], "lr": lr}  # distinct names
                         for i, lr in enumerate(lrs)], lr=base_lr, momentum=0.9)
    tparams = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    theirs = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tparams, lrs)], lr=base_lr,
                             momentum=0.9)
    return ours, theirs, tparams


def _step_both(ours, theirs, tparams, n_groups, step):
    g = float(np.sin(step + 1.0))
    grads = [{"w": jnp.full(2, g)} for _ in range(n_groups)]
    ours(grads if n_groups > 1 else grads[0])
    for p in tparams:
        p.grad = torch.full((2,), g)
    theirs.step()


@pytest.mark.parametrize("kw,n_groups", list(_swalr_cases()), ids=str)
def test_swalr_matches_torch(kw, n_groups):
    ours_opt, theirs_opt, tparams = _both_optimizers(n_groups)
    ours = swa.SWALR(ours_opt, **kw)
    theirs = tswa.SWALR(theirs_opt, **kw)
    assert ours.get_last_lr() == theirs.get_last_lr()
    for step in range(50):
        _step_both(ours_opt, theirs_opt, tparams, n_groups, step)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours.step()
        theirs.step()
        assert ours.get_last_lr() == theirs.get_last_lr(), step  # same floats, bit for bit
        assert [g["lr"] for g in ours_opt.param_groups] == [g["lr"] for g in theirs_opt.param_groups]
        assert [g["swa_lr"] for g in ours_opt.param_groups] == [g["swa_lr"] for g in theirs_opt.param_groups]
    swa_lrs = kw["swa_lr"] if isinstance(kw["swa_lr"], list) else [kw["swa_lr"]] * n_groups
    np.testing.assert_allclose(ours.get_last_lr(), swa_lrs, rtol=1e-12)
    # the parameters followed the same learning rates
    params = ours_opt.params if n_groups > 1 else [ours_opt.params]
    for g, p in zip(params, tparams):
        np.testing.assert_allclose(np.asarray(g["w"]), p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_swalr_after_cosine_annealing_and_state_dict_matches_torch():
    """The usual recipe: a cosine schedule, then SWALR from epoch 20, with a state_dict round trip."""
    ours_opt, theirs_opt, tparams = _both_optimizers(2)
    ours_cos = fo.optim.lr_scheduler.CosineAnnealingLR(ours_opt, T_max=30)
    theirs_cos = torch.optim.lr_scheduler.CosineAnnealingLR(theirs_opt, T_max=30)
    ours = swa.SWALR(ours_opt, swa_lr=[0.01, 0.003], anneal_epochs=5, anneal_strategy="linear")
    theirs = tswa.SWALR(theirs_opt, swa_lr=[0.01, 0.003], anneal_epochs=5, anneal_strategy="linear")
    for step in range(50):
        _step_both(ours_opt, theirs_opt, tparams, 2, step)
        if step < 20:
            ours_cos.step()
            theirs_cos.step()
        else:
            ours.step()
            theirs.step()
        assert [g["lr"] for g in ours_opt.param_groups] == [g["lr"] for g in theirs_opt.param_groups], step
        if step == 22:
            sd, tsd = ours.state_dict(), theirs.state_dict()
            assert set(sd) == set(tsd) and "anneal_func" not in sd
            assert {k: sd[k] for k in tsd} == tsd
            # torch's state_dict loads into ours and the schedule goes on the same
            fresh_opt, _, _ = _both_optimizers(2)
            fresh = swa.SWALR(fresh_opt, swa_lr=0.5, anneal_strategy="cos")
            fresh.load_state_dict(tsd)
            assert fresh.anneal_func is swa.SWALR._linear_anneal
            assert fresh.anneal_epochs == 5 and fresh.last_epoch == theirs.last_epoch


def test_swalr_errors_match_torch():
    def errors(make, module_opt):
        with pytest.raises(ValueError) as info:
            make(module_opt)
        return str(info.value)

    cases = [dict(swa_lr=0.1, anneal_strategy="exp"), dict(swa_lr=0.1, anneal_epochs=-1),
             dict(swa_lr=0.1, anneal_epochs=2.5), dict(swa_lr=[0.1, 0.2, 0.3])]
    for kw in cases:
        ours_opt, theirs_opt, _ = _both_optimizers(2)
        ours_message = errors(lambda o, kw=kw: swa.SWALR(o, **kw), ours_opt)
        assert ours_message == errors(lambda o, kw=kw: tswa.SWALR(o, **kw), theirs_opt)
    ours_opt, _, _ = _both_optimizers(1)
    sched = swa.SWALR(ours_opt, swa_lr=0.05)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()
