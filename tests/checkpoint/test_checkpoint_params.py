"""fo.save(path, opt) keeps the parameters the optimizer owns: resuming lands on the uninterrupted run.

Train, save, keep training a fresh optimizer built from the INITIAL weights (so its weights and
state are wrong), load, continue: every bit must equal the run that never stopped. A checkpoint
saved with ``params=False`` restores the state and keeps the current weights.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo

O = fo.optim


def _initial(dtype=jnp.float32) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {"enc": {"weight": jnp.asarray(rng.standard_normal((3, 2)), dtype),
                    "bias": jnp.asarray(rng.standard_normal(3), dtype)},
            "head": jnp.asarray(rng.standard_normal(2), dtype)}


def loss_fn(params: Any, x: jax.Array) -> jax.Array:
    h = jnp.tanh(params["enc"]["weight"].astype(jnp.float32) @ x + params["enc"]["bias"].astype(jnp.float32))
    return jnp.sum((h[:2] * params["head"].astype(jnp.float32) - 0.3) ** 2)


def _batch(k: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(100 + k).standard_normal(2), jnp.float32)


def _train(opt: Any, steps: range, sched: Any = None) -> None:
    for k in steps:
        if isinstance(opt, O.LBFGS):
            def closure(k=k):
                opt.zero_grad()
                return opt.backward(loss_fn, _batch(k))
            opt.step(closure)
        else:
            opt.zero_grad()
            opt.backward(loss_fn, _batch(k))
            opt.step()
        if sched is not None:
            sched.step()


def _bits(tree: Any) -> list[bytes]:
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _assert_same(a: Any, b: Any) -> None:
    assert jax.tree.structure(a.params) == jax.tree.structure(b.params)
    assert _bits(a.params) == _bits(b.params)
    sa, sb = a.state_dict(), b.state_dict()
    assert repr(sa["param_groups"]) == repr(sb["param_groups"])
    assert _bits(sa["state"]) == _bits(sb["state"])


CONFIGS = {
    "Adam": lambda: O.Adam(_initial(), lr=1e-2, weight_decay=0.01),
    "AdamW-bf16": lambda: O.AdamW(_initial(jnp.bfloat16), lr=1e-2),
    "SGD-two-groups": lambda: O.SGD(O.param_groups(_initial(), {"head": {"lr": 0.01}}), lr=0.1, momentum=0.9),
    "Adafactor": lambda: O.Adafactor(_initial(), lr=1e-2),
    "LBFGS": lambda: O.LBFGS(_initial(), lr=0.5, max_iter=3, history_size=3),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_from_the_default_checkpoint_is_the_uninterrupted_run(name, tmp_path):
    make = CONFIGS[name]
    reference = make()
    _train(reference, range(6))

    first = make()
    _train(first, range(3))
    path = tmp_path / "ckpt.npz"
    fo.save(path, first)  # the default: state and parameters

    resumed = make()  # the initial weights, and two steps elsewhere: weights and state both wrong now
    _train(resumed, range(10, 12))
    assert _bits(resumed.params) != _bits(first.params)
    assert fo.load(path, resumed) is resumed
    _assert_same(resumed, first)
    _train(resumed, range(3, 6))
    _assert_same(resumed, reference)


def test_resume_with_a_scheduler(tmp_path):
    def make():
        opt = O.Adam(_initial(), lr=1e-2)
        return opt, O.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    reference, ref_sched = make()
    _train(reference, range(6), ref_sched)
    first, sched = make()
    _train(first, range(3), sched)
    fo.save(tmp_path / "opt.npz", first)
    fo.save(tmp_path / "sched.npz", sched.state_dict())

    resumed, resumed_sched = make()
    resumed_sched.load_state_dict(fo.load(tmp_path / "sched.npz"))
    fo.load(tmp_path / "opt.npz", resumed)
    _train(resumed, range(3, 6), resumed_sched)
    _assert_same(resumed, reference)


def test_a_checkpoint_saved_without_params_restores_the_state_and_keeps_the_weights(tmp_path):
    first = CONFIGS["Adam"]()
    _train(first, range(3))
    path = tmp_path / "state.npz"
    fo.save(path, first, params=False)
    assert fo.load(path)["state"]  # the state is there
    other = CONFIGS["Adam"]()
    _train(other, range(10, 12))
    weights = _bits(other.params)
    fo.load(path, other)
    assert _bits(other.params) == weights  # the current weights are kept
    assert _bits(other.state_dict()["state"]) == _bits(first.state_dict()["state"])
    assert other.param_groups[0]["lr"] == first.param_groups[0]["lr"]


def test_params_true_and_a_given_pytree_still_work(tmp_path):
    opt = CONFIGS["Adam"]()
    _train(opt, range(2))
    fo.save(tmp_path / "a.npz", opt, params=True)
    fo.save(tmp_path / "b.npz", opt)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    given = jax.tree.map(lambda p: p * 0 + 7, opt.params)
    fo.save(tmp_path / "c.npz", opt, params=given)
    loaded = fo.load(tmp_path / "c.npz", CONFIGS["Adam"]())
    assert _bits(loaded.params) == _bits(given)


def test_a_checkpoint_whose_params_do_not_fit_changes_nothing(tmp_path):
    small = O.Adam({"enc": {"weight": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "head": jnp.ones(2)}, lr=1e-2)
    fo.save(tmp_path / "small.npz", small)
    opt = CONFIGS["Adam"]()
    _train(opt, range(2))
    params, state = _bits(opt.params), _bits(opt.state_dict()["state"])
    with pytest.raises(fo.CheckpointError, match="parameters do not fit"):
        fo.load(tmp_path / "small.npz", opt)
    assert _bits(opt.params) == params and _bits(opt.state_dict()["state"]) == state
