"""LAMB (layer-wise adaptive moments), MegEngine's megengine.optimizer.LAMB."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, is_static_zero, per_leaf_optimizer
from funcopt._src.packing import refusing_packed
from funcopt._src.state_dtype import DTypeLike, state_precision
from funcopt.optimizers._common import adam_hparams, check_adam_hparams, ema_moments


def lamb(
    lr: HParam,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    bias_correction: bool = True,
    weight_decay: HParam = 0.0,
    always_adapt: bool = False,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    r"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), as megengine.optimizer.LAMB.

    Per leaf (one layer's tensor), with :math:`g_t` the gradient and :math:`t` the step:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        r_t &= \frac{m_t / c_{1,t}}{\sqrt{v_t / c_{2,t}} + \epsilon} + \lambda \theta_{t-1},
            \qquad c_{i,t} = 1 - \beta_i^t \text{ with bias correction, else } 1 \\
        \phi_t &= \frac{\lVert\theta_{t-1}\rVert_2}{\lVert r_t\rVert_2} \text{ if }
            (\lambda > 0 \text{ or always\_adapt}) \text{ and both norms are positive, else } 1 \\
        \theta_t &= \theta_{t-1} - \gamma\, \phi_t\, r_t

    This is MegEngine's LAMBUpdate: the weight decay joins the update before the
    trust ratio (AdamW-style, not added to the gradient), and without weight
    decay the trust ratio is 1 (plain Adam with decoupled decay) unless
    ``always_adapt``. As in MegEngine, ``lr`` has no default. State:
    ``exp_avg`` (:math:`m`) and ``exp_avg_sq`` (:math:`v`).

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`, added outside the square root.
        bias_correction: divide the moments by :math:`1 - \beta_i^t`.
        weight_decay: :math:`\lambda` (needs ``params`` in ``update``).
        always_adapt: apply the trust ratio also when the weight decay is 0.
        mu_dtype, nu_dtype: dtypes of ``exp_avg`` and ``exp_avg_sq`` (default: the parameter's).
        state_dtype, state_rounding, seed: one dtype or a mapping by name, the rounding and its
            seed, as in :func:`funcopt.adam`.

    Returns:
        A :class:`funcopt.GradientTransformation`; ``update`` needs ``params``
        when the weight decay is nonzero or ``always_adapt`` is set.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.lamb(lr=0.1, always_adapt=True)
        >>> params = {'w': jnp.array([3.0, 4.0])}
        >>> updates, state = tx.update({'w': jnp.array([1.0, -1.0])}, tx.init(params), params)
        >>> updates['w']  # the update, of norm sqrt(2), is rescaled to lr * ||w|| = 0.5
        Array([-0.35355338,  0.35355338], dtype=float32)
    """
    check_adam_hparams(lr, betas, eps, weight_decay)

    precision = state_precision({"exp_avg": "mu", "exp_avg_sq": "nu"}, state_dtype=state_dtype, mu_dtype=mu_dtype,
                                nu_dtype=nu_dtype, state_rounding=state_rounding, seed=seed)

    def leaf_update(g, p, slots, hp, step):
        beta1, beta2 = hp["betas"]
        wd = hp["weight_decay"]
        exp_avg, exp_avg_sq = ema_moments(g, slots, hp)
        if bias_correction:
            t = step.astype(g.dtype)
            m_hat, v_hat = exp_avg / (1 - beta1**t), exp_avg_sq / (1 - beta2**t)
        else:
            m_hat, v_hat = exp_avg, exp_avg_sq
        r = m_hat / (jnp.sqrt(v_hat) + hp["eps"])
        trust = jnp.ones([], g.dtype)
        if p is not None:
            r = r + wd * p
            p_norm = jnp.sqrt(jnp.sum(p * p))
            r_norm = jnp.sqrt(jnp.sum(r * r))
            adapt = (wd > 0) if not always_adapt else jnp.bool_(True)
            use = adapt & (p_norm > 0) & (r_norm > 0)
            trust = jnp.where(use, p_norm / jnp.where(use, r_norm, 1), trust)
        return -hp["lr"] * trust * r, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}

    return refusing_packed(per_leaf_optimizer(
        hparams=adam_hparams(lr, betas, eps, weight_decay),
        slots=("exp_avg", "exp_avg_sq"),
        leaf_update=leaf_update,
        needs_params=always_adapt or not is_static_zero(weight_decay),
        precision=precision,
        name="lamb",
    ), "fo.lamb")
