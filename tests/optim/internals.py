"""The few internals of a stateful optimizer that white-box tests inspect, in one place.

Tests use the public API wherever it says what they check: ``params``, ``grad``, ``state``,
``state_dict()``, ``step_count(group)``, ``grad_storage()``, compile events (the ``compiles`` fixture) and
the handles hooks return. What is left here are design properties the public API deliberately hides, and
these helpers are the only place tests read an optimizer's private fields, so that a change of the step
engine is one edit here:

* the storage layout: an elementwise optimizer packs each dtype of a group into one flat buffer, which
  parameters, gradients and state share (``storage``, ``is_packed``, ``group_state``), and that a step
  updates it in place (``assert_step_writes_in_place``);
* the compiled step and backward, whose HLO the performance guards count ops and fusions of
  (``step_hlo``, ``lowered_backward``) and whose weight-decay variant they check (``step_variant``);
* whether a group runs a native fused kernel (``runs_native``), and how often the compiled step runs
  (``count_step_calls``);
* how many step post-hooks the learning-rate schedulers installed (``step_post_hook_count``);
* L-BFGS's one compiled update (``lbfgs_update``).
"""

from __future__ import annotations

from typing import Any

import jax


def storage(opt: Any, group: int = 0) -> list[jax.Array]:
    """The arrays that hold group ``group``'s parameters (one flat buffer per dtype when packed)."""
    return opt._groups[group].params


def is_packed(opt: Any, group: int = 0) -> bool:
    """Whether group ``group`` keeps its parameters, gradients and state in flat per-dtype buffers."""
    return bool(opt._groups[group].layout.flat)


def layout(opt: Any, group: int = 0) -> Any:
    """Group ``group``'s layout: which buffer, offset and size each parameter occupies."""
    return opt._groups[group].layout


def group_state(opt: Any, group: int = 0) -> Any:
    """Group ``group``'s functional optimizer state, as the compiled step sees it (packed or per leaf)."""
    return opt._groups[group].state


def group_names(opt: Any, group: int = 0) -> list[str]:
    """The parameter names of group ``group``, in the order of its state's leaves."""
    return opt._groups[group].names


def assert_step_writes_in_place(opt: Any, slots: list[str], buffer: int = 0) -> None:
    """One ``opt.step()`` donates buffer ``buffer``'s parameters and state ``slots`` and writes them in place."""

    def buffers() -> list[jax.Array]:
        state = opt._groups[0].state
        return [opt._groups[0].params[buffer], *(state.slots[k][buffer] for k in slots)]

    old = buffers()
    pointers = [x.unsafe_buffer_pointer() for x in old]
    opt.step()
    assert all(x.is_deleted() for x in old)  # donated
    assert [x.unsafe_buffer_pointer() for x in buffers()] == pointers  # and written in place


def runs_native(opt: Any, group: int = 0) -> bool:
    """Whether group ``group``'s step runs the class's native fused kernel instead of XLA's step."""
    return bool(opt._groups[group].native)


def _step_lowered(opt: Any) -> Any:
    fn = opt._compiled_step()
    return fn.lower(*opt._step_args(fn, [g.grads for g in opt._groups]))


def step_hlo(opt: Any, optimized: bool = False) -> str:
    """The text of the jitted step for the current gradients: as lowered, or as XLA optimized it."""
    lowered = _step_lowered(opt)
    return lowered.compile().as_text() if optimized else lowered.as_text()


def step_variant(opt: Any) -> tuple[bool, ...]:
    """Per group, whether the last step ran the variant traced with a literal zero weight decay."""
    return opt._step_variant


def lowered_backward(opt: Any, loss_fn: Any, *args: Any) -> Any:
    """The jitted program ``opt.backward(loss_fn, *args)`` would run, lowered for these arguments."""
    leaves, args_def = jax.tree.flatten((args, {}))
    fn = opt._make_backward(loss_fn, False, args_def, (None,) * len(leaves))
    params = [g.params for g in opt._groups]
    offsets = opt._grad_offsets(params)
    if opt._model is not None:
        return fn.lower(params, None, list(leaves), opt._model.rest(), offsets)
    return fn.lower(params, None, list(leaves), offsets)


def count_step_calls(opt: Any) -> list[bool]:
    """Wrap the compiled step: the returned list gains one entry per run (its ``from_leaves`` flag)."""
    calls: list[bool] = []
    step = opt._compiled_step()

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[5])
        return step(*args, **kwargs)

    opt._step_fn = counted
    return calls


def step_post_hook_count(opt: Any) -> int:
    """How many step post-hooks are installed (the public handles only say whether one is registered)."""
    return len(opt._step_post_hooks)


def lbfgs_update(opt: Any) -> Any:
    """L-BFGS's one jitted update (fails when there is not exactly one)."""
    (update,) = opt._update_cache.values()
    return update
