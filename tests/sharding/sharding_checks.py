"""Checks of sharded parameters and optimizer state, run on 8 simulated CPU devices.

jax reads the device count once, when it starts, so these checks run in a fresh
process: ``tests/sharding/test_sharding.py`` launches this file once with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, naming each check with its precision
(``float32:stateful[Adam]``, ``float64:zero1[Adam]``; see :func:`main`). Run by hand, from the
repository (which must be on the path: the checks read a group's state through
``tests/optim/internals.py``)::

    PYTHONPATH=. XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/sharding/sharding_checks.py [--json out.json] [[float32:|float64:]name...]

Each check prints PASS or FAIL with its traceback; the exit status is 1 if any failed.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import funcopt as fo
from funcopt._src.hparams import OptimizerState
from tests.optim import internals

# Every step after the first runs the same compiled programs on the same shardings, so placement is
# proven by the first steps; 8 steps still carry the state through its warm-up (bias corrections,
# Rprop's step sizes growing and shrinking, schedule-free's averaging) at the same tolerances.
STEPS = 8
PRECISIONS = ("float32", "float64")


def use_precision(precision: str) -> None:
    """Set the dtype and tolerances of the checks that follow (the caller switches jax's x64 mode)."""
    global X64, DTYPE, RTOL, ATOL
    X64 = precision == "float64"
    DTYPE = jnp.float64 if X64 else jnp.float32
    RTOL = 1e-10 if X64 else 1e-5
    ATOL = 1e-12 if X64 else 1e-6


use_precision("float64" if jax.config.jax_enable_x64 else "float32")

# every stateful class (its factory is the functional optimizer), with keywords that exercise its state
CLASSES = [
    (fo.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    (fo.optim.Adam, dict(lr=0.05, amsgrad=True)),
    (fo.optim.AdamW, dict(lr=0.05)),
    (fo.optim.Adagrad, dict(lr=0.1, initial_accumulator_value=0.1)),
    (fo.optim.Adadelta, dict(lr=1.0)),
    (fo.optim.Adamax, dict(lr=0.05)),
    (fo.optim.ASGD, dict(lr=0.05)),
    (fo.optim.NAdam, dict(lr=0.05)),
    (fo.optim.RAdam, dict(lr=0.05)),
    (fo.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (fo.optim.Rprop, dict(lr=0.01)),
    (fo.optim.Adafactor, dict(lr=0.05)),
    (fo.optim.Muon, dict(lr=0.05)),
    (fo.optim.LAMB, dict(lr=0.05, weight_decay=0.01)),
    (fo.optim.LARS, dict(lr=0.5, momentum=0.9, weight_decay=1e-4)),
    (fo.optim.Lion, dict(lr=0.01)),
    (fo.optim.Momentum, dict(lr=0.05, momentum=0.9)),
    (fo.optim.FTRL, dict(lr=0.1)),
    (fo.optim.ProximalAdagrad, dict(lr=0.1)),
    (fo.optim.ScheduleFreeAdamW, dict(lr=0.05)),
]
# Sharded and one-device runs are different XLA programs. Optimizers whose step uses only IEEE exactly
# rounded operations (+ - * / sqrt, sign, min/max) give the same bits in both; those with powers of the
# step count (bias corrections beta**t, ASGD's decay, schedule-free's weights) go through exp/log, whose
# XLA CPU code depends on how the program is fused and vectorized, and so do reductions across shards:
# these are compared to rtol 1e-5 (float32) / 1e-10 (float64).
EXACT = {fo.optim.SGD, fo.optim.Adagrad, fo.optim.Adadelta, fo.optim.RMSprop, fo.optim.Rprop, fo.optim.Lion,
         fo.optim.Momentum, fo.optim.FTRL, fo.optim.ProximalAdagrad}
# Muon's Newton-Schulz iteration rounds to bfloat16 after every float32-accumulated matmul (as torch does):
# summed in another order across shards (ZeRO-1 splits the matrices), a value can round to the
# neighbouring bfloat16 and the iteration carries that on (measured: 2.2% of the update's norm); its
# results are compared in norm, to 5%.
BF16 = {fo.optim.Muon}


def precision(cls) -> str:
    return "exact" if cls in EXACT else "bf16" if cls in BF16 else "close"


# schedule-free builds its state without per_leaf_optimizer (jnp.zeros_like), so under jax.jit(init)
# its exp_avg_sq lands on one device; its eager init and its updates are checked like the others
NO_JIT_INIT_PLACEMENT: set[str] = set()


def auto_mesh(shape=(4, 2), names=("data", "model")):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


def explicit_mesh(shape=(4, 2), names=("data", "model")):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * len(shape))


# name: (shape, spec on a ('data', 'model') mesh): fully sharded, partly sharded, replicated, 0-d, 1 element.
# The ZeRO-1 checks use the same shapes (replicated; see ZERO1_SPECS), so that the functional and ZeRO-1
# checks of one optimizer compare against one reference run (reference_run). The shapes are small (XLA
# compiles small blocks faster) but keep most of the state in leaves ZeRO-1 splits over 8 devices.
LAYOUT = {
    "dense.weight": ((32, 8), P("data", "model")),
    "dense.bias": ((8,), P("model")),
    "embed": ((3, 5), P()),
    "proj": ((6, 8), P(None, "model")),
    "scale": ((), P()),
    "one": ((1,), P()),
}


def layout_for(cls):
    if cls is fo.optim.Muon:  # matrices only
        return {k: v for k, v in LAYOUT.items() if len(v[0]) == 2}
    return LAYOUT


def host_tree(layout, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape).astype(DTYPE) for k, (shape, _) in layout.items()}


def on_mesh(tree, layout, mesh):
    return {k: jax.device_put(v, NamedSharding(mesh, layout[k][1])) for k, v in tree.items()}


def on_one_device(tree):
    return jax.device_put(tree, jax.devices()[0])


def grads_sequence(layout, n=STEPS, seed=100):
    return [host_tree(layout, seed + i) for i in range(n)]


# keywords of each class in CLASSES: the other checks that run a class use the same ones, and so its reference
KWARGS = {cls: kw for cls, kw in CLASSES}
_REFERENCE_RUNS: dict = {}


def reference_run(cls, n=STEPS):
    """The one-device run of ``cls.factory(**KWARGS[cls])`` on ``layout_for(cls)`` from ``host_tree(.., 0)``
    with ``grads_sequence``: for each of the first ``n`` steps, its (updates, state, params after the step).

    Computed once per class and precision in this process (eager init, jitted update, as the sharded
    runs it is compared with), and shared by every check that compares that class with one device.
    """
    key = (cls, X64)
    if key not in _REFERENCE_RUNS:
        layout = layout_for(cls)
        tx = cls.factory(**KWARGS[cls])
        params = on_one_device(host_tree(layout, 0))
        state = tx.init(params)
        upd = jax.jit(tx.update)
        steps = []
        for g in grads_sequence(layout):
            u, state = upd(on_one_device(g), state, params)
            params = fo.apply_updates(params, u)
            steps.append((u, state, params))
        _REFERENCE_RUNS[key] = steps
    assert n <= len(_REFERENCE_RUNS[key]), n
    return _REFERENCE_RUNS[key][:n]


def optimizer_states(state):
    return [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, OptimizerState))
            if isinstance(s, OptimizerState)]


