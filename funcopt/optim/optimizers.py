"""The stateful optimizer classes: each binds one functional factory, nothing more.

Constructor signatures are ``(params, <the factory's keywords>, <torch-only options>)``;
the torch-only options (``foreach``, ``fused``, ``capturable``) are accepted so torch code
runs unchanged, and have no effect, except ``fused=True`` on :class:`Adam`, :class:`AdamW` and
:class:`SGD` (with momentum), which runs a native one-pass kernel over each packed CPU buffer.
"""

from __future__ import annotations

import jax
import numpy as np

import funcopt.optimizers as F
from funcopt._src.state_dtype import STATE_DTYPE_ARGS
from funcopt.optim import _fused
from funcopt.optim.optimizer import Optimizer

_FOREACH_FUSED = {"foreach": None, "differentiable": False, "fused": None}
# funcopt's keyword-only state-dtype options (see funcopt.adam), after torch's own
_STATE_DTYPE = "".join(f", {name}" for name in STATE_DTYPE_ARGS)


def _check_foreach_arrays(hp) -> None:
    """torch.optim.Adam / AdamW refuse array hyperparameters with ``foreach=True`` unless capturable."""
    if not hp.get("foreach") or hp.get("capturable"):
        return
    if isinstance(hp.get("lr"), (jax.Array, np.ndarray)):
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    for i, beta in enumerate(hp.get("betas") or ()):
        if isinstance(beta, (jax.Array, np.ndarray)):
            raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
_CAPTURABLE = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}


class SGD(Optimizer):
    """torch.optim.SGD over :func:`funcopt.sgd`; state ``momentum_buffer`` (zeros from construction).

    ``fused=True`` with momentum runs each packed float32 / float64 buffer on the CPU through one
    native pass (5 memory accesses per parameter, as torch's fused kernel, instead of the 6 of
    XLA's two loops); the same update in the same order, each operation rounded once (XLA's step
    fuses multiply-adds, so the two agree to float rounding). The kernel is built as :class:`Adam`'s is;
    without a compiler ``fused=True`` warns and keeps XLA's step. Without momentum XLA's step is
    one loop already, and schedules, half precision, state dtypes and sharded groups keep it too.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.SGD([jnp.ones(2), jnp.ones(3)], lr=0.1, momentum=0.9)
        >>> opt.state_dict()['state'][1]
        {'momentum_buffer': array([0., 0., 0.], dtype=float32)}
    """

    factory = staticmethod(F.sgd)
    torch_options = _FOREACH_FUSED
    state_has_step = False
    fused_step = staticmethod(_fused.sgd_step)


class Adam(Optimizer):
    """torch.optim.Adam over :func:`funcopt.adam`; state ``step``, ``exp_avg``, ``exp_avg_sq`` (, ``max_exp_avg_sq``).

    ``fused=True`` runs each packed float32 / float64 buffer on the CPU through one native pass
    (7 memory accesses per parameter, as torch's fused kernel, instead of the 10 of XLA's three
    loops); same update. The kernel is compiled once per machine with the system's C++ compiler,
    and without one ``fused=True`` warns and keeps XLA's step. ``amsgrad``, schedules, half
    precision and sharded groups keep XLA's step.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.Adam({'w': jnp.ones(2)}, lr=0.1)
        >>> sorted(opt.state_dict()['state'][0])
        ['exp_avg', 'exp_avg_sq', 'step']
    """

    factory = staticmethod(F.adam)
    signature = (
        "lr, betas, eps, weight_decay, amsgrad, *"
        ", foreach, maximize, capturable, differentiable, fused, decoupled_weight_decay" + _STATE_DTYPE
    )
    torch_options = _CAPTURABLE
    fused_step = staticmethod(_fused.adam_step)

    def _check_hparams(self, hp):
        _check_foreach_arrays(hp)
        return super()._check_hparams(hp)


class AdamW(Optimizer):
    """torch.optim.AdamW over :func:`funcopt.adamw` (decoupled weight decay, default 0.01).

    ``fused=True``: as for :class:`Adam`, one native pass per packed CPU buffer.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.AdamW({'w': jnp.ones(2)}).param_groups[0]['weight_decay']
        0.01
    """

    factory = staticmethod(F.adamw)
    torch_options = _CAPTURABLE
    group_constants = {"decoupled_weight_decay": True}
    fused_step = staticmethod(_fused.adamw_step)

    def _check_hparams(self, hp):
        _check_foreach_arrays(hp)
        return super()._check_hparams(hp)


