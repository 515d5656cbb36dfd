"""The compiled functional update moves no more memory than optax's, and its scalar work is not per leaf.

These guard the design, not timings: the whole-buffer reads and writes of the compiled update of one
buffer (what bounds a memory-bound step), whether a weight decay built as the number 0 reads the
parameters, and the jaxpr equations added per leaf.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import funcopt as fo
from funcopt._src.hparams import FixedHParam

N = 4099  # a size no other array of the update has


def _step(tx, apply):
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return apply(p, u), s

    return step


def buffer_traffic(tx, apply, n: int = N) -> dict[str, int]:
    """Whole-buffer reads and writes of the compiled update (update + apply) of one buffer of ``n`` floats.

    Counted on the entry computation of the optimized HLO: each instruction reads each operand of the
    buffer's shape once and writes its result once (XLA runs a fusion as one loop).
    """
    params = jnp.ones(n)
    state = tx.init(params)
    text = jax.jit(_step(tx, apply), donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
    entry = text[text.index("\nENTRY"):].splitlines()[1:]
    shape = f"f32[{n}]"
    shapes: dict[str, str] = {}
    out = {"reads": 0, "writes": 0, "param_reads": 0}
    for line in entry:
        m = re.match(r"\s*(?:ROOT )?%(\S+) = (\S+?)(?:\{[\d,]*\})? ([\w-]+)\((.*)$", line)
        if not m:
            continue
        name, result, op, rest = m.groups()
        shapes[name] = result
        if op == "parameter":
            if rest.startswith("0)"):
                params_name = name
            continue
        if op in ("tuple", "get-tuple-element", "bitcast"):
            continue
        operands = re.findall(r"%([\w.\-]+)", rest.split("), ")[0])
        out["reads"] += sum(shapes.get(o) == shape for o in operands)
        out["param_reads"] += sum(o == params_name for o in operands)
        out["writes"] += result == shape
    return out


PAIRS = {
    "adam": (lambda: fo.adam(lr=1e-3), lambda: optax.adam(1e-3)),
    "adamw": (lambda: fo.adamw(lr=1e-3, weight_decay=1e-2), lambda: optax.adamw(1e-3, weight_decay=1e-2)),
    "sgd-momentum": (lambda: fo.sgd(lr=1e-3, momentum=0.9), lambda: optax.sgd(1e-3, momentum=0.9)),
    "sgd": (lambda: fo.sgd(lr=1e-3), lambda: optax.sgd(1e-3)),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_one_buffer_update_moves_no_more_than_optax(name):
    ours, theirs = PAIRS[name]
    mine = buffer_traffic(ours(), fo.apply_updates)
    ref = buffer_traffic(theirs(), optax.apply_updates)
    assert mine["reads"] + mine["writes"] <= ref["reads"] + ref["writes"], (mine, ref)
    assert mine["param_reads"] <= ref["param_reads"], (mine, ref)


@pytest.mark.parametrize("make", [lambda wd: fo.adam(lr=1e-3, weight_decay=wd),
                                  lambda wd: fo.sgd(lr=1e-3, momentum=0.9, weight_decay=wd),
                                  lambda wd: fo.rmsprop(lr=1e-3, weight_decay=wd)],
                         ids=["adam", "sgd", "rmsprop"])
def test_a_number_zero_decay_never_reads_the_parameters(make):
    # the parameters are read once, by apply_updates; a coupled decay held as data (an array) reads them
    # again in each fusion that computes a moment
    assert buffer_traffic(make(0), fo.apply_updates)["param_reads"] == 1
    assert buffer_traffic(make(0.0), fo.apply_updates)["param_reads"] == 1
    assert buffer_traffic(make(jnp.asarray(0.0)), fo.apply_updates)["param_reads"] > 1


def test_adamw_number_zero_decay_has_no_decay_term():
    with_term = buffer_traffic(fo.adamw(lr=1e-3, weight_decay=jnp.asarray(0.0)), fo.apply_updates)
    without = buffer_traffic(fo.adamw(lr=1e-3, weight_decay=0.0), fo.apply_updates)
    ref = buffer_traffic(optax.adam(1e-3), optax.apply_updates)
    assert without == ref and with_term["param_reads"] == 1, (without, with_term, ref)


def test_fixed_zero_decay_in_the_state():
    state = fo.adam(lr=0.1).init({"w": jnp.ones(2)})
    assert state.hparams["weight_decay"] == FixedHParam(0.0)
    assert fo.get_hparams(state)["weight_decay"] == 0.0
    assert fo.set_hparams(state, weight_decay=0.0).hparams["weight_decay"] == FixedHParam(0.0)
    assert not isinstance(fo.adam(lr=0.1, weight_decay=jnp.asarray(0.0)).init({"w": jnp.ones(2)})
                          .hparams["weight_decay"], FixedHParam)
    assert not isinstance(fo.adam(lr=0.1, weight_decay=1e-2).init({"w": jnp.ones(2)})
                          .hparams["weight_decay"], FixedHParam)


def _torch_adam_steps(weight_decays, lr=0.1):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = torch.optim.Adam([w], lr=lr)
    out = []
    for i, wd in enumerate(weight_decays):
        opt.param_groups[0]["weight_decay"] = wd
        w.grad = torch.tensor([0.5, -1.0, 0.25]) * (i + 1)
        opt.step()
        out.append(w.detach().numpy().copy())
    return out


def _traced_step(tx):
    """A jitted update + apply of ``tx``, and the list that gains an entry each time it is traced."""
    traces = []

    @jax.jit
    def step(p, s, g):
        traces.append(1)
        return _step(tx, fo.apply_updates)(p, s, g)

    return step, traces


def test_set_hparams_turns_a_fixed_zero_decay_on_with_one_compile():
    # torch's param_groups['weight_decay'] may change at any step: so may a decay built as the number 0,
    # at the cost of one compile (the decay term enters the program); later changes compile nothing
    weight_decays = [0.0, 0.0, 0.5, 0.1, 0.0, 0.3]
    tx = fo.adam(lr=0.1)
    params = jnp.array([1.0, -2.0, 3.0])
    state = tx.init(params)
    step, traces = _traced_step(tx)

    seen = []
    for i, wd in enumerate(weight_decays):
        state = fo.set_hparams(state, weight_decay=wd)
        params, state = step(params, state, jnp.array([0.5, -1.0, 0.25]) * (i + 1))
        seen.append(np.asarray(params))
    assert len(traces) == 2
    np.testing.assert_allclose(seen, _torch_adam_steps(weight_decays), rtol=1e-5, atol=1e-6)


def test_an_array_decay_changes_without_compiling():
    tx = fo.adam(lr=0.1, weight_decay=jnp.asarray(0.0))
    params = jnp.array([1.0, -2.0, 3.0])
    state = tx.init(params)
    step, traces = _traced_step(tx)

    for wd in [0.0, 0.5, 0.0]:
        params, state = step(params, fo.set_hparams(state, weight_decay=wd), jnp.ones(3))
    assert len(traces) == 1


def test_a_fixed_zero_decay_needs_no_params():
    tx = fo.adamw(lr=0.1, weight_decay=0)
    updates, _ = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1], rtol=1e-6)


def test_a_rule_is_traced_once_per_kind_of_leaf():
    # tracing cost does not grow with the leaves: 30 leaves of 3 shapes trace the rule 3 times
    from funcopt._src.hparams import per_leaf_optimizer

    calls = []

    def rule(g, p, slots, hp, step):
        calls.append(g.shape)
        m = hp["beta"] * slots["m"] + (1 - hp["beta"]) * g
        return -hp["lr"] / (1 - hp["beta"] ** step.astype(g.dtype)) * m, {"m": m}

    tx = per_leaf_optimizer(hparams={"lr": 0.1, "beta": 0.9}, slots=("m",), leaf_update=rule)
    params = [jnp.full((2 + i % 3,), float(i)) for i in range(30)]
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert sorted(calls) == [(2,), (3,), (4,)]
    for i, u in enumerate(updates):  # first step: -lr * g
        np.testing.assert_allclose(u, -0.1 * params[i], rtol=1e-6)


def _fusions(tx, apply, params):
    state = tx.init(params)
    text = jax.jit(_step(tx, apply)).lower(params, state, params).compile().as_text()
    entry = text[text.index("\nENTRY"):]
    return len(re.findall(r" fusion\(", entry))


def test_many_leaves_compile_to_as_many_fusions_as_optax():
    params = [jnp.ones((5 + i % 4,)) for i in range(24)]
    assert _fusions(fo.adam(1e-3), fo.apply_updates, params) <= _fusions(optax.adam(1e-3), optax.apply_updates, params)


def test_sgd_number_zero_dampening_matches_torch_and_can_be_turned_on():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    tx = fo.sgd(lr=0.1, momentum=0.9)
    params = jnp.array([1.0, -2.0, 3.0])
    state = tx.init(params)
    assert state.hparams["dampening"] == FixedHParam(0.0)
    step = jax.jit(_step(tx, fo.apply_updates))
    for i, damp in enumerate([0.0, 0.0, 0.5, 0.5]):
        opt.param_groups[0]["dampening"] = damp
        w.grad = torch.tensor([0.5, -1.0, 0.25]) * (i + 1)
        opt.step()
        state = fo.set_hparams(state, dampening=damp)
        params, state = step(params, state, jnp.array([0.5, -1.0, 0.25]) * (i + 1))
        np.testing.assert_allclose(params, w.detach().numpy(), rtol=1e-6, atol=1e-7)