def collapsed_spec(spec, shape, ref_shape):
    entries = list(spec) + [None] * (len(shape) - len(spec))
    return P(*[e if d == r else None for e, d, r in zip(entries, shape, ref_shape)])


def check_follows(state, params, where):
    """Every per-parameter state leaf has its parameter's sharding (or a keepdims reduction of it)."""
    checked = 0
    for s in optimizer_states(state):
        for slot, tree in s.slots.items():
            leaves = jax.tree.structure(params).flatten_up_to(tree)
            for (name, p), x in zip(sorted(params.items()), leaves):
                if x is None or (x.ndim == 0 and p.ndim != 0):
                    continue  # absent slot, or a per-parameter scalar (ASGD's eta)
                if x.shape == p.shape:
                    want = p.sharding
                else:
                    assert x.ndim == p.ndim and all(d in (1, r) for d, r in zip(x.shape, p.shape)), (
                        f"{where}: unexpected state shape {x.shape} for {name} {p.shape}")
                    want = NamedSharding(p.sharding.mesh, collapsed_spec(p.sharding.spec, x.shape, p.shape))
                assert x.sharding.is_equivalent_to(want, x.ndim), (
                    f"{where}: state {slot!r} of {name!r} has sharding {x.sharding}, expected {want}")
                checked += 1
    assert checked, f"{where}: no state leaf was checked"


