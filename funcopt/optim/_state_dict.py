"""torch.optim's state_dict format: building it from the groups, and loading it back.

A load runs in three stages so that a failed one changes nothing: :func:`validate`
checks the dict's structure, :func:`plan` checks every value against the state the
optimizer would create and prepares each group's new hyperparameters and state,
and :func:`apply` commits them (nothing there raises on a validated plan).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.hparams import optimizer_states
from funcopt._src.matching import IncompatibleKeys
from funcopt.optim import _params, _state_tree
from funcopt.optim._util import plain
from funcopt.optim.interop import to_numpy

_GROUP_KEYS = ("params", "param_names")


# ---------------------------------------------------------------------- saving


def build(opt: Any) -> dict[str, Any]:
    """The optimizer's state_dict (without its hooks): torch's layout, NumPy arrays."""
    opt._sync_hparams()
    state: dict[int, dict[str, Any]] = {}
    groups = []
    index = 0
    for g, pg in zip(opt._groups, opt.param_groups):
        per_param = _state_tree.slots_per_param(g.state, g.layout)
        step = _state_tree.step_of(g.state)
        ids = []
        for slots in per_param:
            entry = {k: np.array(v) for k, v in slots.items()}
            if opt.state_has_step:
                entry = {"step": np.asarray(step, dtype=np.float32), **entry}
            if entry:
                state[index] = entry
            ids.append(index)
            index += 1
        saved = {k: plain(v) for k, v in pg.items() if k not in _GROUP_KEYS}
        extra = _state_tree.extra_leaves(g.state)
        if extra:  # group-level state beyond torch's per-parameter slots
            saved["group_state"] = [np.array(x) for x in extra]
        saved["params"] = ids
        saved["param_names"] = list(g.names)
        groups.append(saved)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------- loading: validate


def validate(state_dict: Any) -> tuple[list[Mapping[str, Any]], Mapping[Any, Any]]:
    """The saved groups and per-parameter state of a state_dict, after checking its structure."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    for key in ("state", "param_groups"):
        if key not in state_dict:
            raise KeyError(f"state_dict is missing the key {key!r}")
    saved_groups = state_dict["param_groups"]
    saved_state = state_dict["state"]
    if not isinstance(saved_groups, (list, tuple)) or not all(isinstance(g, Mapping) for g in saved_groups):
        raise TypeError("state_dict['param_groups'] must be a list of dicts")
    if not isinstance(saved_state, Mapping):
        raise TypeError("state_dict['state'] must be a dict")
    for g in saved_groups:
        if "params" not in g:
            raise KeyError("every saved param group must have a 'params' key")
    for g in saved_groups:
        bad = [k for k in g if not isinstance(k, str)]
        if bad:
            raise TypeError(f"param group keys must be strings, got key {bad[0]!r}")
    return list(saved_groups), saved_state


def saved_names(saved_groups: list[Mapping[str, Any]], why: str) -> dict[str, tuple[int, Any]]:
    """Each saved parameter name's ``(saved group index, saved param id)``; ``why`` names the caller's need."""
    by = {}
    for si, g in enumerate(saved_groups):
        names = g.get("param_names")
        if names is None or len(names) != len(g["params"]):
            raise ValueError(f"{why} needs 'param_names' in every saved param group")
        for name, pid in zip(names, g["params"]):
            by[name] = (si, pid)
    return by


def incompatible(names: list[str], saved: Mapping[str, Any], mismatched: list[str] = ()) -> IncompatibleKeys:
    """The :class:`IncompatibleKeys` of the optimizer's ``names`` against the ``saved`` names."""
    ours = set(names)
    return IncompatibleKeys(sorted(n for n in ours if n not in saved), sorted(n for n in saved if n not in ours),
                            sorted(mismatched))


def _sources(groups: list[Any], saved_groups: list[Mapping[str, Any]], by_name: bool,
             strict: bool) -> tuple[list[list[tuple[int, Any] | None]], Mapping[str, Any] | None]:
    """Which saved entry feeds each parameter (None: none, fresh state); and the saved names (None: by index)."""
    if by_name or not strict:
        by = saved_names(saved_groups, "loading by name" if strict else "load_state_dict(strict=False)")
        if strict:
            missing = [n for g in groups for n in g.names if n not in by]
            if missing:
                raise KeyError(f"state_dict has no state for parameters {missing}")
        return [[by.get(n) for n in g.names] for g in groups], by
    if len(saved_groups) != len(groups):
        raise ValueError("loaded state dict has a different number of parameter groups")
    for g, sg in zip(groups, saved_groups):
        if len(sg["params"]) != len(g.names):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size "
                             "of optimizer's group")
    _params.check_names_match([g.names for g in groups], saved_groups)
    return [[(si, pid) for pid in sg["params"]] for si, sg in enumerate(saved_groups)], None


