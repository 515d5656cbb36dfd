"""Lion (evolved sign momentum), Chen et al. 2023."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, is_static_zero, per_leaf_optimizer
from funcopt._src.state_dtype import DTypeLike, state_precision
from funcopt.optimizers._common import check_betas, check_lr, check_weight_decay, ema


def lion(
    lr: HParam = 1e-4,
    betas: tuple[HParam, HParam] = (0.9, 0.99),
    weight_decay: HParam = 0.0,
    *,
    mu_dtype: DTypeLike | None = None,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    r"""Lion, the sign-momentum optimizer of Chen et al. 2023 (Symbolic Discovery of Optimization Algorithms).

    With :math:`g_t` the gradient, :math:`m` the momentum (state ``exp_avg``) and
    :math:`\lambda` the decoupled weight decay (Algorithm 2 of the paper):

    .. math::

        c_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        \theta_t &= \theta_{t-1} - \gamma \left(\operatorname{sign}(c_t) + \lambda \theta_{t-1}\right) \\
        m_t &= \beta_2 m_{t-1} + (1 - \beta_2) g_t

    :math:`\operatorname{sign}(0) = 0`. The defaults are the paper's: a learning
    rate 3-10x smaller than AdamW's and, to match AdamW's effective decay, a
    weight decay 3-10x larger.

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`: the interpolation of the update and the
            momentum decay, each in [0, 1).
        weight_decay: :math:`\lambda`, decoupled (multiplied by ``lr``; needs
            ``params`` in ``update``).
        mu_dtype: dtype of ``exp_avg`` (default: the parameter's).
        state_dtype, state_rounding, seed: its dtype again (or ``{'exp_avg': dtype}``), the
            rounding and its seed, as in :func:`funcopt.adam`.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.lion(lr=0.1)
        >>> params = {'w': jnp.array([1.0, -1.0, 0.0])}
        >>> updates, state = tx.update({'w': jnp.array([0.5, -2.0, 0.0])}, tx.init(params), params)
        >>> fo.apply_updates(params, updates)['w']
        Array([ 0.9, -0.9,  0. ], dtype=float32)
    """
    check_lr(lr)
    check_betas(betas)
    check_weight_decay(weight_decay)

    precision = state_precision({"exp_avg": "mu"}, state_dtype=state_dtype, mu_dtype=mu_dtype,
                                state_rounding=state_rounding, seed=seed)

    def leaf_update(g, p, slots, hp, step):
        del step
        beta1, beta2 = hp["betas"]
        exp_avg = slots["exp_avg"]
        direction = jnp.sign(ema(exp_avg, g, beta1))
        if p is not None:
            direction = direction + hp["weight_decay"] * p
        new_exp_avg = ema(exp_avg, g, beta2)
        return -hp["lr"] * direction, {"exp_avg": new_exp_avg}

    return per_leaf_optimizer(
        hparams={"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay},
        slots=("exp_avg",),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        precision=precision,
        name="lion",
    )