def assert_close(a, b, how, what):
    """Compare two pytrees: ``how`` is "exact" (bit for bit), "close" (RTOL / ATOL) or "bf16"."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb), f"{what}: {len(la)} leaves vs {len(lb)}"
    names = [fo.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    for name, x, y in zip(names, la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if how == "exact":
            assert np.array_equal(x, y, equal_nan=True), (
                f"{what} {name}: sharded differs from one device (max abs diff {np.max(np.abs(x - y))})")
        elif how == "bf16":
            err, scale = float(np.linalg.norm(x - y)), float(np.linalg.norm(y))
            assert err <= 0.05 * scale + ATOL, f"{what} {name}: |difference| {err} above 5% of |reference| {scale}"
        else:
            assert how == "close", how
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=f"{what} {name}")


# ----------------------------------------------------------------------------- functional API


def functional_follows_parameter_sharding(cls, kw):
    """init (eager and jax.jit, no out_shardings) and STEPS jitted updates keep every state leaf on its
    parameter's sharding; the numbers equal the one-device run (bit for bit for EXACT)."""
    mesh = auto_mesh()
    layout = layout_for(cls)
    tx = cls.factory(**kw)
    host_params = host_tree(layout, 0)
    params = on_mesh(host_params, layout, mesh)
    check_follows(tx.init(params), params, "eager init")
    state = jax.jit(tx.init)(params)
    if cls.__name__ not in NO_JIT_INIT_PLACEMENT:
        check_follows(state, params, "jax.jit(init)")
    assert kw == KWARGS[cls]
    upd = jax.jit(tx.update)
    exact = precision(cls)
    for i, (g, (ru, ref_state, _)) in enumerate(zip(grads_sequence(layout), reference_run(cls))):
        u, state = upd(on_mesh(g, layout, mesh), state, params)
        params = fo.apply_updates(params, u)
        check_follows(state, params, f"update {i}")
        for k, p in params.items():
            assert p.sharding.is_equivalent_to(NamedSharding(mesh, layout[k][1]), p.ndim), f"param {k} moved"
        assert_close(u, ru, exact, f"step {i} updates")
        assert_close(optimizer_states(state)[0].slots, optimizer_states(ref_state)[0].slots, exact,
                     f"step {i} state")
    assert_close(params, reference_run(cls)[-1][2], exact, "final params")


def functional_jit_with_shardings():
    """jax.jit with in_shardings / out_shardings taken from the state: runs, keeps them, same numbers."""
    mesh = auto_mesh()
    for cls in (fo.optim.Adam, fo.optim.Adafactor):
        tx = cls.factory(**KWARGS[cls])
        host_params = host_tree(LAYOUT, 0)
        params = on_mesh(host_params, LAYOUT, mesh)
        p_sh = jax.tree.map(lambda x: x.sharding, params)
        # scalars (step, hyperparameters) are replicated over the mesh; the rest follows the parameters
        s_sh = jax.tree.map(lambda x: x.sharding if x.ndim else NamedSharding(mesh, P()), tx.init(params))
        init = jax.jit(tx.init, in_shardings=(p_sh,), out_shardings=s_sh)
        step = jax.jit(tx.update, in_shardings=(p_sh, s_sh, p_sh),
                       out_shardings=(p_sh, s_sh), donate_argnums=(1,))
        state = init(params)
        for g in grads_sequence(LAYOUT, n=5):
            u, state = step(on_mesh(g, LAYOUT, mesh), state, params)
            params = fo.apply_updates(params, u)
        check_follows(state, params, f"{cls.__name__} jit with shardings")
        assert_close(params, reference_run(cls, n=5)[-1][2], precision(cls), cls.__name__)


def functional_explicit_axes():
    """With explicit mesh axes (jax.set_mesh), jax.jit(init) and update keep the parameters' shardings."""
    mesh = explicit_mesh()
    for cls in (fo.optim.Adam, fo.optim.Adafactor, fo.optim.Rprop, fo.optim.LAMB):
        tx = cls.factory(**KWARGS[cls])
        host_params = host_tree(LAYOUT, 0)
        with jax.set_mesh(mesh):
            params = on_mesh(host_params, LAYOUT, mesh)
            state = jax.jit(tx.init)(params)
            check_follows(state, params, f"{cls.__name__} explicit jit(init)")
            for g in grads_sequence(LAYOUT, n=3):
                u, state = jax.jit(tx.update)(on_mesh(g, LAYOUT, mesh), state, params)
                params = fo.apply_updates(params, u)
            check_follows(state, params, f"{cls.__name__} explicit update")
        assert_close(params, reference_run(cls, n=3)[-1][2], precision(cls), cls.__name__)


