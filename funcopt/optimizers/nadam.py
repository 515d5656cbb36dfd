"""NAdam (Adam with Nesterov momentum), torch.optim.NAdam's algorithm."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, check_hparam, is_static_zero, per_leaf_optimizer
from funcopt._src.state_dtype import DTypeLike, state_precision
from funcopt.optimizers._common import (
    adam_hparams,
    check_adam_hparams,
    decay_and_moments,
    one_minus_pow,
    with_decay,
)


def nadam(
    lr: HParam = 2e-3,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    weight_decay: HParam = 0,
    momentum_decay: HParam = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    r"""NAdam (torch.optim.NAdam): Adam with Nesterov momentum and a momentum schedule.

    With :math:`g_t` the gradient (negated when ``maximize``), :math:`t` the
    step and :math:`\psi` the momentum decay:

    .. math::

        \theta_{t-1} &\leftarrow \theta_{t-1}(1 - \gamma\lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda\theta_{t-1} \\
        \mu_t &= \beta_1 \left(1 - \tfrac{1}{2}\, 0.96^{t\psi}\right), \quad
        \Pi_t = \Pi_{t-1}\mu_t, \quad \Pi_0 = 1 \\
        m_t &= m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \left(\frac{1 - \mu_t}{1 - \Pi_t} g_t
            + \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}} m_t\right)
            \Big/ \left(\sqrt{v_t / (1 - \beta_2^t)} + \epsilon\right)

    State: ``exp_avg`` (:math:`m_t`), ``exp_avg_sq`` (:math:`v_t`) and
    ``mu_product`` (:math:`\Pi_t`, one 0-d array per parameter, like torch's
    per-parameter scalar). Torch keeps ``mu_product`` in its default dtype
    (float32 unless ``torch.set_default_dtype`` says otherwise); here it takes
    the parameter's (real) precision, which is also the dtype torch gives it when
    it loads a state dict. Complex parameters are treated as pairs of reals, as
    torch does.

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`, added to the denominator.
        weight_decay: :math:`\lambda` (needs ``params`` in ``update``).
        momentum_decay: :math:`\psi`, the rate of the momentum schedule.
        decoupled_weight_decay: decay the weights directly (as AdamW, giving
            NAdamW) instead of adding :math:`\lambda\theta` to the gradient.
        maximize: maximize the objective instead of minimizing.
        mu_dtype, nu_dtype: dtypes of ``exp_avg`` and ``exp_avg_sq`` (default: the parameter's).
        state_dtype, state_rounding, seed: one dtype or a mapping by name, the rounding and its
            seed, as in :func:`funcopt.adam`.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.nadam(lr=0.1, momentum_decay=0.0, eps=0.0)
        >>> params = {'w': jnp.array([1.0, 2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({'w': jnp.array([3.0, -4.0])}, state, params)
        >>> float(state.slots['mu_product']['w'])  # beta1 * (1 - 0.5 * 0.96**0)
        0.45
        >>> updates['w']  # -0.1 * (1 + 0.45 / (1 - 0.45**2) * 0.1) * sign(g)
        Array([-0.10564263,  0.10564263], dtype=float32)
    """
    check_adam_hparams(lr, betas, eps, weight_decay)
    check_hparam(momentum_decay, "momentum_decay", "Invalid momentum_decay value: {}", lambda v: v >= 0)

    precision = state_precision({"exp_avg": "mu", "exp_avg_sq": "nu"}, state_dtype=state_dtype, mu_dtype=mu_dtype,
                                nu_dtype=nu_dtype, state_rounding=state_rounding, seed=seed)

    def leaf_init(p, hp):
        # hp arrives in the leaf's compute dtype: its real part gives the scalar's precision.
        return {"exp_avg": jnp.zeros_like(p), "exp_avg_sq": jnp.zeros_like(p),
                "mu_product": jnp.ones_like(jnp.real(hp["lr"]))}

    def leaf_update(g, p, slots, hp, step):
        lr_, eps_, psi = hp["lr"], hp["eps"], hp["momentum_decay"]
        beta1, beta2 = hp["betas"]
        g, decay, exp_avg, exp_avg_sq = decay_and_moments(g, p, slots, hp, maximize=maximize,
                                                          decoupled=decoupled_weight_decay)
        t = step.astype(g.dtype)
        mu = beta1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        mu_product = slots["mu_product"].astype(g.dtype) * mu
        bias_correction2 = one_minus_pow(beta2, t)
        denom = jnp.sqrt(exp_avg_sq / bias_correction2) + eps_
        grad_coef = -lr_ * (1 - mu) / (1 - mu_product)
        exp_avg_coef = -lr_ * mu_next / (1 - mu_product * mu_next)
        update = with_decay(decay, grad_coef * (g / denom)) + exp_avg_coef * (exp_avg / denom)
        return update, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "mu_product": mu_product}

    return per_leaf_optimizer(
        hparams={**adam_hparams(lr, betas, eps, weight_decay), "momentum_decay": momentum_decay},
        slots=("exp_avg", "exp_avg_sq", "mu_product"),
        leaf_update=leaf_update,
        leaf_init=leaf_init,
        needs_params=not is_static_zero(weight_decay),
        precision=precision,
        name="nadamw" if decoupled_weight_decay else "nadam",
    )
