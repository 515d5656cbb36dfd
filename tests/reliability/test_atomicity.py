"""Failure atomicity: a call that raises leaves the optimizer bit-identical to before.

For several optimizer classes (flat and per-tensor layouts, one or several groups,
groups cut from one model pytree, 0-d state, group-level state, L-BFGS), every failing
path below is taken on a trained optimizer that holds accumulated gradients. The test
snapshots everything observable (``state_dict()``, ``params``, ``grad``, ``state``,
``param_groups``, ``repr``; arrays compared as raw bytes) before and after the call.

A second test takes ALL the failing paths one after another on one optimizer, then
steps it next to a twin that never saw a failure: both must produce the same bits,
which also catches damage to internal state that no accessor shows.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from tests.reliability.snapshot import assert_unchanged, canon, snapshot

O = fo.optim
S = fo.optim.lr_scheduler
BAD_INPUT = (TypeError, ValueError, KeyError)


def model() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "dense": {"weight": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
                  "bias": jnp.asarray(rng.standard_normal(3), jnp.float32)},
        "scalar": jnp.asarray(rng.standard_normal(()), jnp.float32),
        "one": jnp.asarray(rng.standard_normal(1), jnp.float32),
    }


def matrices() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    return {"a": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal((2, 2)), jnp.float32)}


def mixed_dtypes() -> dict[str, Any]:
    rng = np.random.default_rng(2)
    return {"half": jnp.asarray(rng.standard_normal((2, 3)), jnp.bfloat16),
            "full": jnp.asarray(rng.standard_normal(4), jnp.float32)}


# Each config builds a fresh optimizer from fresh arrays: (optimizer, the arrays it was given).
def _two_groups_sgd():
    a, b = model(), {"head": jnp.arange(3.0)}
    return O.SGD([{"params": a}, {"params": b, "lr": 0.01}], lr=0.1, momentum=0.9, nesterov=True), [a, b]


def _cut_adamw():
    m = model()
    return O.AdamW(O.param_groups(m, {"*.bias": {"weight_decay": 0.0}}), lr=1e-2, weight_decay=0.1), [m]


def _single(cls: type, tree_fn: Callable[[], Any], **kw: Any):
    def make():
        tree = tree_fn()
        return cls(tree, **kw), [tree]
    return make


CONFIGS: dict[str, Callable[[], tuple[Any, list[Any]]]] = {
    "SGD-two-groups": _two_groups_sgd,
    "AdamW-groups-cut-from-one-model": _cut_adamw,
    "Adam-amsgrad": _single(O.Adam, model, lr=1e-2, amsgrad=True, weight_decay=0.1),
    "Adam-bf16-and-f32": _single(O.Adam, mixed_dtypes, lr=1e-2),
    "RMSprop-centered": _single(O.RMSprop, model, lr=1e-2, momentum=0.5, centered=True),
    "ASGD": _single(O.ASGD, model, lr=1e-2, t0=1.0),
    "Rprop": _single(O.Rprop, model, lr=1e-2),
    "Adafactor": _single(O.Adafactor, model, lr=1e-2),
    "LAMB": _single(O.LAMB, model, lr=1e-2, weight_decay=0.01),
    "Muon": _single(O.Muon, matrices, lr=1e-2),
    "ScheduleFreeAdamW": _single(O.ScheduleFreeAdamW, model, lr=1e-2, warmup_steps=2),
    "FTRL": _single(O.FTRL, model, lr=0.1),
    "LBFGS": _single(O.LBFGS, model, lr=0.5, max_iter=3, history_size=3),
}
NO_STEP_STATE = {"SGD-two-groups", "Muon", "FTRL", "LBFGS"}


def loss_fn(params: Any, scale: jax.Array) -> jax.Array:
    return sum(jnp.sum(jnp.sin(x.astype(jnp.float32) * scale) ** 2 + 0.1 * x.astype(jnp.float32) ** 2)
               for x in jax.tree.leaves(params))


def step(opt: Any, k: float) -> None:
    scale = jnp.float32(1.0 + 0.25 * k)
    if isinstance(opt, O.LBFGS):
        def closure():
            opt.zero_grad()
            return opt.backward(loss_fn, scale)
        opt.step(closure)
    else:
        opt.zero_grad()
        opt.backward(loss_fn, scale)
        opt.step()


@dataclasses.dataclass
class Trained:
    opt: Any
    given: list[Any]
    sched: Any
    name: str
    tmp: str


def trained(name: str, tmp: str) -> Trained:
    """The optimizer after three steps with a StepLR, holding accumulated gradients for a fourth."""
    opt, given = CONFIGS[name]()
    sched = S.StepLR(opt, step_size=2, gamma=0.5)
    for k in range(3):
        step(opt, k)
        sched.step()
    opt.zero_grad()
    opt.backward(loss_fn, jnp.float32(0.7))
    opt.backward(loss_fn, jnp.float32(1.3))  # accumulated
    return Trained(opt, given, sched, name, tmp)


# ---------------------------------------------------------------------- mutations of valid inputs


def _map_last_leaf(tree: Any, fn: Callable[[Any], Any]) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    leaves[-1] = fn(leaves[-1])
    return treedef.unflatten(leaves)


def _last_entry_with_array(sd: dict[str, Any]) -> tuple[Any, str]:
    """The last parameter's state entry holding an array of 2+ elements (later groups are checked last).

    (A 1-element array may stand for a 0-d one and the reverse, as in torch, so it is not a shape error.)
    """
    for pid in reversed([pid for g in sd["param_groups"] for pid in g["params"]]):
        entry = sd["state"].get(pid, {})
        for key in sorted(entry):
            v = entry[key]
            if isinstance(v, np.ndarray) and v.size >= 2:
                return pid, key
    raise AssertionError("no array state")


def sd_with(t: Trained, mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    sd = copy.deepcopy(t.opt.state_dict())
    out = mutate(sd)
    return sd if out is None else out


def _set_array(t: Trained, fn: Callable[[np.ndarray], Any]) -> dict[str, Any]:
    def mutate(sd):
        pid, key = _last_entry_with_array(sd)
        sd["state"][pid][key] = fn(sd["state"][pid][key])
    return sd_with(t, mutate)


def _set_group(t: Trained, **values: Any) -> dict[str, Any]:
    def mutate(sd):
        sd["param_groups"][-1].update(values)
    return sd_with(t, mutate)


def _set_step(t: Trained, value: Any) -> dict[str, Any]:
    def mutate(sd):
        for entry in sd["state"].values():
            if "step" in entry:
                entry["step"] = value
    return sd_with(t, mutate)


def _saved_file(t: Trained, name: str, obj: Any = None, damage: Callable[[bytes], bytes] | None = None) -> str:
    path = os.path.join(t.tmp, f"{t.name}-{name}.npz")
    fo.save(path, t.opt if obj is None else obj, params=True)
    if damage is not None:
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(damage(data))
    return path


def _flip_middle(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:]


def _other_grouping(t: Trained) -> Any:
    """An optimizer of the same class over parameters of the same structure, grouped differently."""
    params = jax.tree.map(jnp.array, t.opt.params)
    cls, kw = type(t.opt), {"lr": 0.05} if isinstance(t.opt, (O.LAMB, O.FTRL)) else {}
    if len(t.opt.param_groups) > 1:
        return cls(params, **kw)  # one group where the trained one has two
    first = fo.param_names(params)[0]
    return cls(O.param_groups(params, {first: {}}), **kw)  # two groups where the trained one has one


def _grads(t: Trained) -> Any:
    return jax.tree.map(lambda p: jnp.full(p.shape, 0.5, p.dtype), t.opt.params)


def _other_structure(tree: Any) -> Any:
    if isinstance(tree, list):
        return tree[:-1] if len(tree) > 2 else [tree[0], tree[0], tree[0]]
    return {"extra": tree}


def _drop(d: dict[str, Any], key: str) -> None:
    del d[key]


def _add_dup(t: Trained) -> None:
    t.opt.add_param_group({"params": [jax.tree.leaves(t.given[-1])[-1]]})


def _raise(*_: Any) -> Any:
    raise FloatingPointError("the loss function failed")


def _vector_loss(params: Any, scale: jax.Array) -> jax.Array:
    return jax.tree.leaves(params)[0] * scale


def _sched_garbage(t: Trained, garbage: Any) -> None:
    before = canon(t.sched.state_dict())
    try:
        t.sched.load_state_dict(garbage)
    finally:
        assert canon(t.sched.state_dict()) == before, "the scheduler changed although its load failed"


@dataclasses.dataclass(frozen=True)
class Path:
    id: str
    call: Callable[[Trained], Any]
    raises: tuple[type[BaseException], ...] = BAD_INPUT
    only: Callable[[str], bool] = lambda name: True


def _not_lbfgs(name: str) -> bool:
    return name != "LBFGS"


PATHS: list[Path] = [
    # load_state_dict
    Path("load: an extra group", lambda t: t.opt.load_state_dict(
        sd_with(t, lambda sd: sd["param_groups"].append(copy.deepcopy(sd["param_groups"][-1]))))),
    Path("load: no groups", lambda t: t.opt.load_state_dict(sd_with(t, lambda sd: sd["param_groups"].clear()))),
    Path("load: last group one id short", lambda t: t.opt.load_state_dict(
        sd_with(t, lambda sd: sd["param_groups"][-1].__setitem__("params", sd["param_groups"][-1]["params"][:-1])))),
    Path("load: state of another shape", lambda t: t.opt.load_state_dict(
        _set_array(t, lambda a: np.concatenate([a.reshape(-1), a.reshape(-1)[:1]])))),
    Path("load: state with an extra axis", lambda t: t.opt.load_state_dict(_set_array(t, lambda a: a[None]))),
    # (integer and boolean LBFGS vectors are rejected: see test_regressions.py)
    Path("load: integer state", lambda t: t.opt.load_state_dict(_set_array(t, lambda a: a.astype(np.int64))),
         only=_not_lbfgs),
    Path("load: boolean state", lambda t: t.opt.load_state_dict(_set_array(t, lambda a: a > 0)), only=_not_lbfgs),
    Path("load: string state", lambda t: t.opt.load_state_dict(_set_array(t, lambda a: "abc"))),
    Path("load: None state", lambda t: t.opt.load_state_dict(_set_array(t, lambda a: None))),
    Path("load: state entry not a dict", lambda t: t.opt.load_state_dict(
        sd_with(t, lambda sd: sd["state"].__setitem__(_last_entry_with_array(sd)[0], 3)))),
    Path("load: missing 'state'", lambda t: t.opt.load_state_dict(sd_with(t, lambda sd: _drop(sd, "state")))),
    Path("load: missing 'param_groups'", lambda t: t.opt.load_state_dict(
        sd_with(t, lambda sd: _drop(sd, "param_groups")))),
    Path("load: last group without 'params'", lambda t: t.opt.load_state_dict(
        sd_with(t, lambda sd: _drop(sd["param_groups"][-1], "params")))),
    Path("load: last group lr<0", lambda t: t.opt.load_state_dict(_set_group(t, lr=-1.0))),
    Path("load: last group lr a string", lambda t: t.opt.load_state_dict(_set_group(t, lr="fast"))),
    Path("load: last group params not a list", lambda t: t.opt.load_state_dict(_set_group(t, params=5))),
    Path("load: a group not a dict", lambda t: t.opt.load_state_dict(
        sd_with(t, lambda sd: sd["param_groups"].__setitem__(-1, 3)))),
    Path("load: not a dict", lambda t: t.opt.load_state_dict([("state", {})])),
    Path("load: by name, unknown names", lambda t: t.opt.load_state_dict(
        sd_with(t, lambda sd: [g.__setitem__("param_names", [f"x{i}" for i in g["params"]])
                               for g in sd["param_groups"]]), by_name=True)),
    Path("load: step<0", lambda t: t.opt.load_state_dict(_set_step(t, -3.0)),
         only=lambda name: name not in NO_STEP_STATE),
    Path("load: step a string", lambda t: t.opt.load_state_dict(_set_step(t, "three")),
         only=lambda name: name not in NO_STEP_STATE),
    Path("load: group_state of another shape", lambda t: t.opt.load_state_dict(
        _set_group(t, group_state=[np.ones(7)])), only=lambda name: name == "ScheduleFreeAdamW"),
    Path("load: LBFGS history of another length", lambda t: t.opt.load_state_dict(
        sd_with(t, lambda sd: sd["state"][0].__setitem__("ro", sd["state"][0]["ro"][:-1]))),
         only=lambda name: name == "LBFGS"),
    # add_param_group
    Path("add_param_group: a parameter already there", _add_dup),
    Path("add_param_group: lr<0", lambda t: t.opt.add_param_group({"params": [jnp.ones((2, 2))], "lr": -1.0})),
    Path("add_param_group: integer parameter", lambda t: t.opt.add_param_group({"params": [jnp.ones((2, 2), int)]})),
    Path("add_param_group: no parameters", lambda t: t.opt.add_param_group({"params": []})),
    Path("add_param_group: not a dict", lambda t: t.opt.add_param_group([jnp.ones((2, 2))])),
    Path("add_param_group: a 1-d parameter for Muon", lambda t: t.opt.add_param_group({"params": [jnp.ones(3)]}),
         only=lambda name: name == "Muon"),
    # gradients
    Path("opt(grads): another structure", lambda t: t.opt(_other_structure(_grads(t))),
         raises=BAD_INPUT + (RuntimeError,)),
    Path("opt(grads): last leaf of another shape", lambda t: t.opt(
        _map_last_leaf(_grads(t), lambda g: jnp.ones((g.size + 1,), g.dtype))), raises=BAD_INPUT + (RuntimeError,)),
    Path("opt(grads): integer", lambda t: t.opt(_map_last_leaf(_grads(t), lambda g: g.astype(jnp.int32))),
         raises=BAD_INPUT + (RuntimeError,)),
    Path("opt(grads): strings", lambda t: t.opt(
        _map_last_leaf(_grads(t), lambda g: np.full(g.shape, "x"))), raises=BAD_INPUT + (RuntimeError,)),
    Path("backward: the loss function raises", lambda t: t.opt.backward(_raise, jnp.float32(1.0)),
         raises=(FloatingPointError,)),
    Path("backward: a vector loss", lambda t: t.opt.backward(_vector_loss, jnp.float32(1.0)), raises=(TypeError,)),
    Path("LBFGS step: the closure raises", lambda t: t.opt.step(_raise), raises=(FloatingPointError,),
         only=lambda name: name == "LBFGS"),
    # params setter
    Path("params = another structure", lambda t: setattr(t.opt, "params", _other_structure(t.opt.params))),
    Path("params = last leaf of another shape", lambda t: setattr(
        t.opt, "params", _map_last_leaf(t.opt.params, lambda p: jnp.ones((p.size + 1,), p.dtype))),),
    Path("params = integer", lambda t: setattr(
        t.opt, "params", _map_last_leaf(t.opt.params, lambda p: p.astype(jnp.int32)))),
    # scheduler
    Path("scheduler load_state_dict(3)", lambda t: _sched_garbage(t, 3)),
    Path("scheduler load_state_dict(a list)", lambda t: _sched_garbage(t, [1, 2])),
    # checkpoints
    Path("fo.load: a flipped byte", lambda t: fo.load(_saved_file(t, "flip", damage=_flip_middle), t.opt),
         raises=(fo.CheckpointError,)),
    Path("fo.load: a truncated file", lambda t: fo.load(
        _saved_file(t, "cut", damage=lambda d: d[: len(d) * 2 // 3]), t.opt), raises=(fo.CheckpointError,)),
    Path("fo.load: another optimizer class", lambda t: fo.load(
        _saved_file(t, "lion", obj=O.Lion(jax.tree.map(jnp.array, t.opt.params))), t.opt),
         raises=(fo.CheckpointError,)),
    Path("fo.load: parameters fit, state does not", lambda t: fo.load(
        _saved_file(t, "regrouped", obj=_other_grouping(t)), t.opt), raises=(fo.CheckpointError,),
         only=_not_lbfgs),
]


@pytest.fixture(scope="module")
def tmp_dir():
    with tempfile.TemporaryDirectory() as d:
        yield d


_TRAINED: dict[str, Trained] = {}


def shared_trained(name: str, tmp: str, cache: dict[str, Trained]) -> Trained:
    """One trained optimizer per config, shared by the tests of that config.

    Sharing is sound because each test checks that its call changed nothing; a test that finds a
    change drops the shared optimizer, and the next test builds a fresh one.
    """
    if name not in cache:
        cache[name] = trained(name, tmp)
    return cache[name]


def check_failing_call(name: str, path: Path, tmp: str, cache: dict[str, Trained]) -> None:
    """``path`` raises on the config's shared trained optimizer, which is bit-identical afterwards."""
    t = shared_trained(name, tmp, cache)
    try:
        before = snapshot(t.opt)
        with pytest.raises(path.raises):
            path.call(t)
        assert_unchanged(before, snapshot(t.opt), f"{name}: {path.id}")
    except BaseException:
        cache.pop(name, None)
        raise


