"""fo.optim.clip_grad_norm_ and friends against torch.nn.utils' functions of the same names."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import funcopt as fo
from funcopt.optim import clip_grad
from tests.optim import internals
from tests.reference.harness import make_grads, make_params, precision, tolerance

DTYPES = [np.float32, np.float64]
NORM_TYPES = [2.0, 1.0, math.inf, "inf", 3.0, 0.5, -math.inf]


def _linear(params, grads):
    """A loss whose gradient is exactly ``grads``."""
    return sum(jnp.sum(p * g) for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads)))


def _fo_opt(params, grads, cls=fo.optim.SGD, **kw):
    opt = cls(jax.tree.map(jnp.asarray, params), **kw)
    opt.zero_grad(set_to_none=False)
    opt.backward(_linear, jax.tree.map(jnp.asarray, grads))
    return opt


def _torch_params(params, grads):
    out = []
    for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads)):
        t = torch.nn.Parameter(torch.tensor(np.array(p)))
        t.grad = torch.tensor(np.array(g))
        out.append(t)
    return out


def _assert_grads_match(opt, tparams, dtype):
    tol = tolerance(dtype)
    ours = jax.tree.leaves(opt.grad)
    assert len(ours) == len(tparams)
    for i, (x, t) in enumerate(zip(ours, tparams)):
        assert x.dtype == np.dtype(dtype)
        np.testing.assert_allclose(np.asarray(x), t.grad.numpy(), err_msg=f"grad {i}", **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
@pytest.mark.parametrize("max_norm", [0.3, 1e4])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, 1, scale=2.0)[0]
        opt = _fo_opt(params, grads)
        tparams = _torch_params(params, grads)
        ours = fo.optim.clip_grad_norm_(opt, max_norm, norm_type=norm_type)
        theirs = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
        assert ours.shape == () and ours.dtype == np.dtype(dtype)
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), **tolerance(dtype))
        _assert_grads_match(opt, tparams, dtype)
        if max_norm == 0.3 and norm_type in (2.0, 1.0, math.inf):
            # the clipping did happen: the new norm is max_norm (up to torch's 1e-6)
            np.testing.assert_allclose(float(fo.global_norm(opt.grad, norm_type)), max_norm, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_norm_groups_and_several_optimizers(dtype):
    """One total norm over every group of every optimizer given, as torch over all their parameters."""
    with precision(dtype):
        p1, p2 = make_params(dtype, seed=0), make_params(dtype, seed=5)
        g1, g2 = make_grads(p1, 1, seed=2)[0], make_grads(p2, 1, seed=3, scale=4.0)[0]
        groups = fo.optim.SGD([{"params": jax.tree.map(jnp.asarray, p1)},  # distinct names for the second
                               {"params": jax.tree.map(jnp.asarray, p2), "lr": 0.5,
                                "param_names": [f"second.{n}" for n in fo.param_names(p2)]}], lr=0.1)
        groups.zero_grad(set_to_none=False)
        groups.backward(_linear, [jax.tree.map(jnp.asarray, g1), jax.tree.map(jnp.asarray, g2)])
        # a per-tensor (not packed) layout: Adafactor stores its parameters leaf by leaf
        p3 = {"m": np.asarray(np.arange(6.0).reshape(2, 3), dtype), "v": np.ones(3, dtype)}
        g3 = {"m": np.asarray(np.linspace(-3, 2, 6).reshape(2, 3), dtype),
              "v": np.asarray([1.0, -7.0, 2.0], dtype)}
        other = _fo_opt(p3, g3, cls=fo.optim.Adafactor)
        assert not internals.is_packed(other) and internals.is_packed(groups)
        tparams = _torch_params([p1, p2, p3], [g1, g2, g3])
        ours = fo.optim.clip_grad_norm_([groups, other, groups], 2.5)  # a repeated optimizer counts once
        theirs = torch.nn.utils.clip_grad_norm_(tparams, 2.5)
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), **tolerance(dtype))
        ours_leaves = jax.tree.leaves(groups.grad) + jax.tree.leaves(other.grad)
        for i, (x, t) in enumerate(zip(ours_leaves, tparams)):
            np.testing.assert_allclose(np.asarray(x), t.grad.numpy(), err_msg=f"grad {i}", **tolerance(dtype))


def test_clip_grad_norm_nonfinite():
    params = make_params(np.float32)
    grads = make_grads(params, 1)[0]
    grads["dense"]["bias"][1] = np.inf
    opt = _fo_opt(params, grads)
    tparams = _torch_params(params, grads)
    before = jax.tree.map(np.asarray, opt.grad)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.utils.clip_grad_norm_(tparams, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as ours:
        fo.optim.clip_grad_norm_(opt, 1.0, error_if_nonfinite=True)
    assert str(ours.value) == str(theirs.value)
    # nothing changed when it raised
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, opt.grad), before)
    for norm_type in (2.0, "inf"):
        with pytest.raises(RuntimeError, match=f"The total norm of order {float(norm_type)} for gradients"):
            fo.optim.clip_grad_norm_(opt, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    # without the flag: scaled by the non-finite norm, as torch
    total = fo.optim.clip_grad_norm_(opt, 1.0)
    t_total = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
    assert math.isinf(float(total)) and math.isinf(float(t_total))
    for x, t in zip(jax.tree.leaves(opt.grad), tparams):
        np.testing.assert_array_equal(np.asarray(x), t.grad.numpy())


def test_clip_grad_norm_without_grads_and_bad_input():
    opt = fo.optim.SGD({"w": jnp.ones(3)}, lr=0.1)
    total = fo.optim.clip_grad_norm_(opt, 1.0)
    theirs = torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.ones(3))], 1.0)
    assert float(total) == float(theirs) == 0.0 and opt.grad is None
    assert fo.optim.clip_grad_value_(opt, 1.0) is None and opt.grad is None
    with pytest.warns(UserWarning, match="empty generator"):
        fo.optim.clip_grad_norm_((o for o in []), 1.0)
    with pytest.raises(TypeError, match="funcopt.clip_grad_norm"):
        fo.optim.clip_grad_norm_(opt.params, 1.0)
    with pytest.raises(TypeError, match="Optimizer"):
        fo.optim.clip_grad_value_([opt, jnp.ones(2)], 1.0)
    with pytest.raises(ValueError, match="norm_type"):
        fo.optim.clip_grad_norm_(opt, 1.0, norm_type=-1.0)


def test_clip_grad_norm_compiles_once_and_donates():
    params = make_params(np.float32)
    grads = make_grads(params, 4)
    opt = fo.optim.Adam(jax.tree.map(jnp.asarray, params), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. jax's "donated buffers were not usable"
        for i, g in enumerate(grads):
            opt.backward(_linear, jax.tree.map(jnp.asarray, g))
            if i == 0:
                fo.optim.clip_grad_norm_(opt, 0.1)
                size = clip_grad._clip_norm_donating._cache_size()
                old = opt.grad_storage()[0][0]
            else:
                fo.optim.clip_grad_norm_(opt, 0.1 * (i + 1))  # a new max_norm does not recompile
            fo.optim.clip_grad_value_(opt, 0.05 * (i + 1))
            if i == 0:  # measured here, not assumed 1: the module's doctests may have compiled other shapes
                value_size = clip_grad._clip_value._cache_size()
            opt.step().clear_grad()
    assert clip_grad._clip_norm_donating._cache_size() == size
    assert clip_grad._clip_value._cache_size() == value_size
    assert old.is_deleted()  # the old gradient buffer was donated to the clipping call


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip_value", [0.1, 0.7, 100.0])
def test_clip_grad_value_matches_torch(dtype, clip_value):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, 1, scale=1.5)[0]
        opt = _fo_opt(params, grads)
        tparams = _torch_params(params, grads)
        assert fo.optim.clip_grad_value_(opt, clip_value) is None
        torch.nn.utils.clip_grad_value_(tparams, clip_value)
        _assert_grads_match(opt, tparams, dtype)
        assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(opt.grad)) <= float(dtype(clip_value))


def test_clip_grad_value_complex_raises_like_torch():
    opt = fo.optim.SGD({"w": jnp.ones(2, jnp.complex64)}, lr=0.1)
    opt.zero_grad(set_to_none=False)
    t = torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))
    t.grad = torch.ones(2, dtype=torch.complex64)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.utils.clip_grad_value_([t], 1.0)
    with pytest.raises(RuntimeError) as ours:
        fo.optim.clip_grad_value_(opt, 1.0)
    assert str(theirs.value).startswith(str(ours.value))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, "inf", 1.5])
def test_get_total_norm_and_clip_grads_with_norm(dtype, norm_type):
    with precision(dtype):
        params = make_params(dtype)
        grads = make_grads(params, 1, scale=3.0)[0]
        opt = _fo_opt(params, grads)
        tparams = _torch_params(params, grads)
        theirs = torch.nn.utils.get_total_norm([t.grad for t in tparams], norm_type)
        for ours in (fo.optim.get_total_norm(opt, norm_type),
                     fo.optim.get_total_norm(jax.tree.map(jnp.asarray, grads), norm_type)):
            np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), **tolerance(dtype))
        assert fo.optim.clip_grads_with_norm_(opt, 0.7, fo.optim.get_total_norm(opt, norm_type)) is None
        torch.nn.utils.clip_grads_with_norm_(tparams, 0.7, theirs)
        _assert_grads_match(opt, tparams, dtype)
    assert float(fo.optim.get_total_norm([])) == 0.0
    with pytest.raises(RuntimeError, match="non-finite"):
        fo.optim.get_total_norm({"a": jnp.array([1.0, jnp.nan])}, error_if_nonfinite=True)


# --- in a training loop ------------------------------------------------------------------------------------


def _init_model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {"fc": {"weight": rng.standard_normal((5, 3)).astype(dtype), "bias": np.zeros(5, dtype)},
            "head": {"weight": rng.standard_normal((1, 5)).astype(dtype), "bias": np.zeros((), dtype)}}


def _data(dtype, step):
    rng = np.random.default_rng(100 + step)
    return rng.standard_normal((16, 3)).astype(dtype), rng.standard_normal(16).astype(dtype)


def _jax_loss(params, x, y):
    h = jnp.tanh(x @ params["fc"]["weight"].T + params["fc"]["bias"])
    out = (h @ params["head"]["weight"].T)[:, 0] + params["head"]["bias"]
    return jnp.mean((out - y) ** 2) * 10.0


def _torch_loss(tp, x, y):
    fc_b, fc_w, head_b, head_w = tp
    h = torch.tanh(x @ fc_w.T + fc_b)
    out = (h @ head_w.T)[:, 0] + head_b
    return torch.mean((out - y) ** 2) * 10.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip", ["norm", "norm_inf", "value"])
def test_training_loop_matches_torch(dtype, clip):
    """zero_grad / backward / clip / step with fo.optim.SGD and torch.optim.SGD, step by step."""
    steps = 25
    # float32: the two autodiffs round differently and the trajectories drift apart by ~1e-6 over the steps;
    # gradients that are sums of cancelling terms (the output bias) then differ by up to ~1e-5
    tol = tolerance(dtype) if dtype == np.float64 else dict(rtol=1e-5, atol=5e-5)
    with precision(dtype):
        init = _init_model(dtype)
        opt = fo.optim.SGD(jax.tree.map(jnp.asarray, init), lr=0.05, momentum=0.9, weight_decay=1e-3)
        tparams = [torch.nn.Parameter(torch.tensor(np.array(x))) for x in jax.tree.leaves(init)]
        topt = torch.optim.SGD(tparams, lr=0.05, momentum=0.9, weight_decay=1e-3)
        clipped_steps = 0
        for step in range(steps):
            x, y = _data(dtype, step)
            opt.zero_grad()
            loss = opt.backward(_jax_loss, jnp.asarray(x), jnp.asarray(y))
            topt.zero_grad()
            tloss = _torch_loss(tparams, torch.tensor(x), torch.tensor(y))
            tloss.backward()
            np.testing.assert_allclose(float(loss), float(tloss.detach()), **tol)
            if clip == "value":
                fo.optim.clip_grad_value_(opt, 0.2)
                torch.nn.utils.clip_grad_value_(tparams, 0.2)
                clipped_steps += any(float(t.grad.abs().max()) == pytest.approx(0.2) for t in tparams)
            else:
                norm_type = 2.0 if clip == "norm" else "inf"
                total = fo.optim.clip_grad_norm_(opt, 0.5, norm_type=norm_type)
                ttotal = torch.nn.utils.clip_grad_norm_(tparams, 0.5, norm_type=norm_type)
                np.testing.assert_allclose(float(total), float(ttotal), err_msg=f"step {step}", **tol)
                clipped_steps += float(ttotal) > 0.5
            for (name, g), t in zip(fo.named_leaves(opt.grad), tparams):
                np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), err_msg=f"step {step} grad {name}",
                                           **tol)
            opt.step()
            topt.step()
            for (name, p), t in zip(fo.named_leaves(opt.params), tparams):
                np.testing.assert_allclose(np.asarray(p), t.detach().numpy(), err_msg=f"step {step} {name}",
                                           **tol)
        assert clipped_steps >= 5  # the clipping mattered on many steps