def functional_inside_shard_map():
    """init and update inside shard_map work on each device's block: the numbers of one device."""
    mesh = auto_mesh()
    layout = {k: v for k, v in LAYOUT.items() if k in ("dense.weight", "dense.bias", "proj")}
    specs = {k: v[1] for k, v in layout.items()}
    for cls, kw in [(fo.optim.Adam, dict(lr=0.05)), (fo.optim.SGD, dict(lr=0.05, momentum=0.9)),
                    (fo.optim.Lion, dict(lr=0.01))]:
        tx = cls.factory(**kw)
        slot_names = list(optimizer_states(jax.eval_shape(tx.init, host_tree(layout, 0)))[0].slots)
        state_specs = OptimizerState(step=P(), hparams=P(), slots={k: specs for k in slot_names})

        def train(params, grads_seq, tx=tx):
            state = tx.init(params)
            for g in grads_seq:
                u, state = tx.update(g, state, params)
                params = fo.apply_updates(params, u)
            return params, state

        grads_seq = grads_sequence(layout, n=STEPS)
        sharded = jax.jit(jax.shard_map(train, mesh=mesh, in_specs=(specs, [specs] * STEPS),
                                        out_specs=(specs, state_specs)))
        host_params = host_tree(layout, 0)
        params, state = sharded(on_mesh(host_params, layout, mesh), [on_mesh(g, layout, mesh) for g in grads_seq])
        ref_params, ref_state = jax.jit(train)(on_one_device(host_params), on_one_device(grads_seq))
        # the STEPS unrolled steps compile to differently fused programs on the blocks and on one device, so
        # the last bits may differ even for exactly rounded operations
        assert_close(params, ref_params, "close", f"{cls.__name__} shard_map params")
        assert_close(state.slots, ref_state.slots, "close", f"{cls.__name__} shard_map state")
        check_follows(state, params, f"{cls.__name__} shard_map")


def tree_utils_keep_sharding():
    """fo.tree_utils.tree_zeros_like / tree_full_like and fo.sharding.zeros_like keep sharding under jit."""
    mesh = auto_mesh()
    params = on_mesh(host_tree(LAYOUT, 0), LAYOUT, mesh)
    for fn in (fo.tree_utils.tree_zeros_like, lambda t: fo.tree_utils.tree_full_like(t, 2.5),
               lambda t: jax.tree.map(fo.sharding.zeros_like, t)):
        out = jax.jit(fn)(params)
        for k, p in params.items():
            assert out[k].sharding.is_equivalent_to(p.sharding, p.ndim), (k, out[k].sharding)
    z = jax.jit(fo.tree_utils.tree_full_like)(params, 2.5)
    assert all(np.all(np.asarray(v) == 2.5) for v in z.values())


# ----------------------------------------------------------------------------- ZeRO-1

# LAYOUT's parameters replicated over the data axis (8 devices); expected state split: the first dimension
# 8 divides (the weight, the bias), else the second (proj), else none (embed: 3 x 5, the 0-d and the 1-element)
ZERO1_LAYOUT = {k: (shape, P()) for k, (shape, _) in LAYOUT.items()}
ZERO1_SPECS = {"dense.weight": P("data"), "dense.bias": P("data"), "embed": P(), "proj": P(None, "data"),
               "scale": P(), "one": P()}


def _spec_eq(sharding, spec, ndim):
    return sharding.is_equivalent_to(NamedSharding(sharding.mesh, spec), ndim)


