"""The functional API inside flax's nnx.Optimizer, with a real nnx model (Linear, BatchNorm, Dropout).

nnx.Optimizer calls ``tx.init`` on a tree of ``nnx.Param`` Variables, ``tx.update`` on the same tree
of plain arrays, and keeps the state with every array wrapped in an ``OptArray`` Variable. Checked:
training against optax's AdamW, hyperparameters read and set on ``opt_state`` with no recompile,
parameter names without Variable internals, and ``fo.partition`` by names.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import funcopt as fo

LR, WD = 1e-2, 0.1
STEPS = 6
# l1 has no bias: BatchNorm right after it would give that bias a gradient of rounding noise only,
# which Adam's normalization turns into steps of either sign (no two implementations agree on them).
NAMES = ["bn.bias", "bn.scale", "l1.kernel", "l2.bias", "l2.kernel"]


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(3, 8, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.l2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(jax.nn.relu(self.bn(self.l1(x)))))


def _data(seed=0, n=16):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, 3)), jnp.float32)
    y = jnp.asarray(np.sin(np.asarray(x) @ rng.standard_normal((3, 1))), jnp.float32)
    return x, y


def _loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


TRACES = []


@nnx.jit
def train_step(model, optimizer, x, y):
    TRACES.append(1)  # runs only while tracing
    loss, grads = nnx.value_and_grad(_loss)(model, x, y)
    optimizer.update(model, grads)
    return loss


def _train(tx, steps=STEPS):
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = _data()
    losses = [float(train_step(model, optimizer, x, y)) for _ in range(steps)]
    return model, optimizer, losses


def _assert_same_model(a, b, rtol=2e-5, atol=1e-6):
    sa, sb = nnx.state(a), nnx.state(b)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended):
            np.testing.assert_array_equal(jax.random.key_data(x), jax.random.key_data(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_adamw_in_nnx_optimizer_trains_like_optax():
    model, optimizer, losses = _train(fo.adamw(LR, weight_decay=WD))
    ref_model, _, ref_losses = _train(optax.adamw(LR, weight_decay=WD))
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    # weights, BatchNorm statistics and the Dropout key counter alike
    _assert_same_model(model, ref_model)
    assert int(optimizer.step[...]) == STEPS


def test_set_hparams_on_opt_state_takes_effect_without_recompiling(compiles):
    model, optimizer, _ = _train(fo.adamw(LR, weight_decay=WD), steps=1)
    x, y = _data()
    hp = fo.get_hparams(optimizer.opt_state)
    assert isinstance(hp["lr"], jax.Array) and float(hp["lr"]) == pytest.approx(LR)
    assert float(hp["weight_decay"]) == pytest.approx(WD)
    fo.set_hparams(optimizer.opt_state, lr=LR)  # its own small eager ops compile once, here
    traces, compiled = len(TRACES), len(compiles)

    optimizer.opt_state = fo.set_hparams(optimizer.opt_state, lr=0.0)
    assert float(fo.get_hparams(optimizer.opt_state)["lr"]) == 0.0
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    train_step(model, optimizer, x, y)
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)  # lr 0: no step, no decay

    optimizer.opt_state = fo.set_hparams(optimizer.opt_state, lr=0.05)
    train_step(model, optimizer, x, y)
    moved = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(moved)))
    assert len(TRACES) == traces and len(compiles) == compiled
    assert float(fo.get_hparams(optimizer.opt_state)["lr"]) == pytest.approx(0.05)


def test_set_hparams_lr_matches_a_run_built_with_that_lr():
    # Two steps at LR, then set 3 * LR: the same as building the optimizer with a schedule that switches.
    model, optimizer, _ = _train(fo.adamw(LR, weight_decay=WD), steps=2)
    optimizer.opt_state = fo.set_hparams(optimizer.opt_state, lr=3 * LR)
    x, y = _data()
    for _ in range(2):
        train_step(model, optimizer, x, y)
    schedule = lambda step: jnp.where(step < 2, LR, 3 * LR)  # noqa: E731
    ref_model, _, _ = _train(fo.adamw(schedule, weight_decay=WD), steps=4)
    _assert_same_model(model, ref_model)


def test_names_are_attribute_paths_with_or_without_variables():
    model = Net(nnx.Rngs(0))
    variables = nnx.state(model, nnx.Param)
    arrays = nnx.as_pure(variables)
    assert fo.param_names(variables) == fo.param_names(arrays) == NAMES
    assert [n for n, _ in fo.named_leaves(variables)] == NAMES
    for (_, v), (_, a) in zip(fo.named_leaves(variables), fo.named_leaves(arrays)):
        assert v is a  # the Variable's value, not the Variable
    # the whole model: statistics and RNG state named the same way
    everything = fo.param_names(nnx.state(model))
    assert {"bn.mean", "bn.var", "drop.rngs.count", "drop.rngs.key"} <= set(everything)
    assert not any(".value" in n or "raw_value" in n for n in everything)
    # masks and labels stand where the Variables are: a prefix of both forms
    mask = fo.name_mask(variables, "*.bias")
    assert jax.tree.leaves(mask) == [n.endswith(".bias") for n in NAMES]
    assert jax.tree.map(lambda m, x: m, mask, arrays) == fo.name_mask(arrays, "*.bias")
    assert jax.tree.leaves(fo.names_tree(variables)) == NAMES


def test_partition_by_names_in_nnx_optimizer_matches_optax_partition():
    rules = {"*.bias": "no_decay", "bn.*": "no_decay"}
    tx = fo.partition({"decay": fo.adamw(LR, weight_decay=WD), "no_decay": fo.adamw(LR, weight_decay=0.0)},
                      fo.label_fn_from_names(rules, default="decay"))
    model, optimizer, losses = _train(tx)

    def labels(tree):  # written by hand from the key paths, for both the Variable and the array tree
        def label(path, _):
            layer, attr = path[0].key, path[1].key
            return "no_decay" if attr == "bias" or layer == "bn" else "decay"
        return jax.tree_util.tree_map_with_path(label, tree)

    ref_tx = optax.partition({"decay": optax.adamw(LR, weight_decay=WD), "no_decay": optax.adamw(LR, weight_decay=0.0)},
                             labels)
    ref_model, _, ref_losses = _train(ref_tx)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    _assert_same_model(model, ref_model)
    # each part's hyperparameters can be read and set through the nnx state
    assert set(fo.get_hparams(optimizer.opt_state)) >= {"lr", "weight_decay"}
    optimizer.opt_state = fo.set_hparams(optimizer.opt_state, lr=0.0)
    x, y = _data()
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    train_step(model, optimizer, x, y)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(nnx.state(model, nnx.Param))):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_misspelt_rule_is_refused_with_the_names():
    tx = fo.partition({"decay": fo.adamw(LR), "no_decay": fo.adam(LR)},
                      fo.label_fn_from_names({"*.bais": "no_decay"}, default="decay"))
    with pytest.raises(ValueError, match=r"rule '\*\.bais' matched no parameter; names are 'bn\.bias', "
                                         r"'bn\.scale', 'l1\.kernel'.* \(5 in all\)"):
        nnx.Optimizer(Net(nnx.Rngs(0)), tx, wrt=nnx.Param)


def test_masked_by_names_in_nnx_optimizer():
    # Decay everything but the biases through fo.masked: the biases take Adam's step alone.
    tx = fo.chain(fo.masked(fo.add_decayed_weights(WD), ["*.kernel", "bn.scale"]), fo.adam(LR))
    ref = optax.chain(optax.masked(optax.add_decayed_weights(WD),
                                   lambda t: jax.tree_util.tree_map_with_path(
                                       lambda path, _: path[1].key in ("kernel", "scale"), t)),
                      optax.adam(LR))
    model, _, losses = _train(tx)
    ref_model, _, ref_losses = _train(ref)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    _assert_same_model(model, ref_model)
