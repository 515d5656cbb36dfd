"""The ``fused=True`` step of Adam and AdamW on the CPU: one native pass over each packed buffer.

XLA:CPU compiles Adam into three loops (first moment, second moment, then the parameters, which
read both moments back): 10 memory accesses per parameter where a single pass makes 7. A group
stored in flat buffers on the CPU, with ``fused=True``, runs :func:`funcopt._src.native.fused_adam`
on each buffer instead, inside the same jitted, donated step; the numbers are the same update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from funcopt._src import native
from funcopt._src.hparams import OptimizerState


def fusable(storage: list[jax.Array], state: Any, hp_values: Mapping[str, Any],
            static_values: Mapping[str, Any]) -> bool:
    """Whether a group can take the native step: packed CPU buffers of a kernel's dtype, plain Adam state."""
    if not isinstance(state, OptimizerState) or set(state.slots) != {"exp_avg", "exp_avg_sq"}:
        return False  # amsgrad keeps a third moment: XLA's loops
    if static_values.get("amsgrad") or any(callable(v) for v in jax.tree.leaves(dict(hp_values))):
        return False
    if state.rng is not None or any(m.dtype != p.dtype for slot in state.slots.values()
                                    for m, p in zip(slot, storage)):
        return False  # the kernel keeps moments in the parameters' dtype, rounded to nearest: XLA's step
    return all(native.supports(x.dtype) and x.ndim >= 1 and {d.platform for d in x.devices()} == {"cpu"}
               for x in storage)


def adam_step(params: list[jax.Array], grads: list[jax.Array], state: OptimizerState,
              static_values: Mapping[str, Any]) -> tuple[list[jax.Array], OptimizerState]:
    """One Adam step of a packed group, buffer by buffer; traced inside the optimizer's step."""
    return _adam_step(params, grads, state, bool(static_values.get("maximize")),
                      bool(static_values.get("decoupled_weight_decay")))


def adamw_step(params: list[jax.Array], grads: list[jax.Array], state: OptimizerState,
               static_values: Mapping[str, Any]) -> tuple[list[jax.Array], OptimizerState]:
    """One AdamW step (decoupled weight decay) of a packed group."""
    return _adam_step(params, grads, state, bool(static_values.get("maximize")), True)


def _adam_step(params: list[jax.Array], grads: list[jax.Array], state: OptimizerState, maximize: bool,
               decoupled: bool) -> tuple[list[jax.Array], OptimizerState]:
    hp = state.hparams
    beta1, beta2 = hp["betas"]
    step = state.step + 1
    new_p, new_m, new_v = [], [], []
    for p, g, m, v in zip(params, grads, state.slots["exp_avg"], state.slots["exp_avg_sq"]):
        p, m, v = native.fused_adam(p, g.astype(p.dtype), m, v, hp["lr"], beta1, beta2, hp["eps"],
                                    hp["weight_decay"], step, maximize=maximize, decoupled=decoupled)
        new_p.append(p)
        new_m.append(m)
        new_v.append(v)
    return new_p, state._replace(step=step, slots={"exp_avg": new_m, "exp_avg_sq": new_v})
