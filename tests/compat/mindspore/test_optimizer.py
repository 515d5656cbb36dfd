"""The base Optimizer: MindSpore's groups, order_params, decay filter, helpers, custom subclasses, state_dict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import mindspore as ms
from tests.compat.mindspore.references import (
    DTYPES,
    LR_LIST,
    P,
    assert_trajectory,
    constant,
    filter_flags,
    list_lr,
    momentum_rule,
    names_of,
    reference,
    scaled,
    setup,
)
from tests.reference.harness import precision

# ------------------------------------------------------------------------------------------ groups


def conv_net():
    return {"conv1": {"weight": jnp.ones((4, 16, 3))}, "conv2": {"weight": jnp.full((4, 16, 3), 2.0)},
            "bn": {"gamma": jnp.ones(4), "beta": jnp.zeros(4)}, "fc": {"weight": jnp.ones((2, 4)),
                                                                      "bias": jnp.zeros(2)}}


def documented_groups(net):
    """The docs' group example: conv params decayed and centralized, the others with lr 0.01, in net order."""
    conv_params = {k: v for k, v in net.items() if "conv" in k}
    no_conv_params = {k: v for k, v in net.items() if "conv" not in k}
    return [{"params": conv_params, "weight_decay": 0.01, "grad_centralization": True},
            {"params": no_conv_params, "lr": 0.01}, {"order_params": net}]


@pytest.mark.parametrize("cls", [ms.Momentum, ms.Adam, ms.AdaMax, ms.Adagrad, ms.Adadelta, ms.RMSProp, ms.Rprop,
                                 ms.ASGD, ms.ProximalAdagrad, ms.SGD, ms.Lamb])