def zero1_state_split_and_exact(cls, kw):
    """ZeRO-1 over 8 devices: each state leaf split over 'data', the updates replicated like the
    parameters, the numbers those of the unsharded optimizer; per-device state bytes 1/8 for split leaves."""
    mesh = auto_mesh((8,), ("data",))
    layout = {k: v for k, v in ZERO1_LAYOUT.items() if cls is not fo.optim.Muon or len(v[0]) == 2}
    base = cls.factory(**kw)
    tx = fo.shard_optimizer_state(base, mesh, "data")
    host_params = host_tree(layout, 0)
    params = on_mesh(host_params, layout, mesh)
    state = jax.jit(tx.init)(params)
    assert kw == KWARGS[cls]
    ref_state = base.init(on_one_device(host_params))

    def check_split(state, where):
        for s in optimizer_states(state):
            for slot, tree in s.slots.items():
                for name in layout:
                    x = tree[name]
                    if x is None or x.ndim == 0:
                        continue
                    shape = ZERO1_LAYOUT[name][0]
                    want = ZERO1_SPECS[name] if x.shape == shape else collapsed_spec(ZERO1_SPECS[name], x.shape,
                                                                                     shape)
                    assert _spec_eq(x.sharding, want, x.ndim), (
                        f"{where}: {slot!r} of {name!r} has {x.sharding.spec}, expected {want}")

    check_split(state, "jit(init)")
    # memory: per-device bytes of the per-parameter state
    slots = [s.slots for s in optimizer_states(state)]
    per_device = fo.sharding.bytes_per_device(slots)
    assert len(per_device) == 8
    expected = 0
    for s in optimizer_states(state):
        for tree in s.slots.values():
            for x in tree.values():
                if x is not None:
                    split = x.ndim > 0 and any(e is not None for e in x.sharding.spec)
                    expected += x.nbytes // 8 if split else x.nbytes
    assert max(per_device.values()) == expected == min(per_device.values()), (per_device, expected)
    full = sum(x.nbytes for x in jax.tree.leaves([s.slots for s in optimizer_states(ref_state)]))
    if cls is not fo.optim.Adafactor:  # Adafactor's factored moments are mostly too small to split
        assert expected < 0.2 * full, f"ZeRO-1 keeps {expected} of {full} state bytes per device"
    upd = jax.jit(tx.update)
    for i, (g, (ru, ref_state, _)) in enumerate(zip(grads_sequence(layout), reference_run(cls))):
        u, state = upd(on_mesh(g, layout, mesh), state, params)
        for k, x in u.items():
            assert x.sharding.is_fully_replicated and len(x.sharding.device_set) == 8, (k, x.sharding)
        params = fo.apply_updates(params, u)
        assert_close(u, ru, precision(cls), f"step {i} updates")
        assert_close([s.slots for s in optimizer_states(state)], [s.slots for s in optimizer_states(ref_state)],
                     precision(cls), f"step {i} state")
    check_split(state, "after updates")


def zero1_gathers_only_the_updates():
    """The compiled ZeRO-1 Adam update communicates nothing but one all-gather of each split update."""
    mesh = auto_mesh((8,), ("data",))
    tx = fo.shard_optimizer_state(fo.adam(lr=1e-3), mesh, "data")
    params = on_mesh(host_tree(ZERO1_LAYOUT, 0), ZERO1_LAYOUT, mesh)
    state = tx.init(params)
    hlo = jax.jit(tx.update).lower(params, state, params).compile().as_text()
    ops = re.findall(r"= (\w+)\[([\d,]*)\]\S* (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
                     r"(?:-start)?\(", hlo)
    kinds = {k for _, _, k in ops}
    assert kinds == {"all-gather"}, f"unexpected collectives {ops}"
    gathered = sorted(int(np.prod([int(d) for d in dims.split(",") if d])) for _, dims, _ in ops)
    split = sorted(int(np.prod(ZERO1_LAYOUT[k][0])) for k, spec in ZERO1_SPECS.items() if any(spec))
    assert gathered == split, f"gathered {gathered} elements, expected the split updates {split}"


def zero1_data_parallel_training():
    """A data-parallel jitted train step (batch split over 'data', replicated parameters, ZeRO-1 AdamW)
    keeps the parameters replicated and the state split, and follows the one-device trajectory."""
    mesh = auto_mesh((8,), ("data",))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 12)).astype(DTYPE)
    y = rng.standard_normal((64, 4)).astype(DTYPE)
    host_params = {"w1": (rng.standard_normal((12, 32)) * 0.3).astype(DTYPE), "b1": np.zeros(32, DTYPE),
                   "w2": (rng.standard_normal((32, 4)) * 0.3).astype(DTYPE)}

    def loss_fn(p, x, y):
        return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] - y) ** 2)

    def make_step(tx):
        @jax.jit
        def step(params, state, x, y):
            loss, g = jax.value_and_grad(loss_fn)(params, x, y)
            u, state = tx.update(g, state, params)
            return fo.apply_updates(params, u), state, loss
        return step

    base = fo.adamw(lr=1e-2, weight_decay=1e-2)
    tx = fo.shard_optimizer_state(base, mesh, "data")
    replicated = NamedSharding(mesh, P())
    params = jax.device_put(host_params, replicated)
    state = tx.init(params)
    xb = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), x)
    yb = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), y)
    ref_params, ref_state = on_one_device(host_params), base.init(on_one_device(host_params))
    step, ref_step = make_step(tx), make_step(base)
    for _ in range(STEPS):
        params, state, loss = step(params, state, xb, yb)
        ref_params, ref_state, ref_loss = ref_step(ref_params, ref_state, x, y)
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-4 if not X64 else 1e-9)
    for k, p in params.items():
        assert p.sharding.is_equivalent_to(replicated, p.ndim), (k, p.sharding)
    assert _spec_eq(state.slots["exp_avg"]["w1"].sharding, P(None, "data"), 2)  # 12 rows: 8 does not divide
    assert _spec_eq(state.slots["exp_avg"]["b1"].sharding, P("data"), 1)
    assert _spec_eq(state.slots["exp_avg_sq"]["w2"].sharding, P("data"), 2)
    for k in params:
        np.testing.assert_allclose(np.asarray(params[k]), np.asarray(ref_params[k]),
                                   rtol=1e-4 if not X64 else 1e-9, atol=1e-5 if not X64 else 1e-12)


