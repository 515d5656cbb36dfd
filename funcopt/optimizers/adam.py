"""Adam and AdamW, torch.optim.Adam / AdamW's algorithm."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, is_static_zero, per_leaf_optimizer
from funcopt._src.state_dtype import DTypeLike, state_precision
from funcopt.optimizers._common import (
    adam_hparams,
    check_adam_hparams,
    decay_and_moments,
    ema,
    ema_moments,
    l2,
    with_decay,
)

ADAM_BUFFERS = {"exp_avg": "mu", "exp_avg_sq": "nu", "max_exp_avg_sq": "nu"}
"""Adam's state buffers by torch's names, with the dtype argument (``mu_dtype`` / ``nu_dtype``) of each."""


def adam(
    lr: HParam = 1e-3,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    weight_decay: HParam = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    r"""Adam (torch.optim.Adam), with torch's defaults, amsgrad and decoupled decay.

    With :math:`g_t` the gradient (negated when ``maximize``) and :math:`t` the step:

    .. math::

        \theta_{t-1} &\leftarrow \theta_{t-1}(1 - \gamma\lambda) \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda\theta_{t-1} \\
        m_t &= m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ if amsgrad, else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    State: ``exp_avg``, ``exp_avg_sq``, and ``max_exp_avg_sq`` with amsgrad.
    Complex parameters are treated as pairs of reals, as torch does.

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`, added outside the square root.
        weight_decay: :math:`\lambda` (needs ``params`` in ``update``). The number 0
            (the default) is no term: the update does not read the parameters, as
            ``optax.adam``; ``fo.set_hparams`` can still turn it on (one more compile).
            An array, even 0, is held as data.
        amsgrad: use the running maximum of :math:`v_t` (AMSGrad).
        maximize: maximize the objective instead of minimizing.
        decoupled_weight_decay: decay the weights directly (AdamW) instead of
            adding :math:`\lambda\theta` to the gradient.
        mu_dtype: dtype of ``exp_avg`` (default: the parameter's).
        nu_dtype: dtype of ``exp_avg_sq`` and ``max_exp_avg_sq``.
        state_dtype: one dtype for all three buffers, or a mapping by their names.
        state_rounding: how a new value is stored in a bfloat16 buffer:
            ``'nearest'`` or ``'stochastic'`` (unbiased; the key lives in the state).
        seed: seed of the stochastic rounding.

    The update is computed in float32 (or the parameter's dtype if wider) and
    only the store rounds to each buffer's dtype: ``mu_dtype=jnp.bfloat16,
    nu_dtype=jnp.bfloat16`` halves the state, 4 bytes per parameter instead of 8.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.adam(lr=0.1)
        >>> params = {'w': jnp.array([1.0, -1.0])}
        >>> updates, state = tx.update({'w': jnp.array([0.5, -2.0])}, tx.init(params), params)
        >>> fo.apply_updates(params, updates)['w']
        Array([ 0.9, -0.9], dtype=float32)
    """
    check_adam_hparams(lr, betas, eps, weight_decay, same_kind=True)
    precision = state_precision(ADAM_BUFFERS if amsgrad else {"exp_avg": "mu", "exp_avg_sq": "nu"},
                                state_dtype=state_dtype, mu_dtype=mu_dtype, nu_dtype=nu_dtype,
                                state_rounding=state_rounding, seed=seed)

    def leaf_update(g, p, slots, hp, step):
        lr_, eps_ = hp["lr"], hp["eps"]
        beta1, beta2 = hp["betas"]
        g, decay, exp_avg, exp_avg_sq = decay_and_moments(g, p, slots, hp, maximize=maximize,
                                                          decoupled=decoupled_weight_decay)
        t = step.astype(g.dtype)
        bias_correction1 = 1 - beta1**t
        bias_correction2_sqrt = jnp.sqrt(1 - beta2**t)
        new_slots = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        second = exp_avg_sq
        if amsgrad:
            second = jnp.maximum(slots["max_exp_avg_sq"], exp_avg_sq)
            new_slots["max_exp_avg_sq"] = second
        denom = jnp.sqrt(second) / bias_correction2_sqrt + eps_
        return with_decay(decay, -(lr_ / bias_correction1) * exp_avg / denom), new_slots

    return per_leaf_optimizer(
        hparams=adam_hparams(lr, betas, eps, weight_decay),
        slots=("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        precision=precision,
        name="adamw" if decoupled_weight_decay else "adam",
    )


def adamw(
    lr: HParam = 1e-3,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    weight_decay: HParam = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> GradientTransformation:
    r"""AdamW (torch.optim.AdamW): Adam with decoupled weight decay, default 0.01.

    .. math::

        \theta_{t-1} &\leftarrow \theta_{t-1}(1 - \gamma\lambda) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`m_t, \hat v_t` as in :func:`funcopt.adam`. Note optax's
    ``adamw`` defaults to a weight decay of 1e-4; torch's (and ours) is 1e-2.
    The state-dtype arguments (``mu_dtype``, ``nu_dtype``, ``state_dtype``,
    ``state_rounding``, ``seed``) are :func:`funcopt.adam`'s.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.adamw(lr=0.1, weight_decay=0.5)
        >>> params = {'w': jnp.array([1.0])}
        >>> updates, _ = tx.update({'w': jnp.array([1.0])}, tx.init(params), params)
        >>> fo.apply_updates(params, updates)['w']
        Array([0.85], dtype=float32)
    """
    return adam(lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True,
                mu_dtype=mu_dtype, nu_dtype=nu_dtype, state_dtype=state_dtype, state_rounding=state_rounding,
                seed=seed)


def adam_mindspore(
    lr: HParam = 1e-3,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    weight_decay: HParam = 0.0,
    nesterov: bool = False,
    amsgrad: bool = False,
) -> GradientTransformation:
    r"""Adam as MindSpore's ``nn.Adam`` computes it (the ``Adam`` / ``ApplyAdamWithAmsgrad`` kernels).

    With :math:`g_t` the gradient and :math:`t` the step:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ if amsgrad, else } v_t \\
        \gamma_t &= \gamma \sqrt{1 - \beta_2^t} / (1 - \beta_1^t) \\
        \theta_t &= \theta_{t-1} - \gamma_t \frac{\beta_1 m_t + (1 - \beta_1) g_t}{\sqrt{\hat v_t} + \epsilon}
            \text{ if nesterov, else } \theta_{t-1} - \gamma_t \frac{m_t}{\sqrt{\hat v_t} + \epsilon}

    These are the formulas MindSpore documents for its ``ops.Adam`` and
    ``ops.ApplyAdamWithAmsgrad`` kernels, which ``nn.Adam`` runs. They differ
    from :func:`funcopt.adam` (torch's rule, also the formula printed on
    ``nn.Adam``'s page) only in where :math:`\epsilon` sits: here it is added to
    :math:`\sqrt{\hat v_t}` before the bias correction, i.e. torch's
    :math:`\epsilon` times :math:`\sqrt{1 - \beta_2^t}`. ``nesterov`` is the
    kernel's ``use_nesterov``.

    State: ``exp_avg`` (:math:`m`), ``exp_avg_sq`` (:math:`v`) and, with
    ``amsgrad``, ``max_exp_avg_sq`` (:math:`\hat v`), all starting at zero.

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`.
        weight_decay: L2 penalty :math:`\lambda` added to the gradient (needs ``params``).
        nesterov: use the Nesterov form of the first moment.
        amsgrad: divide by the running maximum of :math:`v_t`.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers.adam import adam_mindspore
        >>> tx = adam_mindspore(lr=0.1, eps=0.0)
        >>> params = {'w': jnp.array([1.0, -1.0])}
        >>> updates, state = tx.update({'w': jnp.array([0.5, -2.0])}, tx.init(params), params)
        >>> updates['w']
        Array([-0.1,  0.1], dtype=float32)
    """
    check_adam_hparams(lr, betas, eps, weight_decay)

    def leaf_update(g, p, slots, hp, step):
        beta1, beta2 = hp["betas"]
        g = l2(g, p, hp["weight_decay"])
        exp_avg, exp_avg_sq = ema_moments(g, slots, hp)
        new_slots = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        second = exp_avg_sq
        if amsgrad:
            second = jnp.maximum(slots["max_exp_avg_sq"], exp_avg_sq)
            new_slots["max_exp_avg_sq"] = second
        t = step.astype(g.dtype)
        lr_t = hp["lr"] * jnp.sqrt(1 - beta2**t) / (1 - beta1**t)
        first = ema(exp_avg, g, beta1) if nesterov else exp_avg
        return -lr_t * first / (jnp.sqrt(second) + hp["eps"]), new_slots

    return per_leaf_optimizer(
        hparams=adam_hparams(lr, betas, eps, weight_decay),
        slots=("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        name="adam_mindspore",
    )


def adam_weight_decay(
    lr: HParam = 1e-3,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-6,
    weight_decay: HParam = 0.0,
) -> GradientTransformation:
    r"""MindSpore's ``nn.AdamWeightDecay``: Adam without bias correction, with decoupled weight decay.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \left(\frac{m_t}{\sqrt{v_t} + \epsilon} + \lambda \theta_{t-1}\right)

    MindSpore's documented rule: the moments are not divided by
    :math:`1 - \beta_i^t` (unlike :func:`funcopt.adamw`), and the decay joins
    the step after the moments (it never enters them). MindSpore's defaults,
    including :math:`\epsilon = 10^{-6}`.

    State: ``exp_avg`` (:math:`m`) and ``exp_avg_sq`` (:math:`v`).

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`.
        weight_decay: :math:`\lambda` (needs ``params`` in ``update``).

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optimizers.adam import adam_weight_decay
        >>> tx = adam_weight_decay(lr=0.1, betas=(0.5, 0.75), eps=0.0, weight_decay=0.5)
        >>> params = {'w': jnp.array([2.0])}
        >>> updates, _ = tx.update({'w': jnp.array([4.0])}, tx.init(params), params)
        >>> updates['w']  # -0.1 * (2 / sqrt(4) + 0.5 * 2)
        Array([-0.2], dtype=float32)
    """
    check_adam_hparams(lr, betas, eps, weight_decay)

    def leaf_update(g, p, slots, hp, step):
        del step
        exp_avg, exp_avg_sq = ema_moments(g, slots, hp)
        update = exp_avg / (jnp.sqrt(exp_avg_sq) + hp["eps"])
        if p is not None:
            update = update + hp["weight_decay"] * p
        return -hp["lr"] * update, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}

    return per_leaf_optimizer(
        hparams=adam_hparams(lr, betas, eps, weight_decay),
        slots=("exp_avg", "exp_avg_sq"),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        name="adam_weight_decay",
    )
