"""Muon, torch.optim.Muon's algorithm: momentum orthogonalized by a Newton-Schulz iteration."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from funcopt._src.base import GradientTransformation, floating_only
from funcopt._src.hparams import HParam, OptimizerState, check_hparam, is_static_zero, per_leaf_optimizer
from funcopt._src.packing import refusing_packed
from funcopt.optimizers._common import check_real
from funcopt.transforms.averaging import lerp

# Keller Jordan's quintic coefficients and defaults, as in torch.optim.Muon.
DEFAULT_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
DEFAULT_EPS = 1e-7
DEFAULT_NS_STEPS = 5

_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def _round_bf16(x: jax.Array) -> jax.Array:
    """Round float32 values to bfloat16 precision, keeping the float32 dtype."""
    return x.astype(jnp.bfloat16).astype(jnp.float32)


def _bf16_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    # Inputs hold bfloat16 values: the products are exact and accumulate in float32.
    return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


def _zeropower_via_newtonschulz(
    update: jax.Array, ns_coefficients: tuple[jax.Array, jax.Array, jax.Array], ns_steps: int, eps: jax.Array
) -> jax.Array:
    """Approximately orthogonalize a matrix, in bfloat16 as torch.optim.Muon does.

    Every step rounds to bfloat16 where torch's bfloat16 tensor op would: the
    scaled input, each Gram matrix and each polynomial step (computed with
    float32 accumulation). Returns float32 holding bfloat16 values.
    """
    a, b, c = (jnp.asarray(v).astype(jnp.float32) for v in ns_coefficients)
    # A float64 input reaches bfloat16 through float32, as torch's conversion does.
    x = _round_bf16(update.astype(jnp.float32))
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    norm = _round_bf16(jnp.sqrt(jnp.sum(x * x)))
    norm = jnp.maximum(norm, _round_bf16(jnp.asarray(eps).astype(jnp.float32)))
    x = _round_bf16(x / norm)
    for _ in range(ns_steps):
        gram = _round_bf16(_bf16_matmul(x, x.T))
        gram_update = _round_bf16(b * gram + c * _bf16_matmul(gram, gram))
        x = _round_bf16(a * x + _bf16_matmul(gram_update, x))
    return x.T if transposed else x


def _lr_ratio(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def muon(
    lr: HParam = 1e-3,
    weight_decay: HParam = 0.1,
    momentum: HParam = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[HParam, HParam, HParam] = DEFAULT_NS_COEFFICIENTS,
    eps: HParam = DEFAULT_EPS,
    ns_steps: int = DEFAULT_NS_STEPS,
    adjust_lr_fn: str | None = None,
) -> GradientTransformation:
    r"""Muon (torch.optim.Muon): momentum orthogonalized by Newton-Schulz, for 2-d parameters.

    With :math:`g_t` the gradient, :math:`\mu` the momentum, :math:`\lambda` the
    weight decay and :math:`A \times B` the parameter's shape:

    .. math::

        B_t &= \mu B_{t-1} + (1 - \mu) g_t \\
        \tilde B_t &= (1 - \mu) g_t + \mu B_t \text{ if nesterov, else } B_t \\
        X_0 &= \tilde B_t / \max(\lVert \tilde B_t \rVert_F, \epsilon), \qquad
        X_{k+1} = a X_k + (b\, X_k X_k^\top + c\, (X_k X_k^\top)^2) X_k
            \quad (k < \text{ns\_steps}) \\
        \theta_t &= \theta_{t-1}(1 - \gamma\lambda) - \gamma\, r(A, B)\, X_{\text{ns\_steps}}

    where the iteration runs on the wide orientation (transposed when
    :math:`A > B`) and :math:`r` is the learning-rate adjustment:
    :math:`\sqrt{\max(1, A/B)}` for ``'original'`` and ``None``,
    :math:`0.2\sqrt{\max(A, B)}` for ``'match_rms_adamw'``.

    Like torch, the Newton-Schulz iteration runs in bfloat16 (float32
    accumulation, rounding after each step) whatever the parameters' dtype, and
    :math:`B_t` (state ``momentum_buffer``) in the parameters' dtype. Only 2-d
    parameters are accepted; give biases and embeddings another optimizer
    (e.g. with :func:`funcopt.partition`).

    Args:
        lr: learning rate :math:`\gamma`.
        weight_decay: decoupled weight decay :math:`\lambda` (multiplied by ``lr``).
        momentum: :math:`\mu`.
        nesterov: use the Nesterov look-ahead :math:`\tilde B_t`.
        ns_coefficients: the quintic's coefficients :math:`(a, b, c)`.
        eps: :math:`\epsilon`, the floor of the Frobenius norm.
        ns_steps: number of Newton-Schulz steps (static, below 100).
        adjust_lr_fn: ``None``, ``'original'`` or ``'match_rms_adamw'``.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.muon(lr=0.1, weight_decay=0.0)
        >>> params = {'w': jnp.zeros((2, 2))}
        >>> updates, state = tx.update({'w': jnp.eye(2)}, tx.init(params), params)
        >>> updates['w']  # the orthogonalized identity is about 1.1 times the identity
        Array([[-0.1125, -0.    ],
               [-0.    , -0.1125]], dtype=float32)
    """
    check_hparam(lr, "lr", "Learning rate should be >= 0 but is: {}", lambda v: v >= 0)
    check_hparam(momentum, "momentum", "momentum should be >= 0 but is: {}", lambda v: v >= 0)
    check_hparam(weight_decay, "weight_decay", "weight decay should be >= 0 but is: {}", lambda v: v >= 0)
    if adjust_lr_fn not in _ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    if not isinstance(ns_steps, int) or isinstance(ns_steps, bool):
        raise TypeError(f"ns_steps must be an int, got {type(ns_steps).__name__}")
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if not isinstance(ns_coefficients, (tuple, list)) or len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    for i, coef in enumerate(ns_coefficients):
        check_hparam(coef, f"ns_coefficients[{i}]", "", lambda v: True)
    check_hparam(eps, "eps", "", lambda v: True)

    def leaf_update(g, p, slots, hp, step):
        del step
        if g.ndim != 2:
            raise ValueError("Param gradient must be a 2D matrix")
        mu = hp["momentum"]
        buf = lerp(slots["momentum_buffer"], g, 1 - mu)
        direction = lerp(g, buf, mu) if nesterov else buf
        ortho = _zeropower_via_newtonschulz(direction, hp["ns_coefficients"], ns_steps, hp["eps"])
        ortho = ortho.astype(g.dtype)
        lr_ = hp["lr"]
        delta = -(lr_ * _lr_ratio(adjust_lr_fn, g.shape)) * ortho
        if p is not None:
            delta = delta - lr_ * hp["weight_decay"] * p
        return delta, {"momentum_buffer": buf}

    inner = per_leaf_optimizer(
        hparams={"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                 "ns_coefficients": tuple(ns_coefficients), "eps": eps},
        slots=("momentum_buffer",),
        leaf_update=leaf_update,
        needs_params=not is_static_zero(weight_decay),
        complex_as_real=False,
        name="muon",
    )

    def init(params):
        for leaf in jax.tree.leaves(params):
            shape = tuple(jnp.shape(leaf))
            if len(shape) != 2:
                raise ValueError(
                    f"Muon only supports 2D parameters whereas we found a parameter with size: {shape}")
        check_real(params, "Muon")
        return inner.init(params)

    def update(grads, state, params=None, **extra):
        del extra
        if not isinstance(state, OptimizerState):
            raise TypeError(f"muon: expected an OptimizerState, got {type(state).__name__}")
        check_real(grads, "Muon")
        if params is not None:
            check_real(params, "Muon")
        return inner.update(grads, state, params)

    return refusing_packed(floating_only(GradientTransformation(init, update)), "fo.muon")