def zero1_with_model_parallel_and_state_form():
    """ZeRO-1 on top of model-parallel parameters (param_sharding), with auto and explicit axes; the
    state form places an existing state the same way."""
    params_layout = {"w": ((64, 32), P(None, "model")), "b": ((8,), P("model")), "v": ((6, 16), P())}
    want = {"w": P("data", "model"), "b": P(("model", "data")), "v": P(None, "data")}
    p_specs = {k: v[1] for k, v in params_layout.items()}
    base = fo.adam(lr=0.05)
    host_params = host_tree(params_layout, 0)
    # the one-device reference, once for both meshes
    ref_params, ref_state = on_one_device(host_params), base.init(on_one_device(host_params))
    for g in grads_sequence(params_layout, n=3):
        ru, ref_state = jax.jit(base.update)(on_one_device(g), ref_state, ref_params)
        ref_params = fo.apply_updates(ref_params, ru)
    for mesh in (auto_mesh(), explicit_mesh()):
        tx = fo.shard_optimizer_state(base, mesh, "data", param_sharding=p_specs)
        with jax.set_mesh(mesh):
            params = on_mesh(host_params, params_layout, mesh)
            state = jax.jit(tx.init)(params)
            for g in grads_sequence(params_layout, n=3):
                u, state = jax.jit(tx.update)(on_mesh(g, params_layout, mesh), state, params)
                for k, x in u.items():
                    assert x.sharding.is_equivalent_to(params[k].sharding, x.ndim), (k, x.sharding)
                params = fo.apply_updates(params, u)
        for slot in ("exp_avg", "exp_avg_sq"):
            for k, spec in want.items():
                x = state.slots[slot][k]
                assert _spec_eq(x.sharding, spec, x.ndim), (str(mesh), slot, k, x.sharding.spec)
        assert_close(params, ref_params, "close", "model-parallel ZeRO-1 params")
        assert_close(state.slots, ref_state.slots, "close", "model-parallel ZeRO-1 state")
    # state form: an existing (unsharded) state placed on the ZeRO-1 shardings, values untouched
    mesh = auto_mesh()
    for factory in (fo.adam, fo.adafactor):
        host_params = host_tree(params_layout, 0)
        params = on_mesh(host_params, params_layout, mesh)
        state = factory(lr=0.05).init(host_params)
        placed = fo.shard_optimizer_state(state, mesh, "data", params=params, param_sharding=p_specs)
        tx_state = jax.jit(fo.shard_optimizer_state(factory(lr=0.05), mesh, "data",
                                                    param_sharding=p_specs).init)(params)
        for a, b, c in zip(jax.tree.leaves(placed), jax.tree.leaves(tx_state), jax.tree.leaves(state)):
            assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (a.sharding, b.sharding)
            assert np.array_equal(np.asarray(a), np.asarray(c))


def zero1_eager_and_optax():
    """ZeRO-1 works eagerly (no jit) and around an optax optimizer, with the same split and numbers."""
    import optax

    mesh = auto_mesh((8,), ("data",))
    host_params = host_tree(ZERO1_LAYOUT, 0)
    sgd = fo.optim.SGD.factory(**KWARGS[fo.optim.SGD])  # its one-device run is reference_run's
    for base, run in ((sgd, lambda f: f), (optax.adam(0.05), jax.jit)):
        tx = fo.shard_optimizer_state(base, mesh, "data")
        params = on_mesh(host_params, ZERO1_LAYOUT, mesh)
        state = run(tx.init)(params)
        if base is sgd:
            ref_params = reference_run(fo.optim.SGD, n=5)[-1][2]
        else:
            ref_params, ref_state = on_one_device(host_params), base.init(on_one_device(host_params))
            for g in grads_sequence(ZERO1_LAYOUT, n=5):
                ru, ref_state = jax.jit(base.update)(on_one_device(g), ref_state, ref_params)
                ref_params = fo.apply_updates(ref_params, ru)
        for g in grads_sequence(ZERO1_LAYOUT, n=5):
            u, state = run(tx.update)(on_mesh(g, ZERO1_LAYOUT, mesh), state, params)
            params = fo.apply_updates(params, u)
        split = [x for x in jax.tree.leaves(state) if x.shape == ZERO1_LAYOUT["dense.weight"][0]]
        assert split and all(_spec_eq(x.sharding, ZERO1_SPECS["dense.weight"], 2) for x in split), (
            [x.sharding for x in split])
        assert_close(params, ref_params, "close", type(base).__name__)


