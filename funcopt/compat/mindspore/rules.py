"""MindSpore's rule pipelines: learning-rate, weight-decay and group resolution, and one rule per optimizer.

MindSpore's optimizers accept a learning rate in several forms and parameters
in groups; :func:`preprocess_lr`, :func:`preprocess_weight_decay` and
:func:`param_leaves` resolve them with MindSpore's errors. Each ``*_rule``
factory turns MindSpore's hyperparameters into a funcopt
:class:`funcopt.GradientTransformation`: the functional optimizer that holds
the update rule, with what MindSpore's ``construct`` adds around it
(``scale_grad``, ``decay_weight``, ``gradients_centralization``) chained in
MindSpore's order.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import funcopt.optimizers as F
from funcopt import schedules as _schedules
from funcopt._src.base import GradientTransformation, chain, stateless
from funcopt._src.hparams import HParam, float_dtype, is_static_zero
from funcopt._src.tree import param_names
from funcopt.compat.mindspore.checks import check_non_negative, is_array, type_name
from funcopt.compat.mindspore.schedules import LearningRateSchedule
from funcopt.optimizers.adam import adam_mindspore, adam_weight_decay
from funcopt.optimizers.adamax import adamax_mindspore
from funcopt.optimizers.rmsprop import rmsprop_mindspore
from funcopt.transforms.loss_scale import StaticLossScale
from funcopt.transforms.weight_decay import add_decayed_weights, centralize

__all__ = [
    "GROUP_KEYS",
    "GroupSpec",
    "LearningRate",
    "ResolvedGroups",
    "adadelta_rule",
    "adagrad_rule",
    "adam_rule",
    "adam_weight_decay_rule",
    "adamax_rule",
    "asgd_rule",
    "ftrl_rule",
    "lamb_rule",
    "lars_rule",
    "momentum_rule",
    "param_leaves",
    "preprocess_lr",
    "preprocess_weight_decay",
    "proximal_adagrad_rule",
    "resolve_groups",
    "rmsprop_rule",
    "rprop_rule",
    "sgd_rule",
    "split_parameters",
    "unscale",
]

# --------------------------------------------------------------------------- learning rates and groups


class LearningRate(NamedTuple):
    """A processed learning rate: the value the optimizer uses, the value MindSpore's getters return.

    Attributes:
        hparam: a float or a schedule, for the functional optimizer.
        raw: what ``get_lr_parameter`` returns: a 0-d array, a 1-D array of
            per-step values, or the schedule.
        dynamic: whether the rate changes with the step.
        length: the number of per-step values of a 1-D learning rate, else 0.

    Example:
        >>> from funcopt.compat.mindspore.rules import preprocess_lr
        >>> lr = preprocess_lr([0.1, 0.05], 'SGD')
        >>> lr.dynamic, lr.length, round(float(lr.hparam(5)), 6)
        (True, 2, 0.05)
    """

    hparam: Any  # a float or a schedule, for the functional optimizer
    raw: Any  # what get_lr_parameter returns: a 0-d array, a 1-D array of per-step values, or the schedule
    dynamic: bool
    length: int  # number of per-step values of a 1-D learning rate, else 0


def preprocess_lr(learning_rate: Any, owner: str) -> LearningRate:
    """MindSpore's ``_preprocess_single_lr``: the accepted forms, with its errors.

    A number >= 0 or a 0-d array is a fixed rate; a 1-D array or an iterable of
    numbers is one rate per step (the last one held after the end, through
    :func:`funcopt.schedules.from_list`); a :class:`LearningRateSchedule` or
    any other callable is a schedule of the step.

    Raises:
        TypeError: another type.
        ValueError: a negative number, an array of more than one dimension, or
            an empty list.

    Example:
        >>> from funcopt.compat.mindspore.rules import preprocess_lr
        >>> lr = preprocess_lr(0.1, 'SGD')
        >>> lr.hparam, lr.dynamic
        (0.1, False)
    """
    if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, str):
        value = float(learning_rate)
        check_non_negative(value, "learning rate", owner)
        return LearningRate(value, jnp.asarray(value, float_dtype()), False, 0)
    if is_array(learning_rate):
        arr = np.asarray(learning_rate)
        if arr.ndim == 0:
            return LearningRate(float(arr), jnp.asarray(float(arr), float_dtype()), False, 0)
        if arr.ndim > 1:
            raise ValueError(f"For 'Optimizer', if 'learning_rate' is Tensor type, then the dimension of it should "
                             f"be 0 or 1, but got {arr.ndim}.")
        return _list_lr(arr)
    if isinstance(learning_rate, LearningRateSchedule) or (
            callable(learning_rate) and not isinstance(learning_rate, type)):
        return LearningRate(learning_rate, learning_rate, True, 0)
    if isinstance(learning_rate, Iterable) and not isinstance(learning_rate, (str, bytes, Mapping)):
        values = np.asarray(list(learning_rate), dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"For 'Optimizer', if 'learning_rate' is Iterable type, it must hold one number per "
                             f"step, but got an array of shape {values.shape}.")
        return _list_lr(values)
    raise TypeError(f"For 'Optimizer', the argument 'learning_rate' must be int, float, Tensor, Iterable or "
                    f"LearningRateSchedule, but got {type(learning_rate)}.")


def _list_lr(values: np.ndarray) -> LearningRate:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("For 'Optimizer', a dynamic 'learning_rate' needs at least one value.")
    return LearningRate(_schedules.from_list(values), jnp.asarray(values, float_dtype()), True, int(values.size))


def preprocess_weight_decay(weight_decay: Any, owner: str) -> Any:
    """MindSpore's ``_preprocess_weight_decay``: a non-negative number, or a schedule (MindSpore's Cell).

    Returns the number as a float, or the schedule itself.

    Example:
        >>> from funcopt.compat.mindspore.rules import preprocess_weight_decay
        >>> preprocess_weight_decay(1, 'SGD')
        1.0
    """
    if isinstance(weight_decay, (int, float)):
        value = float(weight_decay)
        check_non_negative(value, "weight_decay", owner)
        return value
    if callable(weight_decay) and not is_array(weight_decay):
        return weight_decay
    raise TypeError(f"For 'Optimizer', the argument 'Weight_decay' must be int, float or Cell.but got "
                    f"{type(weight_decay)}")


class GroupSpec(NamedTuple):
    """One group of parameters as MindSpore resolves it: its leaves and their learning rate, decay, centralization.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat.mindspore.rules import GroupSpec, preprocess_lr
        >>> spec = GroupSpec([jnp.ones(2)], preprocess_lr(0.1, 'SGD'), 0.0, False)
        >>> len(spec.leaves), spec.grad_centralization
        (1, False)
    """

    leaves: list[jax.Array]
    lr: LearningRate
    weight_decay: Any
    grad_centralization: bool


GROUP_KEYS = ("params", "lr", "weight_decay", "order_params", "grad_centralization")
"""The keys MindSpore parses in a group dict; any other raises ``KeyError``."""


def param_leaves(tree: Any, what: str) -> tuple[list[str], list[Any]]:
    """Names and leaves of a parameter pytree, with MindSpore's errors for empty or non-array content.

    ``what`` names the argument in the messages.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat.mindspore.rules import param_leaves
        >>> names, leaves = param_leaves({'fc': {'bias': jnp.zeros(2), 'weight': jnp.ones((2, 2))}}, 'parameters')
        >>> names
        ['fc.bias', 'fc.weight']
    """
    if tree is None:
        raise ValueError(f"For 'Optimizer', the argument {what} can not be None.")
    if is_array(tree) or isinstance(tree, (str, bytes, numbers.Number)):
        raise TypeError(f"For 'Optimizer', the argument {what} must be a pytree (a list or dict) of parameters, "
                        f"but got {type(tree)}.")
    names = param_names(tree)
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"For 'Optimizer', the argument {what} must not be empty.")
    for name, leaf in zip(names, leaves):
        if not is_array(leaf):
            raise TypeError(f"For 'Optimizer', all elements of the argument {what} must be 'Parameter' (arrays) "
                            f"or 'dict', but '{name}' is a {type_name(leaf)}.")
    return names, leaves


class ResolvedGroups(NamedTuple):
    """The parameters of a grouped optimizer, as :func:`resolve_groups` finds them.

    Attributes:
        tree: the parameters' pytree: ``order_params``, the one group's
            ``params``, or the list of the groups' ``params``.
        names: the parameters' names, in the order of ``tree``'s leaves.
        specs: one :class:`GroupSpec` per group.
        spec_of: for each parameter, the index of its group in ``specs``.
        group_lr: whether a group sets its own ``lr`` (MindSpore's ``is_group_lr``).
        ordered: whether ``order_params`` was given (``is_group_params_ordered``).

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat.mindspore.rules import preprocess_lr, resolve_groups
        >>> resolved = resolve_groups([{'params': {'w': jnp.ones(2)}}], preprocess_lr(0.1, 'SGD'), 0.0, 'SGD')
        >>> resolved.names, resolved.group_lr, resolved.ordered
        (['w'], False, False)
    """

    tree: Any
    names: list[str]
    specs: list[GroupSpec]
    spec_of: list[int]
    group_lr: bool
    ordered: bool


def split_parameters(parameters: Any) -> tuple[list[Mapping[str, Any]] | None, Any]:
    """``(group dicts, None)`` for a list of groups, ``(None, pytree)`` otherwise; MindSpore's errors.

    A generator or view of parameters is read into a list, as MindSpore's
    ``list(parameters)``.

    Raises:
        ValueError: ``parameters`` None or empty.
        TypeError: not an iterable; a list mixing dicts and parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat.mindspore.rules import split_parameters
        >>> groups, tree = split_parameters([{'params': {'w': jnp.ones(2)}, 'lr': 0.1}])
        >>> len(groups), tree
        (1, None)
    """
    if parameters is None:
        raise ValueError("For 'Optimizer', the argument parameters can not be None.")
    if is_array(parameters) or isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(f"For 'Optimizer', the argument parameters must be Iterable type, but got "
                        f"{type(parameters)}.")
    if not isinstance(parameters, (Mapping, list, tuple)) and jax.tree.leaves(parameters) == [parameters]:
        parameters = list(parameters)  # a generator or view of parameters, as MindSpore's list(parameters)
    if isinstance(parameters, list) and any(isinstance(x, Mapping) for x in parameters):
        if not all(isinstance(x, Mapping) for x in parameters):
            raise TypeError("For 'Optimizer', all elements of the argument 'parameters' must be 'Parameter' "
                            "or 'dict', please check the 'parameters'.")
        return list(parameters), None
    if not jax.tree.leaves(parameters):
        raise ValueError("For 'Optimizer', the argument parameters must not be empty.")
    return None, parameters

def resolve_groups(groups: list[Mapping[str, Any]], default_lr: LearningRate, weight_decay: Any,
                   owner: str) -> ResolvedGroups:
    """MindSpore's group parsing: each group's parameters, learning rate, weight decay and centralization.

    Groups without ``lr`` / ``weight_decay`` take ``default_lr`` / ``weight_decay``;
    a dict holding only ``order_params`` gives the order (and structure) of
    the parameters, which must be those of the groups.

    Raises:
        KeyError: a key MindSpore does not parse, or a group without ``params``.
        ValueError: ``order_params`` beside other keys, or not the groups'
            parameters; no group; 1-D group learning rates of different lengths.
        TypeError: ``order_params`` not iterable; ``grad_centralization`` not a bool.
        RuntimeError: a parameter in two groups.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat.mindspore.rules import preprocess_lr, resolve_groups
        >>> net = {'conv': {'weight': jnp.ones((2, 16))}, 'fc': {'bias': jnp.zeros(2)}}
        >>> groups = [{'params': {'conv': net['conv']}, 'grad_centralization': True},
        ...           {'params': {'fc': net['fc']}, 'lr': 0.01}, {'order_params': net}]
        >>> resolved = resolve_groups(groups, preprocess_lr(0.1, 'SGD'), 0.0, 'SGD')
        >>> resolved.names, resolved.spec_of, resolved.group_lr, resolved.ordered
        (['conv.weight', 'fc.bias'], [0, 1], True, True)
    """
    group_lr = False
    ordered = False
    order_tree = None
    specs: list[GroupSpec] = []
    group_trees: list[Any] = []
    group_names: list[list[str]] = []
    list_length = default_lr.length
    for group in groups:
        invalid = [k for k in group if k not in GROUP_KEYS]
        if invalid:
            raise KeyError(f"For 'Optimizer', the key in group params must be one of in {list(GROUP_KEYS)}, "
                           f"but got {invalid}.")
        if "order_params" in group:
            if len(group) > 1:
                raise ValueError(f"For 'Optimizer', the order params dict in group parameters should only "
                                 f"include the 'order_params' key, but got {list(group.keys())}.")
            if not isinstance(group["order_params"], Iterable) or is_array(group["order_params"]):
                raise TypeError("For 'Optimizer', the value of 'order_params' in group parameters should be "
                                f"Iterable type, but got {type(group['order_params'])}.")
            order_tree = group["order_params"]
            ordered = True
            continue
        if "params" not in group:
            raise KeyError("For 'Optimizer', every group of parameters must have the key 'params'.")
        names, leaves = param_leaves(group["params"], "group `params`")
        lr = default_lr
        if "lr" in group:
            group_lr = True
            lr = preprocess_lr(group["lr"], owner)
            if lr.length:
                if list_length and lr.length != list_length:
                    raise ValueError("For 'Optimizer', the Tensor type dynamic learning rate in group must be "
                                     "the same size as the argument 'learning_rate'.")
                list_length = lr.length
        wd = preprocess_weight_decay(group.get("weight_decay", weight_decay), owner)
        gc = group.get("grad_centralization", False)
        if not isinstance(gc, bool):
            raise TypeError(f"For 'Optimizer', the 'gradients_centralization' must be bool type, but got "
                            f"{type(gc)}.")
        specs.append(GroupSpec(leaves, lr, wd, gc))
        group_trees.append(group["params"])
        group_names.append(names)
    if not specs:
        raise ValueError("For 'Optimizer', the argument parameters must not be empty.")
    seen: dict[int, str] = {}
    for names, spec in zip(group_names, specs):
        for name, leaf in zip(names, spec.leaves):
            if id(leaf) in seen:
                raise RuntimeError(f"For 'Optimizer', the {name} parameter already exists, it does not support "
                                   "repeated setting. Please check whether the optimizer parameter has been set "
                                   "multiple times.")
            seen[id(leaf)] = name
    if order_tree is not None:
        names, leaves = param_leaves(order_tree, "'order_params'")
        if len(leaves) != len(seen):
            raise ValueError(f"For 'Optimizer',the length of order parameters must be the same as the length of "
                             f"group parameters, but got order parameters' length {len(leaves)}, group "
                             f"parameters' length {len(seen)}.")
        owner_of = {id(leaf): i for i, spec in enumerate(specs) for leaf in spec.leaves}
        spec_of = []
        for name, leaf in zip(names, leaves):
            if id(leaf) not in owner_of:
                raise ValueError(f"For 'Optimizer', the parameter {name} of 'order_params' is in no group of "
                                 "'params'.")
            spec_of.append(owner_of[id(leaf)])
        return ResolvedGroups(order_tree, names, specs, spec_of, group_lr, ordered)
    tree = group_trees[0] if len(group_trees) == 1 else list(group_trees)
    names = [n for ns in group_names for n in ns]
    spec_of = [i for i, spec in enumerate(specs) for _ in spec.leaves]
    return ResolvedGroups(tree, names, specs, spec_of, group_lr, ordered)


# --------------------------------------------------------------------------- the functional pipeline


def unscale(loss_scale: float) -> GradientTransformation:
    """MindSpore's ``scale_grad``: gradients times the float32 reciprocal of the loss scale.

    A stateless transform over :meth:`funcopt.StaticLossScale.unscale`.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.compat.mindspore.rules import unscale
        >>> unscale(4.0).update({'w': jnp.array([2.0, 8.0])}, None)[0]['w']
        Array([0.5, 2. ], dtype=float32)
    """
    scale = StaticLossScale(jnp.asarray(loss_scale, jnp.float32))
    return stateless(lambda updates, params: scale.unscale(updates))


def _pipeline(make_rule: Callable[[Any], GradientTransformation], weight_decay: Any, grad_centralization: bool,
              loss_scale: float, decay: str) -> GradientTransformation:
    """What MindSpore's ``construct`` does around the update rule, as a chain of funcopt transforms.

    ``decay`` is where the weight decay goes: ``'pre'`` (``decay_weight``: added to
    the gradient before centralization; the rule's own L2 term is the same thing
    when nothing comes between), ``'pre_only'`` (the rule has no decay argument),
    ``'rule'`` (the rule's own placement, after centralization: SGD's kernel,
    AdamWeightDecay, Lamb). MindSpore adds the decay to the loss-scaled gradients
    with ``weight_decay * loss_scale`` and divides by the scale last; dividing
    first is the same computation.
    """
    parts = []
    if loss_scale != 1.0:
        parts.append(unscale(loss_scale))
    rule_decay = weight_decay
    if decay == "pre_only" or (decay == "pre" and grad_centralization):
        if not is_static_zero(weight_decay):
            parts.append(add_decayed_weights(weight_decay))
        rule_decay = 0.0
    if grad_centralization:
        parts.append(centralize(channel_multiple=16))
    parts.append(make_rule(rule_decay))
    return parts[0] if len(parts) == 1 else chain(*parts)


# One factory per optimizer: MindSpore's hyperparameters to a funcopt rule and the pipeline.
# The engine (a funcopt.optim.Optimizer) reads each factory's signature: group keys are lr,
# weight_decay, grad_centralization; loss_scale and the flags are fixed per optimizer.


def momentum_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
                  momentum: HParam, use_nesterov: bool) -> GradientTransformation:
    """``nn.Momentum``'s rule: :func:`funcopt.momentum`, the decay added to the gradient first.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> from funcopt.compat.mindspore.rules import momentum_rule
        >>> tx = momentum_rule(0.1, 0.0, False, 1.0, momentum=0.9, use_nesterov=False)
        >>> params = {'w': jnp.ones(2)}
        >>> updates, _ = tx.update({'w': jnp.ones(2)}, tx.init(params), params)
        >>> updates['w']
        Array([-0.1, -0.1], dtype=float32)
    """
    return _pipeline(lambda wd: F.momentum(lr=lr, momentum=momentum, weight_decay=wd, use_nesterov=use_nesterov),
                     weight_decay, grad_centralization, loss_scale, "pre")


def sgd_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, momentum: HParam,
             dampening: HParam, nesterov: bool) -> GradientTransformation:
    """``nn.SGD``'s rule: :func:`funcopt.sgd`, with the decay inside the rule (after centralization)."""
    return _pipeline(lambda wd: F.sgd(lr=lr, momentum=momentum, dampening=dampening, weight_decay=wd,
                                      nesterov=nesterov),
                     weight_decay, grad_centralization, loss_scale, "rule")


def adam_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, beta1: HParam,
              beta2: HParam, eps: HParam, use_nesterov: bool, use_amsgrad: bool) -> GradientTransformation:
    """``nn.Adam``'s rule: :func:`funcopt.optimizers.adam.adam_mindspore`."""
    return _pipeline(lambda wd: adam_mindspore(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd,
                                               nesterov=use_nesterov, amsgrad=use_amsgrad),
                     weight_decay, grad_centralization, loss_scale, "pre")


