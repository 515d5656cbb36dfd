"""State dtypes of the functional optimizers: storage, defaults, float64 parity, stochastic rounding."""

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import funcopt as fo
from funcopt._src.state_dtype import stochastic_round_bfloat16

BF16 = jnp.bfloat16

# factory, its keyword arguments, its configurable buffers (torch's names), the first-moment buffer
OPTIMIZERS = {
    "adam": (fo.adam, dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
    "adam_amsgrad": (fo.adam, dict(lr=0.01, amsgrad=True), ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adamw": (fo.adamw, dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
    "nadam": (fo.nadam, dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
    "radam": (fo.radam, dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
    "adamax": (fo.adamax, dict(lr=0.01), ("exp_avg", "exp_inf")),
    "lion": (fo.lion, dict(lr=0.001), ("exp_avg",)),
    "sgd": (fo.sgd, dict(lr=0.01, momentum=0.9), ("momentum_buffer",)),
    "lamb": (fo.lamb, dict(lr=0.01, weight_decay=0.01), ("exp_avg", "exp_avg_sq")),
}
FIRST = {"exp_avg", "momentum_buffer"}


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"w": jax.random.normal(k1, (4, 8)), "b": jax.random.normal(k2, (8,))}


def _grads(i):
    k1, k2 = jax.random.split(jax.random.key(100 + i))
    return {"w": jax.random.normal(k1, (4, 8)), "b": jax.random.normal(k2, (8,))}


def _run(tx, steps=4, params=None):
    params = _params() if params is None else params
    state = tx.init(params)
    update = jax.jit(tx.update)
    for i in range(steps):
        updates, state = update(_grads(i), state, params)
        params = fo.apply_updates(params, updates)
    return params, state


def _state_bytes_per_param(state, params):
    n = sum(x.size for x in jax.tree.leaves(params))
    per_param = sum(x.nbytes for tree in state.slots.values() for x in jax.tree.leaves(tree) if x.ndim)
    return per_param / n


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_stored_dtypes(name):
    factory, kw, buffers = OPTIMIZERS[name]
    params = _params()
    everything = factory(**kw, state_dtype=BF16).init(params)
    first_only = factory(**kw, mu_dtype=BF16).init(params)
    mapping = factory(**kw, state_dtype={buffers[-1]: "bfloat16"}).init(params)
    for k in buffers:
        assert {x.dtype for x in jax.tree.leaves(everything.slots[k])} == {jnp.dtype(BF16)}
        expected = BF16 if k in FIRST else jnp.float32
        assert {x.dtype for x in jax.tree.leaves(first_only.slots[k])} == {jnp.dtype(expected)}
        expected = BF16 if k == buffers[-1] else jnp.float32
        assert {x.dtype for x in jax.tree.leaves(mapping.slots[k])} == {jnp.dtype(expected)}
    # the dtype survives updates, jitted, and the arithmetic still moves the parameters
    new_params, state = _run(factory(**kw, state_dtype=BF16), steps=2)
    for k in buffers:
        assert {x.dtype for x in jax.tree.leaves(state.slots[k])} == {jnp.dtype(BF16)}
    assert not np.allclose(new_params["w"], params["w"])


def test_nadam_keeps_mu_product_in_float32():
    state = fo.nadam(state_dtype=BF16).init(_params())
    assert {x.dtype for x in jax.tree.leaves(state.slots["mu_product"])} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("kw, expected", [
    (dict(), 8.0),
    (dict(state_dtype=jnp.float32), 8.0),
    (dict(mu_dtype=BF16), 6.0),
    (dict(mu_dtype=BF16, nu_dtype=BF16), 4.0),
    (dict(state_dtype=BF16), 4.0),
    (dict(state_dtype={"exp_avg": jnp.float16, "exp_avg_sq": jnp.float32}), 6.0),
])
def test_adam_bytes_of_state_per_parameter(kw, expected):
    params = _params()
    assert _state_bytes_per_param(fo.adam(**kw).init(params), params) == expected


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_state_is_bit_identical_to_the_default(name):
    factory, kw, _ = OPTIMIZERS[name]
    default_params, default_state = _run(factory(**kw))
    params, state = _run(factory(**kw, state_dtype=jnp.float32, state_rounding="nearest"))
    assert default_state.rng is None and state.rng is None
    assert jax.tree.structure(state) == jax.tree.structure(default_state)
    for a, b in zip(jax.tree.leaves((params, state)), jax.tree.leaves((default_params, default_state))):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bfloat16_params_with_float32_state():
    params = jax.tree.map(lambda x: x.astype(BF16), _params())
    state = fo.adam(state_dtype=jnp.float32).init(params)
    assert {x.dtype for x in jax.tree.leaves(state.slots)} == {jnp.dtype(jnp.float32)}
    updates, state = fo.adam(state_dtype=jnp.float32).update(jax.tree.map(lambda x: x.astype(BF16), _grads(0)),
                                                             state, params)
    assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(BF16)}
    assert {x.dtype for x in jax.tree.leaves(state.slots)} == {jnp.dtype(jnp.float32)}


def test_complex_parameters_keep_their_dtype():
    params = {"z": jnp.array([1 + 1j, 2 - 1j], jnp.complex64)}
    tx = fo.adam(state_dtype=BF16)
    updates, state = tx.update({"z": jnp.array([0.5j, 1.0])}, tx.init(params), params)
    assert state.slots["exp_avg"]["z"].dtype == jnp.complex64
    assert updates["z"].dtype == jnp.complex64


def test_init_under_jit_stores_the_configured_dtype():
    state = jax.jit(fo.adam(mu_dtype=BF16).init)(_params())
    assert state.slots["exp_avg"]["w"].dtype == BF16
    assert state.slots["exp_avg_sq"]["w"].dtype == jnp.float32


@pytest.mark.parametrize("kw, error, match", [
    (dict(state_dtype={"exp_avg": BF16, "momentum_buffer": BF16}), ValueError, "unknown state buffer"),
    (dict(state_dtype=jnp.int8), ValueError, "floating dtype"),
    (dict(mu_dtype="not a dtype"), TypeError, "must be a dtype"),
    (dict(mu_dtype=BF16, state_dtype={"exp_avg": jnp.float16}), ValueError, "disagree"),
    (dict(state_rounding="up"), ValueError, "state_rounding"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(state_dtype={"max_exp_avg_sq": BF16}), ValueError, "unknown state buffer"),  # amsgrad is off
])
def test_bad_arguments_raise(kw, error, match):
    with pytest.raises(error, match=match):
        fo.adam(**kw)


def test_nu_dtype_of_an_optimizer_without_a_second_moment_raises():
    with pytest.raises(TypeError):
        fo.lion(nu_dtype=BF16)  # no such argument: Lion keeps one buffer


# ----------------------------------------------------------------------------- parity with a float64 reference


def _adam_reference(params, grads, lr, betas, eps, mu_dtype, nu_dtype):
    """torch's Adam in float64 with each stored moment rounded (to nearest) into its buffer's dtype."""
    beta1, beta2 = betas
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v).astype(mu_dtype) for k, v in p.items()}
    v = {k: np.zeros_like(x).astype(nu_dtype) for k, x in p.items()}
    for t, g in enumerate(grads, start=1):
        for k in p:
            gk = np.asarray(g[k], np.float64)
            m_new = m[k].astype(np.float64) + (1 - beta1) * (gk - m[k].astype(np.float64))
            v_new = beta2 * v[k].astype(np.float64) + (1 - beta2) * gk * gk
            denom = np.sqrt(v_new) / np.sqrt(1 - beta2**t) + eps
            p[k] = p[k] - lr / (1 - beta1**t) * m_new / denom
            m[k], v[k] = m_new.astype(mu_dtype), v_new.astype(nu_dtype)
    return p, m, v