# ----------------------------------------------------------------------------- stateful API


STATEFUL_LAYOUT = {"dense.weight": ((16, 8), P(None, "model")), "dense.bias": ((8,), P("model")),
                   "head": ((8, 4), P("model", None)), "scale": ((), P())}


def _stateful_loss(params, x, y):
    h = jnp.tanh(x @ params["dense.weight"] + params["dense.bias"]) * params["scale"]
    return jnp.mean((h @ params["head"] - y) ** 2)


def _group_state_follows(opt, where):
    params = dict(zip(opt.param_names, jax.tree.leaves(opt.params)))
    assert not internals.is_packed(opt), f"{where}: parameters on several devices must not be packed"
    for s in optimizer_states(internals.group_state(opt)):
        for slot, leaves in s.slots.items():
            for name, x in zip(internals.group_names(opt), jax.tree.leaves(leaves, is_leaf=lambda v: v is None)):
                p = params[name]
                if x is None or (x.ndim == 0 and p.ndim != 0):
                    continue
                want = p.sharding if x.shape == p.shape else NamedSharding(
                    p.sharding.mesh, collapsed_spec(p.sharding.spec, x.shape, p.shape))
                assert x.sharding.is_equivalent_to(want, x.ndim), (
                    f"{where}: state {slot!r} of {name!r} is on {x.sharding}, expected {want}")


def stateful_sharded_parameters(cls, kw):
    """fo.optim with sharded parameters: backward on a batch split over 'data', step, state_dict (NumPy) and
    load_state_dict (back onto each parameter's sharding) all work and match the one-device optimizer."""
    mesh = auto_mesh()
    layout = STATEFUL_LAYOUT if cls is not fo.optim.Muon else {
        "dense.weight": ((16, 8), P(None, "model")), "head": ((8, 4), P("model", None))}
    host_params = host_tree(layout, 0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 16)).astype(DTYPE)
    y = rng.standard_normal((32, 4)).astype(DTYPE)

    def loss(params, x, y):
        params = {"dense.bias": 0.0, "scale": 1.0, **params}
        return _stateful_loss(params, x, y)

    opt = cls(on_mesh(host_params, layout, mesh), **kw)
    ref = cls(on_one_device(host_params), **kw)
    _group_state_follows(opt, "construction")
    xb = jax.device_put(x, NamedSharding(mesh, P("data")))
    yb = jax.device_put(y, NamedSharding(mesh, P("data")))
    for i in range(STEPS):
        loss_s = opt.backward(loss, xb, yb)
        loss_r = ref.backward(loss, x, y)
        np.testing.assert_allclose(float(loss_s), float(loss_r), rtol=1e-4 if not X64 else 1e-9)
        for k, gr in opt.grad.items():
            assert len(gr.sharding.device_set) == 8, f"grad of {k} is on {gr.sharding}"
        # apply the same gradients to both, so the EXACT optimizers can be compared bit for bit
        grads = {k: np.asarray(v) for k, v in opt.grad.items()}
        opt.clear_grad()
        ref.clear_grad()
        opt(on_mesh(grads, layout, mesh))
        ref(on_one_device(grads))
        for k, p in opt.params.items():
            assert p.sharding.is_equivalent_to(NamedSharding(mesh, layout[k][1]), p.ndim), (i, k, p.sharding)
    _group_state_follows(opt, "after steps")
    assert_close(opt.params, ref.params, precision(cls), "params")
    sd, ref_sd = opt.state_dict(), ref.state_dict()
    assert sd["param_groups"] == ref_sd["param_groups"]
    for pid, entry in ref_sd["state"].items():
        for k, v in entry.items():
            assert isinstance(sd["state"][pid][k], np.ndarray)
            assert_close(sd["state"][pid][k], v, precision(cls), f"state_dict {pid} {k}")
    # load into a fresh sharded optimizer: state back on the parameters' shardings, same continuation
    fresh = cls(on_mesh({k: np.asarray(v) for k, v in opt.params.items()}, layout, mesh), **kw)
    fresh.load_state_dict(sd)
    _group_state_follows(fresh, "load_state_dict")
    for i in range(3):
        g = host_tree(layout, 500 + i)
        opt(on_mesh(g, layout, mesh))
        fresh(on_mesh(g, layout, mesh))
    assert_close(fresh.params, opt.params, "exact", "continuation after load_state_dict")


