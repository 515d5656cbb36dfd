"""The checkpoint module reaches an optimizer only through its public state_dict pair, groups and params.

It sits beside the stateful layer, not above it: it imports neither ``funcopt.optim`` nor undeclared
packages, and any object with ``state_dict()``, ``load_state_dict()``, ``param_groups`` and ``params``
is saved and restored as an optimizer.
"""

from __future__ import annotations

import ast
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt import checkpoint as ckpt


def test_imports_only_the_functional_layer_and_declared_packages():
    tree = ast.parse(pathlib.Path(ckpt.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    top_level = {name.split(".")[0] for name in imported if not name.startswith("funcopt")}
    assert top_level <= {"jax", "numpy", "__future__", "contextlib", "errno", "hashlib", "importlib", "json",
                           "math", "os", "stat", "sys", "tempfile", "collections", "typing"}, top_level
    assert {name for name in imported if name.startswith("funcopt")} <= {"funcopt._src.base",
                                                                          "funcopt._src.matching",
                                                                          "funcopt._src.tree"}


class Minimal:
    """The members a checkpoint uses, and nothing else of an optimizer."""

    def __init__(self, w):
        self.params = {"w": w}
        self.param_groups = [{"lr": 0.1, "params": [0], "param_names": ["w"]}]
        self.buf = jnp.zeros_like(w)
        self.loaded = None

    def state_dict(self):
        return {"state": {0: {"buf": np.asarray(self.buf)}}, "param_groups": self.param_groups}

    def load_state_dict(self, state_dict, strict=True):
        if state_dict["state"][0]["buf"].shape != self.buf.shape:
            raise ValueError("buf of another shape")
        self.buf = jnp.asarray(state_dict["state"][0]["buf"])
        self.loaded = strict
        return fo.IncompatibleKeys([], [], [])


def test_any_object_with_the_public_members_is_an_optimizer(tmp_path):
    path = str(tmp_path / "minimal.npz")
    saved = Minimal(jnp.arange(3.0))
    saved.buf = jnp.full(3, 7.0)
    fo.save(path, saved)
    assert fo.load(path)["state"][0]["buf"].tolist() == [7.0, 7.0, 7.0]  # an optimizer checkpoint

    target = Minimal(jnp.zeros(3))
    assert fo.load(path, target) is target
    np.testing.assert_array_equal(target.params["w"], np.arange(3.0))
    np.testing.assert_array_equal(target.buf, np.full(3, 7.0))
    assert target.loaded is True

    grown = Minimal(jnp.zeros(3))
    result, keys = fo.load(path, grown, strict=False)
    assert result is grown and grown.loaded is False and keys == fo.IncompatibleKeys([], [], [])
    np.testing.assert_array_equal(grown.params["w"], np.arange(3.0))

    wrong = Minimal(jnp.zeros(2))
    with pytest.raises(fo.CheckpointError, match="do not fit"):
        fo.load(path, wrong)
    np.testing.assert_array_equal(wrong.params["w"], np.zeros(2))


def test_a_scheduler_is_not_taken_for_an_optimizer(tmp_path):
    opt = fo.optim.SGD({"w": jnp.ones(2)}, lr=0.1)
    sched = fo.optim.lr_scheduler.StepLR(opt, step_size=2)
    with pytest.raises(TypeError, match="do not pickle"):  # saved as a pytree: its state_dict() is
        fo.save(str(tmp_path / "sched.npz"), sched)
