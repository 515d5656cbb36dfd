"""Validation and small pieces of math shared by the optimizer modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.hparams import check_hparam, is_static_zero


def check_lr(lr: Any) -> None:
    check_hparam(lr, "lr", "Invalid learning rate: {}", lambda v: v >= 0)


def check_eps(eps: Any) -> None:
    check_hparam(eps, "eps", "Invalid epsilon value: {}", lambda v: v >= 0)


def check_weight_decay(weight_decay: Any) -> None:
    check_hparam(weight_decay, "weight_decay", "Invalid weight_decay value: {}", lambda v: v >= 0)


def check_mindspore_non_negative(value: Any, name: str, owner: str) -> None:
    """MindSpore's ``>= 0.0`` check (its FTRL and ProximalAdagrad arguments), one message for all of them.

    Example:
        >>> from funcopt.optimizers._common import check_mindspore_non_negative
        >>> check_mindspore_non_negative(-1.0, 'l1', 'FTRL')
        Traceback (most recent call last):
        ...
        ValueError: For 'FTRL', the 'l1' must be >= 0.0, but got -1.0.
    """
    check_hparam(value, name, f"For '{owner}', the '{name}' must be >= 0.0, but got {{}}.", lambda v: v >= 0)


def check_betas(betas: Any, same_kind: bool = False) -> None:
    """Each beta in [0, 1); with ``same_kind`` (torch.optim.Adam's rule) both numbers or both arrays."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        check_hparam(b, f"betas[{i}]", f"Invalid beta parameter at index {i}: {{}}", lambda v: 0.0 <= v < 1.0)
    arrays = [isinstance(b, (jax.Array, np.ndarray)) for b in betas]
    if same_kind and arrays[0] != arrays[1]:
        raise ValueError("betas must be either both floats or both Tensors (here: both numbers or both arrays)")


def check_adam_hparams(lr: Any, betas: Any, eps: Any, weight_decay: Any, *, same_kind: bool = False) -> None:
    """The Adam family's argument checks in torch's order (lr, eps, betas, weight_decay), written once for all of it.

    ``same_kind`` is :func:`check_betas`' (torch.optim.Adam's rule).

    Example:
        >>> from funcopt.optimizers._common import check_adam_hparams
        >>> check_adam_hparams(1e-3, (0.9, 1.0), 1e-8, 0.0)
        Traceback (most recent call last):
        ...
        ValueError: Invalid beta parameter at index 1: 1.0
    """
    check_lr(lr)
    check_eps(eps)
    check_betas(betas, same_kind=same_kind)
    check_weight_decay(weight_decay)


def adam_hparams(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> dict[str, Any]:
    """The Adam family's hyperparameters as its state holds them (``betas`` a tuple), one layout for all of it.

    Example:
        >>> from funcopt.optimizers._common import adam_hparams
        >>> adam_hparams(0.1, [0.9, 0.999], 1e-8, 0.0)
        {'lr': 0.1, 'betas': (0.9, 0.999), 'eps': 1e-08, 'weight_decay': 0.0}
    """
    return {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}


def ema(average: jax.Array, value: jax.Array, decay: jax.Array) -> jax.Array:
    r"""The running average :math:`\beta a + (1 - \beta) x` in the product form, one spelling for every optimizer.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import ema
        >>> ema(jnp.zeros(1), jnp.full(1, 4.0), 0.75)
        Array([1.], dtype=float32)
    """
    return decay * average + (1 - decay) * value


def ema_of_square(average: jax.Array, g: jax.Array, decay: jax.Array) -> jax.Array:
    r"""The running average of :math:`g^2`, :math:`\beta a + (1 - \beta) g^2`, one spelling for every second moment.

    The product is taken as ``((1 - beta) * g) * g``, not ``(1 - beta) * (g * g)``:
    one rounding order wherever it is used.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import ema_of_square
        >>> ema_of_square(jnp.zeros(1), jnp.full(1, 2.0), 0.75)
        Array([1.], dtype=float32)
    """
    return decay * average + (1 - decay) * g * g


def lerp_ema(average: jax.Array, value: jax.Array, decay: jax.Array) -> jax.Array:
    r"""The running average in torch's ``lerp`` form, :math:`a + (1 - \beta)(x - a)`, as torch writes it.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import lerp_ema
        >>> lerp_ema(jnp.zeros(1), jnp.full(1, 4.0), 0.75)
        Array([1.], dtype=float32)
    """
    return average + (1 - decay) * (value - average)


def ema_moments(g: jax.Array, slots: Mapping[str, jax.Array], hp: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    r"""``exp_avg`` and ``exp_avg_sq`` in the product form (MindSpore's Adam rules, LAMB): one place for both.

    :math:`m_t = \beta_1 m_{t-1} + (1 - \beta_1) g` and :math:`v_t = \beta_2 v_{t-1} + (1 - \beta_2) g^2`,
    with the betas from ``hp["betas"]``; :func:`decay_and_moments` is torch's form.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import ema_moments
        >>> slots = {'exp_avg': jnp.zeros(1), 'exp_avg_sq': jnp.zeros(1)}
        >>> ema_moments(jnp.full(1, 2.0), slots, {'betas': (0.5, 0.75)})
        (Array([1.], dtype=float32), Array([1.], dtype=float32))
    """
    beta1, beta2 = hp["betas"]
    return ema(slots["exp_avg"], g, beta1), ema_of_square(slots["exp_avg_sq"], g, beta2)


def heavy_ball(buf: jax.Array, g: jax.Array, momentum: jax.Array) -> jax.Array:
    """The momentum buffer ``momentum * buf + g`` (no dampening), one formula for SGD, Momentum and LARS.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import heavy_ball
        >>> heavy_ball(jnp.ones(1), jnp.full(1, 2.0), 0.5)
        Array([2.5], dtype=float32)
    """
    return momentum * buf + g


def momentum_direction(g: jax.Array, buf: jax.Array, momentum: jax.Array, nesterov: bool) -> jax.Array:
    """The step direction of a momentum buffer: ``g + momentum * buf`` (Nesterov) or ``buf``, shared likewise.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import momentum_direction
        >>> momentum_direction(jnp.ones(1), jnp.full(1, 2.0), 0.5, nesterov=True)
        Array([2.], dtype=float32)
    """
    return g + momentum * buf if nesterov else buf


def one_minus_pow(beta: jax.Array, t: jax.Array) -> jax.Array:
    """``1 - beta**t`` without cancellation when ``beta**t`` is close to 1 (``beta2 = 0.999`` in float32).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import one_minus_pow
        >>> round(float(one_minus_pow(jnp.float32(0.5), jnp.float32(3.0))), 6)  # 1 - 0.5**3
        0.875
    """
    return -jnp.expm1(t * jnp.log1p(beta - 1))


def check_real(tree: Any, name: str) -> None:
    """torch's ``RuntimeError`` for a complex leaf, for the optimizers that have no complex form (Adafactor, Muon).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import check_real
        >>> check_real({'w': jnp.ones(2, jnp.complex64)}, 'Muon')
        Traceback (most recent call last):
        ...
        RuntimeError: Muon does not support complex parameters
    """
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
            raise RuntimeError(f"{name} does not support complex parameters")


def signed(g: jax.Array, maximize: bool) -> jax.Array:
    """The gradient to descend: ``-g`` when maximizing."""
    return -g if maximize else g


def l2(g: jax.Array, p: jax.Array | None, weight_decay: jax.Array) -> jax.Array:
    """Coupled (L2) weight decay: ``g + weight_decay * p``; a no-op without params or with a literal 0.

    A literal 0 (a number, not a traced value) skips the term as torch does, so
    the compiled update does not read the parameters for it.
    """
    return g if p is None or is_static_zero(weight_decay) else g + weight_decay * p


def decay_and_moments(g: jax.Array, p: jax.Array | None, slots: Mapping[str, jax.Array], hp: Mapping[str, Any], *,
                      maximize: bool, decoupled: bool) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    r"""The start of torch's Adam, AdamW, NAdam and RAdam: the decay, then both moments.

    With ``decoupled`` the weights decay directly (the returned ``decay`` is
    :math:`-\gamma\lambda\theta`; None without params, with a constant zero
    :math:`\lambda`, and without ``decoupled``: see :func:`with_decay`), else the gradient gets the
    L2 term :math:`\lambda\theta`. Then, with :math:`g` the resulting gradient,

    .. math::

        m_t = m_{t-1} + (1 - \beta_1)(g - m_{t-1}), \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g^2

    (torch's ``lerp`` form of the first moment).

    Returns:
        ``(g, decay, exp_avg, exp_avg_sq)``: the gradient the step uses, the decay
        term of the update, :math:`m_t` and :math:`v_t`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import decay_and_moments
        >>> hp = {'lr': 0.1, 'weight_decay': 0.5, 'betas': (0.5, 0.75)}
        >>> slots = {'exp_avg': jnp.zeros(1), 'exp_avg_sq': jnp.zeros(1)}
        >>> g, decay, m, v = decay_and_moments(jnp.ones(1), jnp.full(1, 2.0), slots, hp,
        ...                                    maximize=False, decoupled=False)
        >>> float(g[0]), decay, float(m[0]), float(v[0])  # g = 1 + 0.5 * 2
        (2.0, None, 1.0, 1.0)
    """
    beta1, beta2 = hp["betas"]
    g = signed(g, maximize)
    decay = None  # no array of zeros to add: one op less per leaf
    if decoupled:
        if p is not None and not is_static_zero(hp["weight_decay"]):
            decay = -hp["lr"] * hp["weight_decay"] * p
    else:
        g = l2(g, p, hp["weight_decay"])
    return g, decay, lerp_ema(slots["exp_avg"], g, beta1), ema_of_square(slots["exp_avg_sq"], g, beta2)


def with_decay(decay: jax.Array | None, update: jax.Array) -> jax.Array:
    """``decay + update``, or ``update`` alone when :func:`decay_and_moments` returned no decay term.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers._common import with_decay
        >>> with_decay(None, jnp.ones(1)), with_decay(jnp.ones(1), jnp.ones(1))
        (Array([1.], dtype=float32), Array([2.], dtype=float32))
    """
    return update if decay is None else decay + update
