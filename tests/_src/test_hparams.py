"""Hyperparameters held in the state: get/set, schedules, and no retrace on change."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo


def test_get_and_set_hparams_round_trip_and_keep_dtypes():
    state = fo.adam(lr=1e-3, betas=(0.9, 0.99)).init({"w": jnp.zeros(2)})
    hp = fo.get_hparams(state)
    assert set(hp) == {"lr", "betas", "eps", "weight_decay"}
    new = fo.set_hparams(state, lr=0.5, betas=(0.5, 0.6))
    assert float(fo.get_hparams(new)["lr"]) == 0.5
    np.testing.assert_allclose([float(b) for b in fo.get_hparams(new)["betas"]], [0.5, 0.6], rtol=1e-6)
    assert float(fo.get_hparams(state)["lr"]) == pytest.approx(1e-3)  # input untouched
    spec = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    assert spec(new) == spec(state)


def test_set_hparams_unknown_name_raises_keyerror():
    state = fo.sgd().init({"w": jnp.zeros(2)})
    with pytest.raises(KeyError, match="unknown hyperparameter"):
        fo.set_hparams(state, betas=(0.9, 0.9))


def test_set_hparams_reaches_every_part_of_a_chain():
    tx = fo.chain(fo.clip_by_global_norm(1.0), fo.sgd(lr=0.1))
    state = fo.set_hparams(tx.init({"w": jnp.zeros(2)}), lr=0.2, max_norm=3.0)
    hp = fo.get_hparams(state)
    assert float(hp["lr"]) == pytest.approx(0.2) and float(hp["max_norm"]) == 3.0


def test_changing_lr_100_times_does_not_retrace():
    tx = fo.adam(lr=1e-3, weight_decay=jnp.asarray(0.0))  # an array: the decay is data (a number 0 is no term)
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return fo.apply_updates(p, u), s

    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    seen = []
    for i in range(100):
        lr = 1e-3 * (i + 1)
        state = fo.set_hparams(state, lr=lr, weight_decay=0.01 * i, betas=(0.9 - i * 1e-3, 0.999))
        params, state = step(params, state, grads)
        seen.append(float(fo.get_hparams(state)["lr"]))
    np.testing.assert_allclose(seen, [1e-3 * (i + 1) for i in range(100)], rtol=1e-6)
    assert step._cache_size() == 1


def test_lr_changes_take_effect():
    tx = fo.sgd(lr=1.0)
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)
    u, state = tx.update({"w": jnp.ones(1)}, state, params)
    assert float(u["w"][0]) == -1.0
    u, _ = tx.update({"w": jnp.ones(1)}, fo.set_hparams(state, lr=0.25), params)
    assert float(u["w"][0]) == -0.25


def test_schedule_is_accepted_wherever_a_number_is():
    sched = lambda count: 0.1 * 0.5**count  # noqa: E731
    tx = fo.sgd(lr=sched, momentum=lambda count: jnp.minimum(0.1 * count, 0.9))
    params = {"w": jnp.zeros(1)}
    state = tx.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, s):
        u, s = tx.update({"w": jnp.ones(1)}, s, p)
        return fo.apply_updates(p, u), s

    lrs = []
    for _ in range(5):
        params, state = step(params, state)
        lrs.append(float(fo.get_hparams(state)["lr"]))
    np.testing.assert_allclose(lrs, [0.1 * 0.5**i for i in range(5)], rtol=1e-6)


def test_schedule_in_betas_and_0d_array_hparams():
    tx = fo.adam(lr=jnp.asarray(0.1), betas=(lambda c: 0.9, 0.999))
    params = {"w": jnp.ones(2)}
    u, s = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
    np.testing.assert_allclose(u["w"], -0.1, rtol=1e-5)
    assert float(fo.get_hparams(s)["betas"][0]) == pytest.approx(0.9)


@pytest.mark.parametrize("bad, exc, msg", [
    (dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (dict(lr="0.1"), TypeError, "lr must be a number"),
    (dict(lr=jnp.ones(2)), ValueError, "Tensor lr must be 1-element"),
    (dict(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (dict(betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    (dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
])
def test_adam_validation_matches_torch_messages(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        fo.adam(**bad)


def test_sgd_validation_matches_torch_messages():
    with pytest.raises(ValueError, match="Invalid momentum value: -0.5"):
        fo.sgd(momentum=-0.5)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        fo.sgd(nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        fo.sgd(momentum=0.9, dampening=0.1, nesterov=True)


def test_weight_decay_without_params_is_an_error():
    tx = fo.adam(weight_decay=0.1)
    with pytest.raises(ValueError, match="params must be given"):
        tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))


def test_half_precision_params_keep_dtype():
    params = {"w": jnp.ones(3, jnp.bfloat16), "h": jnp.ones(2, jnp.float16)}
    tx = fo.adam(lr=0.1)
    state = tx.init(params)
    u, state = tx.update(params, state, params)
    new = fo.apply_updates(params, u)
    assert jax.tree.map(lambda x: x.dtype, new) == jax.tree.map(lambda x: x.dtype, params)
    assert jax.tree.map(lambda x: x.dtype, state.slots["exp_avg"]) == {"w": jnp.bfloat16, "h": jnp.float16}
