"""MindSpore's ``nn.Optimizer`` base class over a funcopt stateful optimizer.

:class:`Optimizer` parses MindSpore's arguments (learning-rate forms, group
dicts, ``order_params``), keeps MindSpore's attributes and helpers
(``get_lr``, ``decay_weight``, ``scale_grad``...), and holds the parameters
and state in a :class:`funcopt.optim.Optimizer` built from one of the rule
factories of :mod:`funcopt.compat.mindspore.rules`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from funcopt._src.base import GradientTransformation, PyTree
from funcopt._src.hparams import evaluate_hparams
from funcopt.compat.mindspore.checks import check_positive_float, is_array
from funcopt.compat.mindspore.rules import (
    GroupSpec,
    LearningRate,
    param_leaves,
    preprocess_lr,
    preprocess_weight_decay,
    resolve_groups,
    split_parameters,
    unscale,
)
from funcopt.optim import guard
from funcopt.optim.optimizer import IncompatibleKeys
from funcopt.optim.optimizer import Optimizer as _Engine
from funcopt.transforms.masking import MaskedNode
from funcopt.transforms.weight_decay import add_decayed_weights, centralize, mindspore_decay_filter

__all__ = ["Optimizer"]


# One funcopt.optim.Optimizer subclass per (rule factory, elementwise): the engine reads its rule from a
# class attribute, and optimizers built from the same rule share that class instead of making one each.
_ENGINES: dict[Any, type] = {}


def _engine_class(factory: Callable[..., GradientTransformation], elementwise: bool) -> type:
    key = (factory, elementwise)
    cls = _ENGINES.get(key)
    if cls is None:
        cls = type(f"_Engine_{factory.__name__.strip('_')}", (_Engine,),
                   {"factory": staticmethod(factory), "elementwise": elementwise, "state_has_step": True,
                    "__module__": __name__})
        _ENGINES[key] = cls
    return cls


class Optimizer:
    r"""``mindspore.nn.Optimizer(learning_rate, parameters, weight_decay=0.0, loss_scale=1.0)``.

    The base of the MindSpore-named optimizers, and of custom ones: a subclass
    defines ``construct(self, gradients)`` from the helpers MindSpore gives
    (:meth:`decay_weight`, :meth:`gradients_centralization`,
    :meth:`scale_grad`, :meth:`get_lr`), assigns the new values to
    :attr:`parameters`, and returns its result. Calling the optimizer runs
    ``construct`` and counts the step (:attr:`global_step`).

    ``learning_rate``: a number (>= 0); a 0-d array; a 1-D array or any
    iterable of numbers, step :math:`i` using element :math:`i` (the last one
    after the end); a :class:`LearningRateSchedule` or any jittable function of
    the step. ``parameters``: a pytree of arrays, or a list of group dicts
    with keys ``params`` (a pytree), ``lr``, ``weight_decay``,
    ``grad_centralization`` and, in a dict of its own, ``order_params`` (a
    pytree holding every parameter: its structure and order become those of
    :attr:`parameters` and of the gradients). Without groups the weight decay
    skips parameters whose names contain ``'beta'`` or ``'gamma'``.

    Raises:
        TypeError: ``learning_rate`` of another type; an element of
            ``parameters`` neither an array nor a dict; ``loss_scale`` not a
            float; ``weight_decay`` neither a number nor a schedule.
        ValueError: ``parameters`` None or empty; a negative learning rate or
            ``weight_decay``; ``loss_scale`` <= 0; a learning-rate array with
            more than one dimension; 1-D group learning rates of different
            lengths.
        KeyError: a group key MindSpore does not parse.
        RuntimeError: a parameter in two groups.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from funcopt.compat import mindspore as ms
        >>> class PlainSGD(ms.Optimizer):
        ...     def construct(self, gradients):
        ...         gradients = self.scale_grad(self.decay_weight(gradients))
        ...         lr = self.get_lr()
        ...         self.parameters = jax.tree.map(lambda p, g: p - lr * g, self.parameters, gradients)
        ...         return True
        >>> opt = PlainSGD(0.5, {'w': jnp.array([1.0, 2.0])}, weight_decay=0.5)
        >>> opt({'w': jnp.array([1.0, 1.0])})
        True
        >>> opt.parameters['w']
        Array([0.25, 1.  ], dtype=float32)
    """

    _centralizes = True  # whether construct() centralizes gradients (AdamWeightDecay's does not)
    _decay_filter = True  # whether the 'beta' / 'gamma' filter applies without groups (FTRL: no)
    _rule_decays_all = False  # whether the rule decays every parameter whatever the flags (SGD's kernel)

    def __init__(self, learning_rate: Any, parameters: Any, weight_decay: Any = 0.0, loss_scale: float = 1.0):
        owner = self.cls_name
        self._engine: _Engine | None = None
        self._global_step = 0
        groups_given, parameters = split_parameters(parameters)
        if isinstance(loss_scale, int) and not isinstance(loss_scale, bool):
            loss_scale = float(loss_scale)
        check_positive_float(loss_scale, "loss_scale", owner)
        self.loss_scale = loss_scale
        default_lr = preprocess_lr(learning_rate, owner)
        self.is_group = groups_given is not None
        self.is_group_lr = False
        self.is_group_params_ordered = False
        if self.is_group:
            resolved = resolve_groups(groups_given, default_lr, weight_decay, owner)
            tree, names, groups, spec_of = resolved.tree, resolved.names, resolved.specs, resolved.spec_of
            self.is_group_lr, self.is_group_params_ordered = resolved.group_lr, resolved.ordered
            self._default_weight_decay = preprocess_weight_decay(weight_decay, owner)
        else:
            names, leaves = param_leaves(parameters, "parameters")
            self._default_weight_decay = preprocess_weight_decay(weight_decay, owner)
            tree = parameters
            groups = [GroupSpec(leaves, default_lr, self._default_weight_decay, False)]
            spec_of = [0] * len(leaves)
        self._default_lr = default_lr
        self._tree_def = jax.tree.structure(tree)
        self._names = names
        self._groups = groups
        self._spec_of = spec_of
        self._params_value = tree
        self.dynamic_lr = default_lr.dynamic or any(g.lr.dynamic for g in groups)
        self.dynamic_weight_decay = any(callable(g.weight_decay) for g in groups)
        self.grad_centralization = any(g.grad_centralization for g in groups)

    @property
    def cls_name(self) -> str:
        """The class name, used in error messages as MindSpore does."""
        return type(self).__name__

    def _decay_flag(self, k: int) -> bool:
        """MindSpore's ``decay_flags`` for parameter ``k`` (in leaf order): whether ``decay_weight`` decays it."""
        wd = self._groups[self._spec_of[k]].weight_decay
        if not callable(wd) and wd <= 0:
            return False
        return self.is_group or not self._decay_filter or mindspore_decay_filter(self._names[k])

    def _decays(self, k: int) -> bool:
        """Whether the update rule decays parameter ``k`` (SGD's kernel decays every parameter)."""
        wd = self._groups[self._spec_of[k]].weight_decay
        return self._decay_flag(k) or (self._rule_decays_all and (callable(wd) or wd > 0))

    # ------------------------------------------------------------------ the engine

    def _build(self, factory: Callable[..., GradientTransformation], *, elementwise: bool = True,
               split: Callable[[int], Any] | None = None, **rule_kwargs: Any) -> None:
        """Hold parameters and state in a funcopt stateful optimizer running ``factory``'s rule.

        Parameters with the same learning rate, weight decay and centralization
        (and the same ``split(k)``) share a group; groups are cuts of one pytree,
        so :attr:`parameters` keeps the structure given.
        """
        keys = []
        for k in range(len(self._names)):
            spec = self._groups[self._spec_of[k]]
            decay = spec.weight_decay if self._decays(k) else 0.0
            gc = spec.grad_centralization and self._centralizes
            keys.append((self._spec_of[k], decay if callable(decay) else float(decay), gc,
                         () if split is None else tuple(sorted(split(k).items()))))
        distinct = list(dict.fromkeys(keys))
        tree = self._params_value
        leaves = jax.tree.leaves(tree)
        engine_groups = []
        for key in distinct:
            spec_index, decay, gc, extra = key
            spec = self._groups[spec_index]
            if len(distinct) == 1:
                cut = tree
            else:
                cut = self._tree_def.unflatten([leaf if keys[i] == key else MaskedNode()
                                                for i, leaf in enumerate(leaves)])
            group = {"params": cut, "lr": spec.lr.hparam, "weight_decay": decay, "grad_centralization": gc}
            group.update(dict(extra))
            engine_groups.append(group)
        any_gc = any(k[2] for k in keys)
        engine_cls = _engine_class(factory, elementwise and not any_gc)
        first = engine_groups[0]
        self._engine = engine_cls(engine_groups, lr=first["lr"], weight_decay=first["weight_decay"],
                                  grad_centralization=first["grad_centralization"], loss_scale=self.loss_scale,
                                  **rule_kwargs, **dict(distinct[0][3]))

    # ------------------------------------------------------------------ values

    @property
    def parameters(self) -> PyTree:
        """The current parameter values, in the structure given (or of ``order_params``)."""
        if self._engine is not None:
            return self._engine.params
        return self._params_value

    @parameters.setter
    def parameters(self, tree: PyTree) -> None:
        guard.check_host_call(self, "parameters = ...", tree)
        if jax.tree.structure(tree) != self._tree_def:
            raise ValueError(f"parameters of structure {jax.tree.structure(tree)} do not match the optimizer's "
                             f"{self._tree_def}")
        if self._engine is not None:
            self._engine.params = tree
        else:
            self._params_value = tree

    @property
    def global_step(self) -> int:
        """The number of updates applied (MindSpore's ``global_step``)."""
        return self._global_step

    @property
    def learning_rate(self) -> Any:
        """The ``learning_rate`` given, as :meth:`get_lr_parameter` returns it."""
        return self._default_lr.raw

    @property
    def state(self) -> dict[str, dict[str, jax.Array]]:
        """Per-parameter optimizer state by parameter name (torch's state names)."""
        return {} if self._engine is None else self._engine.state

    def state_dict(self) -> dict[str, Any]:
        """The optimizer state (funcopt's / torch's format), for checkpoints."""
        if self._engine is None:
            return {"state": {}, "param_groups": [], "global_step": self._global_step}
        return {**self._engine.state_dict(), "global_step": self._global_step}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Load :meth:`state_dict`'s result; ``strict`` as :meth:`funcopt.optim.Optimizer.load_state_dict`."""
        guard.check_host_call(self, "load_state_dict", state_dict)
        if self._engine is not None:
            keys = self._engine.load_state_dict({k: v for k, v in state_dict.items() if k != "global_step"},
                                                strict=strict)
            self._global_step = self._engine.step_count(0)
            return keys
        self._global_step = int(state_dict.get("global_step", 0))
        return IncompatibleKeys([], [], [])

    # ------------------------------------------------------------------ MindSpore's helpers

    def _value_at(self, hparam: Any) -> jax.Array:
        # a number or a schedule at the coming step, evaluated as the functional optimizers evaluate it
        step = jnp.asarray(self._global_step, jnp.int32)
        return evaluate_hparams({"value": hparam}, step)["value"].reshape(())

    def _lr_at(self, lr: LearningRate) -> jax.Array:
        return self._value_at(lr.hparam)

    def _wd_at(self, wd: Any) -> jax.Array:
        return self._value_at(wd) * self.loss_scale

    def get_lr(self) -> Any:
        """The learning rate of the coming update: one 0-d array, or a tuple with one per parameter for group rates.

        Unlike MindSpore's, calling it does not advance :attr:`global_step`; the
        optimizer counts its own steps.

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.Momentum({'w': jnp.zeros(2)}, learning_rate=[0.1, 0.05, 0.01], momentum=0.9)
            >>> lrs = []
            >>> for _ in range(4):
            ...     lrs.append(round(float(opt.get_lr()), 6))
            ...     _ = opt({'w': jnp.ones(2)})
            >>> lrs
            [0.1, 0.05, 0.01, 0.01]
        """
        if self.is_group_lr:
            return tuple(self._lr_at(self._groups[s].lr) for s in self._spec_of)
        return self._lr_at(self._default_lr)

    def get_lr_parameter(self, param: Any) -> Any:
        """The learning rate of parameter(s) ``param``: a name, an object with ``.name``, or a list of them.

        Returns what MindSpore returns for each: the fixed rate as a 0-d array,
        the 1-D array of per-step rates, or the schedule.

        Raises:
            TypeError: ``param`` is not a parameter or a list.
            ValueError: a parameter the optimizer does not hold.

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> net = {'conv': {'weight': jnp.ones((16, 16, 3, 3))}, 'fc': {'weight': jnp.ones((10, 16))}}
            >>> conv_params = {'conv': net['conv']}
            >>> no_conv_params = {'fc': net['fc']}
            >>> group_params = [{'params': conv_params, 'lr': 0.05}, {'params': no_conv_params, 'lr': 0.01}]
            >>> optim = ms.Momentum(group_params, learning_rate=0.1, momentum=0.9, weight_decay=0.0)
            >>> conv_lr = optim.get_lr_parameter(['conv.weight'])
            >>> print(conv_lr[0])
            0.05
        """
        if isinstance(param, list):
            items = param
        elif isinstance(param, str) or hasattr(param, "name"):
            items = [param]
        else:
            raise TypeError(f"For 'get_lr_parameter', the 'param' must be 'Parameter' or 'list' type, but got "
                            f"{type(param)}.")
        out = []
        for p in items:
            name = p if isinstance(p, str) else getattr(p, "name", None)
            if not isinstance(name, str):
                raise TypeError(f"For '{self.cls_name}', a parameter is given by its name or an object with a "
                                f"'name', got {type(p)}.")
            matches = [k for k, n in enumerate(self._names) if n == name]
            if not matches:
                raise ValueError(f"For 'get_lr_parameter', the parameter {name} is not in optimizer, please check "
                                 "whether the argument 'param' is correct.")
            if len(matches) > 1:
                raise ValueError(f"For 'get_lr_parameter', the name {name} is shared by several parameters "
                                 "(groups with the same names); use 'order_params' to name them by their paths.")
            lr = self._groups[self._spec_of[matches[0]]].lr if self.is_group_lr else self._default_lr
            out.append(lr.raw)
        return out if isinstance(param, list) else out[0]

    def get_weight_decay(self) -> Any:
        """The weight decay of the coming update times ``loss_scale``, as MindSpore holds it.

        One 0-d array without groups, else a tuple with one per parameter.

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.Momentum({'w': jnp.zeros(2)}, 0.1, 0.9, weight_decay=0.01, loss_scale=128.0)
            >>> print(opt.get_weight_decay())
            1.28
        """
        if self.is_group:
            return tuple(self._wd_at(self._groups[s].weight_decay) for s in self._spec_of)
        return self._wd_at(self._groups[0].weight_decay)

    def _as_tree(self, gradients: Any) -> PyTree:
        if jax.tree.structure(gradients) == self._tree_def:
            return gradients
        if isinstance(gradients, (tuple, list)) and len(gradients) == len(self._names) \
                and all(is_array(g) for g in gradients):
            return self._tree_def.unflatten(list(gradients))
        raise ValueError(f"For '{self.cls_name}', the gradients must have the structure of the parameters "
                         f"{self._tree_def}, or be a tuple of {len(self._names)} arrays in the parameters' order.")

    def _leaf_mask(self, keep: Callable[[int], bool]) -> PyTree:
        return self._tree_def.unflatten([keep(k) for k in range(len(self._names))])

    def decay_weight(self, gradients: Any) -> PyTree:
        r"""MindSpore's ``decay_weight``: :math:`g \leftarrow g + \lambda s \theta` on the decayed parameters.

        :math:`\lambda s` is :meth:`get_weight_decay` (MindSpore decays the
        loss-scaled gradients); the decayed parameters are MindSpore's
        ``decay_flags``.

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.SGD({'fc': {'weight': jnp.ones(2)}, 'bn': {'gamma': jnp.ones(2)}}, weight_decay=0.1)
            >>> g = opt.decay_weight({'fc': {'weight': jnp.zeros(2)}, 'bn': {'gamma': jnp.zeros(2)}})
            >>> g['fc']['weight'], g['bn']['gamma']
            (Array([0.1, 0.1], dtype=float32), Array([0., 0.], dtype=float32))
        """
        gradients = self._as_tree(gradients)
        params = self.parameters
        decays = [k for k in range(len(self._names)) if self._decay_flag(k)]
        for s, spec in enumerate(self._groups):
            members = [k for k in decays if self._spec_of[k] == s]
            if not members:
                continue
            tx = add_decayed_weights(self._wd_at(spec.weight_decay), mask=self._leaf_mask(members.__contains__))
            gradients = tx.update(gradients, tx.init(params), params)[0]
        return gradients

    def gradients_centralization(self, gradients: Any) -> PyTree:
        """MindSpore's ``gradients_centralization``: centralize the gradients of groups that ask for it.

        See :func:`funcopt.centralize` (with MindSpore's skip of parameters whose
        second dimension is not a multiple of 16).

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.SGD([{'params': {'w': jnp.ones((2, 16))}, 'grad_centralization': True}])
            >>> g = jnp.arange(32.0).reshape(2, 16)
            >>> opt.gradients_centralization({'w': g})['w'].sum(axis=1)
            Array([0., 0.], dtype=float32)
        """
        gradients = self._as_tree(gradients)
        if not self.is_group:
            return gradients
        mask = self._leaf_mask(lambda k: self._groups[self._spec_of[k]].grad_centralization)
        tx = centralize(mask=mask, channel_multiple=16)
        return tx.update(gradients, tx.init(gradients))[0]

    def scale_grad(self, gradients: Any) -> PyTree:
        """MindSpore's ``scale_grad``: the gradients divided by ``loss_scale`` (multiplied by its reciprocal).

        Example:
            >>> import jax.numpy as jnp
            >>> from funcopt.compat import mindspore as ms
            >>> opt = ms.SGD({'w': jnp.ones(2)}, loss_scale=1024.0)
            >>> opt.scale_grad({'w': jnp.array([2048.0, 512.0])})['w']
            Array([2. , 0.5], dtype=float32)
        """
        gradients = self._as_tree(gradients)
        if self.loss_scale == 1.0:
            return gradients
        return unscale(self.loss_scale).update(gradients, None)[0]

    # ------------------------------------------------------------------ stepping

    def construct(self, gradients: PyTree) -> Any:
        """The update; built-in optimizers run their funcopt rule, custom subclasses override this."""
        if self._engine is None:
            raise NotImplementedError(f"{self.cls_name} must define construct(self, gradients)")
        self._engine(gradients)
        return tuple(True for _ in self._names)

    def __call__(self, gradients: Any) -> Any:
        """Apply ``gradients`` (the structure of :attr:`parameters`, or a flat tuple) and count the step.

        Returns:
            What ``construct`` returns: for the built-in optimizers, MindSpore's
            success flags, a tuple of ``True`` with one entry per parameter.
        """
        guard.check_host_call(self, "__call__", gradients)
        out = self.construct(self._as_tree(gradients))
        self._global_step += 1
        return out

    def __repr__(self) -> str:
        return f"{self.cls_name}<{len(self._names)} parameters, global_step={self._global_step}>"
