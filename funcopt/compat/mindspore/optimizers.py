"""MindSpore's optimizers: ``nn.Momentum``, ``nn.SGD``, ``nn.Adam`` and the others, with MindSpore's arguments.

Each class checks its arguments as MindSpore does (:mod:`funcopt.compat.mindspore.checks`)
and builds its update rule from a factory of :mod:`funcopt.compat.mindspore.rules`,
which reaches funcopt's functional optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from funcopt.compat.mindspore.checks import (
    check_betas_eps,
    check_bool,
    check_float,
    check_non_negative,
    check_non_negative_float,
    check_open_unit,
    check_positive_float,
    type_name,
)
from funcopt.compat.mindspore.optimizer import Optimizer
from funcopt.compat.mindspore.rules import (
    adadelta_rule,
    adagrad_rule,
    adam_rule,
    adam_weight_decay_rule,
    adamax_rule,
    asgd_rule,
    ftrl_rule,
    lamb_rule,
    lars_rule,
    momentum_rule,
    proximal_adagrad_rule,
    rmsprop_rule,
    rprop_rule,
    sgd_rule,
)

__all__ = [
    "ASGD",
    "FTRL",
    "LARS",
    "SGD",
    "AdaMax",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamWeightDecay",
    "Lamb",
    "Momentum",
    "NamedParameter",
    "ProximalAdagrad",
    "RMSProp",
    "Rprop",
]


class Momentum(Optimizer):
    r"""``nn.Momentum(params, learning_rate, momentum, weight_decay=0.0, loss_scale=1.0, use_nesterov=False)``.

    .. math::

        v_{t+1} = u v_t + g, \qquad
        p_{t+1} = p_t - lr (g + u v_{t+1}) \text{ if use\_nesterov, else } p_t - lr\, v_{t+1}

    after ``decay_weight``, ``gradients_centralization`` and ``scale_grad``;
    over :func:`funcopt.momentum`.

    Raises:
        TypeError: ``momentum`` not a float or ``use_nesterov`` not a bool (and
            the base class's errors).
        ValueError: ``momentum`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Momentum({'w': jnp.array([1.0, 2.0])}, learning_rate=0.1, momentum=0.9)
        >>> for _ in range(2):
        ...     _ = opt({'w': jnp.ones(2)})
        >>> [round(float(x), 4) for x in opt.parameters['w']]
        [0.71, 1.71]
    """

    def __init__(self, params: Any, learning_rate: Any, momentum: float, weight_decay: Any = 0.0,
                 loss_scale: float = 1.0, use_nesterov: bool = False):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        check_float(momentum, "momentum", self.cls_name)
        if momentum < 0.0:
            raise ValueError(f"For 'Momentum', the argument 'momentum' must be at least 0.0, but got {momentum}")
        check_bool(use_nesterov, "use_nesterov", self.cls_name)
        self.momentum = momentum
        self.use_nesterov = use_nesterov
        self._build(momentum_rule, momentum=momentum, use_nesterov=use_nesterov)


class SGD(Optimizer):
    r"""``nn.SGD(params, learning_rate=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
    loss_scale=1.0)``.

    .. math::

        v_{t+1} = u v_t + (1 - \text{dampening}) g \; (v_1 = g), \qquad
        p_{t+1} = p_t - lr (g + u v_{t+1}) \text{ if nesterov, else } p_t - lr\, v_{t+1}

    Over :func:`funcopt.sgd`. As in MindSpore's SGD kernel, the weight decay
    is added inside the rule, after centralization, to every parameter (no
    ``'beta'`` / ``'gamma'`` filter).

    Raises:
        TypeError: ``momentum`` or ``dampening`` not a number, ``nesterov`` not
            a bool, or a scheduled weight decay.
        ValueError: ``momentum`` or ``dampening`` < 0; ``nesterov`` without a
            positive momentum and zero dampening.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.SGD({'w': jnp.array([1.0])}, momentum=0.9, dampening=0.5)
        >>> for _ in range(2):
        ...     _ = opt({'w': jnp.ones(1)})
        >>> opt.parameters['w']   # steps of 0.1 * 1, then 0.1 * (0.9 + 0.5)
        Array([0.76], dtype=float32)
    """

    _rule_decays_all = True

    def __init__(self, params: Any, learning_rate: Any = 0.1, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: Any = 0.0, nesterov: bool = False, loss_scale: float = 1.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        if isinstance(momentum, int) and not isinstance(momentum, bool):
            momentum = float(momentum)
        if not isinstance(momentum, float):
            raise TypeError(f"For 'SGD', the argument 'momentum' must be float type, but got {type(momentum)}.")
        if momentum < 0.0:
            raise ValueError(f"For 'SGD', the argument 'momentum' must be at least 0.0, but got {momentum}.")
        if isinstance(dampening, int) and not isinstance(dampening, bool):
            dampening = float(dampening)
        if not isinstance(dampening, float):
            raise TypeError(f"For 'SGD', the argument 'dampening' must be float type, but got {type(dampening)}.")
        if dampening < 0.0:
            raise ValueError(f"For 'SGD', the argument 'dampening' must be at least 0.0, but got 'dampening' "
                             f"{dampening}")
        check_bool(nesterov, "nesterov", owner)
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError(f"For 'SGD', if 'nesterov' is true, 'momentum' must be > 0.0 and 'dampening' must "
                             f"equal to 0.0, but got 'momentum' {momentum}, 'dampening' {dampening}")
        if self.dynamic_weight_decay:
            raise TypeError("For 'SGD', dynamic weight decay is currently not supported, the argument "
                            "'weight_decay' or 'weight_decay' set in grouped 'params' must be float or int type.")
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self._build(sgd_rule, momentum=momentum, dampening=dampening, nesterov=nesterov)


class Adam(Optimizer):
    r"""``nn.Adam(params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, use_locking=False,
    use_nesterov=False, weight_decay=0.0, loss_scale=1.0, use_amsgrad=False, **kwargs)``.

    .. math::

        \gamma_t = \gamma \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}, \qquad
        \theta_t = \theta_{t-1} - \gamma_t \frac{m_t}{\sqrt{v_t} + \epsilon}

    (:math:`\beta_1 m_t + (1 - \beta_1) g_t` in the numerator with
    ``use_nesterov``; :math:`\max_{s \le t} v_s` in the denominator with
    ``use_amsgrad``, whose kernel has no Nesterov form). Over
    :func:`funcopt.optimizers.adam.adam_mindspore`, the rule of MindSpore's
    ``Adam`` / ``ApplyAdamWithAmsgrad`` kernels. ``use_locking`` has no effect;
    ``use_lazy`` and ``use_offload`` (keyword arguments) are accepted and
    compute the same dense update.

    Raises:
        TypeError: ``beta1``, ``beta2``, ``eps`` not floats; a flag not a bool.
        ValueError: ``beta1`` or ``beta2`` outside (0, 1); ``eps`` <= 0;
            ``use_lazy`` with ``use_offload``; ``use_amsgrad`` with either.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Adam({'w': jnp.array([1.0, -1.0])}, learning_rate=0.1)
        >>> opt({'w': jnp.array([0.5, -2.0])})
        (True,)
        >>> opt.parameters['w']
        Array([ 0.9, -0.9], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, use_locking: bool = False, use_nesterov: bool = False, weight_decay: Any = 0.0,
                 loss_scale: float = 1.0, use_amsgrad: bool = False, **kwargs: Any):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        unknown = set(kwargs) - {"use_lazy", "use_offload"}
        if unknown:
            raise TypeError(f"For 'Adam', unexpected keyword arguments {sorted(unknown)}.")
        use_lazy = kwargs.get("use_lazy", False)
        use_offload = kwargs.get("use_offload", False)
        check_betas_eps(beta1, beta2, eps, owner)
        for name, flag in (("use_locking", use_locking), ("use_nesterov", use_nesterov),
                           ("use_amsgrad", use_amsgrad), ("use_lazy", use_lazy), ("use_offload", use_offload)):
            check_bool(flag, name, owner)
        if use_lazy and use_offload:
            raise ValueError(f"For 'Adam', 'use_lazy' and 'use_offload' can not both be True.But got "
                             f"use_lazy={use_lazy}, use_offload={use_offload}.")
        if use_amsgrad and (use_lazy or use_offload):
            raise ValueError(f"For lazy Adam and Adam with offload, there is no parameter named 'use_amsgrad'.but "
                             f"got 'use_amsgrad'={use_amsgrad}.")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.use_nesterov, self.use_amsgrad = use_nesterov, use_amsgrad
        self._build(adam_rule, beta1=beta1, beta2=beta2, eps=eps, use_nesterov=use_nesterov and not use_amsgrad,
                    use_amsgrad=use_amsgrad)


class AdamWeightDecay(Optimizer):
    r"""``nn.AdamWeightDecay(params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0)``.

    .. math::

        \theta_t = \theta_{t-1} - \gamma \left(\frac{m_t}{\sqrt{v_t} + \epsilon} + \lambda \theta_{t-1}\right)

    with no bias correction and the decay only on the decayed parameters
    (``'beta'`` / ``'gamma'`` filter without groups); over
    :func:`funcopt.optimizers.adam.adam_weight_decay`. As MindSpore's, it
    neither centralizes nor unscales the gradients.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.AdamWeightDecay({'w': jnp.array([2.0]), 'ln': {'gamma': jnp.array([2.0])}},
        ...                          learning_rate=0.1, beta1=0.5, beta2=0.75, weight_decay=0.5)
        >>> new = opt({'w': jnp.array([4.0]), 'ln': {'gamma': jnp.array([4.0])}}) and opt.parameters
        >>> new['w'], new['ln']['gamma']
        (Array([1.8], dtype=float32), Array([1.9], dtype=float32))
    """

    _centralizes = False

    def __init__(self, params: Any, learning_rate: Any = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-6, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        check_betas_eps(beta1, beta2, eps, self.cls_name)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._build(adam_weight_decay_rule, beta1=beta1, beta2=beta2, eps=eps)


class AdaMax(Optimizer):
    r"""``nn.AdaMax(params, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0,
    loss_scale=1.0)``.

    .. math::

        m_{t+1} = \beta_1 m_t + (1 - \beta_1) g, \quad v_{t+1} = \max(\beta_2 v_t, |g|), \quad
        w \leftarrow w - \frac{l}{1 - \beta_1^{t+1}} \frac{m_{t+1}}{v_{t+1} + \epsilon}

    Over :func:`funcopt.optimizers.adamax.adamax_mindspore`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.AdaMax({'w': jnp.array([1.0])}, learning_rate=0.5, eps=1.0)
        >>> _ = opt({'w': jnp.array([3.0])})
        >>> opt.parameters['w']
        Array([0.625], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-08, weight_decay: Any = 0.0, loss_scale: float = 1.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        check_betas_eps(beta1, beta2, eps, self.cls_name)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._build(adamax_rule, beta1=beta1, beta2=beta2, eps=eps)


class Adagrad(Optimizer):
    r"""``nn.Adagrad(params, accum=0.1, learning_rate=0.001, update_slots=True, loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        h_t = h_{t-1} + g_t^2, \quad h_0 = \text{accum}, \qquad
        w_t = w_{t-1} - \gamma \frac{g_t}{\sqrt{h_t}}

    MindSpore's ``ApplyAdagrad`` kernel (no :math:`\epsilon`); over
    :func:`funcopt.adagrad` with ``initial_accumulator_value=accum`` and
    ``eps=0``. With ``update_slots=False`` the accumulator stays at ``accum``
    and each step is :math:`\gamma / \sqrt{\text{accum}}` times the gradient
    (:func:`funcopt.sgd` with that rate; no ``sum`` state).

    Raises:
        TypeError: ``accum`` not a float or ``update_slots`` not a bool.
        ValueError: ``accum`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Adagrad({'w': jnp.array([1.0])}, accum=7.0, learning_rate=0.5)
        >>> _ = opt({'w': jnp.array([3.0])})
        >>> opt.parameters['w']   # 1 - 0.5 * 3 / sqrt(7 + 9)
        Array([0.625], dtype=float32)
    """

    def __init__(self, params: Any, accum: float = 0.1, learning_rate: Any = 0.001, update_slots: bool = True,
                 loss_scale: float = 1.0, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        check_non_negative_float(accum, "accum", self.cls_name)
        check_bool(update_slots, "update_slots", self.cls_name)
        self.accum, self.update_slots = accum, update_slots
        self._build(adagrad_rule, accum=accum, update_slots=update_slots)


class Adadelta(Optimizer):
    r"""``nn.Adadelta(params, learning_rate=1.0, rho=0.9, epsilon=1e-6, loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        a_t = \rho a_{t-1} + (1 - \rho) g^2, \quad
        u = \frac{\sqrt{d_{t-1} + \epsilon}}{\sqrt{a_t + \epsilon}} g, \quad
        d_t = \rho d_{t-1} + (1 - \rho) u^2, \quad w \leftarrow w - \gamma u

    Over :func:`funcopt.adadelta` (the same rule as torch's).

    Raises:
        TypeError: ``rho`` or ``epsilon`` not a float.
        ValueError: ``rho`` outside [0, 1]; ``epsilon`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Adadelta({'w': jnp.array([1.0, 2.0])}, rho=0.25, epsilon=1.0)
        >>> _ = opt({'w': jnp.array([0.0, 2.0])})
        >>> opt.parameters['w']
        Array([1., 1.], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 1.0, rho: float = 0.9, epsilon: float = 1e-6,
                 loss_scale: float = 1.0, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        check_float(rho, "rho", owner)
        check_float(epsilon, "epsilon", owner)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"For '{owner}', the 'rho' must be in range of [0.0, 1.0], but got {rho}.")
        check_non_negative(epsilon, "epsilon", owner)
        self.rho, self.epsilon = rho, epsilon
        self._build(adadelta_rule, rho=rho, epsilon=epsilon)


class RMSProp(Optimizer):
    r"""``nn.RMSProp(params, learning_rate=0.1, decay=0.9, momentum=0.0, epsilon=1e-10, use_locking=False,
    centered=False, loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        s_{t+1} = \rho s_t + (1 - \rho) g^2, \quad
        m_{t+1} = \beta m_t + \frac{\eta}{\sqrt{s_{t+1} + \epsilon}} g, \quad w \leftarrow w - m_{t+1}

    (:math:`s_{t+1} - \bar g_{t+1}^2` under the root when ``centered``), with
    the mean square starting at ones; over
    :func:`funcopt.optimizers.rmsprop.rmsprop_mindspore`.

    Raises:
        TypeError: ``decay``, ``momentum``, ``epsilon`` not floats; a flag not a bool.
        ValueError: ``decay`` or ``momentum`` < 0; ``epsilon`` <= 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.RMSProp({'w': jnp.array([1.0])}, learning_rate=0.1, decay=0.5, epsilon=1e-30)
        >>> _ = opt({'w': jnp.array([1.0])})
        >>> opt.parameters['w']   # mean square 0.5 * 1 + 0.5 * 1 = 1
        Array([0.9], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 0.1, decay: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-10, use_locking: bool = False, centered: bool = False, loss_scale: float = 1.0,
                 weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        check_non_negative_float(decay, "decay", owner)
        check_non_negative_float(momentum, "momentum", owner)
        check_positive_float(epsilon, "epsilon", owner)
        check_bool(use_locking, "use_locking", owner)
        check_bool(centered, "centered", owner)
        self.decay, self.momentum, self.epsilon, self.centered = decay, momentum, epsilon, centered
        self._build(rmsprop_rule, decay=decay, momentum=momentum, epsilon=epsilon, centered=centered)


class Rprop(Optimizer):
    r"""``nn.Rprop(params, learning_rate=0.1, etas=(0.5, 1.2), step_sizes=(1e-6, 50.), weight_decay=0.0)``.

    .. math::

        \Delta_t = \mathrm{clip}(\Delta_{t-1} \cdot \eta^{\pm}, \Gamma_{min}, \Gamma_{max}), \quad
        w \leftarrow w - \Delta_t \operatorname{sign}(g_t) \quad (g_t \leftarrow 0 \text{ after a sign change})

    with :math:`\Delta_0` the learning rate of the first step; over
    :func:`funcopt.rprop` (MindSpore's rule is torch's).

    Raises:
        TypeError: ``etas`` or ``step_sizes`` not a tuple, or holding non-floats.
        ValueError: not pairs; minimal step size above the maximal; ``etaminus``
            outside (0, 1) or ``etaplus`` <= 1.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Rprop({'w': jnp.array([1.0, 2.0])}, learning_rate=0.5)
        >>> for g in ([1.0, 1.0], [3.0, -1.0]):
        ...     _ = opt({'w': jnp.array(g)})
        >>> opt.parameters['w']
        Array([-0.10000002,  1.5       ], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any = 0.1, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50.0), weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        owner = self.cls_name
        if not isinstance(etas, tuple):
            raise TypeError(f"For Rprop, etas must be a tuple, but got {type(etas)}.")
        if len(etas) != 2:
            raise ValueError(f"For Rprop, etas must be a tuple with the size of 2, but got {len(etas)}.")
        if not isinstance(step_sizes, tuple):
            raise TypeError(f"For Rprop, step_sizes must be a tuple, but got {type(step_sizes)}.")
        if len(step_sizes) != 2:
            raise ValueError(f"For Rprop, step_sizes must be a tuple with the size of 2, but got {len(step_sizes)}.")
        if step_sizes[0] > step_sizes[1]:
            raise ValueError(f"For Rprop, maximal step size should not be less than minimal step size, but got "
                             f"{step_sizes[0]} > {step_sizes[1]}.")
        check_float(etas[0], "etaminus", owner)
        check_open_unit(etas[0], "etaminus", owner)
        check_float(etas[1], "etaplus", owner)
        if etas[1] <= 1.0:
            raise ValueError(f"For Rprop, etaplus must be greater than 1.0, but got etaplus {etas[1]}.")
        check_float(step_sizes[0], "min_step_sizes", owner)
        check_float(step_sizes[1], "max_step_sizes", owner)
        self.etas, self.step_sizes = etas, step_sizes
        self._build(rprop_rule, etas=etas, step_sizes=step_sizes)


class ASGD(Optimizer):
    r"""``nn.ASGD(params, learning_rate=0.1, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0)``.

    .. math::

        w_t = w_{t-1}(1 - \lambda \eta_{t-1}) - \eta_{t-1} g_t, \quad
        \eta_t = \frac{lr}{(1 + \lambda\, lr\, t)^\alpha}, \quad \mu_t = \frac{1}{\max(1, t - t_0)}

    with the average :math:`ax` in the state (``state[name]['ax']``); over
    :func:`funcopt.asgd` (MindSpore's kernel is torch's rule; its documented
    :math:`\eta_t` leaves out the :math:`lr` factor that the kernel has).

    Raises:
        TypeError: ``lambd``, ``alpha`` or ``t0`` not a float.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.ASGD({'w': jnp.array([1.0, 2.0])}, learning_rate=0.5, lambd=0.0, t0=0.0)
        >>> for _ in range(3):
        ...     _ = opt({'w': jnp.array([1.0, -1.0])})
        >>> opt.parameters['w'], opt.state['w']['ax']
        (Array([-0.5,  3.5], dtype=float32), array([-0.25,  3.25], dtype=float32))
    """

    def __init__(self, params: Any, learning_rate: Any = 0.1, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        for name, value in (("lambd", lambd), ("alpha", alpha), ("t0", t0)):
            check_float(value, name, self.cls_name)
        self.lambd, self.alpha, self.t0 = lambd, alpha, t0
        self._build(asgd_rule, lambd=lambd, alpha=alpha, t0=t0)


class FTRL(Optimizer):
    r"""``nn.FTRL(params, initial_accum=0.1, learning_rate=0.001, lr_power=-0.5, l1=0.0, l2=0.0,
    use_locking=False, loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        m_{t+1} = m_t + g^2, \quad
        u_{t+1} = u_t + g - \frac{m_{t+1}^{-p} - m_t^{-p}}{\alpha} \omega_t, \quad
        \omega_{t+1} = \frac{\operatorname{sign}(u_{t+1}) l_1 - u_{t+1}}{m_{t+1}^{-p} / \alpha + 2 l_2}
            \text{ if } |u_{t+1}| > l_1 \text{ else } 0

    Over :func:`funcopt.ftrl`. As in MindSpore the learning rate is one fixed
    positive float, and the weight decay reaches every parameter.

    Raises:
        TypeError: ``initial_accum``, ``learning_rate``, ``lr_power``, ``l1``,
            ``l2`` not floats; ``use_locking`` not a bool.
        ValueError: a dynamic or grouped learning rate; ``lr_power`` > 0;
            ``learning_rate`` <= 0; ``initial_accum``, ``l1`` or ``l2`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.FTRL({'w': jnp.zeros(2)}, initial_accum=0.0, learning_rate=1.0, l1=0.5)
        >>> _ = opt({'w': jnp.array([0.3, -2.5])})
        >>> opt.parameters['w']
        Array([0. , 0.8], dtype=float32)
    """

    _decay_filter = False

    def __init__(self, params: Any, initial_accum: float = 0.1, learning_rate: Any = 0.001, lr_power: float = -0.5,
                 l1: float = 0.0, l2: float = 0.0, use_locking: bool = False, loss_scale: float = 1.0,
                 weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale=loss_scale)
        owner = self.cls_name
        if self.dynamic_lr or self.is_group_lr:
            raise ValueError(f"For 'FTRL', dynamic learning rate and group learning rate are currently not "
                             f"supported in FTRL, they should all be false, but got dynamic learning rate "
                             f"{self.dynamic_lr} and group learning rate {self.is_group_lr}.")
        check_non_negative_float(initial_accum, "initial_accum", owner)
        check_positive_float(learning_rate, "learning_rate", owner)
        check_float(lr_power, "lr_power", owner)
        if lr_power > 0.0:
            raise ValueError(f"For '{owner}', the 'lr_power' must be less than or equal to 0.0, but got {lr_power}.")
        check_non_negative_float(l1, "l1", owner)
        check_non_negative_float(l2, "l2", owner)
        check_bool(use_locking, "use_locking", owner)
        self.initial_accum, self.lr_power, self.l1, self.l2 = initial_accum, lr_power, l1, l2
        self._build(ftrl_rule, initial_accum=initial_accum, lr_power=lr_power, l1=l1, l2=l2)


class ProximalAdagrad(Optimizer):
    r"""``nn.ProximalAdagrad(params, accum=0.1, learning_rate=0.001, l1=0.0, l2=0.0, use_locking=False,
    loss_scale=1.0, weight_decay=0.0)``.

    .. math::

        a_t = a_{t-1} + g^2, \quad \eta_t = \gamma / \sqrt{a_t}, \quad v = w - \eta_t g, \quad
        w \leftarrow \frac{\operatorname{sign}(v)}{1 + \eta_t l_2} \max(|v| - \eta_t l_1, 0)

    Over :func:`funcopt.proximal_adagrad` (the kernels' per-coordinate rate).

    Raises:
        TypeError: ``accum``, ``l1`` or ``l2`` not a float; ``use_locking`` not a bool.
        ValueError: ``accum``, ``l1`` or ``l2`` < 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.ProximalAdagrad({'w': jnp.array([0.2, 3.0])}, accum=0.0, learning_rate=0.5, l1=0.5)
        >>> _ = opt({'w': jnp.array([0.1, 1.0])})
        >>> opt.parameters['w']
        Array([0.  , 2.25], dtype=float32)
    """

    def __init__(self, params: Any, accum: float = 0.1, learning_rate: Any = 0.001, l1: float = 0.0,
                 l2: float = 0.0, use_locking: bool = False, loss_scale: float = 1.0, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        owner = self.cls_name
        for name, value in (("accum", accum), ("l1", l1), ("l2", l2)):
            check_non_negative_float(value, name, owner)
        check_bool(use_locking, "use_locking", owner)
        self.accum, self.l1, self.l2 = accum, l1, l2
        self._build(proximal_adagrad_rule, accum=accum, l1=l1, l2=l2)


class Lamb(Optimizer):
    r"""``nn.Lamb(params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0)``.

    .. math::

        r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \qquad
        w_{t+1} = w_t - \gamma \frac{\lVert w_t \rVert}{\lVert r_t + \lambda w_t \rVert} (r_t + \lambda w_t)

    MindSpore's documented rule (the trust ratio always applies, 1 where a
    norm is 0), per parameter; over :func:`funcopt.lamb` with
    ``always_adapt=True``.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> opt = ms.Lamb({'w': jnp.array([3.0, 4.0])}, learning_rate=0.1)
        >>> _ = opt({'w': jnp.array([1.0, -1.0])})
        >>> opt.parameters['w']   # the step, of norm sqrt(2), is rescaled to 0.1 * ||w|| = 0.5
        Array([2.6464467, 4.3535533], dtype=float32)
    """

    def __init__(self, params: Any, learning_rate: Any, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-6, weight_decay: Any = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        check_betas_eps(beta1, beta2, eps, self.cls_name)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._build(lamb_rule, elementwise=False, beta1=beta1, beta2=beta2, eps=eps)


class NamedParameter(NamedTuple):
    """A parameter with its name, as MindSpore's ``Parameter`` is handed to ``lars_filter``.

    Attributes:
        name: the parameter's dotted path (``'conv1.weight'``).
        value: its current array.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> p = ms.NamedParameter('fc.bias', jnp.zeros(3))
        >>> p.name, p.shape, p.ndim
        ('fc.bias', (3,), 1)
    """

    name: str
    value: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def dtype(self) -> Any:
        return self.value.dtype


def _default_lars_filter(param: Any) -> bool:
    return "LayerNorm" not in param.name and "bias" not in param.name


class LARS(Optimizer):
    r"""``nn.LARS(optimizer, epsilon=1e-05, coefficient=0.001, use_clip=False, lars_filter=...)``.

    Wraps a :class:`Momentum` optimizer: for the parameters ``lars_filter``
    keeps (by default those whose names contain neither ``'LayerNorm'`` nor
    ``'bias'``) the gradient becomes

    .. math::

        \phi = \frac{\eta \lVert w \rVert}{\lVert g \rVert + \lambda \lVert w \rVert + \epsilon}, \qquad
        g \leftarrow \phi\, (g + \lambda w)

    (:math:`\phi / lr` clipped to [0, 1] with ``use_clip``; :math:`\phi = 1`
    where :math:`\lVert w \rVert` or :math:`\lVert g \rVert` is 0, so that a
    zero-initialized parameter trains) before the momentum
    step; the others take the momentum step on the raw gradient. The weight
    decay :math:`\lambda` and its ``'beta'`` / ``'gamma'`` filter are the
    wrapped optimizer's. Over :func:`funcopt.lars` (LARS and
    :func:`funcopt.momentum` in one rule). The wrapped optimizer's parameters
    and state move to the LARS optimizer: use the LARS one from then on.

    ``lars_filter`` receives a :class:`NamedParameter` (``.name``, ``.shape``...).

    Raises:
        TypeError: ``optimizer`` not a MindSpore-style optimizer; ``epsilon`` or
            ``coefficient`` not a float; ``use_clip`` not a bool.
        ValueError: ``use_clip`` with both group and dynamic learning rates.
        NotImplementedError: a wrapped optimizer other than :class:`Momentum`,
            or gradient centralization (MindSpore centralizes between LARS and
            the momentum step, which one rule cannot express).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> net = {'fc': {'weight': jnp.array([[3.0, 4.0]]), 'bias': jnp.array([1.0])}}
        >>> opt = ms.LARS(ms.Momentum(net, 1.0, 0.0), epsilon=0.0, coefficient=0.1)
        >>> _ = opt({'fc': {'weight': jnp.array([[10.0, 0.0]]), 'bias': jnp.array([1.0])}})
        >>> opt.parameters['fc']['weight'], opt.parameters['fc']['bias']   # trust ratio 0.1 * 5 / 10
        (Array([[2.5, 4. ]], dtype=float32), Array([0.], dtype=float32))
    """

    def __init__(self, optimizer: Optimizer, epsilon: float = 1e-05, coefficient: float = 0.001,
                 use_clip: bool = False, lars_filter: Callable[[Any], bool] = _default_lars_filter):
        owner = "LARS"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"For '{owner}', the type of 'optimizer' must be 'Optimizer', but got "
                            f"'{type_name(optimizer)}'.")
        check_float(epsilon, "epsilon", owner)
        check_float(coefficient, "coefficient", owner)
        check_bool(use_clip, "use_clip", owner)
        if not isinstance(optimizer, Momentum):
            raise NotImplementedError(f"LARS wraps Momentum here (funcopt.lars is LARS with momentum), got "
                                      f"{optimizer.cls_name}")
        if use_clip and optimizer.is_group_lr and optimizer.dynamic_lr:
            raise ValueError("For 'LARS', if the argument 'use_clip' is set to True, then the dynamic learning rate "
                             "and group learning rate cannot both be true.")
        if any(g.grad_centralization for g in optimizer._groups):
            raise NotImplementedError("LARS with grad_centralization groups is not supported")
        # the wrapped optimizer's parameters, groups, learning rates and decay become this one's
        self.__dict__.update({k: v for k, v in optimizer.__dict__.items() if not k.startswith("_engine")})
        self._centralizes = False
        self._engine = None
        self.parameters = optimizer.parameters
        self.optimizer = optimizer
        self.epsilon, self.coefficient, self.use_clip = epsilon, coefficient, use_clip
        leaves = jax.tree.leaves(self._params_value)
        self.lars_flag = tuple(bool(lars_filter(NamedParameter(n, p))) for n, p in zip(self._names, leaves))
        self._build(lars_rule, elementwise=False, split=lambda k: {"lars": self.lars_flag[k]},
                    momentum=optimizer.momentum, use_nesterov=optimizer.use_nesterov, coefficient=coefficient,
                    epsilon=epsilon, use_clip=use_clip)
        optimizer._engine = None