_FOREACH = {"foreach": None}
_CAPTURABLE_NO_FUSED = {"foreach": None, "capturable": False, "differentiable": False}


class Adagrad(Optimizer):
    """torch.optim.Adagrad over :func:`funcopt.adagrad`; state ``step``, ``sum``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.Adagrad({'w': jnp.ones(2)}, lr=0.1, initial_accumulator_value=0.5)
        >>> opt.state_dict()['state'][0]['sum']
        array([0.5, 0.5], dtype=float32)
    """

    factory = staticmethod(F.adagrad)
    signature = (
        "lr, lr_decay, weight_decay, initial_accumulator_value, eps, foreach, *"
        ", maximize, differentiable, fused"
    )
    torch_options = _FOREACH_FUSED


class Adadelta(Optimizer):
    """torch.optim.Adadelta over :func:`funcopt.adadelta`; state ``step``, ``square_avg``, ``acc_delta``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> sorted(fo.optim.Adadelta({'w': jnp.ones(2)}).state_dict()['state'][0])
        ['acc_delta', 'square_avg', 'step']
    """

    factory = staticmethod(F.adadelta)
    signature = "lr, rho, eps, weight_decay, foreach, *, capturable, maximize, differentiable"
    torch_options = _CAPTURABLE_NO_FUSED


class Adamax(Optimizer):
    """torch.optim.Adamax over :func:`funcopt.adamax`; state ``step``, ``exp_avg``, ``exp_inf``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.Adamax({'w': jnp.ones(2)}).param_groups[0]['lr']
        0.002
    """

    factory = staticmethod(F.adamax)
    signature = "lr, betas, eps, weight_decay, foreach, *, maximize, differentiable, capturable" + _STATE_DTYPE
    torch_options = _CAPTURABLE_NO_FUSED


class ASGD(Optimizer):
    """torch.optim.ASGD over :func:`funcopt.asgd`; state ``step``, ``eta``, ``mu``, ``ax``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> float(fo.optim.ASGD({'w': jnp.ones(2)}, lr=0.05).state_dict()['state'][0]['eta'])
        0.05
    """

    factory = staticmethod(F.asgd)
    signature = "lr, lambd, alpha, t0, weight_decay, foreach, maximize, differentiable, capturable"
    torch_options = _CAPTURABLE_NO_FUSED


class NAdam(Optimizer):
    """torch.optim.NAdam over :func:`funcopt.nadam`; state ``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.NAdam({'w': jnp.ones(2)}).param_groups[0]['momentum_decay']
        0.004
    """

    factory = staticmethod(F.nadam)
    signature = (
        "lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, *"
        ", foreach, maximize, capturable, differentiable" + _STATE_DTYPE
    )
    torch_options = _CAPTURABLE_NO_FUSED


class RAdam(Optimizer):
    """torch.optim.RAdam over :func:`funcopt.radam`; state ``step``, ``exp_avg``, ``exp_avg_sq``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.RAdam({'w': jnp.ones(2)}, decoupled_weight_decay=True).param_groups[0]['decoupled_weight_decay']
        True
    """

    factory = staticmethod(F.radam)
    signature = ("lr, betas, eps, weight_decay, decoupled_weight_decay, *, foreach, maximize, capturable, "
                 "differentiable" + _STATE_DTYPE)
    torch_options = _CAPTURABLE_NO_FUSED


class RMSprop(Optimizer):
    """torch.optim.RMSprop over :func:`funcopt.rmsprop`; state ``step``, ``square_avg`` (, ``momentum_buffer``,
    ``grad_avg``).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> sorted(fo.optim.RMSprop({'w': jnp.ones(2)}, momentum=0.9, centered=True).state_dict()['state'][0])
        ['grad_avg', 'momentum_buffer', 'square_avg', 'step']
    """

    factory = staticmethod(F.rmsprop)
    signature = "lr, alpha, eps, weight_decay, momentum, centered, capturable, foreach, maximize, differentiable"
    torch_options = _CAPTURABLE_NO_FUSED


class Rprop(Optimizer):
    """torch.optim.Rprop over :func:`funcopt.rprop`; state ``step``, ``prev``, ``step_size``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.Rprop({'w': jnp.ones(2)}, lr=0.1).state_dict()['state'][0]['step_size']
        array([0.1, 0.1], dtype=float32)
    """

    factory = staticmethod(F.rprop)
    signature = "lr, etas, step_sizes, *, capturable, foreach, maximize, differentiable"
    torch_options = _CAPTURABLE_NO_FUSED


