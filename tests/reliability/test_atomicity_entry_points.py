"""Failure atomicity of the newer failing paths: transformations, save / load, duplicate names.

The same configurations and snapshots as test_atomicity.py: every call below raises, and the
optimizer (and its scheduler) must be bit-identical afterwards; a victim that went through all of
them then steps like a twin that never saw one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from tests.reliability.snapshot import canon
from tests.reliability.test_atomicity import (
    CONFIGS,
    Path,
    Trained,
    _grads,
    _saved_file,
    check_failing_call,
    check_steps_like_a_twin,
    loss_fn,
)

O = fo.optim
GUARDED = (RuntimeError,)
CHECKPOINT = (fo.CheckpointError,)


def _sched_unchanged(t: Trained, call) -> None:
    before = canon(t.sched.state_dict())
    try:
        call()
    finally:
        assert canon(t.sched.state_dict()) == before, "the scheduler changed although its step failed"


def _stacked(tree: Any) -> Any:
    return jax.tree.map(lambda g: jnp.stack([g, g]), tree)


def _in_jit(call) -> Any:
    return jax.jit(lambda x: (call(), x)[1])(jnp.float32(1.0))


def _closure(t: Trained):
    def closure():
        t.opt.zero_grad()
        return t.opt.backward(loss_fn, jnp.float32(1.0))
    return closure


def _resized(t: Trained) -> Any:
    """An optimizer of the same class whose parameters have the same names and other shapes."""
    params = jax.tree.map(lambda p: jnp.ones((p.size + 1,), p.dtype), t.opt.params)
    if t.name == "Muon":
        params = jax.tree.map(lambda p: jnp.ones((p.shape[0] + 1, p.shape[1]), p.dtype), t.opt.params)
    kw = {"lr": 0.05} if isinstance(t.opt, (O.LAMB, O.FTRL)) else {}
    return type(t.opt)(params, **kw)


def _state_only_file(t: Trained, name: str, obj: Any) -> str:
    path = os.path.join(t.tmp, f"{t.name}-{name}.npz")
    fo.save(path, obj, params=False)
    return path


def _not_a_checkpoint(t: Trained) -> str:
    path = os.path.join(t.tmp, f"{t.name}-text.npz")
    with open(path, "w") as f:
        f.write("not a checkpoint")
    return path


def _scale_params(t: Trained, c: jax.Array) -> jax.Array:
    t.opt.params = jax.tree.map(lambda p: p * c, t.opt.params)
    return c


def _tree_file(t: Trained) -> str:
    path = os.path.join(t.tmp, f"{t.name}-tree.npz")
    fo.save(path, {"w": jnp.ones(2)})
    return path


def _first_group_copy(t: Trained) -> Any:
    return jax.tree.map(jnp.array, t.opt.param_groups[0]["params"])  # new arrays, the same names


PATHS: list[Path] = [
    # a stateful optimizer under a JAX transformation
    Path("jit: step()", lambda t: _in_jit(lambda: t.opt.step()), raises=GUARDED),
    Path("jit: step(closure)", lambda t: _in_jit(lambda: t.opt.step(_closure(t))), raises=GUARDED),
    Path("grad: backward", lambda t: jax.grad(lambda s: (t.opt.backward(loss_fn, s), s)[1])(jnp.float32(1.0)),
         raises=GUARDED),
    Path("vmap: opt(grads)", lambda t: jax.vmap(lambda g: t.opt(g))(_stacked(_grads(t))), raises=GUARDED),
    Path("scan: params = ...", lambda t: jax.lax.scan(lambda c, _: (_scale_params(t, c), None),
                                                      jnp.float32(1.0), None, length=1), raises=GUARDED),
    Path("jit: load_state_dict", lambda t: _in_jit(lambda: t.opt.load_state_dict(t.opt.state_dict())),
         raises=GUARDED),
    Path("jit: zero_grad(set_to_none=False)", lambda t: _in_jit(lambda: t.opt.zero_grad(set_to_none=False)),
         raises=GUARDED),
    Path("jit: add_param_group", lambda t: _in_jit(lambda: t.opt.add_param_group({"params": [jnp.ones(2)]})),
         raises=GUARDED, only=lambda name: name != "LBFGS"),
    Path("jit: scheduler step", lambda t: _sched_unchanged(t, lambda: _in_jit(lambda: t.sched.step())),
         raises=GUARDED),
    # save and load
    Path("fo.save: the folder does not exist", lambda t: fo.save(os.path.join(t.tmp, "missing", "x.npz"), t.opt),
         raises=(OSError,)),
    Path("fo.save: the path is a folder", lambda t: fo.save(t.tmp, t.opt), raises=(OSError,)),
    Path("fo.save: params of another structure", lambda t: fo.save(
        os.path.join(t.tmp, "x.npz"), t.opt, params={"other": jnp.ones(2)}), raises=(ValueError,)),
    Path("fo.load: no such file", lambda t: fo.load(os.path.join(t.tmp, "missing.npz"), t.opt),
         raises=(OSError,)),
    Path("fo.load: not a checkpoint", lambda t: fo.load(_not_a_checkpoint(t), t.opt), raises=CHECKPOINT),
    Path("fo.load: a pytree checkpoint", lambda t: fo.load(_tree_file(t), t.opt), raises=CHECKPOINT),
    Path("fo.load: parameters of other shapes", lambda t: fo.load(_saved_file(t, "resized", obj=_resized(t)), t.opt),
         raises=CHECKPOINT),
    # (a fresh L-BFGS has no history to misfit: its state loads anywhere)
    Path("fo.load: state only, of other shapes", lambda t: fo.load(
        _state_only_file(t, "resized-state", _resized(t)), t.opt), raises=CHECKPOINT,
         only=lambda name: name != "LBFGS"),
    # duplicate parameter names
    Path("add_param_group: names already there", lambda t: t.opt.add_param_group(
        {"params": _first_group_copy(t)}), raises=(ValueError,)),
    Path("add_param_group: a param_names entry already there", lambda t: t.opt.add_param_group(
        {"params": [jnp.ones(2)], "param_names": [t.opt.param_names[0]]}), raises=(ValueError,)),
]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("atomicity"))


_TRAINED: dict[str, Trained] = {}

CASES = [(name, p) for name in CONFIGS for p in PATHS if p.only(name)]


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}-{p.id}" for n, p in CASES])
def test_failing_call_changes_nothing(name: str, path: Path, tmp_dir: str) -> None:
    check_failing_call(name, path, tmp_dir, _TRAINED)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_after_every_failure_the_optimizer_steps_like_a_twin(name: str, tmp_dir: str) -> None:
    check_steps_like_a_twin(name, PATHS, tmp_dir, _TRAINED)


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path):
    opt = O.Adam({"w": jnp.ones(3)}, lr=0.1)
    path = tmp_path / "opt.npz"
    fo.save(path, opt)
    before = path.read_bytes()
    opt({"w": jnp.ones(3)})
    with pytest.raises(ValueError):
        fo.save(path, opt, params={"w": jnp.ones(4)})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["opt.npz"]
    restored = fo.load(path, O.Adam({"w": jnp.zeros(3)}, lr=0.1))
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), np.ones(3, np.float32))
