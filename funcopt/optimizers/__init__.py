"""Functional optimizers with torch.optim's names, keywords and defaults.

torch.optim.SparseAdam has no counterpart: it exists for torch's sparse gradient
tensors, and JAX gradients are dense, so :func:`funcopt.adam` is the replacement.
"""

from funcopt.optimizers.adadelta import adadelta
from funcopt.optimizers.adafactor import adafactor
from funcopt.optimizers.adagrad import adagrad
from funcopt.optimizers.adam import adam, adamw
from funcopt.optimizers.adamax import adamax
from funcopt.optimizers.asgd import asgd
from funcopt.optimizers.ftrl import ftrl
from funcopt.optimizers.lamb import lamb
from funcopt.optimizers.lars import lars
from funcopt.optimizers.lbfgs import lbfgs
from funcopt.optimizers.lion import lion
from funcopt.optimizers.momentum import momentum
from funcopt.optimizers.muon import muon
from funcopt.optimizers.nadam import nadam
from funcopt.optimizers.proximal_adagrad import proximal_adagrad
from funcopt.optimizers.radam import radam
from funcopt.optimizers.rmsprop import rmsprop
from funcopt.optimizers.rprop import rprop
from funcopt.optimizers.schedule_free import ScheduleFreeState, schedule_free_adamw, schedule_free_eval_params
from funcopt.optimizers.sgd import sgd

__all__ = [
    "ScheduleFreeState",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "ftrl",
    "lamb",
    "lars",
    "lbfgs",
    "lion",
    "momentum",
    "muon",
    "nadam",
    "proximal_adagrad",
    "radam",
    "rmsprop",
    "rprop",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "sgd",
]