def check_steps_like_a_twin(name: str, paths: list[Path], tmp: str, cache: dict[str, Trained]) -> None:
    """A victim that went through every failing path of ``paths`` then steps exactly like an untouched twin.

    The victim is the config's shared trained optimizer where this process has one (the failing calls
    of the tests before left it unchanged, which the first comparison with the twin checks again), taken
    out of ``cache`` since the steps below change it; otherwise a fresh one.
    """
    victim = cache.pop(name, None) or trained(name, tmp)
    twin = trained(name, tmp)
    assert_unchanged(snapshot(twin.opt), snapshot(victim.opt), "twins differ before any failure")
    for path in paths:
        if not path.only(name):
            continue
        with pytest.raises(path.raises):
            path.call(victim)
    assert_unchanged(snapshot(twin.opt), snapshot(victim.opt), f"{name}: after all failures")
    for k in range(3, 5):
        for t in (victim, twin):
            step(t.opt, k)
            t.sched.step()
    assert_unchanged(snapshot(twin.opt), snapshot(victim.opt), f"{name}: two steps after the failures")


CASES = [(name, p) for name in CONFIGS for p in PATHS if p.only(name)]


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}-{p.id}" for n, p in CASES])
def test_failing_call_changes_nothing(name: str, path: Path, tmp_dir: str) -> None:
    check_failing_call(name, path, tmp_dir, _TRAINED)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_after_every_failure_the_optimizer_steps_like_a_twin(name: str, tmp_dir: str) -> None:
    check_steps_like_a_twin(name, PATHS, tmp_dir, _TRAINED)
