"""Adamax, torch.optim.Adamax's algorithm."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, is_static_zero, per_leaf_optimizer
from funcopt._src.state_dtype import DTypeLike, state_precision
from funcopt.optimizers._common import adam_hparams, check_adam_hparams, ema, l2, lerp_ema, signed


def adamax(
    lr: HParam = 2e-3,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    weight_decay: HParam = 0,
    *,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    r"""Adamax (torch.optim.Adamax): Adam with an exponentially weighted infinity norm.

    With :math:`g_t` the gradient (negated when ``maximize``) and :math:`t` the step:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        m_t &= m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}) \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \frac{m_t}{u_t}

    State: ``exp_avg`` (:math:`m_t`) and ``exp_inf`` (:math:`u_t`), both starting
    at zero. Complex parameters are treated as pairs of reals, as torch does.

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`, added to :math:`|g_t|` (so :math:`u_t > 0`).
        weight_decay: L2 penalty :math:`\lambda` (needs ``params`` in ``update``).
        maximize: maximize the objective instead of minimizing.
        mu_dtype, nu_dtype: dtypes of ``exp_avg`` and ``exp_inf`` (default: the parameter's).
        state_dtype, state_rounding, seed: one dtype or a mapping by name, the rounding and its
            seed, as in :func:`funcopt.adam`.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.adamax(lr=0.5, eps=0.0)
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({'w': jnp.array([3.0, -4.0])}, state, params)
        >>> fo.apply_updates(params, updates)['w']
        Array([0.5, 2.5], dtype=float32)
        >>> state.slots['exp_inf']['w']
        Array([3., 4.], dtype=float32)
    """
    check_adam_hparams(lr, betas, eps, weight_decay)

    precision = state_precision({"exp_avg": "mu", "exp_inf": "nu"}, state_dtype=state_dtype, mu_dtype=mu_dtype,
                                nu_dtype=nu_dtype, state_rounding=state_rounding, seed=seed)

    def leaf_update(g, p, slots, hp, step):
        beta1, beta2 = hp["betas"]
        g = l2(signed(g, maximize), p, hp["weight_decay"])
        exp_avg = lerp_ema(slots["exp_avg"], g, beta1)
        exp_inf = jnp.maximum(beta2 * slots["exp_inf"], jnp.abs(g) + hp["eps"])
        clr = hp["lr"] / (1 - beta1 ** step.astype(g.dtype))
        return -clr * (exp_avg / exp_inf), {"exp_avg": exp_avg, "exp_inf": exp_inf}

    return per_leaf_optimizer(
        hparams=adam_hparams(lr, betas, eps, weight_decay),
        slots=("exp_avg", "exp_inf"),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        precision=precision,
        name="adamax",
    )


def adamax_mindspore(
    lr: HParam = 1e-3,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    weight_decay: HParam = 0.0,
) -> GradientTransformation:
    r"""AdaMax as MindSpore's ``nn.AdaMax`` computes it (the ``ApplyAdaMax`` kernel).

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t|) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \frac{m_t}{u_t + \epsilon}

    MindSpore's documented rule. It differs from :func:`funcopt.adamax`
    (torch's) in where :math:`\epsilon` goes: torch keeps
    :math:`u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon)` and divides by
    :math:`u_t`. MindSpore's defaults (:math:`\gamma = 10^{-3}`).

    State: ``exp_avg`` (:math:`m`) and ``exp_inf`` (:math:`u`), both starting at zero.

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`, added to the denominator.
        weight_decay: L2 penalty :math:`\lambda` (needs ``params`` in ``update``).

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers.adamax import adamax_mindspore
        >>> tx = adamax_mindspore(lr=0.5, eps=1.0)
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> updates, state = tx.update({'w': jnp.array([3.0, -4.0])}, tx.init(params), params)
        >>> updates['w']  # -0.5 * g / (|g| + 1)
        Array([-0.375,  0.4  ], dtype=float32)
    """
    check_adam_hparams(lr, betas, eps, weight_decay)

    def leaf_update(g, p, slots, hp, step):
        beta1, beta2 = hp["betas"]
        g = l2(g, p, hp["weight_decay"])
        exp_avg = ema(slots["exp_avg"], g, beta1)
        exp_inf = jnp.maximum(beta2 * slots["exp_inf"], jnp.abs(g))
        clr = hp["lr"] / (1 - beta1 ** step.astype(g.dtype))
        return -clr * exp_avg / (exp_inf + hp["eps"]), {"exp_avg": exp_avg, "exp_inf": exp_inf}

    return per_leaf_optimizer(
        hparams=adam_hparams(lr, betas, eps, weight_decay),
        slots=("exp_avg", "exp_inf"),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        name="adamax_mindspore",
    )