def test_bfloat16_first_moment_matches_a_float64_reference_with_the_rounding():
    steps, lr, betas, eps = 6, 0.01, (0.9, 0.999), 1e-8
    params = _params()
    grads = [_grads(i) for i in range(steps)]
    ref_p, ref_m, ref_v = _adam_reference(params, grads, lr, betas, eps, ml_dtypes.bfloat16, np.float32)
    tx = fo.adam(lr=lr, betas=betas, eps=eps, mu_dtype=BF16, nu_dtype=jnp.float32)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in grads:
        updates, state = update(g, state, params)
        params = fo.apply_updates(params, updates)
    for k in params:
        # the stored first moment is the reference's, rounded to the same bfloat16 values
        np.testing.assert_array_equal(np.asarray(state.slots["exp_avg"][k]), ref_m[k])
        # float32 arithmetic: 1 - beta2 alone is 1.3e-5 off in float32
        np.testing.assert_allclose(np.asarray(state.slots["exp_avg_sq"][k]), ref_v[k], rtol=5e-5)
        np.testing.assert_allclose(np.asarray(params[k]), ref_p[k], rtol=5e-5, atol=1e-6)
    # and it is not the float32-state trajectory: the rounding is really applied
    full, _ = _run(fo.adam(lr=lr, betas=betas, eps=eps), steps=steps)
    assert not np.array_equal(np.asarray(full["w"]), np.asarray(params["w"]))


