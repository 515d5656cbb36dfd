"""The MindSpore-named optimizers against MindSpore's documented formulas, state names, signatures and guide."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import mindspore as ms
from tests.compat.mindspore.references import (
    DTYPES,
    LR_LIST,
    adadelta_rule,
    adagrad_rule,
    adam_kernel_rule,
    adam_weight_decay_rule,
    adamax_rule,
    asgd_rule,
    assert_trajectory,
    constant,
    filter_flags,
    ftrl_rule,
    lamb_rule,
    lars_momentum_rule,
    list_lr,
    momentum_rule,
    names_of,
    proximal_adagrad_rule,
    reference,
    rmsprop_rule,
    rprop_rule,
    scaled,
    setup,
    sgd_rule,
)
from tests.reference.harness import precision

RULE_CASES = {
    "Momentum": (lambda p: ms.Momentum(p, 0.05, 0.9, weight_decay=0.01, loss_scale=4.0),
                 dict(rule=momentum_rule(0.9), lr=constant(0.05), weight_decay=0.01, loss_scale=4.0)),
    "Momentum-nesterov-list-lr": (
        lambda p: ms.Momentum(p, LR_LIST, 0.8, weight_decay=0.02, use_nesterov=True),
        dict(rule=momentum_rule(0.8, nesterov=True), lr=list_lr, weight_decay=0.02)),
    "Momentum-schedule-wd": (
        lambda p: ms.Momentum(p, ms.ExponentialDecayLR(0.05, 0.9, 4), 0.9,
                              weight_decay=ms.WarmUpLR(0.02, 5)),
        dict(rule=momentum_rule(0.9), lr=lambda t: 0.05 * 0.9 ** (t / 4), weight_decay=lambda t: 0.02 * min(t, 5) / 5)),
    "SGD": (lambda p: ms.SGD(p, 0.05, momentum=0.9, dampening=0.3, weight_decay=0.01, loss_scale=8.0),
            dict(rule=sgd_rule(0.9, 0.3, False), lr=constant(0.05), weight_decay=0.01, loss_scale=8.0,
                 pre_decay=False, decay_flags="all")),
    "SGD-nesterov": (lambda p: ms.SGD(p, momentum=0.9, nesterov=True),
                     dict(rule=sgd_rule(0.9, 0.0, True), lr=constant(0.1), pre_decay=False)),
    "SGD-plain": (lambda p: ms.SGD(p, 0.03, weight_decay=0.1),
                  dict(rule=sgd_rule(0.0, 0.0, False), lr=constant(0.03), weight_decay=0.1, pre_decay=False,
                       decay_flags="all")),
    "Adam": (lambda p: ms.Adam(p, 0.01, weight_decay=0.01, loss_scale=2.0),
             dict(rule=adam_kernel_rule(0.9, 0.999, 1e-8), lr=constant(0.01), weight_decay=0.01, loss_scale=2.0)),
    "Adam-nesterov": (lambda p: ms.Adam(p, 0.01, beta1=0.8, beta2=0.95, eps=1e-3, use_nesterov=True),
                      dict(rule=adam_kernel_rule(0.8, 0.95, 1e-3, nesterov=True), lr=constant(0.01))),
    "Adam-amsgrad": (lambda p: ms.Adam(p, LR_LIST, eps=1e-6, use_amsgrad=True, weight_decay=0.05),
                     dict(rule=adam_kernel_rule(0.9, 0.999, 1e-6, amsgrad=True), lr=list_lr, weight_decay=0.05)),
    "AdamWeightDecay": (lambda p: ms.AdamWeightDecay(p, 0.01, beta1=0.8, beta2=0.9, weight_decay=0.1),
                        dict(rule=adam_weight_decay_rule(0.8, 0.9, 1e-6), lr=constant(0.01), weight_decay=0.1,
                             pre_decay=False)),
    "AdaMax": (lambda p: ms.AdaMax(p, 0.01, eps=1e-4, weight_decay=0.01, loss_scale=16.0),
               dict(rule=adamax_rule(0.9, 0.999, 1e-4), lr=constant(0.01), weight_decay=0.01, loss_scale=16.0)),
    "Adagrad": (lambda p: ms.Adagrad(p, accum=0.2, learning_rate=0.05, weight_decay=0.01),
                dict(rule=adagrad_rule(0.2), lr=constant(0.05), weight_decay=0.01)),
    "Adagrad-no-update-slots": (lambda p: ms.Adagrad(p, accum=0.5, learning_rate=0.05, update_slots=False),
                                dict(rule=adagrad_rule(0.5, update_slots=False), lr=constant(0.05))),
    "Adadelta": (lambda p: ms.Adadelta(p, 0.5, rho=0.8, epsilon=1e-4, weight_decay=0.01, loss_scale=2.0),
                 dict(rule=adadelta_rule(0.8, 1e-4), lr=constant(0.5), weight_decay=0.01, loss_scale=2.0)),
    "RMSProp": (lambda p: ms.RMSProp(p, 0.01, decay=0.8, momentum=0.5, epsilon=1e-6, weight_decay=0.01),
                dict(rule=rmsprop_rule(0.8, 0.5, 1e-6, False), lr=constant(0.01), weight_decay=0.01)),
    "RMSProp-centered": (lambda p: ms.RMSProp(p, LR_LIST, decay=0.9, centered=True, loss_scale=4.0),
                         dict(rule=rmsprop_rule(0.9, 0.0, 1e-10, True), lr=list_lr, loss_scale=4.0)),
    "Rprop": (lambda p: ms.Rprop(p, 0.01, etas=(0.4, 1.3), step_sizes=(1e-4, 0.02), weight_decay=0.01),
              dict(rule=rprop_rule((0.4, 1.3), (1e-4, 0.02)), lr=constant(0.01), weight_decay=0.01)),
    "ASGD": (lambda p: ms.ASGD(p, 0.05, lambd=0.01, alpha=0.75, t0=10.0, weight_decay=0.01),
             dict(rule=asgd_rule(0.01, 0.75, 10.0), lr=constant(0.05), weight_decay=0.01)),
    "FTRL": (lambda p: ms.FTRL(p, initial_accum=0.1, learning_rate=0.05, l1=0.01, l2=0.02, weight_decay=0.01),
             dict(rule=ftrl_rule(0.1, -0.5, 0.01, 0.02), lr=constant(0.05), weight_decay=0.01, decay_flags="all")),
    "FTRL-lr-power": (lambda p: ms.FTRL(p, initial_accum=0.5, learning_rate=0.1, lr_power=-0.25, loss_scale=2.0),
                      dict(rule=ftrl_rule(0.5, -0.25, 0.0, 0.0), lr=constant(0.1), loss_scale=2.0)),
    "ProximalAdagrad": (lambda p: ms.ProximalAdagrad(p, accum=0.1, learning_rate=0.05, l1=0.01, l2=0.05,
                                                     weight_decay=0.01),
                        dict(rule=proximal_adagrad_rule(0.1, 0.01, 0.05), lr=constant(0.05), weight_decay=0.01)),
    "Lamb": (lambda p: ms.Lamb(p, 0.01, beta1=0.8, beta2=0.95, weight_decay=0.1),
             dict(rule=lamb_rule(0.8, 0.95, 1e-6), lr=constant(0.01), weight_decay=0.1, pre_decay=False)),
}


def run_case(name, dtype):
    make, spec = RULE_CASES[name]
    spec = dict(spec)
    params, grads = setup(dtype)
    loss_scale = spec.get("loss_scale", 1.0)
    flags = spec.pop("decay_flags", None)
    spec["decay_flags"] = None if flags == "all" else filter_flags(params)
    ref_history, ref_states, _ = reference(params, scaled(grads, loss_scale), **spec)
    opt = make(jax.tree.map(jnp.asarray, params))
    assert_trajectory(opt, scaled(grads, loss_scale), ref_history, dtype, name)
    return opt, ref_states


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(RULE_CASES))
def test_update_rule_matches_documented_formula(name, dtype):
    with precision(dtype):
        run_case(name, dtype)


STATE_NAMES = {"Momentum": {"momentum_buffer": "v"}, "Adam-amsgrad": {"exp_avg": "m", "exp_avg_sq": "v",
                                                                       "max_exp_avg_sq": "vhat"},
               "RMSProp-centered": {"square_avg": "ms", "grad_avg": "mg", "momentum_buffer": "mom"},
               "Rprop": {"prev": "prev", "step_size": "step_size"}, "ASGD": {"ax": "ax", "eta": "eta", "mu": "mu"},
               "FTRL": {"accum": "m", "linear": "u"}, "ProximalAdagrad": {"accum": "a"},
               "Adagrad": {"sum": "h"}, "Adadelta": {"square_avg": "a", "acc_delta": "d"},
               "AdaMax": {"exp_avg": "m", "exp_inf": "v"}, "AdamWeightDecay": {"exp_avg": "m", "exp_avg_sq": "v"}}


@pytest.mark.parametrize("name", list(STATE_NAMES))
def test_state_matches_reference_field_by_field(name):
    with precision(np.float64):
        opt, ref_states = run_case(name, np.float64)
        names = names_of(opt.parameters)
        for ours, theirs in STATE_NAMES[name].items():
            for k, pname in enumerate(names):
                np.testing.assert_allclose(np.asarray(opt.state[pname][ours], np.float64),
                                           np.broadcast_to(ref_states[k][theirs], np.shape(opt.state[pname][ours])),
                                           rtol=1e-10, atol=1e-12, err_msg=f"{name} {ours} of {pname}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov, use_clip", [(False, False), (True, False), (False, True)])
def test_lars_over_momentum(dtype, nesterov, use_clip):
    with precision(dtype):
        params, grads = setup(dtype)
        names = names_of(params)
        lars_flags = ["LayerNorm" not in n and "bias" not in n for n in names]
        loss_scale = 2.0
        ref_history, _, _ = reference(params, scaled(grads, loss_scale),
                                      lars_momentum_rule(0.9, 0.02, 1e-5, lars_flags, nesterov, use_clip),
                                      constant(0.1), weight_decay=0.01, loss_scale=loss_scale, pre_decay=False,
                                      decay_flags=filter_flags(params))
        inner = ms.Momentum(jax.tree.map(jnp.asarray, params), 0.1, 0.9, weight_decay=0.01, loss_scale=loss_scale,
                            use_nesterov=nesterov)
        opt = ms.LARS(inner, epsilon=1e-5, coefficient=0.02, use_clip=use_clip)
        assert opt.lars_flag == tuple(lars_flags)
        assert_trajectory(opt, scaled(grads, loss_scale), ref_history, dtype, "LARS")


def test_lars_filter_receives_named_parameters():
    params = {"layer": {"LayerNorm": {"gamma": jnp.ones(3)}, "weight": jnp.ones((3, 3))}, "head": jnp.ones((2, 3))}
    seen = []

    def keep_matrices(param):
        seen.append((param.name, param.shape, param.ndim))
        return param.ndim == 2 and param.name != "head"

    opt = ms.LARS(ms.Momentum(params, 0.1, 0.9), lars_filter=keep_matrices)
    assert seen == [("head", (2, 3), 2), ("layer.LayerNorm.gamma", (3,), 1), ("layer.weight", (3, 3), 2)]
    assert opt.lars_flag == (False, False, True)
    assert ms.LARS(ms.Momentum(params, 0.1, 0.9)).lars_flag == (True, False, True)


def test_lars_errors():
    params = {"w": jnp.ones(2)}
    with pytest.raises(TypeError):
        ms.LARS(fo.optim.SGD(params))
    with pytest.raises(TypeError):
        ms.LARS(ms.Momentum(params, 0.1, 0.9), epsilon=1)
    with pytest.raises(TypeError):
        ms.LARS(ms.Momentum(params, 0.1, 0.9), use_clip=1)
    with pytest.raises(NotImplementedError):
        ms.LARS(ms.Adam(params))
    groups = [{"params": {"a": jnp.ones(2)}, "lr": [0.1, 0.2]}, {"params": {"b": jnp.ones(2)}}]
    with pytest.raises(ValueError):
        ms.LARS(ms.Momentum(groups, 0.1, 0.9), use_clip=True)


# ------------------------------------------------------------------------------------------ signatures


SIGNATURES = {
    ms.Optimizer: "learning_rate, parameters, weight_decay=0.0, loss_scale=1.0",
    ms.Momentum: "params, learning_rate, momentum, weight_decay=0.0, loss_scale=1.0, use_nesterov=False",
    ms.SGD: "params, learning_rate=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, "
            "loss_scale=1.0",
    ms.Adam: "params, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-08, use_locking=False, "
             "use_nesterov=False, weight_decay=0.0, loss_scale=1.0, use_amsgrad=False, **kwargs",
    ms.AdamWeightDecay: "params, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-06, weight_decay=0.0",
    ms.AdaMax: "params, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0, loss_scale=1.0",
    ms.Adagrad: "params, accum=0.1, learning_rate=0.001, update_slots=True, loss_scale=1.0, weight_decay=0.0",
    ms.Adadelta: "params, learning_rate=1.0, rho=0.9, epsilon=1e-06, loss_scale=1.0, weight_decay=0.0",
    ms.RMSProp: "params, learning_rate=0.1, decay=0.9, momentum=0.0, epsilon=1e-10, use_locking=False, "
                "centered=False, loss_scale=1.0, weight_decay=0.0",
    ms.Rprop: "params, learning_rate=0.1, etas=(0.5, 1.2), step_sizes=(1e-06, 50.0), weight_decay=0.0",
    ms.ASGD: "params, learning_rate=0.1, lambd=0.0001, alpha=0.75, t0=1000000.0, weight_decay=0.0",
    ms.FTRL: "params, initial_accum=0.1, learning_rate=0.001, lr_power=-0.5, l1=0.0, l2=0.0, use_locking=False, "
             "loss_scale=1.0, weight_decay=0.0",
    ms.ProximalAdagrad: "params, accum=0.1, learning_rate=0.001, l1=0.0, l2=0.0, use_locking=False, "
                        "loss_scale=1.0, weight_decay=0.0",
    ms.Lamb: "params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-06, weight_decay=0.0",
    ms.LARS: "optimizer, epsilon=1e-05, coefficient=0.001, use_clip=False, lars_filter=_default_lars_filter",
}


@pytest.mark.parametrize("cls", list(SIGNATURES), ids=lambda c: c.__name__)
def test_signature_is_mindspore(cls):
    sig = inspect.signature(cls)
    parts = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.default is inspect.Parameter.empty:
            parts.append(p.name)
        else:
            default = p.default.__name__ if callable(p.default) else repr(p.default)
            parts.append(f"{p.name}={default}")
    assert ", ".join(parts) == SIGNATURES[cls]


def test_migration_guide_code_runs():
    """The python blocks of docs/migration_mindspore.md, in order, in one namespace."""
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[3] / "docs" / "migration_mindspore.md"
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "migration_mindspore"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"migration_mindspore.md block {i + 1}", "exec"), namespace)
