"""bfloat16 and float8 state between funcopt and torch.optim, bit for bit, both ways.

``fo.optim.to_torch(opt.state_dict())`` gives torch tensors of the same dtype and bits, which a
real torch optimizer loads and steps from; ``opt.load_state_dict(torch_sd)`` reads torch's
bfloat16 and float8 tensors without rounding. Bits are compared as integers.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import funcopt as fo
from funcopt.optim.interop import to_numpy

TORCH_VIEW = {1: torch.int8, 2: torch.int16}
NP_VIEW = {1: np.int8, 2: np.int16}
EXTENDED = ["bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"]


def _torch_bits(t: torch.Tensor) -> np.ndarray:
    if t.dtype.itemsize in TORCH_VIEW and (t.dtype.is_floating_point and t.dtype not in (torch.float16,)):
        return t.detach().contiguous().view(TORCH_VIEW[t.dtype.itemsize]).numpy().copy()
    return t.detach().numpy().reshape(-1).view(np.uint8).copy()


def _np_bits(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.itemsize in NP_VIEW and a.dtype.name in EXTENDED:
        return a.view(NP_VIEW[a.dtype.itemsize]).copy()
    return a.reshape(-1).view(np.uint8).copy()


def _every_pattern(name: str) -> np.ndarray:
    dtype = np.dtype(getattr(ml_dtypes, name))
    if dtype.itemsize == 1:
        return np.arange(256, dtype=np.uint8).view(dtype)
    return np.arange(-32768, 32768, 97, dtype=np.int32).astype(np.int16).view(dtype)  # signs, NaN, inf, subnormals


@pytest.mark.parametrize("name", EXTENDED)
def test_every_bit_pattern_goes_to_torch_and_back_unchanged(name):
    values = _every_pattern(name)
    sd = {"state": {0: {"exp_avg": values, "step": np.asarray(3.0, np.float32)}},
          "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0], "group_state": [values[:4]]}]}
    out = fo.optim.to_torch(sd)
    t = out["state"][0]["exp_avg"]
    assert t.dtype == getattr(torch, name)
    np.testing.assert_array_equal(_torch_bits(t), _np_bits(values))
    np.testing.assert_array_equal(_torch_bits(out["param_groups"][0]["group_state"][0]), _np_bits(values[:4]))
    assert out["state"][0]["step"].dtype == torch.float32 and float(out["state"][0]["step"]) == 3.0
    assert out["param_groups"][0]["betas"] == (0.9, 0.99) and out["param_groups"][0]["params"] == [0]
    back = to_numpy(t)
    assert back.dtype == values.dtype
    np.testing.assert_array_equal(_np_bits(back), _np_bits(values))
    values[0] = values[1]  # the tensors own their data
    np.testing.assert_array_equal(_np_bits(to_numpy(t))[:1], _np_bits(back)[:1])


def test_dtypes_torch_lacks_are_refused_clearly():
    sd = {"state": {0: {"exp_avg": np.zeros(2, ml_dtypes.float8_e3m4)}}, "param_groups": []}
    with pytest.raises(TypeError, match="torch has no dtype for float8_e3m4"):
        fo.optim.to_torch(sd)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        fo.optim.to_torch([1, 2])


def _bf16(values) -> np.ndarray:
    return np.asarray(values, np.float32).astype(ml_dtypes.bfloat16)


def _grads(k: int) -> list[np.ndarray]:
    rng = np.random.default_rng(k)
    return [_bf16(rng.standard_normal((3, 2))), _bf16(rng.standard_normal(4))]


INITIAL = [_bf16(np.linspace(-1, 1, 6).reshape(3, 2)), _bf16([0.5, -0.25, 2.0, 1.0])]
OPTIMIZERS = [
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
]


def _torch_params(values: list[np.ndarray]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(t) for t in fo.optim.to_torch({"p": list(values)})["p"]]


@pytest.mark.parametrize(("name", "kw"), OPTIMIZERS)
def test_a_funcopt_state_dict_loads_into_torch_bit_exactly_and_steps_on(name, kw):
    ours = getattr(fo.optim, name)([jnp.asarray(p) for p in INITIAL], **kw)
    for k in range(3):
        ours([jnp.asarray(g) for g in _grads(k)])
    sd = ours.state_dict()
    weights = _torch_params([np.asarray(p) for p in ours.params])
    assert all(w.dtype == torch.bfloat16 for w in weights)
    theirs = getattr(torch.optim, name)(weights, **kw)
    theirs.load_state_dict(fo.optim.to_torch(sd))
    loaded = theirs.state_dict()["state"]
    for i, entry in sd["state"].items():
        for key, value in entry.items():
            assert loaded[i][key].dtype == (torch.float32 if key == "step" else torch.bfloat16), key
            np.testing.assert_array_equal(_torch_bits(loaded[i][key]), _np_bits(value), err_msg=f"{i} {key}")
    for k in range(3, 5):  # both continue from the same state
        ours([jnp.asarray(g) for g in _grads(k)])
        for w, g in zip(weights, fo.optim.to_torch({"g": _grads(k)})["g"]):
            w.grad = g
        theirs.step()
    for a, w in zip(ours.params, weights):
        np.testing.assert_allclose(np.asarray(a, np.float32), w.detach().float().numpy(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(("name", "kw"), OPTIMIZERS)
def test_a_torch_state_dict_with_bfloat16_loads_into_funcopt_bit_exactly(name, kw):
    weights = _torch_params(INITIAL)
    theirs = getattr(torch.optim, name)(weights, **kw)
    for k in range(3):
        for w, g in zip(weights, fo.optim.to_torch({"g": _grads(k)})["g"]):
            w.grad = g
        theirs.step()
    tsd = theirs.state_dict()
    ours = getattr(fo.optim, name)([jnp.asarray(to_numpy(w)) for w in weights], **kw)
    ours.load_state_dict(tsd)
    mine = ours.state_dict()["state"]
    for i, entry in tsd["state"].items():
        for key, value in entry.items():
            if key == "step":
                assert float(mine[i][key]) == float(value) == 3.0
                continue
            assert mine[i][key].dtype == ml_dtypes.bfloat16, key
            np.testing.assert_array_equal(_np_bits(mine[i][key]), _torch_bits(value), err_msg=f"{i} {key}")
    for w, p in zip(weights, ours.params):
        np.testing.assert_array_equal(_np_bits(np.asarray(p)), _torch_bits(w))


def test_float8_state_from_torch_loads_exactly_into_a_wider_optimizer():
    # torch keeps float8 state when its parameters are float8; funcopt casts it to its parameters' dtype,
    # and every float8_e4m3fn / float8_e5m2 value is exact in bfloat16 and float32
    for tdtype, fdtype in [(torch.float8_e4m3fn, jnp.bfloat16), (torch.float8_e5m2, jnp.float32)]:
        buf = torch.tensor([0.5, -1.75, 448.0 if tdtype == torch.float8_e4m3fn else 57344.0, 2.0**-6]).to(tdtype)
        tsd = {"state": {0: {"momentum_buffer": buf}},
               "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
                                 "nesterov": False, "maximize": False, "params": [0]}]}
        ours = fo.optim.SGD([jnp.zeros(4, fdtype)], lr=0.1, momentum=0.9)
        ours.load_state_dict(tsd)
        got = ours.state_dict()["state"][0]["momentum_buffer"]
        assert got.dtype == np.dtype(fdtype)
        np.testing.assert_array_equal(got.astype(np.float32), buf.float().numpy())