class Adafactor(Optimizer):
    """torch.optim.Adafactor over :func:`funcopt.adafactor`; state ``step`` and ``row_var`` / ``col_var``
    (2-D and up) or ``variance``. Stored per tensor: the moments are factored per matrix.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> sd = fo.optim.Adafactor({'w': jnp.ones((2, 3))}).state_dict()
        >>> sd['state'][0]['row_var'].shape, sd['state'][0]['col_var'].shape
        ((2, 1), (1, 3))
    """

    factory = staticmethod(F.adafactor)
    signature = "lr, beta2_decay, eps, d, weight_decay, *, foreach, maximize"
    torch_options = _FOREACH
    elementwise = False


class Muon(Optimizer):
    """torch.optim.Muon over :func:`funcopt.muon` (2-D parameters only); state ``momentum_buffer``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.Muon({'w': jnp.eye(3)}, lr=0.02)
        >>> opt({'w': jnp.ones((3, 3))}).params['w'].shape
        (3, 3)
    """

    factory = staticmethod(F.muon)
    state_has_step = False
    elementwise = False


class LAMB(Optimizer):
    """MegEngine's LAMB over :func:`funcopt.lamb`; per-tensor trust ratios; state ``step``, ``exp_avg``,
    ``exp_avg_sq``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.LAMB({'w': jnp.ones(2)}, lr=1e-3, weight_decay=0.01).param_groups[0]['always_adapt']
        False
    """

    factory = staticmethod(F.lamb)
    elementwise = False


class LARS(Optimizer):
    """LARS over :func:`funcopt.lars` (MindSpore's rule); per-tensor trust ratios; state ``momentum_buffer``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.LARS({'w': jnp.ones(2)}, lr=0.1).param_groups[0]['trust_coefficient']
        0.001
    """

    factory = staticmethod(F.lars)
    state_has_step = False
    elementwise = False


class Lion(Optimizer):
    """Lion over :func:`funcopt.lion`; state ``step``, ``exp_avg``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.Lion({'w': jnp.ones(2)}, lr=0.1)({'w': jnp.ones(2)}).params['w']
        Array([0.9, 0.9], dtype=float32)
    """

    factory = staticmethod(F.lion)


class Momentum(Optimizer):
    """MindSpore's Momentum over :func:`funcopt.momentum`; state ``momentum_buffer`` (MindSpore's ``moments``).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.Momentum({'w': jnp.ones(2)}, lr=0.1, momentum=0.9)({'w': jnp.ones(2)}).params['w']
        Array([0.9, 0.9], dtype=float32)
    """

    factory = staticmethod(F.momentum)
    state_has_step = False


class FTRL(Optimizer):
    """FTRL-proximal over :func:`funcopt.ftrl` (MindSpore / TensorFlow rule); state ``accum``, ``linear``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> fo.optim.FTRL({'w': jnp.ones(2)}).state_dict()['state'][0]['accum']
        array([0.1, 0.1], dtype=float32)
    """

    factory = staticmethod(F.ftrl)
    state_has_step = False


class ProximalAdagrad(Optimizer):
    """ProximalAdagrad over :func:`funcopt.proximal_adagrad` (MindSpore / TensorFlow rule); state ``accum``.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> sorted(fo.optim.ProximalAdagrad({'w': jnp.ones(2)}).state_dict()['state'][0])
        ['accum']
    """

    factory = staticmethod(F.proximal_adagrad)
    state_has_step = False


class ScheduleFreeAdamW(Optimizer):
    """Schedule-free AdamW over :func:`funcopt.schedule_free_adamw`; state ``step``, ``z``, ``exp_avg_sq``.

    ``opt.params`` is the training sequence y; evaluate at :meth:`eval_params` (the averaged
    sequence x, which :func:`funcopt.schedule_free_eval_params` computes from each group's state).

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.ScheduleFreeAdamW({'w': jnp.ones(2)}, lr=0.1)
        >>> opt({'w': jnp.ones(2)}).eval_params()['w'].shape
        (2,)
    """

    factory = staticmethod(F.schedule_free_adamw)

    def eval_params(self):
        """The evaluation parameters x (the averaged sequence), in the structure of :attr:`params`."""
        storage = []
        for g in self._groups:
            storage.append(F.schedule_free_eval_params(g.state, g.params))
        return self._tree_of(storage)


__all__ = ["ASGD", "FTRL", "LAMB", "LARS", "SGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax",
           "Lion", "Momentum", "Muon", "NAdam", "ProximalAdagrad", "RAdam", "RMSprop", "Rprop", "ScheduleFreeAdamW"]