# ----------------------------------------------------------------------------- a real small problem


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y)


def _train_logistic_regression(tx, steps=80):
    x, y = _digits()
    params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}

    def loss_fn(p):
        logits = x @ p["w"] + p["b"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def body(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = tx.update(g, s, p)
        return (fo.apply_updates(p, u), s), loss

    (params, _), losses = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), length=steps))(params)
    accuracy = jnp.mean(jnp.argmax(x @ params["w"] + params["b"], axis=1) == y)
    return np.asarray(losses), float(accuracy)


@functools.lru_cache(maxsize=1)
def _float32_digits_run():
    return _train_logistic_regression(fo.adam(lr=0.01))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_bfloat16_state_tracks_the_float32_trajectory_on_digits(rounding):
    ref_losses, ref_acc = _float32_digits_run()
    losses, acc = _train_logistic_regression(fo.adam(lr=0.01, state_dtype=BF16, state_rounding=rounding))
    # the loss curve stays within 2% (relative) of float32 state's at every step, the accuracy within 1 point
    np.testing.assert_allclose(losses, ref_losses, rtol=0.02)
    assert abs(acc - ref_acc) <= 0.01
    assert losses[-1] < 0.3 * losses[0]


# ----------------------------------------------------------------------------- stochastic rounding


def test_stochastic_rounding_is_unbiased_and_nearest_is_not():
    # x sits a quarter of the way from 1 to the next bfloat16 (1 + 2**-7); each stochastic rounding is 1 or
    # 1 + 2**-7 with p = 1/4, so the mean of n = 20000 has standard deviation 2**-7 * sqrt(3/16 / n) = 2.4e-5.
    x, n = 1 + 2.0**-9, 20000
    values = jnp.full(n, x, jnp.float32)
    round_ = jax.jit(lambda v, seed: stochastic_round_bfloat16(v, jax.random.key_data(jax.random.key(seed))))
    rounded = round_(values, 7)
    assert set(np.unique(np.asarray(rounded, np.float64))) == {1.0, 1 + 2.0**-7}
    tolerance = 5 * 2.0**-7 * np.sqrt(3 / 16 / n)  # five standard deviations
    assert abs(np.mean(np.asarray(rounded, np.float64)) - x) < tolerance
    nearest = float(values.astype(BF16)[0])
    assert abs(nearest - x) > 10 * tolerance
    # negative values and exact bfloat16 values
    neg = round_(-values, 8)
    assert abs(np.mean(np.asarray(neg, np.float64)) + x) < tolerance
    # exact bfloat16 values, zero and infinities stay; NaN stays NaN
    special = jnp.zeros(n).at[:6].set(jnp.array([1.5, -0.25, 0.0, jnp.inf, -jnp.inf, jnp.nan]))
    out = np.asarray(round_(special, 9), np.float32)[:6]
    np.testing.assert_array_equal(out[:5], np.asarray(special)[:5])
    assert np.isnan(out[5])


