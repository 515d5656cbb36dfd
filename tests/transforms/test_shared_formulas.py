"""The functional, stateful and MegEngine forms of clipping and averaging compute the same numbers, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import megengine as mge
from funcopt.optim import swa_utils


def _grads(dtype):
    rng = np.random.default_rng(0)
    return {"a": jnp.asarray(rng.standard_normal((3, 5)) * 4, dtype), "b": jnp.asarray(rng.standard_normal(7), dtype)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("norm_type", [2.0, "inf"])
def test_clip_grad_norm_transform_optim_and_megengine_agree_exactly(dtype, norm_type):
    grads = _grads(dtype)
    max_norm = 0.7  # below the norm: the clipping coefficient is used
    total = fo.global_norm(grads, norm_type)
    assert float(total) > max_norm
    tx = fo.clip_grad_norm(max_norm, norm_type=norm_type)
    functional, _ = jax.jit(tx.update)(grads, tx.init(grads))
    megengine, mge_total = mge.clip_grad_norm(grads, max_norm, ord=norm_type)
    assert float(mge_total) == float(total)

    opt = fo.optim.SGD(jax.tree.map(jnp.zeros_like, grads), lr=0.1)
    opt.backward(lambda p: sum(jnp.sum(p[k].astype(jnp.float32) * grads[k].astype(jnp.float32)) for k in p))
    jax.tree.map(np.testing.assert_array_equal, opt.grad, grads)
    # The stateful optimizer holds its gradients packed in one buffer, whose norm sums in another order
    # (equal up to rounding); given the same norm, its scaling is the same formula.
    np.testing.assert_allclose(fo.optim.get_total_norm(opt, norm_type), total, rtol=1e-6)
    fo.optim.clip_grads_with_norm_(opt, max_norm, total)
    for k in grads:
        assert functional[k].dtype == opt.grad[k].dtype == megengine[k].dtype == dtype
        np.testing.assert_array_equal(np.asarray(functional[k], np.float32), np.asarray(opt.grad[k], np.float32))
        np.testing.assert_array_equal(np.asarray(functional[k], np.float32), np.asarray(megengine[k], np.float32))


def _trajectory(n):
    rng = np.random.default_rng(1)
    return [{"w": jnp.asarray(rng.standard_normal(6), jnp.float32)} for _ in range(n)]


# Decays whose float32 value d gives the same float32 1 - d as the Python float 1 - decay: the functional
# form holds decay as a float32 array, torch's get_ema_multi_avg_fn computes 1 - decay in Python (for 0.9 the
# two weights differ by one ulp, before any averaging formula is applied).
@pytest.mark.parametrize("decay", [None, 0.3, 0.75])
def test_swa_update_and_averaged_model_agree_exactly(decay):
    points = _trajectory(5)
    average = fo.swa_init(points[0])
    if decay is None:
        model = swa_utils.AveragedModel(points[0])
    else:
        model = swa_utils.AveragedModel(points[0], multi_avg_fn=swa_utils.get_ema_multi_avg_fn(decay))
    update = jax.jit(lambda average, p: fo.swa_update(average, p, decay))  # compiled, as AveragedModel's update
    for p in points:
        average = update(average, p)
        model.update_parameters(p)
        np.testing.assert_array_equal(np.asarray(average.params["w"]), np.asarray(model.params["w"]))
    assert int(average.n_averaged) == int(model.n_averaged) == len(points)


def test_decay_error_message_is_shared():
    with pytest.raises(ValueError) as functional:
        fo.swa_update(fo.swa_init({"w": jnp.zeros(1)}), {"w": jnp.zeros(1)}, decay=1.5)
    with pytest.raises(ValueError) as stateful:
        swa_utils.get_ema_avg_fn(1.5)
    assert str(functional.value) == str(stateful.value)
