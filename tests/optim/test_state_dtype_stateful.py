"""State dtypes in the stateful classes: arguments, state_dict dtypes, round trips, torch interchange, fused=True."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import funcopt as fo

BF16 = jnp.bfloat16

# class, keyword arguments, its buffers
CLASSES = [
    (fo.optim.Adam, dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
    (fo.optim.AdamW, dict(lr=0.01, amsgrad=True), ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    (fo.optim.NAdam, dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
    (fo.optim.RAdam, dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
    (fo.optim.Adamax, dict(lr=0.01), ("exp_avg", "exp_inf")),
    (fo.optim.Lion, dict(lr=0.001), ("exp_avg",)),
    (fo.optim.SGD, dict(lr=0.01, momentum=0.9), ("momentum_buffer",)),
    (fo.optim.LAMB, dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
]


def _params():
    return {"weight": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "bias": jnp.array([0.5, -0.25, 1.0])}


def _grads(i):
    return {"weight": jnp.cos(jnp.arange(12.0) + i).reshape(3, 4), "bias": jnp.sin(jnp.arange(3.0) * 2 + i)}


def _steps(opt, start, count):
    for i in range(start, start + count):
        opt(_grads(i))
    return opt


@pytest.mark.parametrize("cls, kw, buffers", CLASSES, ids=[c[0].__name__ for c in CLASSES])
def test_state_dict_keeps_the_stored_dtype(cls, kw, buffers):
    opt = _steps(cls(_params(), **kw, state_dtype=BF16), 0, 2)
    sd = opt.state_dict()
    for entry in sd["state"].values():
        for k in buffers:
            assert entry[k].dtype == np.dtype(ml_dtypes.bfloat16)
    assert sd["param_groups"][0]["state_dtype"] == "bfloat16"  # by name: JSON and torch keep it
    assert not np.allclose(np.asarray(opt.params["weight"]), np.asarray(_params()["weight"]))


def test_mu_dtype_and_mapping_in_the_class_signature():
    opt = fo.optim.Adam(_params(), lr=0.01, mu_dtype=BF16, state_dtype={"exp_avg_sq": "float32"})
    entry = opt.state_dict()["state"][0]
    assert entry["exp_avg"].dtype == np.dtype(ml_dtypes.bfloat16) and entry["exp_avg_sq"].dtype == np.float32
    assert opt.state_dict()["param_groups"][0]["state_dtype"] == {"exp_avg_sq": "float32"}
    with pytest.raises(ValueError, match="unknown state buffer"):
        fo.optim.Adam(_params(), state_dtype={"momentum_buffer": BF16})


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_state_dict_round_trip_continues_bit_identically(rounding):
    kw = dict(lr=0.01, state_dtype=BF16, state_rounding=rounding, seed=3)
    opt = _steps(fo.optim.Adam(_params(), **kw), 0, 3)
    sd = opt.state_dict()
    fresh = fo.optim.Adam(jax.tree.map(jnp.array, opt.params), **kw)
    fresh.load_state_dict(sd)
    _steps(opt, 3, 2)
    _steps(fresh, 3, 2)
    for a, b in zip(jax.tree.leaves(opt.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for i, entry in opt.state_dict()["state"].items():
        for k, v in entry.items():
            np.testing.assert_array_equal(v, fresh.state_dict()["state"][i][k])


def test_changing_state_dtype_in_param_groups_converts_the_state():
    opt = _steps(fo.optim.Adam(_params(), lr=0.01), 0, 2)
    before = opt.state_dict()["state"][0]["exp_avg"]
    opt.param_groups[0]["state_dtype"] = "bfloat16"
    _steps(opt, 2, 1)
    after = opt.state_dict()["state"][0]
    assert after["exp_avg"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert after["exp_avg_sq"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert not np.array_equal(after["exp_avg"].astype(np.float32), before)  # it stepped on from the old values
    assert float(after["step"]) == 3.0


def test_save_and_load_keep_bfloat16_state(tmp_path):
    opt = _steps(fo.optim.Adam(_params(), lr=0.01, state_dtype=BF16), 0, 2)
    fo.save(tmp_path / "ckpt.npz", opt)
    other = fo.optim.Adam(_params(), lr=0.01, state_dtype=BF16)
    fo.load(tmp_path / "ckpt.npz", other)
    for i, entry in opt.state_dict()["state"].items():
        for k, v in entry.items():
            assert other.state_dict()["state"][i][k].dtype == v.dtype
            np.testing.assert_array_equal(other.state_dict()["state"][i][k], v)


def test_loading_torch_float32_state_rounds_to_nearest_bfloat16():
    weights = [torch.nn.Parameter(torch.tensor(np.asarray(x))) for x in jax.tree.leaves(_params())]
    torch_opt = torch.optim.Adam(weights, lr=0.01)
    for i in range(3):
        for w, g in zip(weights, jax.tree.leaves(_grads(i))):
            w.grad = torch.tensor(np.asarray(g))
        torch_opt.step()
    opt = fo.optim.Adam([jnp.asarray(w.detach().numpy()) for w in weights], lr=0.01, state_dtype=BF16)
    opt.load_state_dict(torch_opt.state_dict())
    loaded = opt.state_dict()["state"]
    for i in range(len(weights)):
        for k in ("exp_avg", "exp_avg_sq"):
            expected = torch_opt.state[weights[i]][k].numpy().astype(ml_dtypes.bfloat16)  # round to nearest even
            assert loaded[i][k].dtype == np.dtype(ml_dtypes.bfloat16)
            np.testing.assert_array_equal(loaded[i][k], expected)
        assert float(loaded[i]["step"]) == 3.0


def test_torch_loads_bfloat16_state_into_float32_buffers():
    opt = _steps(fo.optim.Adam(_params(), lr=0.01, state_dtype=BF16), 0, 2)
    sd = opt.state_dict()
    converted = fo.optim.to_torch(sd)
    assert converted["state"][0]["exp_avg"].dtype == torch.bfloat16  # same bits, no rounding
    weights = [torch.nn.Parameter(torch.tensor(np.asarray(x))) for x in jax.tree.leaves(opt.params)]
    torch_opt = torch.optim.Adam(weights, lr=0.01)
    torch_opt.load_state_dict(converted)
    for i, w in enumerate(weights):
        state = torch_opt.state[w]
        # torch.optim casts floating state to its parameter's dtype when it loads: exact for bfloat16 -> float32
        assert state["exp_avg"].dtype == torch.float32
        np.testing.assert_array_equal(state["exp_avg"].numpy(), sd["state"][i]["exp_avg"].astype(np.float32))
        np.testing.assert_array_equal(state["exp_avg_sq"].numpy(), sd["state"][i]["exp_avg_sq"].astype(np.float32))
    for w, g in zip(weights, jax.tree.leaves(_grads(2))):  # and torch steps on from there
        w.grad = torch.tensor(np.asarray(g))
    torch_opt.step()
    assert all(torch.isfinite(w).all() for w in weights)


@pytest.mark.parametrize("kw", [dict(state_dtype=BF16), dict(mu_dtype=BF16, state_rounding="stochastic")])
def test_fused_falls_back_to_the_xla_step_with_narrow_state(kw):
    fused = _steps(fo.optim.Adam(_params(), lr=0.01, fused=True, **kw), 0, 3)
    plain = _steps(fo.optim.Adam(_params(), lr=0.01, **kw), 0, 3)
    for a, b in zip(jax.tree.leaves(fused.params), jax.tree.leaves(plain.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert fused.state_dict()["state"][0]["exp_avg"].dtype == np.dtype(ml_dtypes.bfloat16)


def test_fused_with_float32_state_matches_the_default():
    configured = _steps(fo.optim.Adam(_params(), lr=0.01, fused=True, state_dtype=jnp.float32), 0, 3)
    default = _steps(fo.optim.Adam(_params(), lr=0.01, fused=True), 0, 3)
    for a, b in zip(jax.tree.leaves(configured.params), jax.tree.leaves(default.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
