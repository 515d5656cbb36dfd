"""fo.optim.AdamW(model) on a real flax nnx module (Linear + BatchNorm + Dropout) trained on sklearn's digits.

The reference is optax.adamw through nnx.Optimizer on the same module, same seeds, same batches.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sklearn.datasets import load_digits

import funcopt as fo

LR, WD = 1e-2, 1e-2
STEPS = 150
BATCH = 128


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(64, 32, rngs=rngs)
        self.bn = nnx.BatchNorm(32, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.l2 = nnx.Linear(32, 10, rngs=rngs)
        # state a model carries that no optimizer may touch
        self.seen = nnx.Variable(jnp.array(7, jnp.int32))
        self.flags = nnx.Variable(jnp.array([True, False]))
        self.seed = nnx.Variable(jax.random.key(3))

    def __call__(self, x):
        return self.l2(self.dropout(jax.nn.relu(self.bn(self.l1(x)))))


def _net():
    return Net(nnx.Rngs(0, dropout=1))


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order].astype(np.int32)
    return jnp.asarray(x[:1200]), jnp.asarray(y[:1200]), jnp.asarray(x[1200:]), jnp.asarray(y[1200:])


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, BATCH) for _ in range(STEPS)]


def _loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def _accuracy(model, x, y):
    model.eval()
    acc = float(jnp.mean(jnp.argmax(model(x), -1) == y))
    model.train()
    return acc


@nnx.jit
def _optax_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(_loss)(model, x, y)
    optimizer.update(model, grads)
    return loss


def _train_optax(digits):
    xtr, ytr, xte, yte = digits
    model = _net()
    optimizer = nnx.Optimizer(model, optax.adamw(LR, b1=0.9, b2=0.999, eps=1e-8, weight_decay=WD), wrt=nnx.Param)
    losses = [float(_optax_step(model, optimizer, xtr[i], ytr[i])) for i in _batches(len(xtr))]
    return model, losses, _accuracy(model, xte, yte)


def _train_funcopt(digits, model=None, opt=None):
    xtr, ytr, xte, yte = digits
    model = model if model is not None else _net()
    opt = opt if opt is not None else fo.optim.AdamW(model, lr=LR, weight_decay=WD)
    losses = []
    for i in _batches(len(xtr)):
        losses.append(float(opt.backward(_loss, xtr[i], ytr[i])))
        opt.step().clear_grad()
    return model, opt, losses, _accuracy(model, xte, yte)


def test_adamw_on_nnx_module_matches_optax_on_digits(digits):
    model, opt, losses, acc = _train_funcopt(digits)
    reference, ref_losses, ref_acc = _train_optax(digits)
    assert acc >= 0.9, acc
    assert acc >= ref_acc - 0.02, (acc, ref_acc)  # stated margin: two points of test accuracy
    # the same computation: the trajectories agree closely while float rounding has not yet diverged
    np.testing.assert_allclose(losses[:20], ref_losses[:20], rtol=2e-3)
    assert np.mean(losses[-10:]) < 0.35 * np.mean(losses[:10])
    assert opt.model is model  # the module the user holds is trained in place


def test_nnx_module_state_in_place_and_carried_leaves(digits):
    model = _net()
    kernel0 = np.asarray(model.l1.kernel[...])
    mean0, var0 = np.asarray(model.bn.mean[...]), np.asarray(model.bn.var[...])
    count0 = int(model.dropout.rngs.count[...])
    key0 = np.asarray(jax.random.key_data(model.dropout.rngs.key[...]))
    seed0 = np.asarray(jax.random.key_data(model.seed[...]))
    opt = fo.optim.AdamW(model, lr=LR, weight_decay=WD)
    xtr, ytr = digits[0], digits[1]
    for i in _batches(len(xtr))[:100]:
        opt.backward(_loss, xtr[i], ytr[i])
        opt.step().clear_grad()
    # weights and BatchNorm statistics changed in the object the user holds
    assert not np.allclose(np.asarray(model.l1.kernel[...]), kernel0)
    assert not np.allclose(np.asarray(model.bn.mean[...]), mean0)
    assert not np.allclose(np.asarray(model.bn.var[...]), var0)
    # the dropout RNG counter advanced once per forward pass, as with nnx.jit; its key did not change
    assert int(model.dropout.rngs.count[...]) == count0 + 100
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(model.dropout.rngs.key[...])), key0)
    # integer, bool and key leaves are carried bit-identical
    assert model.seen[...].dtype == jnp.int32 and int(model.seen[...]) == 7
    np.testing.assert_array_equal(np.asarray(model.flags[...]), [True, False])
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(model.seed[...])), seed0)
    # only nnx.Param is trained: state_dict and params hold no statistics, counters or keys
    assert opt.param_names == ["bn.bias", "bn.scale", "l1.bias", "l1.kernel", "l2.bias", "l2.kernel"]
    assert len(opt.state_dict()["state"]) == 6
    np.testing.assert_array_equal(np.asarray(opt.params["l1"]["kernel"]), np.asarray(model.l1.kernel[...]))
    assert jax.tree.structure(opt.grad if opt.grad is not None else opt.params) == jax.tree.structure(opt.params)


def test_names_are_clean_and_rules_are_checked():
    model = _net()
    assert all(not n.endswith(".value") for n in fo.optim.AdamW(model).param_names)
    groups = fo.optim.param_groups(model, {"*.bias": {"weight_decay": 0.0}})
    opt = fo.optim.AdamW(groups, lr=LR, weight_decay=WD)
    assert opt.param_groups[0]["param_names"] == ["bn.bias", "l1.bias", "l2.bias"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, WD]
    assert opt.model is model
    with pytest.raises(ValueError, match=r"'\*\.bais' matches no trainable parameter.*'bn\.bias'"):
        fo.optim.param_groups(model, {"*.bais": {"weight_decay": 0.0}})
    with pytest.raises(ValueError, match="empty parameter list"):
        fo.optim.SGD(model, wrt=nnx.Nothing)


def test_wrt_freezes_and_add_param_group_unfreezes(digits):
    xtr, ytr = digits[0], digits[1]
    model = _net()
    head_only = nnx.All(nnx.Param, nnx.PathContains("l2"))
    opt = fo.optim.AdamW(model, lr=LR, weight_decay=WD, wrt=head_only)
    assert opt.param_names == ["l2.bias", "l2.kernel"]
    frozen = np.asarray(model.l1.kernel[...])
    head = np.asarray(model.l2.kernel[...])
    batches = _batches(len(xtr))
    for i in batches[:5]:
        opt.backward(_loss, xtr[i], ytr[i])
        opt.step().clear_grad()
    np.testing.assert_array_equal(np.asarray(model.l1.kernel[...]), frozen)  # not trained, not decayed
    assert not np.allclose(np.asarray(model.l2.kernel[...]), head)
    # unfreeze the first layer with its own lr: the optimizer still trains ONE model
    first = fo.optim.param_groups(model, {"l1.*": {"lr": 1e-3}})[0]
    opt.add_param_group(first)
    assert [g["lr"] for g in opt.param_groups] == [LR, 1e-3]
    assert sorted(opt.params) == ["l1", "l2"]
    for i in batches[5:10]:
        opt.backward(_loss, xtr[i], ytr[i])
        opt.step().clear_grad()
    assert not np.allclose(np.asarray(model.l1.kernel[...]), frozen)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group(fo.optim.param_groups(model, {"l1.*": {}})[0])


def test_user_edits_of_the_module_are_seen_and_state_dict_round_trips(digits):
    xtr, ytr = digits[0], digits[1]
    model = _net()
    opt = fo.optim.Adam(model, lr=LR)
    opt.backward(_loss, xtr[:32], ytr[:32])
    opt.step().clear_grad()
    model.l2.bias[...] = jnp.full((10,), 0.5)  # an in-place edit, as torch code does with .data
    opt.backward(_loss, xtr[:32], ytr[:32])
    np.testing.assert_array_equal(np.asarray(opt.params["l2"]["bias"]), np.full(10, 0.5, np.float32))
    opt.step().clear_grad()
    sd = opt.state_dict()
    fresh = fo.optim.Adam(_net(), lr=0.5)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == LR
    np.testing.assert_array_equal(fresh.state_dict()["state"][0]["exp_avg"], sd["state"][0]["exp_avg"])
    # eval mode is seen by the next backward (BatchNorm then reads its running statistics)
    model.eval()
    mean = np.asarray(model.bn.mean[...])
    opt.backward(_loss, xtr[:32], ytr[:32])
    np.testing.assert_array_equal(np.asarray(model.bn.mean[...]), mean)
    model.train()
