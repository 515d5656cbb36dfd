"""The ``fused=True`` step of Adam, AdamW and SGD on the CPU: one native pass over each packed buffer.

XLA:CPU compiles Adam into three loops (first moment, second moment, then the parameters, which
read both moments back): 10 memory accesses per parameter where a single pass makes 7. SGD with
momentum is two loops (the buffer, then the parameters, which read it back): 6 where a single
pass makes 5. A group stored in flat buffers on the CPU, with ``fused=True``, runs
:func:`funcopt._src.native.fused_adam` or :func:`funcopt._src.native.fused_sgd` on each buffer
instead, inside the same jitted, donated step; the numbers are the same update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from funcopt._src import native
from funcopt._src.hparams import OptimizerState

# the state slots of the rules the kernels compute: Adam's two moments, SGD's momentum buffer
KERNEL_SLOTS = ({"exp_avg", "exp_avg_sq"}, {"momentum_buffer"})


def fusable(storage: list[jax.Array], state: Any, hp_values: Mapping[str, Any],
            static_values: Mapping[str, Any]) -> bool:
    """Whether a group can take the native step: packed CPU buffers of a kernel's dtype, a kernel's plain state.

    Adam with amsgrad keeps a third moment, and SGD without momentum keeps no buffer (XLA's step
    is then one loop, one pass already): both keep XLA's step.
    """
    if not isinstance(state, OptimizerState) or set(state.slots) not in KERNEL_SLOTS:
        return False
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


def sgd_step(params: list[jax.Array], grads: list[jax.Array], state: OptimizerState,
             static_values: Mapping[str, Any]) -> tuple[list[jax.Array], OptimizerState]:
    """One SGD step with momentum of a packed group, buffer by buffer; traced inside the optimizer's step."""
    hp = state.hparams
    step = state.step + 1
    nesterov, maximize = bool(static_values.get("nesterov")), bool(static_values.get("maximize"))
    new_p, new_b = [], []
    for p, g, b in zip(params, grads, state.slots["momentum_buffer"]):
        p, b = native.fused_sgd(p, g.astype(p.dtype), b, hp["lr"], hp["momentum"], hp["dampening"],
                                hp["weight_decay"], step, nesterov=nesterov, maximize=maximize)
        new_p.append(p)
        new_b.append(b)
    return new_p, state._replace(step=step, slots={"momentum_buffer": new_b})
