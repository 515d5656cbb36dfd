r"""MindSpore's ``nn.Optimizer`` family over funcopt, with MindSpore's names, arguments and errors.

A port keeps the optimizer's construction and replaces MindSpore's cells by a
pytree of parameters and a gradient function::

    # MindSpore                                          # funcopt
    opt = nn.Momentum(net.trainable_params(),            opt = Momentum(params, learning_rate=0.1,
                      learning_rate=0.1, momentum=0.9)                  momentum=0.9)
    grads = grad_fn(data, label)                         grads = jax.grad(loss_fn)(opt.parameters, x, y)
    opt(grads)                                           opt(grads)

``parameters`` is a pytree of arrays (its leaves are named by their paths, the
way MindSpore names parameters: ``'conv1.weight'``), or a list of group dicts
with MindSpore's keys ``params`` / ``lr`` / ``weight_decay`` /
``grad_centralization`` / ``order_params``, where ``params`` is a pytree. The
current values are ``opt.parameters``; ``opt(grads)`` takes gradients with
the structure of ``opt.parameters`` (or a flat tuple of them, MindSpore's
order) and returns MindSpore's success flags, a tuple of ``True``.

Every update rule is a funcopt functional optimizer; what MindSpore adds around
it is kept: ``decay_weight`` (L2 decay on parameters whose names contain
neither ``'beta'`` nor ``'gamma'`` when not grouped), ``gradients_centralization``
and ``scale_grad`` (the division by ``loss_scale``), and the learning-rate
forms (a number, a 0-d or 1-D array, an iterable with one value per step, or a
:class:`LearningRateSchedule`). Where MindSpore's rule differs from torch's, the
functional layer has MindSpore's variant (``adam_mindspore``,
``adam_weight_decay``, ``adamax_mindspore``, ``rmsprop_mindspore``).

The names below are defined in the package's modules, by concern:
:mod:`~funcopt.compat.mindspore.optimizers` (the optimizers and
:class:`NamedParameter`), :mod:`~funcopt.compat.mindspore.optimizer` (the base
:class:`Optimizer`), :mod:`~funcopt.compat.mindspore.schedules` (the
``LearningRateSchedule`` classes), :mod:`~funcopt.compat.mindspore.loss_scale`
(the loss-scale managers), and, for the package's own use,
:mod:`~funcopt.compat.mindspore.rules` (learning-rate, weight-decay and group
resolution, one rule factory per optimizer) and
:mod:`~funcopt.compat.mindspore.checks` (MindSpore's argument checks). The
``dynamic_lr`` functions are those of :mod:`funcopt.schedules.dynamic_lr`.
"""

from __future__ import annotations

from funcopt.compat.mindspore.loss_scale import DynamicLossScaleManager, FixedLossScaleManager, LossScaleManager
from funcopt.compat.mindspore.optimizer import Optimizer
from funcopt.compat.mindspore.optimizers import (
    ASGD,
    FTRL,
    LARS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    AdaMax,
    AdamWeightDecay,
    Lamb,
    Momentum,
    NamedParameter,
    ProximalAdagrad,
    RMSProp,
    Rprop,
)
from funcopt.compat.mindspore.schedules import (
    CosineDecayLR,
    ExponentialDecayLR,
    InverseDecayLR,
    LearningRateSchedule,
    NaturalExpDecayLR,
    PolynomialDecayLR,
    WarmUpLR,
)
from funcopt.schedules import dynamic_lr  # noqa: F401 - MindSpore's nn.dynamic_lr, as ms.dynamic_lr
from funcopt.schedules.dynamic_lr import (
    cosine_decay_lr,
    exponential_decay_lr,
    inverse_decay_lr,
    natural_exp_decay_lr,
    piecewise_constant_lr,
    polynomial_decay_lr,
    warmup_lr,
)
from funcopt.transforms.weight_decay import mindspore_decay_filter, mindspore_decay_mask

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
    "CosineDecayLR",
    "DynamicLossScaleManager",
    "ExponentialDecayLR",
    "FixedLossScaleManager",
    "InverseDecayLR",
    "Lamb",
    "LearningRateSchedule",
    "LossScaleManager",
    "Momentum",
    "NamedParameter",
    "NaturalExpDecayLR",
    "Optimizer",
    "PolynomialDecayLR",
    "ProximalAdagrad",
    "RMSProp",
    "Rprop",
    "WarmUpLR",
    "cosine_decay_lr",
    "exponential_decay_lr",
    "inverse_decay_lr",
    "mindspore_decay_filter",
    "mindspore_decay_mask",
    "natural_exp_decay_lr",
    "piecewise_constant_lr",
    "polynomial_decay_lr",
    "warmup_lr",
]
