"""RAdam (rectified Adam), torch.optim.RAdam's algorithm."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, is_static_zero, per_leaf_optimizer
from funcopt._src.state_dtype import DTypeLike, state_precision
from funcopt.optimizers._common import (
    adam_hparams,
    check_adam_hparams,
    decay_and_moments,
    one_minus_pow,
    with_decay,
)

# Coefficients of the power series of expm1(x) - x and of -log1p(-d) - d, from x^2 / d^2 on.
_EXPM1_SERIES = tuple(1 / math.factorial(k) for k in range(2, 17))
_LOG1P_SERIES = tuple(1 / k for k in range(2, 25))


def _series_from_square(x: jax.Array, coefficients: tuple[float, ...]) -> jax.Array:
    acc = jnp.asarray(coefficients[-1], x.dtype)
    for c in coefficients[-2::-1]:
        acc = acc * x + c
    return acc * x * x


def _sma_length(beta2: jax.Array, t: jax.Array) -> jax.Array:
    r"""RAdam's :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t)`, accurate in float32.

    For small :math:`x = -t \log\beta_2` the two terms nearly cancel (both are about
    :math:`2 / (1 - \beta_2)`, while :math:`\rho_t` is about :math:`t`). There,
    with :math:`d = 1 - \beta_2`, the same value is
    :math:`2 (\mathrm{expm1}(x) - t d) / (d\, \mathrm{expm1}(x)) - 1`, where
    :math:`\mathrm{expm1}(x) - t d = (\mathrm{expm1}(x) - x) + t(-\log(1 - d) - d)`
    is a sum of two positive series.
    """
    d = 1 - beta2
    rho_inf = 2 / d - 1
    direct = rho_inf - 2 * t * beta2**t / one_minus_pow(beta2, t)
    x = -t * jnp.log1p(-d)
    small = x < 0.5
    x = jnp.where(small, x, 0.5)
    tail_log = jnp.where(d < 0.1, _series_from_square(jnp.minimum(d, 0.1), _LOG1P_SERIES),
                         -jnp.log1p(-d) - d)
    stable = 2 * (_series_from_square(x, _EXPM1_SERIES) + t * tail_log) / (d * jnp.expm1(x)) - 1
    return jnp.where(small, stable, direct)


def radam(
    lr: HParam = 1e-3,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    weight_decay: HParam = 0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    r"""RAdam (torch.optim.RAdam): Adam whose adaptive step is switched on once its variance is tractable.

    With :math:`g_t` the gradient (negated when ``maximize``) and :math:`t` the step:

    .. math::

        \theta_{t-1} &\leftarrow \theta_{t-1}(1 - \gamma\lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda\theta_{t-1} \\
        m_t &= m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \rho_\infty &= 2 / (1 - \beta_2) - 1, \quad
        \rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}},
        \quad l_t = \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon} \\
        \theta_t &= \theta_{t-1} - \gamma \frac{m_t}{1 - \beta_1^t} \cdot
            \begin{cases} r_t l_t & \rho_t > 5 \\ 1 & \text{otherwise} \end{cases}

    State: ``exp_avg`` (:math:`m_t`) and ``exp_avg_sq`` (:math:`v_t`). Complex
    parameters are treated as pairs of reals, as torch does. :math:`\rho_t` is
    computed without the cancellation of its textbook form, so float32 runs
    switch to the rectified step at the same step as torch's double-precision
    arithmetic.

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`, added to :math:`\sqrt{v_t}`.
        weight_decay: :math:`\lambda` (needs ``params`` in ``update``).
        decoupled_weight_decay: decay the weights directly (as AdamW) instead of
            adding :math:`\lambda\theta` to the gradient.
        maximize: maximize the objective instead of minimizing.
        mu_dtype, nu_dtype: dtypes of ``exp_avg`` and ``exp_avg_sq`` (default: the parameter's).
        state_dtype, state_rounding, seed: one dtype or a mapping by name, the rounding and its
            seed, as in :func:`funcopt.adam`.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.radam(lr=0.5, betas=(0.5, 0.999))
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({'w': jnp.array([1.0, -2.0])}, state, params)
        >>> updates['w']  # rho_1 = 1: the first steps are momentum SGD
        Array([-0.5,  1. ], dtype=float32)
    """
    check_adam_hparams(lr, betas, eps, weight_decay)

    precision = state_precision({"exp_avg": "mu", "exp_avg_sq": "nu"}, state_dtype=state_dtype, mu_dtype=mu_dtype,
                                nu_dtype=nu_dtype, state_rounding=state_rounding, seed=seed)

    def leaf_update(g, p, slots, hp, step):
        lr_, eps_ = hp["lr"], hp["eps"]
        beta1, beta2 = hp["betas"]
        g, decay, exp_avg, exp_avg_sq = decay_and_moments(g, p, slots, hp, maximize=maximize,
                                                          decoupled=decoupled_weight_decay)
        t = step.astype(g.dtype)
        bias_corrected_exp_avg = exp_avg / one_minus_pow(beta1, t)
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = _sma_length(beta2, t)
        rectify = rho_t > 5
        # Outside the rectified regime the square root's argument may be negative: keep it finite.
        rect_arg = jnp.where(rectify, (rho_t - 4) * (rho_t - 2) * rho_inf
                             / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 1.0)
        rect = jnp.sqrt(rect_arg)
        adaptive_lr = jnp.sqrt(one_minus_pow(beta2, t)) / (jnp.sqrt(exp_avg_sq) + eps_)
        step_ = jnp.where(rectify, bias_corrected_exp_avg * lr_ * adaptive_lr * rect,
                          bias_corrected_exp_avg * lr_)
        return with_decay(decay, -step_), {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}

    return per_leaf_optimizer(
        hparams=adam_hparams(lr, betas, eps, weight_decay),
        slots=("exp_avg", "exp_avg_sq"),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        precision=precision,
        name="radam",
    )