def adam_weight_decay_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
                           beta1: HParam, beta2: HParam, eps: HParam) -> GradientTransformation:
    """``nn.AdamWeightDecay``'s rule: :func:`funcopt.optimizers.adam.adam_weight_decay`, on the raw gradients."""
    # MindSpore's AdamWeightDecay neither centralizes nor unscales the gradients
    del grad_centralization, loss_scale
    return adam_weight_decay(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def adamax_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, beta1: HParam,
                beta2: HParam, eps: HParam) -> GradientTransformation:
    """``nn.AdaMax``'s rule: :func:`funcopt.optimizers.adamax.adamax_mindspore`."""
    return _pipeline(lambda wd: adamax_mindspore(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def adagrad_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, accum: HParam,
                 update_slots: bool) -> GradientTransformation:
    """``nn.Adagrad``'s rule: :func:`funcopt.adagrad` without epsilon, or a fixed-rate step without ``update_slots``."""
    if update_slots:
        rule = lambda wd: F.adagrad(lr=lr, initial_accumulator_value=accum, eps=0.0, weight_decay=wd)  # noqa: E731
    else:
        # the accumulator never changes: each step is lr / sqrt(accum) times the gradient
        scale = 1.0 / math.sqrt(accum) if accum > 0 else math.inf
        scaled_lr = (lambda step: lr(step) * scale) if callable(lr) else lr * scale
        rule = lambda wd: F.sgd(lr=scaled_lr, weight_decay=wd)  # noqa: E731
    return _pipeline(rule, weight_decay, grad_centralization, loss_scale, "pre")


def adadelta_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, rho: HParam,
                  epsilon: HParam) -> GradientTransformation:
    """``nn.Adadelta``'s rule: :func:`funcopt.adadelta`."""
    return _pipeline(lambda wd: F.adadelta(lr=lr, rho=rho, eps=epsilon, weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def rmsprop_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, decay: HParam,
                 momentum: HParam, epsilon: HParam, centered: bool) -> GradientTransformation:
    """``nn.RMSProp``'s rule: :func:`funcopt.optimizers.rmsprop.rmsprop_mindspore`."""
    return _pipeline(lambda wd: rmsprop_mindspore(lr=lr, alpha=decay, eps=epsilon, weight_decay=wd,
                                                  momentum=momentum, centered=centered),
                     weight_decay, grad_centralization, loss_scale, "pre")


def rprop_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
               etas: tuple[HParam, HParam], step_sizes: tuple[HParam, HParam]) -> GradientTransformation:
    """``nn.Rprop``'s rule: :func:`funcopt.rprop`, the decay added to the gradient first."""
    return _pipeline(lambda wd: F.rprop(lr=lr, etas=etas, step_sizes=step_sizes),
                     weight_decay, grad_centralization, loss_scale, "pre_only")


