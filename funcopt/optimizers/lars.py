"""LARS (layer-wise adaptive rate scaling), MindSpore's nn.LARS over nn.Momentum."""

from __future__ import annotations

import jax.numpy as jnp

from funcopt._src.base import GradientTransformation
from funcopt._src.hparams import HParam, check_hparam, per_leaf_optimizer
from funcopt._src.packing import refusing_packed
from funcopt.optimizers._common import check_eps, check_lr, check_weight_decay, heavy_ball, momentum_direction


def lars(
    lr: HParam,
    momentum: HParam = 0.9,
    weight_decay: HParam = 0.0,
    trust_coefficient: HParam = 0.001,
    eps: HParam = 1e-5,
    nesterov: bool = False,
    use_clip: bool = False,
    exclude_1d: bool = False,
) -> GradientTransformation:
    r"""LARS (You, Gitman and Ginsburg 2017), defined as MindSpore's ``nn.LARS`` wrapping ``nn.Momentum``.

    Per leaf (one layer's tensor), with :math:`\eta` the trust coefficient,
    :math:`\lambda` the weight decay and :math:`\mu` the momentum:

    .. math::

        \phi_t &= \frac{\eta \lVert\theta_{t-1}\rVert_2}
            {\lVert g_t\rVert_2 + \lambda \lVert\theta_{t-1}\rVert_2 + \epsilon}, \qquad
        \phi_t \leftarrow \min(\max(\phi_t / \gamma, 0), 1) \text{ if use\_clip}, \qquad
        \phi_t \leftarrow 1 \text{ if } \lVert\theta_{t-1}\rVert_2 = 0 \text{ or } \lVert g_t\rVert_2 = 0 \\
        \tilde g_t &= \phi_t\, (g_t + \lambda \theta_{t-1}) \\
        b_t &= \mu b_{t-1} + \tilde g_t \\
        \theta_t &= \theta_{t-1} - \gamma\, (\tilde g_t + \mu b_t) \text{ if nesterov, else }
            \theta_{t-1} - \gamma\, b_t

    The first line is MindSpore's ``LARSUpdate`` (the local learning rate of
    Algorithm 1 of the paper, with :math:`\epsilon` in the denominator), the
    rest MindSpore's ``ApplyMomentum``. With a constant :math:`\gamma` this is
    the paper's :math:`v_t = \mu v_{t-1} + \gamma \phi_t (g_t + \lambda\theta)`,
    :math:`\theta_t = \theta_{t-1} - v_t` with :math:`v_t = \gamma b_t`.
    ``use_clip`` caps the effective rate :math:`\gamma\phi_t` at :math:`\gamma`
    (NVIDIA's LARC clipping). Where the parameter's or the gradient's norm is
    0 the ratio carries no scale and is 1, as in TensorFlow's
    ``LARSOptimizer``, NVIDIA apex's ``LARC`` and optax's
    ``scale_by_trust_ratio``: a zero-initialized leaf (a bias) takes the plain
    momentum step on :math:`g_t + \lambda\theta_{t-1}` and trains, where the
    bare formula would give :math:`\phi_t = 0` and keep it at zero forever.

    ``exclude_1d`` leaves 0-d and 1-d leaves (biases, normalization scales)
    out of LARS, as MindSpore's default ``lars_filter`` does for ``bias`` and
    ``LayerNorm`` parameters: they take the momentum step on the raw gradient,
    without trust ratio and without weight decay. State: ``momentum_buffer``
    (:math:`b`, MindSpore's ``moments``). Default coefficient and
    :math:`\epsilon` are MindSpore's; like MindSpore's ``Momentum``, ``lr`` has
    no default.

    Args:
        lr: learning rate :math:`\gamma`.
        momentum: :math:`\mu`.
        weight_decay: :math:`\lambda`.
        trust_coefficient: :math:`\eta`.
        eps: :math:`\epsilon`, added to the trust ratio's denominator.
        nesterov: use Nesterov momentum.
        use_clip: clip :math:`\phi_t / \gamma` to [0, 1].
        exclude_1d: skip LARS (trust ratio and weight decay) on leaves with
            fewer than 2 dimensions.

    Returns:
        A :class:`funcopt.GradientTransformation`; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.lars(lr=1.0, momentum=0.0, trust_coefficient=0.1, eps=0.0)
        >>> params = {'w': jnp.array([[3.0, 4.0]])}
        >>> updates, state = tx.update({'w': jnp.array([[10.0, 0.0]])}, tx.init(params), params)
        >>> updates['w']  # trust ratio 0.1 * 5 / 10
        Array([[-0.5,  0. ]], dtype=float32)
    """
    check_lr(lr)
    check_hparam(momentum, "momentum", "Invalid momentum value: {}", lambda v: v >= 0)
    check_weight_decay(weight_decay)
    check_hparam(trust_coefficient, "trust_coefficient", "Invalid trust_coefficient value: {}",
                 lambda v: v >= 0)
    check_eps(eps)

    def leaf_update(g, p, slots, hp, step):
        del step
        lr_, mu = hp["lr"], hp["momentum"]
        if not (exclude_1d and g.ndim < 2):
            wd = hp["weight_decay"]
            p_norm = jnp.sqrt(jnp.sum(p * p))
            g_norm = jnp.sqrt(jnp.sum(g * g))
            # tested as "== 0" (optax's form), so that a nan norm still spreads to the whole leaf
            zero_norm = (p_norm == 0) | (g_norm == 0)
            denom = jnp.where(zero_norm, 1, g_norm + wd * p_norm + hp["eps"])
            trust = hp["trust_coefficient"] * p_norm / denom
            if use_clip:
                trust = jnp.clip(trust / lr_, 0, 1)
            trust = jnp.where(zero_norm, jnp.ones_like(trust), trust)
            g = trust * (g + wd * p)
        buf = heavy_ball(slots["momentum_buffer"], g, mu)
        direction = momentum_direction(g, buf, mu, nesterov)
        return -lr_ * direction, {"momentum_buffer": buf}

    return refusing_packed(per_leaf_optimizer(
        hparams={"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                 "trust_coefficient": trust_coefficient, "eps": eps},
        slots=("momentum_buffer",),
        leaf_update=leaf_update,
        needs_params=True,
        name="lars",
    ), "fo.lars")
