"""Validation and small pieces of math shared by the optimizer modules."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from funcopt._src.hparams import check_hparam, is_static_zero


def check_lr(lr: Any) -> None:
    check_hparam(lr, "lr", "Invalid learning rate: {}", lambda v: v >= 0)


def check_eps(eps: Any) -> None:
    check_hparam(eps, "eps", "Invalid epsilon value: {}", lambda v: v >= 0)


def check_weight_decay(weight_decay: Any) -> None:
    check_hparam(weight_decay, "weight_decay", "Invalid weight_decay value: {}", lambda v: v >= 0)


def check_betas(betas: Any, same_kind: bool = False) -> None:
    """Each beta in [0, 1); with ``same_kind`` (torch.optim.Adam's rule) both numbers or both arrays."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        check_hparam(b, f"betas[{i}]", f"Invalid beta parameter at index {i}: {{}}", lambda v: 0.0 <= v < 1.0)
    arrays = [isinstance(b, (jax.Array, np.ndarray)) for b in betas]
    if same_kind and arrays[0] != arrays[1]:
        raise ValueError("betas must be either both floats or both Tensors (here: both numbers or both arrays)")


def signed(g: jax.Array, maximize: bool) -> jax.Array:
    """The gradient to descend: ``-g`` when maximizing."""
    return -g if maximize else g


def l2(g: jax.Array, p: jax.Array | None, weight_decay: jax.Array) -> jax.Array:
    """Coupled (L2) weight decay: ``g + weight_decay * p``; a no-op without params or with a literal 0.

    A literal 0 (a number, not a traced value) skips the term as torch does, so
    the compiled update does not read the parameters for it.
    """
    return g if p is None or is_static_zero(weight_decay) else g + weight_decay * p
