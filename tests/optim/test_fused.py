"""fused=True for Adam and AdamW: one native pass per packed CPU buffer, same numbers as torch's fused kernel."""

import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import funcopt as fo
from funcopt._src import native
from tests.optim import internals
from tests.reference.harness import precision

STEPS = 30
SHAPES = [(4, 3), (5,), (2, 2, 2), ()]


def _trajectory(dtype, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def test_the_kernel_builds_wherever_a_compiler_is_found():
    if shutil.which("c++") or shutil.which("g++"):
        assert native.native_error() is None
    else:
        assert "no C++ compiler" in native.native_error()


CASES = [
    (fo.optim.Adam, torch.optim.Adam, dict(lr=0.01)),
    (fo.optim.Adam, torch.optim.Adam, dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    (fo.optim.Adam, torch.optim.Adam, dict(lr=0.01, maximize=True, weight_decay=0.02)),
    (fo.optim.Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (fo.optim.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    (fo.optim.AdamW, torch.optim.AdamW, dict(lr=0.02, weight_decay=0.3, maximize=True)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, tcls, kw", CASES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_fused_follows_torch_fused_and_the_xla_step(cls, tcls, kw, dtype):
    with precision(dtype):
        params, grads = _trajectory(dtype)
        fused = cls([jnp.asarray(p) for p in params], fused=True, **kw)
        plain = cls([jnp.asarray(p) for p in params], **kw)
        assert internals.runs_native(fused) and not internals.runs_native(plain)
        tparams = [torch.nn.Parameter(torch.tensor(p)) for p in params]
        topt = tcls(tparams, fused=True, **kw)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
        for step, g in enumerate(grads, start=1):
            fused([jnp.asarray(x) for x in g])
            plain([jnp.asarray(x) for x in g])
            for tp, x in zip(tparams, g):
                tp.grad = torch.tensor(x)
            topt.step()
            for i, (a, b, t) in enumerate(zip(fused.params, plain.params, tparams)):
                assert a.dtype == dtype and a.shape == t.shape
                np.testing.assert_allclose(a, t.detach().numpy(), err_msg=f"step {step}, param {i}", **tol)
                # the same arithmetic as XLA's loops: equal up to the compilers' rounding choices
                np.testing.assert_allclose(a, b, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps)
        ours, theirs = fused.state_dict()["state"], topt.state_dict()["state"]
        for i in range(len(SHAPES)):
            assert float(ours[i]["step"]) == float(theirs[i]["step"]) == STEPS
            for k in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_allclose(ours[i][k], theirs[i][k].numpy(), err_msg=f"{k} {i}", **tol)


def _compiled_text(opt):
    return internals.step_hlo(opt)


def test_fused_step_is_one_native_call_per_buffer_in_place():
    params = {"w": jnp.ones((64, 32)), "b": jnp.zeros(32)}
    opt = fo.optim.Adam(params, lr=0.1, fused=True)
    opt.zero_grad(set_to_none=False)
    opt.step()
    assert _compiled_text(opt).count("funcopt_fused_adam_f32") == 1  # one buffer, one call
    with precision(np.float64):
        mixed = fo.optim.Adam([jnp.ones(3, jnp.float32), jnp.ones(2, jnp.float64)], fused=True)
        mixed.zero_grad(set_to_none=False)
        text = _compiled_text(mixed)
        assert text.count("funcopt_fused_adam_f32") == 1 and text.count("funcopt_fused_adam_f64") == 1
    internals.assert_step_writes_in_place(opt, ["exp_avg", "exp_avg_sq"])


def test_hyperparameter_edits_do_not_compile_and_fused_can_be_switched(compiles):
    params, grads = _trajectory(np.float32, steps=8)
    opt = fo.optim.AdamW([jnp.asarray(p) for p in params], lr=0.1, fused=True)
    ref = fo.optim.AdamW([jnp.asarray(p) for p in params], lr=0.1)
    per_step = []
    for i, g in enumerate(grads):
        for o in (opt, ref):
            o.param_groups[0]["lr"] = 0.1 / (i + 1)
            o.param_groups[0]["weight_decay"] = [0.01, 0.0, 0.3][i % 3]
        opt.param_groups[0]["fused"] = i < 6  # the last two steps leave the kernel
        before = len(compiles)
        opt([jnp.asarray(x) for x in g])
        per_step.append(len(compiles) - before)
        ref([jnp.asarray(x) for x in g])
        for a, b in zip(opt.params, ref.params):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert per_step[1:6] == [0] * 5, per_step  # lr and weight decay edits: nothing compiled
    assert per_step[6] > 0 and not internals.runs_native(opt)  # turning fused off builds XLA's step


def test_state_dict_round_trip_continues_the_same_path():
    params, grads = _trajectory(np.float32, steps=10)
    a = fo.optim.Adam([jnp.asarray(p) for p in params], lr=0.05, fused=True)
    for g in grads[:5]:
        a([jnp.asarray(x) for x in g])
    b = fo.optim.Adam([jnp.asarray(np.asarray(p)) for p in a.params], lr=0.05)  # XLA's step
    b.load_state_dict(a.state_dict())
    for g in grads[5:]:
        a([jnp.asarray(x) for x in g])
        b([jnp.asarray(x) for x in g])
    for x, y in zip(a.params, b.params):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_groups_the_kernel_does_not_cover_keep_xlas_step():
    params = [jnp.ones(3)]
    assert not internals.runs_native(fo.optim.Adam(params, fused=True, amsgrad=True))
    assert not internals.runs_native(fo.optim.Adam([jnp.ones(3, jnp.bfloat16)], fused=True))
    assert not internals.runs_native(fo.optim.Adam([jnp.ones(3), jnp.ones(3, jnp.bfloat16)], fused=True))  # a group
    assert not internals.runs_native(fo.optim.Adam(params, lr=lambda step: 0.1, fused=True))  # a schedule
    assert not internals.runs_native(fo.optim.Adam(params))  # fused=None: XLA

    class Other(fo.optim.Adam):  # another rule under Adam's class: the kernel computes Adam's
        factory = staticmethod(fo.adamax)
        signature = None

    assert not internals.runs_native(Other(params, fused=True))


def test_fused_and_foreach_together_are_refused():
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together."):
        fo.optim.Adam([jnp.ones(2)], fused=True, foreach=True)


def test_without_the_kernel_fused_true_warns_and_runs_xlas_step(monkeypatch):
    monkeypatch.setattr(native, "_state", {"error": "no C++ compiler found (install one, or name it in CXX)"})
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found.*runs XLA's step"):
        opt = fo.optim.AdamW([jnp.ones(2)], lr=0.1, fused=True)
    assert opt.param_groups[0]["fused"] is True and not internals.runs_native(opt)
    opt([jnp.ones(2)])
    ref = fo.optim.AdamW([jnp.ones(2)], lr=0.1)
    ref([jnp.ones(2)])
    np.testing.assert_array_equal(opt.params[0], ref.params[0])
    # a torch checkpoint saved with fused=True loads all the same
    w = torch.nn.Parameter(torch.ones(2))
    topt = torch.optim.AdamW([w], lr=0.1, fused=True)
    w.grad = torch.ones(2)
    topt.step()
    plain = fo.optim.AdamW([jnp.asarray(w.detach().numpy())], lr=0.1)  # torch's weights after its step
    with pytest.warns(RuntimeWarning, match="native CPU kernel is unavailable"):
        plain.load_state_dict(topt.state_dict())
    plain([jnp.ones(2)])
    w.grad = torch.ones(2)
    topt.step()
    np.testing.assert_allclose(plain.params[0], w.detach().numpy(), rtol=1e-6)


def test_an_unwritable_cache_folder_builds_into_a_temporary_one(tmp_path):
    # in a fresh process: this one has registered its kernels already, and XLA takes one library per name
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # a file where the cache folder should be: it cannot be created
    code = ("from funcopt._src import native; assert native.native_error() is None, native.native_error(); "
            "assert any(native._fallback_dir().glob('fused-*.so'))")
    env = dict(os.environ, FUNCOPT_CACHE_DIR=str(blocked / "funcopt"), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MANY_LARGE_BUFFERS = """
import jax, jax.numpy as jnp, funcopt as fo
params = [{"params": {f"w{i}": jnp.full((512, 512), 0.5, jnp.float32)}} for i in range(6)]
grads = [{k: jnp.full_like(v, 0.1) for k, v in g["params"].items()} for g in params]
for opt in (fo.optim.Adam(params, lr=0.1, fused=True), fo.optim.SGD(params, lr=0.1, momentum=0.9, fused=True)):
    for _ in range(20):
        opt(grads)
    jax.block_until_ready(opt.params)
print("stepped")
"""


def test_concurrent_kernels_on_large_kept_leaves_do_not_wait_for_each_other():
    """Six param groups of a large leaf each, six buffers: XLA runs their six kernel calls on its pool at once.

    Each call splits its buffer over the same pool; a call that held a pool thread while waiting for
    tasks not yet started could wait forever for the others (it did: this ran into the timeout). A
    fallback to XLA's step warns, and the warning is an error here, so the kernels really ran.
    """
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", _MANY_LARGE_BUFFERS],
                         capture_output=True, text=True, timeout=240,
                         env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_ROOT))
    assert out.returncode == 0 and out.stdout.strip() == "stepped", out.stderr[-2000:]