def test_stochastic_rounding_in_the_optimizer_is_unbiased():
    # after one SGD-momentum step the buffer holds g; g is 0.3 of the way between two bfloat16 values
    g = (1 + 0.3 * 2.0**-7) * jnp.ones(20000)
    params = {"w": jnp.zeros(20000)}
    tx = fo.sgd(lr=0.1, momentum=0.9, state_dtype=BF16, state_rounding="stochastic", seed=1)
    _, state = tx.update({"w": g}, tx.init(params), params)
    buffer = state.slots["momentum_buffer"]["w"].astype(jnp.float32)
    tolerance = 5 * 2.0**-7 * np.sqrt(0.3 * 0.7 / g.size)
    assert abs(float(jnp.mean(buffer)) - float(g[0])) < tolerance
    tx_nearest = fo.sgd(lr=0.1, momentum=0.9, state_dtype=BF16)
    _, nearest = tx_nearest.update({"w": g}, tx_nearest.init(params), params)
    assert abs(float(jnp.mean(nearest.slots["momentum_buffer"]["w"].astype(jnp.float32))) - float(g[0])) > tolerance


def test_stochastic_rounding_reproducible_and_seeded():
    def run(seed):
        tx = fo.adam(lr=0.01, state_dtype=BF16, state_rounding="stochastic", seed=seed)
        return jax.tree.leaves(_run(tx, steps=3))

    first, again, other = run(0), run(0), run(1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, other))


def test_stochastic_state_carries_a_fixed_key():
    tx = fo.lion(state_dtype=BF16, state_rounding="stochastic", seed=5)
    state = tx.init(_params())
    assert state.rng is not None and state.rng.dtype == jnp.uint32
    _, new = _run(tx, steps=2)
    np.testing.assert_array_equal(np.asarray(new.rng), np.asarray(state.rng))
    # a state restarted from step t with its slots continues with the same bits: the draw depends on (key, step)
    tx_adam = fo.adam(lr=0.01, state_dtype=BF16, state_rounding="stochastic")
    p1, s1 = _run(tx_adam, steps=2)
    copied = jax.tree.map(lambda x: jnp.array(np.asarray(x)), s1)
    update = jax.jit(tx_adam.update)
    u_a, s_a = update(_grads(9), s1, p1)
    u_b, s_b = update(_grads(9), copied, p1)
    for a, b in zip(jax.tree.leaves((u_a, s_a)), jax.tree.leaves((u_b, s_b))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_stochastic_rounding_leaves_float32_buffers_exact():
    # mu in bfloat16 (stochastic), nu in float32: nu is the nearest-rounded float32 value, as without the option
    _, stochastic = _run(fo.adam(lr=0.01, mu_dtype=BF16, state_rounding="stochastic"))
    _, nearest = _run(fo.adam(lr=0.01, mu_dtype=BF16))
    assert stochastic.slots["exp_avg_sq"]["w"].dtype == jnp.float32
    # the gradients do not depend on the parameters here, so nu is the same bits either way
    np.testing.assert_array_equal(np.asarray(stochastic.slots["exp_avg_sq"]["w"]),
                                  np.asarray(nearest.slots["exp_avg_sq"]["w"]))
    assert not np.array_equal(np.asarray(stochastic.slots["exp_avg"]["w"]), np.asarray(nearest.slots["exp_avg"]["w"]))
