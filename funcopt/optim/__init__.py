"""The stateful, torch.optim-shaped API: ``fo.optim.SGD(params, lr=...)`` and friends."""

from funcopt.optim import lr_scheduler, swa_utils
from funcopt.optim.clip_grad import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm
from funcopt.optim.groups import param_groups
from funcopt.optim.interop import to_torch
from funcopt.optim.lbfgs import LBFGS

# IncompatibleKeys is fo.IncompatibleKeys (documented there), reachable here as torch users look for it
from funcopt.optim.optimizer import IncompatibleKeys, Optimizer, RemovableHandle  # noqa: F401
from funcopt.optim.optimizers import (
    ASGD,
    FTRL,
    LAMB,
    LARS,
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Lion,
    Momentum,
    Muon,
    NAdam,
    ProximalAdagrad,
    RAdam,
    RMSprop,
    Rprop,
    ScheduleFreeAdamW,
)

__all__ = [
    "ASGD",
    "FTRL",
    "LAMB",
    "LARS",
    "LBFGS",
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Momentum",
    "Muon",
    "NAdam",
    "Optimizer",
    "ProximalAdagrad",
    "RAdam",
    "RMSprop",
    "RemovableHandle",
    "Rprop",
    "ScheduleFreeAdamW",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "lr_scheduler",
    "param_groups",
    "swa_utils",
    "to_torch",
]