def asgd_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, lambd: HParam,
              alpha: HParam, t0: HParam) -> GradientTransformation:
    """``nn.ASGD``'s rule: :func:`funcopt.asgd`."""
    return _pipeline(lambda wd: F.asgd(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def ftrl_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
              initial_accum: HParam, lr_power: HParam, l1: HParam, l2: HParam) -> GradientTransformation:
    """``nn.FTRL``'s rule: :func:`funcopt.ftrl`."""
    return _pipeline(lambda wd: F.ftrl(lr=lr, initial_accum=initial_accum, lr_power=lr_power, l1=l1, l2=l2,
                                       weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def proximal_adagrad_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float,
                          accum: HParam, l1: HParam, l2: HParam) -> GradientTransformation:
    """``nn.ProximalAdagrad``'s rule: :func:`funcopt.proximal_adagrad`."""
    return _pipeline(lambda wd: F.proximal_adagrad(lr=lr, accum=accum, l1=l1, l2=l2, weight_decay=wd),
                     weight_decay, grad_centralization, loss_scale, "pre")


def lamb_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, beta1: HParam,
              beta2: HParam, eps: HParam) -> GradientTransformation:
    """``nn.Lamb``'s rule: :func:`funcopt.lamb` with ``always_adapt=True``, the decay inside the rule."""
    return _pipeline(lambda wd: F.lamb(lr=lr, betas=(beta1, beta2), eps=eps, bias_correction=True,
                                       weight_decay=wd, always_adapt=True),
                     weight_decay, grad_centralization, loss_scale, "rule")


def lars_rule(lr: HParam, weight_decay: HParam, grad_centralization: bool, loss_scale: float, momentum: HParam,
              use_nesterov: bool, lars: bool, coefficient: HParam, epsilon: HParam,
              use_clip: bool) -> GradientTransformation:
    """``nn.LARS`` over ``nn.Momentum``: :func:`funcopt.lars` where ``lars``, else :func:`funcopt.momentum`.

    The parameters LARS leaves out (``lars=False``) take the momentum step on
    the raw gradient, without decay.
    """
    del grad_centralization
    if not lars:
        # parameters LARS leaves out take the momentum step on the raw gradient, without decay
        return _pipeline(lambda wd: F.momentum(lr=lr, momentum=momentum, use_nesterov=use_nesterov),
                         0.0, False, loss_scale, "pre")
    return _pipeline(lambda wd: F.lars(lr=lr, momentum=momentum, weight_decay=wd, trust_coefficient=coefficient,
                                       eps=epsilon, nesterov=use_nesterov, use_clip=use_clip),
                     weight_decay, False, loss_scale, "rule")
