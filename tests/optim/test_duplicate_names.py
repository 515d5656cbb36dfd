"""A parameter name belongs to one parameter: repeated names are refused before anything changes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import mindspore as ms
from tests.reliability.snapshot import assert_unchanged, snapshot

O = fo.optim


def test_two_groups_with_the_same_names_are_refused():
    with pytest.raises(ValueError, match="duplicate parameter name 'w'"):
        O.SGD([{"params": {"w": jnp.ones(2)}}, {"params": {"w": jnp.ones(3)}}], lr=0.1)
    with pytest.raises(ValueError, match="duplicate parameter name 'enc.weight'"):
        O.Adam([{"params": {"enc": {"weight": jnp.ones(2)}}}, {"params": {"enc": {"weight": jnp.ones(2)}}}])


@pytest.mark.parametrize("group", [
    {"params": {"w": jnp.ones(3)}},
    {"params": {"v": jnp.ones(1), "w": jnp.ones(3)}, "lr": 0.5},
    {"params": [jnp.ones(3)], "param_names": ["w"]},
    {"params": [jnp.ones(3), jnp.ones(2)], "param_names": ["new", "new"]},
])
def test_add_param_group_with_a_name_already_there_changes_nothing(group):
    opt = O.Adam({"w": jnp.array([1.0, 2.0]), "b": jnp.zeros(1)}, lr=0.1)
    opt({"w": jnp.ones(2), "b": jnp.ones(1)})
    twin = O.Adam({"w": jnp.array([1.0, 2.0]), "b": jnp.zeros(1)}, lr=0.1)
    twin({"w": jnp.ones(2), "b": jnp.ones(1)})
    before = snapshot(opt)
    with pytest.raises(ValueError, match="duplicate parameter name"):
        opt.add_param_group(group)
    assert_unchanged(before, snapshot(opt), "add_param_group")
    opt({"w": jnp.ones(2), "b": jnp.ones(1)})
    twin({"w": jnp.ones(2), "b": jnp.ones(1)})
    assert_unchanged(snapshot(twin), snapshot(opt), "a step after the refused group")


def test_distinct_names_unnamed_lists_and_cut_groups_are_accepted():
    opt = O.SGD([{"params": {"enc": {"w": jnp.ones(2)}}}, {"params": {"head": {"w": jnp.ones(3)}}}], lr=0.1)
    assert opt.param_names == ["enc.w", "head.w"]
    opt.add_param_group({"params": {"extra": jnp.ones(1)}})
    assert opt.param_names[-1] == "extra"
    # parameters in plain lists are numbered per group, as torch numbers its tensors: no names to clash
    lists = O.SGD([{"params": [jnp.ones(2)]}, {"params": [jnp.ones(3)]}], lr=0.1)
    lists.add_param_group({"params": [jnp.ones(1)]})
    assert len(lists.param_groups) == 3
    model = {"enc": {"weight": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "head": {"bias": jnp.ones(1)}}
    cut = O.AdamW(O.param_groups(model, {"*.bias": {"weight_decay": 0.0}}), lr=0.1)
    assert sorted(cut.param_names) == ["enc.bias", "enc.weight", "head.bias"]
    grouped = ms.Momentum([{"params": {"w": jnp.ones(2)}, "lr": 0.05}, {"params": {"v": jnp.ones(2)}}], 0.1, 0.9)
    grouped([{"w": jnp.ones(2)}, {"v": jnp.ones(2)}])
    np.testing.assert_allclose(np.asarray(grouped.parameters[0]["w"]), [0.95, 0.95], rtol=1e-6)
