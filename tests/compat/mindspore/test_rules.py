"""The rule pipelines: the learning-rate forms MindSpore accepts, and the functional rules the optimizers run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import mindspore as ms
from funcopt.optimizers.adam import adam_mindspore, adam_weight_decay
from funcopt.optimizers.adamax import adamax_mindspore
from funcopt.optimizers.rmsprop import rmsprop_mindspore
from tests.compat.mindspore.references import (
    DTYPES,
    adam_kernel_rule,
    adam_weight_decay_rule,
    adamax_rule,
    reference,
    rmsprop_rule,
    setup,
)
from tests.reference.harness import precision, run_funcopt, tolerance

# ------------------------------------------------------------------------------------------ learning rates


@pytest.mark.parametrize("learning_rate, expected", [
    (0.1, [0.1] * 5),
    (1, [1.0] * 5),
    (np.float32(0.25), [0.25] * 5),
    (jnp.asarray(0.3), [0.3] * 5),
    (jnp.asarray([0.3, 0.2, 0.1]), [0.3, 0.2, 0.1, 0.1, 0.1]),
    (np.array([0.5, 0.4]), [0.5, 0.4, 0.4, 0.4, 0.4]),
    ([0.3, 0.2, 0.1], [0.3, 0.2, 0.1, 0.1, 0.1]),
    ((0.3, 0.2), [0.3, 0.2, 0.2, 0.2, 0.2]),
    (ms.PolynomialDecayLR(0.1, 0.01, 4, 0.5), [0.01 + 0.09 * (1 - min(t, 4) / 4) ** 0.5 for t in range(5)]),
    (fo.schedules.warm_up_lr(0.1, 2), [0.0, 0.05, 0.1, 0.1, 0.1]),
])
def test_learning_rate_forms(learning_rate, expected):
    opt = ms.SGD({"w": jnp.zeros(1)}, learning_rate)
    seen, moves = [], []
    for _ in range(5):
        seen.append(float(opt.get_lr()))
        before = float(opt.parameters["w"][0])
        opt({"w": jnp.ones(1)})
        moves.append(before - float(opt.parameters["w"][0]))
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    np.testing.assert_allclose(moves, expected, rtol=1e-5, atol=1e-7)
    assert opt.dynamic_lr == (len(set(expected)) > 1)


def test_get_lr_parameter_returns_mindspore_values():
    sched = ms.CosineDecayLR(0.01, 0.1, 4)
    opt = ms.Adam([{"params": {"a": jnp.ones(2)}, "lr": sched}, {"params": {"b": jnp.ones(2)}, "lr": [0.1, 0.2]},
                   {"params": {"c": jnp.ones(2)}}], learning_rate=0.3)
    assert opt.get_lr_parameter("a") is sched
    np.testing.assert_allclose(opt.get_lr_parameter("b"), [0.1, 0.2])
    assert float(opt.get_lr_parameter("c")) == pytest.approx(0.3)
    assert float(opt.learning_rate) == pytest.approx(0.3)
    opt2 = ms.Adam({"a": jnp.ones(2)}, learning_rate=[0.1, 0.2])
    np.testing.assert_allclose(opt2.get_lr_parameter(["a"])[0], [0.1, 0.2])


# ------------------------------------------------------------------------------------------ functional variants

FUNCTIONAL_CASES = {
    "adam_mindspore": (lambda lr: adam_mindspore(lr, (0.8, 0.95), 1e-4, weight_decay=0.01),
                       adam_kernel_rule(0.8, 0.95, 1e-4), 0.01),
    "adam_mindspore-nesterov": (lambda lr: adam_mindspore(lr, eps=1e-6, nesterov=True),
                                adam_kernel_rule(0.9, 0.999, 1e-6, nesterov=True), 0.0),
    "adam_mindspore-amsgrad": (lambda lr: adam_mindspore(lr, eps=1e-6, amsgrad=True),
                               adam_kernel_rule(0.9, 0.999, 1e-6, amsgrad=True), 0.0),
    "adam_weight_decay": (lambda lr: adam_weight_decay(lr, (0.8, 0.9), weight_decay=0.05),
                          adam_weight_decay_rule(0.8, 0.9, 1e-6), 0.05),
    "adamax_mindspore": (lambda lr: adamax_mindspore(lr, eps=1e-4, weight_decay=0.01), adamax_rule(0.9, 0.999, 1e-4),
                         0.01),
    "rmsprop_mindspore": (lambda lr: rmsprop_mindspore(lr, alpha=0.8, eps=1e-6, momentum=0.5),
                          rmsprop_rule(0.8, 0.5, 1e-6, False), 0.0),
    "rmsprop_mindspore-centered": (lambda lr: rmsprop_mindspore(lr, eps=1e-6, weight_decay=0.02, momentum=0.9,
                                                                centered=True),
                                   rmsprop_rule(0.9, 0.9, 1e-6, True), 0.02),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUNCTIONAL_CASES))
def test_functional_variant_matches_documented_formula(name, dtype):
    """The functional rules alone, jitted, with a scheduled learning rate held in the state."""
    make, rule, weight_decay = FUNCTIONAL_CASES[name]
    with precision(dtype):
        params, grads = setup(dtype, steps=30)
        tx = make(fo.schedules.exponential_decay_lr(0.02, 0.8, 7))
        ours, state = run_funcopt(tx, params, grads)
        decoupled = name == "adam_weight_decay"
        ref, _, _ = reference(params, grads, rule, lambda t: 0.02 * 0.8 ** (t / 7), weight_decay=weight_decay,
                              pre_decay=not decoupled)
        tol = tolerance(dtype)
        for step, (a, b) in enumerate(zip(ours, ref)):
            for (leaf, x), y in zip(fo.named_leaves(a), jax.tree.leaves(b)):
                assert x.dtype == np.dtype(dtype)
                np.testing.assert_allclose(np.asarray(x, np.float64), y, err_msg=f"step {step + 1} {leaf}", **tol)
        assert float(fo.get_hparams(state)["lr"]) == pytest.approx(0.02 * 0.8 ** (29 / 7), rel=1e-5)
    if name.startswith("rmsprop"):
        init = tx.init({"w": jnp.zeros(3)})
        np.testing.assert_array_equal(init.slots["square_avg"]["w"], np.ones(3))  # MindSpore's mean_square