def test_documented_group_example(cls):
    net = conv_net()
    kwargs = {"momentum": 0.9} if cls is ms.Momentum else {}
    opt = cls(documented_groups(net), learning_rate=0.1, weight_decay=0.0, **kwargs)
    assert opt.is_group and opt.is_group_lr and opt.is_group_params_ordered
    names = ["bn.beta", "bn.gamma", "conv1.weight", "conv2.weight", "fc.bias", "fc.weight"]
    assert fo.param_names(opt.parameters) == names
    # "The conv_params's parameters will use a learning rate of default value 0.1 and a weight decay of 0.01
    # and grad centralization of True. The no_conv_params's parameters will use a learning rate of 0.01 and a
    # weight decay of default value 0.0 and grad centralization of False."
    lrs = opt.get_lr_parameter(names)
    assert [float(x) for x in lrs] == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01])
    assert [float(x) for x in opt.get_lr()] == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01])
    assert [float(x) for x in opt.get_weight_decay()] == pytest.approx([0, 0, 0.01, 0.01, 0, 0])
    g = jax.tree.map(lambda x: jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) + 1.0, net)
    centered = opt.gradients_centralization(g)
    np.testing.assert_allclose(np.asarray(centered["conv1"]["weight"]).mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_array_equal(centered["fc"]["weight"], g["fc"]["weight"])


def test_documented_get_lr_parameter_example():
    net = conv_net()
    conv_params = {k: v for k, v in net.items() if "conv" in k}
    no_conv_params = {k: v for k, v in net.items() if "conv" not in k}
    group_params = [{"params": conv_params, "lr": 0.05}, {"params": no_conv_params, "lr": 0.01}]
    optim = ms.Momentum(group_params, learning_rate=0.1, momentum=0.9, weight_decay=0.0)
    conv_lr = optim.get_lr_parameter(["conv1.weight", "conv2.weight"])
    assert isinstance(conv_lr, list) and float(conv_lr[0]) == pytest.approx(0.05)  # print(conv_lr[0]) -> 0.05
    assert float(optim.get_lr_parameter("fc.weight")) == pytest.approx(0.01)
    assert float(optim.get_lr_parameter(ms.NamedParameter("fc.bias", net["fc"]["bias"]))) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        optim.get_lr_parameter("nope")
    with pytest.raises(TypeError):
        optim.get_lr_parameter(3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_update_with_centralization_and_order(dtype):
    """Groups with their own lr, weight decay and centralization, against the reference, in order_params' order."""
    with precision(dtype):
        params, grads = setup(dtype)
        p = jax.tree.map(jnp.asarray, params)
        first = {"conv": p["conv"], "cube": p["cube"], "fc": {"weight": p["fc"]["weight"]}}
        second = {"bn": p["bn"], "fc": {"bias": p["fc"]["bias"]}, "scale": p["scale"]}
        groups = [{"params": first, "weight_decay": 0.05, "grad_centralization": True},
                  {"params": second, "lr": 0.01}, {"order_params": p}]
        opt = ms.Momentum(groups, 0.1, 0.9, weight_decay=0.02, loss_scale=4.0)
        names = names_of(params)
        in_first = [n.startswith(("conv", "cube", "fc.weight")) for n in names]
        wd_of = [0.05 if f else 0.02 for f in in_first]

        def rule(p_, g, s, lr, t, k, wd, flag):
            return momentum_rule(0.9)(p_, g, s, 0.1 if in_first[k] else 0.01, t, k, wd, flag)

        # per-parameter weight decay: run the reference once per group value and keep each group's leaves
        hist_a, _, _ = reference(params, scaled(grads, 4.0), rule, constant(0.1), weight_decay=0.05,
                                 loss_scale=4.0, gc_flags=in_first)
        hist_b, _, _ = reference(params, scaled(grads, 4.0), rule, constant(0.1), weight_decay=0.02,
                                 loss_scale=4.0, gc_flags=in_first)
        merged = [treedef_merge(a, b, [w == 0.05 for w in wd_of]) for a, b in zip(hist_a, hist_b)]
        assert_trajectory(opt, scaled(grads, 4.0), merged, dtype, "groups")
        assert fo.param_names(opt.parameters) == names


def treedef_merge(a, b, take_a):
    leaves = [x if t else y for x, y, t in zip(jax.tree.leaves(a), jax.tree.leaves(b), take_a)]
    return jax.tree.structure(a).unflatten(leaves)


def test_groups_without_order_params_keep_their_trees():
    a, b = {"w": jnp.ones(2)}, {"v": jnp.ones(3)}
    opt = ms.SGD([{"params": a, "lr": 0.5}, {"params": b}], learning_rate=0.1)
    out = opt([{"w": jnp.ones(2)}, {"v": jnp.ones(3)}])
    assert out == (True, True)
    np.testing.assert_allclose(opt.parameters[0]["w"], 0.5)
    np.testing.assert_allclose(opt.parameters[1]["v"], 0.9)
    opt((jnp.ones(2), jnp.ones(3)))  # MindSpore's flat tuple of gradients
    np.testing.assert_allclose(opt.parameters[0]["w"], 0.0, atol=1e-7)


def test_default_weight_decay_filter_and_helpers():
    net = conv_net()
    opt = ms.Momentum(net, 0.1, 0.9, weight_decay=0.1, loss_scale=2.0)
    assert float(opt.get_weight_decay()) == pytest.approx(0.2)  # weight_decay * loss_scale, as MindSpore holds it
    zeros = jax.tree.map(jnp.zeros_like, net)
    decayed = opt.decay_weight(zeros)
    for name, g in fo.named_leaves(decayed):
        expected = 0.0 if ("beta" in name or "gamma" in name) else 0.2 * 1.0
        p = dict(fo.named_leaves(net))[name]
        np.testing.assert_allclose(g, expected * p, err_msg=name)
    assert opt.gradients_centralization(zeros) is zeros  # not grouped: nothing to centralize
    np.testing.assert_allclose(opt.scale_grad(jax.tree.map(lambda x: x + 4.0, zeros))["fc"]["weight"], 2.0)
    # the update leaves the norm layer undecayed: with zero gradients only decayed parameters move
    opt(zeros)
    np.testing.assert_array_equal(opt.parameters["bn"]["gamma"], net["bn"]["gamma"])
    np.testing.assert_allclose(opt.parameters["fc"]["weight"], 1.0 - 0.1 * 0.1)


def test_ftrl_and_sgd_decay_every_parameter():
    net = {"bn": {"gamma": jnp.ones(2)}, "w": jnp.ones(2)}
    zeros = jax.tree.map(jnp.zeros_like, net)
    sgd = ms.SGD(net, 0.1, weight_decay=0.5)
    sgd(zeros)
    np.testing.assert_allclose(sgd.parameters["bn"]["gamma"], 0.95)  # SGD's kernel decays every parameter
    np.testing.assert_allclose(sgd.decay_weight(zeros)["bn"]["gamma"], 0.0)  # decay_flags keep the filter
    ftrl = ms.FTRL(net, weight_decay=0.5)
    np.testing.assert_allclose(ftrl.decay_weight(zeros)["bn"]["gamma"], 0.5)  # FTRL's decay_flags are all True


def test_gradients_of_the_wrong_structure():
    opt = ms.Momentum(P, 0.1, 0.9)
    with pytest.raises(ValueError):
        opt({"v": jnp.ones(2)})
    with pytest.raises(ValueError):
        opt({"w": jnp.ones(3)})


# ------------------------------------------------------------------------------------------ custom optimizers


def test_custom_optimizer_from_the_helpers():
    class PlainSGD(ms.Optimizer):
        def construct(self, gradients):
            gradients = self.decay_weight(gradients)
            gradients = self.gradients_centralization(gradients)
            gradients = self.scale_grad(gradients)
            lr = self.get_lr()
            self.parameters = jax.tree.map(lambda p, g: p - lr * g, self.parameters, gradients)
            return True

    with precision(np.float64):
        params, grads = setup(np.float64)
        opt = PlainSGD(LR_LIST, jax.tree.map(jnp.asarray, params), weight_decay=0.01, loss_scale=4.0)

        def rule(p, g, s, lr, t, k, wd, flag):
            return p - lr * g, s

        ref, _, _ = reference(params, scaled(grads, 4.0), rule, list_lr, weight_decay=0.01, loss_scale=4.0,
                              decay_flags=filter_flags(params))
        for g, expected in zip(scaled(grads, 4.0), ref):
            assert opt(jax.tree.map(jnp.asarray, g)) is True
            for x, y in zip(jax.tree.leaves(opt.parameters), jax.tree.leaves(expected)):
                np.testing.assert_allclose(x, y, rtol=1e-10)
    with pytest.raises(NotImplementedError):
        ms.Optimizer(0.1, P)(P)


def test_state_dict_round_trip_continues_the_trajectory():
    with precision(np.float64):
        params, grads = setup(np.float64, steps=10)
        a = ms.Adam(jax.tree.map(jnp.asarray, params), LR_LIST, weight_decay=0.01)
        for g in grads[:5]:
            a(g)
        sd = a.state_dict()
        b = ms.Adam(a.parameters, LR_LIST, weight_decay=0.01)
        b.load_state_dict(sd)
        assert b.global_step == 5
        assert float(b.get_lr()) == pytest.approx(LR_LIST[5])
        for g in grads[5:]:
            a(g)
            b(g)
        for x, y in zip(jax.tree.leaves(a.parameters), jax.tree.leaves(b.parameters)):
            np.testing.assert_array_equal(x, y)