def stateful_layout_choice():
    """Groups on one device keep the flat buffers; replicated or sharded groups keep one array per leaf."""
    mesh = auto_mesh((8,), ("data",))
    host = {"a": np.ones((4, 3), DTYPE), "b": np.zeros(5, DTYPE)}
    assert internals.is_packed(fo.optim.Adam(on_one_device(host)))
    rep = fo.optim.Adam(jax.device_put(host, NamedSharding(mesh, P())), lr=0.1)
    assert not internals.is_packed(rep)
    rep({"a": np.ones((4, 3), DTYPE), "b": np.ones(5, DTYPE)})
    for k, p in rep.params.items():
        assert p.sharding.is_fully_replicated and len(p.sharding.device_set) == 8, (k, p.sharding)
    one = fo.optim.Adam(on_one_device(host), lr=0.1)
    one({"a": np.ones((4, 3), DTYPE), "b": np.ones(5, DTYPE)})
    assert_close(rep.params, one.params, "exact", "replicated vs one device")


# ----------------------------------------------------------------------------- runner


def _ids(table):
    return [(c.__name__, c, kw) for c, kw in table]


CHECKS: dict[str, Callable[[], None]] = {}
for _name, _cls, _kw in _ids(CLASSES):
    CHECKS[f"functional_follows[{_name}]"] = (lambda c=_cls, k=_kw: functional_follows_parameter_sharding(c, k))
    CHECKS[f"stateful[{_name}]"] = (lambda c=_cls, k=_kw: stateful_sharded_parameters(c, k))
for _name, _cls, _kw in _ids(CLASSES):
    CHECKS[f"zero1[{_name}]"] = (lambda c=_cls, k=_kw: zero1_state_split_and_exact(c, k))
CHECKS.update({
    "functional_jit_with_shardings": functional_jit_with_shardings,
    "functional_explicit_axes": functional_explicit_axes,
    "functional_inside_shard_map": functional_inside_shard_map,
    "tree_utils_keep_sharding": tree_utils_keep_sharding,
    "zero1_gathers_only_the_updates": zero1_gathers_only_the_updates,
    "zero1_data_parallel_training": zero1_data_parallel_training,
    "zero1_with_model_parallel_and_state_form": zero1_with_model_parallel_and_state_form,
    "zero1_eager_and_optax": zero1_eager_and_optax,
    "stateful_layout_choice": stateful_layout_choice,
})


def main(argv: list[str]) -> int:
    """Run the named checks (all if none) and print PASS / FAIL for each.

    A name may carry its precision, ``float64:zero1[Adam]``: one process runs the checks of both
    precisions (float64 ones with jax's x64 mode switched on around them), which saves a second jax start
    and the programs both compile alike. A plain name runs in the precision jax started with.
    """
    out_path = None
    if argv[:1] == ["--json"]:
        out_path, argv = argv[1], argv[2:]
    if jax.device_count() != 8:
        print(f"FAIL setup: {jax.device_count()} devices; run with "
              "XLA_FLAGS=--xla_force_host_platform_device_count=8", flush=True)
        return 2
    default = "float64" if jax.config.jax_enable_x64 else "float32"
    runs = [tuple(a.split(":", 1)) if a.split(":", 1)[0] in PRECISIONS else (default, a)
            for a in (argv or list(CHECKS))]
    results: dict[str, dict[str, dict]] = {p: {} for p in PRECISIONS}
    for precision, name in runs:
        t0 = time.perf_counter()
        try:
            with jax.enable_x64(precision == "float64"):
                use_precision(precision)
                # the mode switch took: float64 data stays float64 on the devices
                assert jax.device_put(np.zeros((), DTYPE)).dtype == DTYPE, f"x64 mode is not on for {precision}"
                CHECKS[name]()
            results[precision][name] = {"ok": True, "seconds": time.perf_counter() - t0}
            print(f"PASS {precision}:{name} ({time.perf_counter() - t0:.1f}s)", flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported, then the next check runs
            results[precision][name] = {"ok": False, "error": traceback.format_exc()}
            print(f"FAIL {precision}:{name}\n{traceback.format_exc()}", flush=True)
    if out_path:
        with open(out_path, "w") as f:
            json.dump(results, f)
    return 0 if all(r["ok"] for rs in results.values() for r in rs.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
