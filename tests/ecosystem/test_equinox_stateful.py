"""fo.optim.AdamW(model) on a real equinox module (an activation stored in the module, eqx.nn.BatchNorm + State).

Trained on sklearn's digits; the reference is optax.adamw over eqx.partition(model, eqx.is_inexact_array) with
the same seeds and batches. The BatchNorm state is the user's argument, returned through ``has_aux``.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import funcopt as fo

LR, WD = 1e-2, 1e-2
STEPS = 150
BATCH = 128


class Net(eqx.Module):
    l1: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    l2: eqx.nn.Linear
    act: Callable  # a function stored in the module: a leaf no optimizer may touch
    seen: jax.Array  # integer, bool and key leaves, carried as they are
    flags: jax.Array
    seed: jax.Array
    raw_key: jax.Array  # uint32 key data

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.l1 = eqx.nn.Linear(64, 32, key=k1)
        self.bn = eqx.nn.BatchNorm(32, axis_name="batch", mode="ema")
        self.l2 = eqx.nn.Linear(32, 10, key=k2)
        self.act = jax.nn.relu
        self.seen = jnp.array(7, jnp.int32)
        self.flags = jnp.array([True, False])
        self.seed = jax.random.key(3)
        self.raw_key = jax.random.key_data(jax.random.key(4))

    def __call__(self, x, state):
        h, state = self.bn(self.act(self.l1(x)), state)
        return self.l2(h), state


def _net():
    return eqx.nn.make_with_state(Net)(jax.random.key(0))


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order].astype(np.int32)
    return jnp.asarray(x[:1200]), jnp.asarray(y[:1200]), jnp.asarray(x[1200:]), jnp.asarray(y[1200:])


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, BATCH) for _ in range(STEPS)]


def _loss(model, state, x, y):
    logits, state = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state


def _accuracy(model, state, x, y):
    model = eqx.nn.inference_mode(model)
    logits, _ = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)
    return float(jnp.mean(jnp.argmax(logits, -1) == y))


def _train_optax(digits):
    xtr, ytr, xte, yte = digits
    model, state = _net()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    tx = optax.adamw(LR, b1=0.9, b2=0.999, eps=1e-8, weight_decay=WD)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, state, x, y):
        (loss, state), grads = jax.value_and_grad(
            lambda p: _loss(eqx.combine(p, static), state, x, y), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state, loss

    losses = []
    for i in _batches(len(xtr)):
        params, opt_state, state, loss = step(params, opt_state, state, xtr[i], ytr[i])
        losses.append(float(loss))
    model = eqx.combine(params, static)
    return model, state, losses, _accuracy(model, state, xte, yte)


def test_adamw_on_equinox_module_matches_optax_on_digits(digits):
    xtr, ytr, xte, yte = digits
    model, state = _net()
    opt = fo.optim.AdamW(model, lr=LR, weight_decay=WD)
    assert opt.param_names == ["l1.weight", "l1.bias", "bn.weight", "bn.bias", "l2.weight", "l2.bias"]
    losses = []
    for i in _batches(len(xtr)):
        loss, state = opt.backward(_loss, state, xtr[i], ytr[i], has_aux=True)
        opt.step().clear_grad()
        losses.append(float(loss))
    trained = opt.model
    assert isinstance(trained, Net) and trained.act is jax.nn.relu
    acc = _accuracy(trained, state, xte, yte)
    _, ref_state, ref_losses, ref_acc = _train_optax(digits)
    assert acc >= 0.9, acc
    assert acc >= ref_acc - 0.02, (acc, ref_acc)  # stated margin: two points of test accuracy
    np.testing.assert_allclose(losses[:20], ref_losses[:20], rtol=2e-3)
    # the BatchNorm statistics moved, in the State the user threads through has_aux
    _, fresh_state = _net()
    assert not np.allclose(np.asarray(jax.tree.leaves(state)[0]), np.asarray(jax.tree.leaves(fresh_state)[0]))
    np.testing.assert_allclose(np.asarray(jax.tree.leaves(state)[0]), np.asarray(jax.tree.leaves(ref_state)[0]),
                               rtol=0.05, atol=0.05)


def test_equinox_carried_leaves_are_bit_identical(digits):
    xtr, ytr = digits[0], digits[1]
    model, state = _net()
    opt = fo.optim.SGD(model, lr=0.1, momentum=0.9, weight_decay=0.1)
    for i in _batches(len(xtr))[:100]:
        _, state = opt.backward(_loss, state, xtr[i], ytr[i], has_aux=True)
        opt.step().clear_grad()
    trained = opt.model
    assert trained.seen.dtype == jnp.int32 and int(trained.seen) == 7
    np.testing.assert_array_equal(np.asarray(trained.flags), [True, False])
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(trained.seed)),
                                  np.asarray(jax.random.key_data(model.seed)))
    assert trained.raw_key.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(trained.raw_key), np.asarray(model.raw_key))
    assert not np.allclose(np.asarray(trained.l1.weight), np.asarray(model.l1.weight))
    # the model the user built is untouched (immutable): its arrays were copied, never donated
    np.testing.assert_array_equal(np.asarray(model.l1.weight), np.asarray(_net()[0].l1.weight))
    # opt.params / opt.grad: the trainable part, None elsewhere (eqx.filter's convention)
    params = opt.params
    assert params.act is None and params.seen is None and params.l1.weight.shape == (32, 64)
    assert len(opt.state_dict()["state"]) == 6


def test_equinox_groups_wrt_and_errors(digits):
    xtr, ytr = digits[0], digits[1]
    model, state = _net()
    groups = fo.optim.param_groups(model, {"*.bias": {"weight_decay": 0.0}})
    opt = fo.optim.AdamW(groups, lr=LR, weight_decay=WD)
    assert opt.param_groups[0]["param_names"] == ["l1.bias", "bn.bias", "l2.bias"]
    _, state = opt.backward(_loss, state, xtr[:64], ytr[:64], has_aux=True)
    opt.step()
    assert isinstance(opt.model, Net)
    with pytest.raises(ValueError, match=r"'layer1\.\*' matches no trainable parameter.*'l1\.weight'"):
        fo.optim.param_groups(model, {"layer1.*": {"lr": 0.0}})
    # wrt: train the head only, then unfreeze the first layer as a new group of the same model
    opt = fo.optim.Adam(model, lr=LR, wrt=lambda x: eqx.is_inexact_array(x) and x.shape[0] == 10)
    assert opt.param_names == ["l2.weight", "l2.bias"]
    _, state = opt.backward(_loss, state, xtr[:64], ytr[:64], has_aux=True)
    opt.step().clear_grad()
    np.testing.assert_array_equal(np.asarray(opt.model.l1.weight), np.asarray(model.l1.weight))
    opt.add_param_group(fo.optim.param_groups(opt.model, {"l1.*": {"lr": 1e-3}})[0])
    assert opt.param_names == ["l2.weight", "l2.bias", "l1.weight", "l1.bias"]
    _, state = opt.backward(_loss, state, xtr[:64], ytr[:64], has_aux=True)
    opt.step().clear_grad()
    assert not np.allclose(np.asarray(opt.model.l1.weight), np.asarray(model.l1.weight))
    assert isinstance(opt.model, Net) and opt.params.bn.weight is None
    with pytest.raises(ValueError, match="empty parameter list"):
        fo.optim.Adam(model, wrt=lambda x: False)