# ---------------------------------------------------------------------- loading: plan


class GroupPlan(NamedTuple):
    """A group's validated load: the hyperparameters to set and the function that builds its new state."""

    group: Any
    hparams: dict[str, Any]
    state: Callable[[Any], Any]


def saved_hparams(saved_group: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters of a saved group as plain values (torch's lists of betas as tuples)."""
    return {k: plain(tuple(v) if isinstance(v, list) else v)
            for k, v in saved_group.items() if k not in ("params", "param_names", "group_state")}


def _saved_step(name: str, value: Any) -> int:
    try:
        arr = np.asarray(to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.array([np.nan])
    if arr.size != 1 or not np.isfinite(arr).all() or not 0 <= float(arr.reshape(())) < 2**31 - 1:
        raise ValueError(f"saved 'step' for parameter {name!r} must be a non-negative number "
                         f"below 2**31, got {value!r}")
    return int(round(float(arr.reshape(()))))


def _saved_entry(saved_state: Mapping[Any, Any], name: str, pid: Any,
                 slot_names: list[str]) -> tuple[dict[str, np.ndarray], int | None]:
    """The known slots of one saved parameter as host arrays, and its step (None when not saved)."""
    entry = saved_state.get(pid, saved_state.get(str(pid), {})) if pid is not None else {}
    if not isinstance(entry, Mapping):
        raise TypeError(f"saved state for parameter {name!r} must be a dict")
    vals, step = {}, None
    for k, v in entry.items():
        if k == "step":
            step = _saved_step(name, v)
        elif k in slot_names:  # torch keeps unknown keys; they have no meaning here
            vals[k] = to_numpy(v)
    return vals, step


def _slot_specs(template: Any) -> dict[str, list[Any]]:
    return {k: _state_tree.slot_leaves(tree) for s in optimizer_states(template) for k, tree in s.slots.items()}


def _fitted(group: Any, specs: dict[str, list[Any]], i: int, k: str, arr: np.ndarray,
            exact: bool) -> np.ndarray | str:
    """Saved slot ``k`` of parameter ``i`` in the dtype this optimizer stores, or why it does not fit.

    Floating state is cast to the stored dtype (as torch does) unless ``exact`` asks for the same dtype.
    """
    name = group.names[i]
    if not group.layout.flat and specs[k][i] is None:
        return (f"loaded state {k!r} of parameter {name!r} has no place in this optimizer's state for that "
                "parameter")
    shape, dtype = group.layout.leaf_spec(specs[k], i)
    if tuple(arr.shape) != shape and arr.size == 1 and int(np.prod(shape)) == 1:
        arr = arr.reshape(shape)
    if tuple(arr.shape) != shape:
        return f"loaded state {k!r} of parameter {name!r} has shape {tuple(arr.shape)}, expected {shape}"
    kind_ok = (np.issubdtype(arr.dtype, np.complexfloating) == jnp.issubdtype(dtype, jnp.complexfloating)
               and jnp.issubdtype(arr.dtype, jnp.inexact))  # ml_dtypes' bfloat16, float8 too
    if not kind_ok or (exact and np.dtype(arr.dtype) != np.dtype(dtype)):
        return (f"loaded state {k!r} of parameter {name!r} has dtype {arr.dtype}, which cannot hold the "
                f"optimizer's {dtype} state")
    return arr.astype(dtype)


def _group_extra(saved_group: Mapping[str, Any] | None, template: Any, gi: int) -> list[Any] | None:
    """The saved group-level state (``'group_state'``) cast to the template's, or None to keep it fresh."""
    extra_spec = _state_tree.extra_leaves(template)
    saved_extra = saved_group.get("group_state") if saved_group is not None and extra_spec else None
    if saved_extra is None:
        return None
    if not isinstance(saved_extra, (list, tuple)) or len(saved_extra) != len(extra_spec):
        raise ValueError(f"saved 'group_state' of group {gi} must be a list of {len(extra_spec)} arrays")
    extra = []
    for spec, v in zip(extra_spec, saved_extra):
        arr = to_numpy(v)
        if tuple(arr.shape) != tuple(spec.shape) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"saved 'group_state' of group {gi} has an entry of shape "
                             f"{tuple(arr.shape)} / dtype {arr.dtype}, expected {tuple(spec.shape)}")
        extra.append(arr.astype(spec.dtype))
    return extra


def _state_setter(layout: Any, new_slots: dict[str, list], step: int,
                  extra: list[Any] | None) -> Callable[[Any], Any]:
    def apply_to(state: Any) -> Any:
        if extra is not None:
            state = _state_tree.replace_extra(state, extra)
        return _state_tree.with_slots(state, layout, new_slots, step)

    return apply_to


def _plan_group(opt: Any, gi: int, g: Any, src: list[tuple[int, Any] | None], saved_groups: list[Mapping[str, Any]],
                saved_state: Mapping[Any, Any], strict: bool) -> tuple[GroupPlan, list[str]]:
    """One group's plan, and (``strict=False``) the names of its parameters whose saved state does not fit."""
    current = {k: v for k, v in opt.param_groups[gi].items() if k not in _GROUP_KEYS}
    saved_ids = {s[0] for s in src if s is not None}
    source = saved_groups[next(iter(saved_ids))] if len(saved_ids) == 1 else None
    # hyperparameters: from the saved group, when all this group's loaded params come from one
    hp = saved_hparams(source) if source is not None else {}
    tx = opt._check_hparams({**current, **hp}) if source is not None else opt._build_tx(current)
    template = jax.eval_shape(tx.init, g.params)
    names, specs = _state_tree.slot_names(template), _slot_specs(template)
    new_slots: dict[str, list] = {k: [None] * len(g.names) for k in names}  # None: keep a fresh value
    steps, loaded, mismatched = set(), False, []
    for i, (name, s) in enumerate(zip(g.names, src)):
        vals, step = _saved_entry(saved_state, name, s[1], names) if s is not None else ({}, None)
        fitted = {k: _fitted(g, specs, i, k, arr, exact=not strict) for k, arr in vals.items()}
        problems = [v for v in fitted.values() if isinstance(v, str)]
        if problems and strict:
            raise ValueError(problems[0])
        if problems:
            mismatched.append(name)
            continue
        for k, arr in fitted.items():
            new_slots[k][i] = arr
        loaded = loaded or bool(vals)
        if step is not None:
            steps.add(step)
    if len(steps) > 1:
        raise ValueError(f"the saved parameters of group {gi} are at different steps {sorted(steps)}; "
                         "funcopt keeps one step count per group")
    # state without a step count (e.g. SGD's momentum buffers) is past the first step
    step = steps.pop() if steps else (1 if loaded else 0)
    extra = _group_extra(source, template, gi)
    return GroupPlan(g, hp, _state_setter(g.layout, new_slots, step, extra)), mismatched


def plan(opt: Any, state_dict: Any, by_name: bool, strict: bool) -> tuple[list[GroupPlan], IncompatibleKeys]:
    """Every group's validated load, and what did not match; raises (changing nothing) on bad input."""
    saved_groups, saved_state = validate(state_dict)
    sources, by = _sources(opt._groups, saved_groups, by_name, strict)
    plans, mismatched = [], []
    for gi, (g, src) in enumerate(zip(opt._groups, sources)):
        group_plan, bad = _plan_group(opt, gi, g, src, saved_groups, saved_state, strict)
        plans.append(group_plan)
        mismatched += bad
    if by is None:  # by index: every parameter has its saved entry
        return plans, IncompatibleKeys([], [], [])
    return plans, incompatible(opt.param_names, by, mismatched)


# ---------------------------------------------------------------------- loading: apply


def compiled_token(group: Any) -> Any:
    """What a group's compiled step depends on beyond array values: options, slots, schedules, kernel."""
    schedules = tuple((k, v) for k, v in sorted(group.hp_values.items()) if callable(v))
    return group.static_key, group.native, schedules


def apply(opt: Any, plans: list[GroupPlan]) -> None:
    """Commit validated plans: set each group's hyperparameters and state (nothing here raises)."""
    compiled_for = [compiled_token(g) for g in opt._groups]
    for gi, (group, hp, state) in enumerate(plans):
        pg = opt.param_groups[gi]
        for k, v in hp.items():
            dict.__setitem__(pg, k, v)
        opt._build_group(group, {k: v for k, v in pg.items() if k not in _GROUP_KEYS})
        group.state = state(group.state)
    if [compiled_token(g) for g in opt._groups] == compiled_for:
        # same options, schedules and kernels: the compiled step computes the loaded groups' update
        opt._decay_pattern = None
        opt._params_cache = None
    else:
        opt._invalidate()
