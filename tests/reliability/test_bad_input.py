"""Invalid calls and the errors they raise: one table, each row checked for exception type AND message.

Every row names the funcopt call, the exception type, and the message. Where torch has
the same misuse, the row also holds the torch call, and the test runs it:

* ``torch_does="same"`` (no ``message`` given): the expectation IS torch's exception,
  taken from torch at test time; funcopt must raise the same type with the same text.
* ``torch_does="type"``: torch raises the same type with other words (often Python's own
  comparison error); funcopt's message is checked against the row's ``message``.
* ``torch_does="accepts"``: torch lets the call through (and fails later, or silently does
  something else); funcopt rejects it up front, and ``why`` says why.
* ``torch_does="raises <Name>"``: torch raises another type (named); ``why`` says why.

Messages are checked exactly (``message``) or by a full regular-expression match
(``pattern``) where they hold a temporary path or an object's repr.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import funcopt as fo
from funcopt._src.state_dtype import STATE_DTYPE_ARGS

O = fo.optim
S = fo.optim.lr_scheduler
TO = torch.optim
TS = torch.optim.lr_scheduler


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    call: Callable[[], Any]
    exc: type[BaseException]
    message: str | None = None  # exact text; None with torch_does="same": torch's text
    pattern: str | None = None  # a regular expression the whole message must match
    torch: Callable[[], Any] | None = None
    torch_does: str = "same"
    why: str = ""


# ---------------------------------------------------------------------- builders


def P() -> dict[str, Any]:
    return {"w": jnp.ones(2)}


def M() -> dict[str, Any]:
    return {"w": jnp.ones((2, 2))}


def TP() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(2))]


def TM() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(2, 2))]


def sgd(**kw: Any) -> O.SGD:
    return O.SGD(P(), **{"lr": 0.1, "momentum": 0.9, **kw})


def tsgd(**kw: Any) -> TO.SGD:
    return TO.SGD(TP(), **{"lr": 0.1, "momentum": 0.9, **kw})


def torch_step(opt: torch.optim.Optimizer) -> Any:
    """One torch step with a closure (some torch checks only run when stepping)."""
    params = [p for g in opt.param_groups for p in g["params"]]

    def closure():
        opt.zero_grad()
        loss = sum((p ** 2).sum() for p in params)
        loss.backward()
        return loss

    return opt.step(closure)


def fo_step(opt: O.Optimizer, grads: Any) -> Any:
    return opt(grads)


def load(opt: Any, sd: Any) -> Any:
    return opt.load_state_dict(sd)


def sgd_group(**kw: Any) -> dict[str, Any]:
    return {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": False,
            "maximize": False, "foreach": None, "differentiable": False, "fused": None, **kw}


def two_groups_sgd() -> O.SGD:
    return O.SGD([{"params": {"a": jnp.ones(2)}}, {"params": {"b": jnp.ones(3)}, "lr": 0.01}], lr=0.1)


def add_group(opt: Any, group: Any) -> Any:
    return opt.add_param_group(group)


def twice(make: Callable[[Any], Any], param: Any) -> Any:
    return make(param)


def dup_add_fo() -> None:
    p = jnp.ones(2)
    opt = O.SGD([p], lr=0.1)
    opt.add_param_group({"params": [p]})


def dup_add_torch() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    opt = TO.SGD([p], lr=0.1)
    opt.add_param_group({"params": [p]})


def dup_groups_fo() -> None:
    p = jnp.ones(2)
    O.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def dup_groups_torch() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    TO.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def dup_one_group_fo() -> None:
    p = jnp.ones(2)
    O.SGD([p, p], lr=0.1)


def dup_one_group_torch() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TO.SGD([p, p], lr=0.1)


def past_one_cycle(sched_mod: Any, opt: Any) -> None:
    sched = sched_mod.OneCycleLR(opt, max_lr=0.1, total_steps=2)
    for _ in range(3):
        opt.step() if isinstance(opt, torch.optim.Optimizer) else None
        sched.step()


def sequential_of_two(sched_mod: Any, make_opt: Callable[[], Any]) -> None:
    a, b = make_opt(), make_opt()
    sched_mod.SequentialLR(a, [sched_mod.StepLR(a, 2), sched_mod.StepLR(b, 2)], [1])


def sequential_milestones(sched_mod: Any, opt: Any) -> None:
    sched_mod.SequentialLR(opt, [sched_mod.StepLR(opt, 2), sched_mod.StepLR(opt, 2)], [1, 2])


# ---------------------------------------------------------------------- checkpoint files

_DIR: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _checkpoint_dir():
    with tempfile.TemporaryDirectory() as d:
        _DIR.append(d)
        yield
        _DIR.pop()


def path(name: str) -> str:
    return os.path.join(_DIR[-1], name)


def written(name: str, data: bytes) -> str:
    with open(path(name), "wb") as f:
        f.write(data)
    return path(name)


def saved(name: str, obj: Any, **kw: Any) -> str:
    fo.save(path(name), obj, **kw)
    return path(name)


def torch_saved(name: str) -> str:
    torch.save({"a": torch.ones(2)}, path(name))
    return path(name)


def npz_saved(name: str) -> str:
    with open(path(name), "wb") as f:
        np.savez(f, a=np.ones(2))
    return path(name)


def missing_dir() -> str:
    return os.path.join(_DIR[-1], "no_such_dir")


# ---------------------------------------------------------------------- the table

LR_TYPE = "lr must be a number, a 0-d array or a schedule, got "

ROWS: list[Row] = [
    # --- hyperparameters, torch's messages word for word
    Row("SGD lr<0", lambda: O.SGD(P(), lr=-1), ValueError, torch=lambda: TO.SGD(TP(), lr=-1)),
    Row("sgd lr<0 (functional)", lambda: fo.sgd(lr=-0.5), ValueError, torch=lambda: TO.SGD(TP(), lr=-0.5)),
    Row("Adam lr=nan", lambda: O.Adam(P(), lr=float("nan")), ValueError,
        torch=lambda: TO.Adam(TP(), lr=float("nan"))),
    Row("SGD momentum<0", lambda: O.SGD(P(), lr=0.1, momentum=-1), ValueError,
        torch=lambda: TO.SGD(TP(), lr=0.1, momentum=-1)),
    Row("SGD weight_decay<0", lambda: O.SGD(P(), lr=0.1, weight_decay=-1), ValueError,
        torch=lambda: TO.SGD(TP(), lr=0.1, weight_decay=-1)),
    Row("Adam weight_decay<0", lambda: O.Adam(P(), weight_decay=-1e-2), ValueError,
        torch=lambda: TO.Adam(TP(), weight_decay=-1e-2)),
    Row("AdamW weight_decay<0", lambda: O.AdamW(P(), weight_decay=-1), ValueError,
        torch=lambda: TO.AdamW(TP(), weight_decay=-1)),
    Row("Adam eps<0", lambda: O.Adam(P(), eps=-1), ValueError, torch=lambda: TO.Adam(TP(), eps=-1)),
    Row("adam eps<0 (functional)", lambda: fo.adam(eps=-1e-8), ValueError, torch=lambda: TO.Adam(TP(), eps=-1e-8)),
    Row("Adam beta1=1", lambda: O.Adam(P(), betas=(1.0, 0.999)), ValueError,
        torch=lambda: TO.Adam(TP(), betas=(1.0, 0.999))),
    Row("Adam beta2=1", lambda: O.Adam(P(), betas=(0.9, 1.0)), ValueError,
        torch=lambda: TO.Adam(TP(), betas=(0.9, 1.0))),
    Row("Adam beta1<0", lambda: O.Adam(P(), betas=(-0.1, 0.999)), ValueError,
        torch=lambda: TO.Adam(TP(), betas=(-0.1, 0.999))),
    Row("AdamW beta2>1", lambda: O.AdamW(P(), betas=(0.9, 1.5)), ValueError,
        torch=lambda: TO.AdamW(TP(), betas=(0.9, 1.5))),
    Row("Adamax beta2>1", lambda: O.Adamax(P(), betas=(0.9, 1.5)), ValueError,
        torch=lambda: TO.Adamax(TP(), betas=(0.9, 1.5))),
    Row("NAdam beta1=1", lambda: O.NAdam(P(), betas=(1.0, 0.999)), ValueError,
        torch=lambda: TO.NAdam(TP(), betas=(1.0, 0.999))),
    Row("RAdam beta1<0", lambda: O.RAdam(P(), betas=(-0.5, 0.999)), ValueError,
        torch=lambda: TO.RAdam(TP(), betas=(-0.5, 0.999))),
    Row("SGD nesterov without momentum", lambda: O.SGD(P(), lr=0.1, nesterov=True), ValueError,
        torch=lambda: TO.SGD(TP(), lr=0.1, nesterov=True)),
    Row("SGD nesterov with dampening", lambda: O.SGD(P(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        ValueError, torch=lambda: TO.SGD(TP(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)),
    Row("Adagrad lr_decay<0", lambda: O.Adagrad(P(), lr_decay=-1), ValueError,
        torch=lambda: TO.Adagrad(TP(), lr_decay=-1)),
    Row("Adagrad initial_accumulator_value<0", lambda: O.Adagrad(P(), initial_accumulator_value=-1), ValueError,
        torch=lambda: TO.Adagrad(TP(), initial_accumulator_value=-1)),
    Row("Adadelta rho>1", lambda: O.Adadelta(P(), rho=1.5), ValueError, torch=lambda: TO.Adadelta(TP(), rho=1.5)),
    Row("RMSprop alpha<0", lambda: O.RMSprop(P(), alpha=-1), ValueError, torch=lambda: TO.RMSprop(TP(), alpha=-1)),
    Row("RMSprop momentum<0", lambda: O.RMSprop(P(), momentum=-1), ValueError,
        torch=lambda: TO.RMSprop(TP(), momentum=-1)),
    Row("Rprop etas", lambda: O.Rprop(P(), etas=(1.5, 1.2)), ValueError, torch=lambda: TO.Rprop(TP(), etas=(1.5, 1.2))),
    Row("NAdam momentum_decay<0", lambda: O.NAdam(P(), momentum_decay=-1), ValueError,
        torch=lambda: TO.NAdam(TP(), momentum_decay=-1)),
    Row("Adafactor lr<0", lambda: O.Adafactor(P(), lr=-1), ValueError, torch=lambda: TO.Adafactor(TP(), lr=-1)),
    Row("Adafactor beta2_decay>0", lambda: O.Adafactor(P(), beta2_decay=0.5), ValueError,
        torch=lambda: TO.Adafactor(TP(), beta2_decay=0.5)),
    Row("Adafactor d<1", lambda: O.Adafactor(P(), d=0.5), ValueError, torch=lambda: TO.Adafactor(TP(), d=0.5)),
    Row("Adafactor eps1<0", lambda: O.Adafactor(P(), eps=(-1, 1e-3)), ValueError,
        torch=lambda: TO.Adafactor(TP(), eps=(-1, 1e-3))),
    Row("Adafactor eps2<0", lambda: O.Adafactor(P(), eps=(None, -1)), ValueError,
        torch=lambda: TO.Adafactor(TP(), eps=(None, -1))),
    Row("Adafactor weight_decay<0", lambda: O.Adafactor(P(), weight_decay=-1), ValueError,
        torch=lambda: TO.Adafactor(TP(), weight_decay=-1)),
    Row("Muon lr<0", lambda: O.Muon(M(), lr=-1), ValueError, torch=lambda: TO.Muon(TM(), lr=-1)),
    Row("Muon momentum<0", lambda: O.Muon(M(), momentum=-1), ValueError, torch=lambda: TO.Muon(TM(), momentum=-1)),
    Row("Muon weight_decay<0", lambda: O.Muon(M(), weight_decay=-1), ValueError,
        torch=lambda: TO.Muon(TM(), weight_decay=-1)),
    Row("Muon adjust_lr_fn", lambda: O.Muon(M(), adjust_lr_fn="foo"), ValueError,
        torch=lambda: TO.Muon(TM(), adjust_lr_fn="foo")),
    Row("Muon ns_steps=100", lambda: O.Muon(M(), ns_steps=100), ValueError,
        torch=lambda: torch_step(TO.Muon(TM(), ns_steps=100)),
        why="torch raises the same error at the first step; funcopt at construction"),
    Row("Muon 2 coefficients", lambda: O.Muon(M(), ns_coefficients=(1.0, 2.0)), ValueError,
        torch=lambda: torch_step(TO.Muon(TM(), ns_coefficients=(1.0, 2.0))),
        why="torch raises the same error at the first step; funcopt at construction"),
    Row("Muon 1-d parameter", lambda: O.Muon(P()), ValueError,
        "Muon only supports 2D parameters whereas we found a parameter with size: (2,)",
        torch=lambda: TO.Muon(TP()), torch_does="type", why="torch prints the shape as torch.Size([2])"),
    Row("LBFGS line_search_fn", lambda: O.LBFGS(P(), line_search_fn="armijo"), RuntimeError,
        torch=lambda: torch_step(TO.LBFGS(TP(), line_search_fn="armijo")),
        why="torch raises the same error inside its first step; funcopt at construction"),
    Row("LBFGS history_size=0", lambda: O.LBFGS(P(), history_size=0), ValueError,
        "Invalid history_size value: 0", torch=lambda: torch_step(TO.LBFGS(TP(), history_size=0)),
        torch_does="raises IndexError", why="torch fails inside its step with 'pop from empty list'"),
    Row("LBFGS max_iter float", lambda: O.LBFGS(P(), max_iter=2.5), TypeError, "max_iter must be an int, got float",
        torch=lambda: TO.LBFGS(TP(), max_iter=2.5), torch_does="accepts",
        why="max_iter is a static loop bound of the compiled step"),
    Row("Adam betas of three", lambda: O.Adam(P(), betas=(0.9, 0.99, 0.9)), ValueError,
        "betas must be a pair (beta1, beta2), got (0.9, 0.99, 0.9)",
        torch=lambda: TO.Adam(TP(), betas=(0.9, 0.99, 0.9)), torch_does="accepts", why="torch ignores the extra beta"),
    Row("Adafactor eps not a pair", lambda: O.Adafactor(P(), eps=0.1), ValueError,
        "eps must be a pair (eps1, eps2), got 0.1", torch=lambda: TO.Adafactor(TP(), eps=0.1),
        torch_does="raises TypeError", why="torch fails subscripting the float ('float' object is not subscriptable)"),
    Row("SGD differentiable=True", lambda: O.SGD(P(), lr=0.1, differentiable=True), ValueError,
        "differentiable=True is not supported: funcopt steps are pure functions; differentiate through the "
        "functional optimizer instead", torch=lambda: TO.SGD(TP(), lr=0.1, differentiable=True), torch_does="accepts",
        why="differentiate through fo.sgd's update instead"),
    # --- MegEngine / MindSpore-style optimizers (their frameworks' wording)
    Row("momentum use_nesterov not bool", lambda: fo.momentum(0.1, 0.9, use_nesterov=1), TypeError,
        "For 'Momentum', the 'use_nesterov' should be a bool, but got int."),
    Row("momentum<0 (MindSpore)", lambda: fo.momentum(0.1, -0.9), ValueError,
        "For 'Momentum', the argument 'momentum' must be at least 0.0, but got -0.9"),
    Row("ftrl lr_power>0", lambda: fo.ftrl(lr_power=0.5), ValueError,
        "For 'FTRL', the 'lr_power' must be <= 0.0, but got 0.5."),
    Row("ftrl l1<0", lambda: fo.ftrl(l1=-1), ValueError, "For 'FTRL', the 'l1' must be >= 0.0, but got -1."),
    Row("proximal_adagrad accum<0", lambda: fo.proximal_adagrad(accum=-1), ValueError,
        "For 'ProximalAdagrad', the 'accum' must be >= 0.0, but got -1."),
    Row("lamb lr<0 (MegEngine)", lambda: fo.lamb(-0.1), ValueError, "Invalid learning rate: -0.1"),
    Row("lars trust_coefficient<0", lambda: fo.lars(0.1, trust_coefficient=-1), ValueError,
        "Invalid trust_coefficient value: -1"),
    Row("apply_if_finite max_consecutive_errors<0", lambda: fo.apply_if_finite(fo.sgd(), max_consecutive_errors=-1),
        ValueError, "max_consecutive_errors must be a non-negative integer or None, got -1"),
    # --- wrong types of hyperparameters
    Row("lr a string", lambda: O.SGD(P(), lr="0.1"), TypeError, LR_TYPE + "str",
        torch=lambda: TO.SGD(TP(), lr="0.1"), torch_does="type",
        why="torch's error is Python's \"'<' not supported between instances of 'str' and 'float'\""),
    Row("lr None", lambda: O.Adam(P(), lr=None), TypeError, LR_TYPE + "NoneType",
        torch=lambda: TO.Adam(TP(), lr=None), torch_does="type"),
    Row("lr a list", lambda: O.SGD(P(), lr=[0.1]), TypeError, LR_TYPE + "list",
        torch=lambda: TO.SGD(TP(), lr=[0.1]), torch_does="type"),
    Row("lr complex", lambda: O.SGD(P(), lr=1j), TypeError, LR_TYPE + "complex",
        torch=lambda: TO.SGD(TP(), lr=1j), torch_does="type"),
    Row("lr a 2-element array", lambda: O.Adam(P(), lr=jnp.array([0.1, 0.2])), ValueError,
        torch=lambda: TO.Adam(TP(), lr=torch.tensor([0.1, 0.2]))),
    Row("lr a bool", lambda: O.SGD(P(), lr=True), TypeError, LR_TYPE + "bool",
        torch=lambda: TO.SGD(TP(), lr=True), torch_does="accepts", why="True as a learning rate is a mistake"),
    Row("SGD lr=nan", lambda: O.SGD(P(), lr=float("nan")), ValueError, "Invalid learning rate: nan",
        torch=lambda: TO.SGD(TP(), lr=float("nan")), torch_does="accepts",
        why="torch.optim.SGD tests lr < 0, which NaN passes; Adam and the others reject NaN as funcopt does"),
    Row("adam lr a string (functional)", lambda: fo.adam(lr="cosine"), TypeError, LR_TYPE + "str"),
    Row("unknown keyword", lambda: O.SGD(P(), lr=0.1, foo=3), TypeError,
        pattern=r"SGD\.__init__\(\):? got an unexpected keyword argument 'foo'",
        torch=lambda: TO.SGD(TP(), lr=0.1, foo=3), torch_does="type"),
    # --- parameters
    Row("empty parameter list", lambda: O.SGD([], lr=0.1), ValueError, torch=lambda: TO.SGD([], lr=0.1)),
    Row("empty dict of parameters", lambda: O.Adam({}), ValueError, torch=lambda: TO.Adam({})),
    Row("group with no parameters", lambda: O.SGD([{"params": []}], lr=0.1), ValueError,
        "optimizer got an empty parameter list", torch=lambda: TO.SGD([{"params": []}], lr=0.1),
        torch_does="accepts", why="a group without parameters has nothing to optimize"),
    Row("a set of parameters in a group", lambda: O.SGD([{"params": {1.0, 2.0}}], lr=0.1), TypeError,
        torch=lambda: TO.SGD([{"params": set(TP())}], lr=0.1)),
    Row("a set as params", lambda: O.SGD(frozenset({1.0, 2.0}), lr=0.1), TypeError,
        "optimizer parameters need to be organized in ordered collections, but the ordering of tensors in sets "
        "will change between runs. Please use a list instead.", torch=lambda: TO.SGD(set(TP()), lr=0.1),
        torch_does="accepts", why="torch lists a top-level set in arbitrary order; a set is no pytree here"),
    Row("a bare array as params", lambda: O.SGD(jnp.ones(2), lr=0.1), TypeError,
        pattern=r"params argument given to the optimizer should be an iterable of Tensors or dicts, but got "
                r"jaxlib\._jax\.ArrayImpl; wrap a single array in a list or dict",
        torch=lambda: TO.SGD(torch.nn.Parameter(torch.ones(2)), lr=0.1), torch_does="type"),
    Row("a parameter in two groups", dup_groups_fo, ValueError, torch=dup_groups_torch),
    Row("add_param_group with a parameter already there", dup_add_fo, ValueError, torch=dup_add_torch),
    Row("a parameter twice in one group", dup_one_group_fo, ValueError,
        "optimizer contains a parameter group with duplicate parameters: the same array is given twice, and "
        "funcopt copies the arrays it is given, so they would become two independent parameters",
        torch=dup_one_group_torch, torch_does="accepts",
        why="torch only warns (same words); it steps the one tensor twice, here they would be two arrays"),
    Row("add_param_group without 'params'", lambda: sgd().add_param_group({"lr": 0.1}), KeyError,
        "param_group must have a 'params' key", torch=lambda: tsgd().add_param_group({"lr": 0.1}), torch_does="type",
        why="torch's KeyError is the bare key 'params'"),
    Row("add_param_group with a list", lambda: sgd().add_param_group([jnp.ones(2)]), TypeError,
        "param_group must be a dict, but got list", torch=lambda: tsgd().add_param_group([torch.ones(2)]),
        torch_does="type", why="torch prints <class 'list'>"),
    Row("add_param_group with lr<0", lambda: sgd().add_param_group({"params": [jnp.ones(2)], "lr": -1}), ValueError,
        "Invalid learning rate: -1",
        torch=lambda: tsgd().add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "lr": -1}),
        torch_does="accepts", why="torch checks hyperparameters in the constructor only; funcopt checks every group"),
    Row("a group with lr<0", lambda: O.SGD([{"params": P(), "lr": -1}], lr=0.1), ValueError,
        "Invalid learning rate: -1", torch=lambda: TO.SGD([{"params": TP(), "lr": -1}], lr=0.1), torch_does="accepts"),
    Row("integer parameter", lambda: O.SGD([jnp.ones(2, jnp.int32)], lr=0.1), ValueError,
        "optimizer can only optimize floating point or complex arrays, but parameter '0' has dtype int32",
        torch=lambda: TO.SGD([torch.ones(2, dtype=torch.long)], lr=0.1), torch_does="accepts",
        why="torch fails later: integer tensors cannot require gradients"),
    Row("bool parameter", lambda: O.Adam({"mask": jnp.ones(2, bool)}), ValueError,
        "optimizer can only optimize floating point or complex arrays, but parameter 'mask' has dtype bool"),
    Row("a string as parameter", lambda: O.SGD(["a"], lr=0.1), TypeError,
        "optimizer can only optimize arrays, but parameter '0' is a str", torch=lambda: TO.SGD(["a"], lr=0.1),
        torch_does="type", why="torch: 'optimizer can only optimize Tensors, but one of the params is str'"),
    Row("param_names of the wrong length", lambda: O.SGD([{"params": [jnp.ones(1), jnp.ones(1)], "param_names": ["a"]}],
                                                        lr=0.1), ValueError,
        "all optimizer params should be with/without names. Some param names are missing",
        torch=lambda: TO.SGD([("a", torch.nn.Parameter(torch.ones(1))), torch.nn.Parameter(torch.ones(1))], lr=0.1),
        torch_does="type", why="torch's message for names given to only some parameters"),
    Row("LBFGS with two groups", lambda: O.LBFGS([{"params": P()}, {"params": {"v": jnp.ones(1)}}]), ValueError,
        torch=lambda: TO.LBFGS([{"params": TP()}, {"params": TP()}])),
    Row("LBFGS add_param_group", lambda: O.LBFGS(P()).add_param_group({"params": [jnp.ones(2)]}), ValueError,
        "LBFGS doesn't support per-parameter options (parameter groups)",
        torch=lambda: TO.LBFGS(TP()).add_param_group({"params": TP()}), torch_does="accepts",
        why="torch's L-BFGS then silently optimizes only its first group"),
    Row("LBFGS step without closure", lambda: O.LBFGS(P()).step(), TypeError,
        "LBFGS.step() needs a closure that clears the gradients, computes the loss with opt.backward(loss_fn, ...) "
        "and returns it", torch=lambda: TO.LBFGS(TP()).step(), torch_does="type"),
    Row("LBFGS closure without gradients", lambda: O.LBFGS(P()).step(lambda: 1.0), RuntimeError,
        "LBFGS.step(): the closure left no gradients; it must compute them with opt.backward(loss_fn, ...)"),
    # --- gradients
    Row("opt(grads) of another structure", lambda: sgd()({"v": jnp.ones(2)}), ValueError,
        "grads structure PyTreeDef({'v': *}) does not match the parameters' PyTreeDef({'w': *})"),
    Row("opt(grads) a list for a dict", lambda: sgd()([jnp.ones(2)]), ValueError,
        "grads structure PyTreeDef([*]) does not match the parameters' PyTreeDef({'w': *})"),
    Row("opt(grads) of another shape", lambda: sgd()({"w": jnp.ones(3)}), ValueError,
        "grads for parameter 'w' has shape (3,), expected (2,)",
        torch=lambda: setattr(TP()[0], "grad", torch.ones(3)), torch_does="raises RuntimeError",
        why="torch's error comes from assigning .grad; here the gradients are an argument (a ValueError)"),
    Row("opt(grads) integer", lambda: sgd()({"w": jnp.ones(2, jnp.int32)}), TypeError,
        "grads for parameter 'w' must be floating point, got int32",
        torch=lambda: setattr(TP()[0], "grad", torch.ones(2, dtype=torch.long)), torch_does="raises RuntimeError"),
    Row("opt(grads) not one per group", lambda: two_groups_sgd()({"a": jnp.ones(2)}), ValueError,
        "grads must be a list with one pytree per parameter group (2 groups)"),
    Row("opt(grads) wrong shape in group 2", lambda: two_groups_sgd()([{"a": jnp.ones(2)}, {"b": jnp.ones(2)}]),
        ValueError, "grads for parameter 'b' has shape (2,), expected (3,)"),
    Row("params setter: another structure", lambda: setattr(sgd(), "params", {"v": jnp.ones(2)}), ValueError,
        "params structure PyTreeDef({'v': *}) does not match the parameters' PyTreeDef({'w': *})"),
    Row("params setter: integer", lambda: setattr(sgd(), "params", {"w": jnp.ones(2, jnp.int32)}), TypeError,
        "params for parameter 'w' must be floating point, got int32"),
    Row("param_groups[i]['params'] assignment", lambda: sgd().param_groups[0].__setitem__("params", [jnp.ones(2)]),
        KeyError, "param_groups[i]['params'] is read-only here; use add_param_group for new parameters"),
    Row("functional update: another optimizer's state type", lambda: fo.adam().update(P(), {"a": 1}, P()), TypeError,
        "adam: expected an OptimizerState, got dict"),
    Row("functional update: weight decay without params",
        lambda: fo.adamw().update(P(), fo.adamw().init(P())), ValueError,
        "adamw: params must be given to update() with these hyperparameters (e.g. a nonzero weight_decay)"),
    Row("functional lbfgs without value_fn", lambda: fo.lbfgs().update(P(), fo.lbfgs().init(P()), P()), ValueError,
        "lbfgs: update() needs value_fn= (the loss as a pure function of the parameters) for a line search or "
        "for max_iter > 1"),
    Row("set_hparams unknown name", lambda: fo.set_hparams(fo.adam().init(P()), foo=1), KeyError,
        "unknown hyperparameter(s) ['foo']; this state holds ['betas', 'eps', 'lr', 'weight_decay']"),
    # --- state_dicts
    Row("state_dict: other number of groups", lambda: load(sgd(), {"state": {}, "param_groups": []}), ValueError,
        torch=lambda: load(tsgd(), {"state": {}, "param_groups": []})),
    Row("state_dict: group of another size",
        lambda: load(sgd(), {"state": {}, "param_groups": [sgd_group(params=[0, 1])]}), ValueError,
        torch=lambda: load(tsgd(), {"state": {}, "param_groups": [sgd_group(params=[0, 1])]})),
    Row("state_dict: missing 'state'", lambda: load(sgd(), {"param_groups": [sgd_group(params=[0])]}), KeyError,
        "state_dict is missing the key 'state'", torch=lambda: load(tsgd(), {"param_groups": [sgd_group(params=[0])]}),
        torch_does="type", why="torch's KeyError is the bare key"),
    Row("state_dict: missing 'param_groups'", lambda: load(sgd(), {"state": {}}), KeyError,
        "state_dict is missing the key 'param_groups'", torch=lambda: load(tsgd(), {"state": {}}), torch_does="type"),
    Row("state_dict: a group without 'params'", lambda: load(sgd(), {"state": {}, "param_groups": [sgd_group()]}),
        KeyError, "every saved param group must have a 'params' key",
        torch=lambda: load(tsgd(), {"state": {}, "param_groups": [sgd_group()]}), torch_does="type"),
    Row("state_dict: not a dict", lambda: load(sgd(), [1]), TypeError, "state_dict must be a dict, got list",
        torch=lambda: load(tsgd(), [1]), torch_does="type"),
    Row("state_dict: 'state' not a dict", lambda: load(sgd(), {"state": [], "param_groups": [sgd_group(params=[0])]}),
        TypeError, "state_dict['state'] must be a dict"),
    Row("state_dict: state of another shape",
        lambda: load(sgd(), {"state": {0: {"momentum_buffer": np.ones(3)}}, "param_groups": [sgd_group(params=[0])]}),
        ValueError, "loaded state 'momentum_buffer' of parameter 'w' has shape (3,), expected (2,)",
        torch=lambda: load(tsgd(), {"state": {0: {"momentum_buffer": torch.ones(3)}},
                                    "param_groups": [sgd_group(params=[0])]}),
        torch_does="accepts", why="torch loads it and fails at the next step"),
    Row("state_dict: integer state",
        lambda: load(sgd(), {"state": {0: {"momentum_buffer": np.ones(2, np.int64)}},
                             "param_groups": [sgd_group(params=[0])]}),
        ValueError, "loaded state 'momentum_buffer' of parameter 'w' has dtype int64, which cannot hold the "
                    "optimizer's float32 state"),
    Row("state_dict: lr<0", lambda: load(sgd(), {"state": {}, "param_groups": [sgd_group(params=[0], lr=-0.1)]}),
        ValueError, "Invalid learning rate: -0.1",
        torch=lambda: load(tsgd(), {"state": {}, "param_groups": [sgd_group(params=[0], lr=-0.1)]}),
        torch_does="accepts", why="a loaded group is checked like a constructed one"),
    Row("state_dict: step<0",
        lambda: load(O.Adam(P()), {"state": {0: {"step": -1.0}}, "param_groups": [{"params": [0]}]}), ValueError,
        "saved 'step' for parameter 'w' must be a non-negative number below 2**31, got -1.0"),
    Row("state_dict: entry not a dict",
        lambda: load(sgd(), {"state": {0: 3}, "param_groups": [sgd_group(params=[0])]}), TypeError,
        "saved state for parameter 'w' must be a dict"),
    Row("state_dict by name: unknown parameter",
        lambda: sgd().load_state_dict({"state": {}, "param_groups": [sgd_group(params=[0], param_names=["v"])]},
                                      by_name=True),
        KeyError, "state_dict has no state for parameters ['w']"),
    # --- schedulers (torch's messages word for word)
    Row("scheduler of a non-optimizer", lambda: S.StepLR(object(), 3), TypeError, torch=lambda: TS.StepLR(object(), 3)),
    Row("ConstantLR factor>1", lambda: S.ConstantLR(sgd(), factor=1.5), ValueError,
        torch=lambda: TS.ConstantLR(tsgd(), factor=1.5)),
    Row("LinearLR start_factor=0", lambda: S.LinearLR(sgd(), start_factor=0), ValueError,
        torch=lambda: TS.LinearLR(tsgd(), start_factor=0)),
    Row("LinearLR end_factor>1", lambda: S.LinearLR(sgd(), end_factor=1.5), ValueError,
        torch=lambda: TS.LinearLR(tsgd(), end_factor=1.5)),
    Row("CosineAnnealingWarmRestarts T_0=0", lambda: S.CosineAnnealingWarmRestarts(sgd(), T_0=0), ValueError,
        torch=lambda: TS.CosineAnnealingWarmRestarts(tsgd(), T_0=0)),
    Row("CosineAnnealingWarmRestarts T_mult=0", lambda: S.CosineAnnealingWarmRestarts(sgd(), T_0=2, T_mult=0),
        ValueError, torch=lambda: TS.CosineAnnealingWarmRestarts(tsgd(), T_0=2, T_mult=0)),
    Row("CosineAnnealingWarmRestarts eta_min str", lambda: S.CosineAnnealingWarmRestarts(sgd(), T_0=2, eta_min="a"),
        ValueError, torch=lambda: TS.CosineAnnealingWarmRestarts(tsgd(), T_0=2, eta_min="a")),
    Row("OneCycleLR without a length", lambda: S.OneCycleLR(sgd(), max_lr=0.1), ValueError,
        torch=lambda: TS.OneCycleLR(tsgd(), max_lr=0.1)),
    Row("OneCycleLR total_steps=0", lambda: S.OneCycleLR(sgd(), max_lr=0.1, total_steps=0), ValueError,
        torch=lambda: TS.OneCycleLR(tsgd(), max_lr=0.1, total_steps=0)),
    Row("OneCycleLR epochs=0", lambda: S.OneCycleLR(sgd(), max_lr=0.1, epochs=0, steps_per_epoch=3), ValueError,
        torch=lambda: TS.OneCycleLR(tsgd(), max_lr=0.1, epochs=0, steps_per_epoch=3)),
    Row("OneCycleLR pct_start>1", lambda: S.OneCycleLR(sgd(), max_lr=0.1, total_steps=10, pct_start=1.5), ValueError,
        torch=lambda: TS.OneCycleLR(tsgd(), max_lr=0.1, total_steps=10, pct_start=1.5)),
    Row("OneCycleLR anneal_strategy", lambda: S.OneCycleLR(sgd(), max_lr=0.1, total_steps=10, anneal_strategy="x"),
        ValueError, torch=lambda: TS.OneCycleLR(tsgd(), max_lr=0.1, total_steps=10, anneal_strategy="x")),
    Row("OneCycleLR max_lr list length", lambda: S.OneCycleLR(sgd(), max_lr=[0.1, 0.2], total_steps=10), ValueError,
        torch=lambda: TS.OneCycleLR(tsgd(), max_lr=[0.1, 0.2], total_steps=10)),
    Row("OneCycleLR stepped too far", lambda: past_one_cycle(S, sgd()), ValueError,
        torch=lambda: past_one_cycle(TS, tsgd())),
    Row("ReduceLROnPlateau factor=1", lambda: S.ReduceLROnPlateau(sgd(), factor=1.0), ValueError,
        torch=lambda: TS.ReduceLROnPlateau(tsgd(), factor=1.0)),
    Row("ReduceLROnPlateau mode", lambda: S.ReduceLROnPlateau(sgd(), mode="up"), ValueError,
        torch=lambda: TS.ReduceLROnPlateau(tsgd(), mode="up")),
    Row("ReduceLROnPlateau threshold_mode", lambda: S.ReduceLROnPlateau(sgd(), threshold_mode="x"), ValueError,
        torch=lambda: TS.ReduceLROnPlateau(tsgd(), threshold_mode="x")),
    Row("ReduceLROnPlateau min_lr length", lambda: S.ReduceLROnPlateau(sgd(), min_lr=[0.1, 0.2]), ValueError,
        torch=lambda: TS.ReduceLROnPlateau(tsgd(), min_lr=[0.1, 0.2])),
    Row("LambdaLR lambdas per group", lambda: S.LambdaLR(sgd(), [lambda e: 1, lambda e: 1]), ValueError,
        torch=lambda: TS.LambdaLR(tsgd(), [lambda e: 1, lambda e: 1])),
    Row("MultiplicativeLR not a function", lambda: S.MultiplicativeLR(sgd(), 3), TypeError,
        torch=lambda: TS.MultiplicativeLR(tsgd(), 3)),
    Row("SequentialLR without schedulers", lambda: S.SequentialLR(sgd(), [], []), ValueError,
        torch=lambda: TS.SequentialLR(tsgd(), [], [])),
    Row("SequentialLR milestones count", lambda: sequential_milestones(S, sgd()), ValueError,
        torch=lambda: sequential_milestones(TS, tsgd())),
    Row("SequentialLR of two optimizers", lambda: sequential_of_two(S, sgd), ValueError,
        pattern=r"SequentialLR expects all schedulers to belong to the same optimizer, but got scheduler StepLR at "
                r"index 1 has SGD \(.*\), which is different from SGD\.",
        torch=lambda: sequential_of_two(TS, tsgd), torch_does="type",
        why="same words; the optimizers' reprs differ (torch's default dampening is the int 0)"),
    Row("CyclicLR mode", lambda: S.CyclicLR(sgd(), 0.01, 0.1, mode="foo"), ValueError,
        torch=lambda: TS.CyclicLR(tsgd(), 0.01, 0.1, mode="foo")),
    Row("CyclicLR without momentum", lambda: S.CyclicLR(O.Adagrad(P()), 0.01, 0.1), ValueError,
        torch=lambda: TS.CyclicLR(TO.Adagrad(TP()), 0.01, 0.1)),
    Row("StepLR last_epoch without initial_lr", lambda: S.StepLR(sgd(), 3, last_epoch=5), KeyError,
        torch=lambda: TS.StepLR(tsgd(), 3, last_epoch=5)),
    # --- checkpoint paths and files
    Row("fo.load of a missing file", lambda: fo.load(path("missing.npz")), FileNotFoundError,
        torch=lambda: torch.load(path("missing.npz"))),
    Row("fo.load of a directory", lambda: fo.load(_DIR[-1]), IsADirectoryError, torch=lambda: torch.load(_DIR[-1])),
    Row("fo.save into a missing directory", lambda: fo.save(os.path.join(missing_dir(), "x.npz"), sgd()),
        FileNotFoundError,
        pattern=r"\[Errno 2\] cannot save '.*/no_such_dir/x\.npz': no such directory: '.*/no_such_dir'",
        torch=lambda: torch.save({}, os.path.join(missing_dir(), "x.pt")), torch_does="raises RuntimeError",
        why="torch: 'Parent directory ... does not exist.'; ours names the destination and its missing directory"),
    Row("fo.save onto a directory", lambda: fo.save(_DIR[-1], sgd()), IsADirectoryError,
        pattern=r"\[Errno 21\] Is a directory: '.*\.tmp' -> '.*'",
        torch=lambda: torch.save({}, _DIR[-1]), torch_does="raises RuntimeError"),
    Row("fo.save a path None", lambda: fo.save(None, sgd()), TypeError,
        "expected str, bytes or os.PathLike object, not NoneType"),
    Row("fo.load an empty file", lambda: fo.load(written("empty.npz", b""), sgd()), fo.CheckpointError,
        pattern=r"'.*empty\.npz' is not a funcopt checkpoint: it is not a NumPy \.npz archive \(the file is corrupted "
                r"or truncated, or was written by something else\)",
        torch=lambda: torch.load(written("empty.pt", b"")), torch_does="raises EOFError"),
    Row("fo.load a text file", lambda: fo.load(written("notes.txt", b"hello"), sgd()), fo.CheckpointError,
        pattern=r"'.*notes\.txt' is not a funcopt checkpoint: .*"),
    Row("fo.load a torch checkpoint", lambda: fo.load(torch_saved("model.pt"), sgd()), fo.CheckpointError,
        pattern=r"'.*model\.pt' is a \.npz archive but not a funcopt checkpoint \(no metadata entry\)"),
    Row("fo.load a plain .npz", lambda: fo.load(npz_saved("plain.npz")), fo.CheckpointError,
        pattern=r"'.*plain\.npz' is a \.npz archive but not a funcopt checkpoint \(no metadata entry\)"),
    Row("fo.load into another optimizer class", lambda: fo.load(saved("sgd.npz", sgd()), O.Adam(P())),
        fo.CheckpointError, "the checkpoint holds the state of a SGD optimizer; it cannot be loaded into a Adam"),
    Row("fo.load a pytree into an optimizer", lambda: fo.load(saved("tree.npz", P()), sgd()), fo.CheckpointError,
        "the checkpoint holds a pytree, not an optimizer's state: load it with a pytree target (or none) instead "
        "of an optimizer"),
    Row("fo.load an optimizer into a pytree", lambda: fo.load(saved("sgd2.npz", sgd()), P()), fo.CheckpointError,
        "the checkpoint holds the state of a stateful optimizer (SGD); pass that optimizer as the target"),
    Row("fo.load into a target of another shape", lambda: fo.load(saved("tree2.npz", P()), {"w": jnp.ones(3)}),
        fo.CheckpointError, "leaf ['w']: shape (2,) in the checkpoint, (3,) in the target"),
    Row("fo.load into a target of another dtype",
        lambda: fo.load(saved("tree3.npz", P()), {"w": jnp.ones(2, jnp.bfloat16)}), fo.CheckpointError,
        "leaf ['w']: dtype float32 in the checkpoint, bfloat16 in the target"),
    Row("fo.save an object leaf", lambda: fo.save(path("obj.npz"), {"w": object()}), TypeError,
        "cannot save ['w']: a leaf of type builtins.object is not an array, a Python number or a string "
        "(funcopt checkpoints do not pickle)"),
    Row("fo.save params= with a pytree", lambda: fo.save(path("p.npz"), P(), params=True), TypeError,
        "params= is only for stateful optimizers; to keep parameters with a functional state, save them as one "
        "pytree, e.g. fo.save(path, (params, state))"),
    Row("fo.save params of another shape", lambda: fo.save(path("p2.npz"), sgd(), params={"w": jnp.ones(3)}),
        ValueError, "params['w']: float32(3,) given, the optimizer's parameter is float32(2,)"),
]


def _message(err: BaseException) -> str:
    # a KeyError's str() adds quotes around its argument
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]
    return str(err)


def _run(call: Callable[[], Any]) -> BaseException | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except Exception as e:  # noqa: BLE001 - the outcome is what is checked
            return e
    return None


def test_the_table_is_large_and_its_ids_unique():
    assert len(ROWS) >= 60
    assert len({r.id for r in ROWS}) == len(ROWS)
    for r in ROWS:
        assert r.message is not None or r.pattern is not None or (r.torch is not None and r.torch_does == "same"), r.id
        assert r.torch_does in ("same", "type", "accepts") or r.torch_does.startswith("raises "), r.id


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_invalid_call(row: Row) -> None:
    err = _run(row.call)
    assert err is not None, f"{row.id}: funcopt accepted the call"
    assert type(err) is row.exc, f"{row.id}: {type(err).__name__}({_message(err)!r}), expected {row.exc.__name__}"
    got = _message(err)
    if row.message is not None:
        assert got == row.message
    if row.pattern is not None:
        assert re.fullmatch(row.pattern, got, flags=re.DOTALL), got
    if row.torch is None:
        return
    expected = _run(row.torch)
    if row.torch_does == "same":
        assert expected is not None, f"{row.id}: torch accepts this call now"
        assert type(expected) is row.exc and _message(expected) == got, \
            f"torch: {type(expected).__name__}({_message(expected)!r}); funcopt: {type(err).__name__}({got!r})"
        if row.message is not None:
            assert _message(expected) == row.message
    elif row.torch_does == "type":
        assert expected is not None and type(expected) is row.exc, f"torch: {expected!r}"
    elif row.torch_does == "accepts":
        assert expected is None, f"torch now rejects this call too: {expected!r}; make the row 'same'"
    else:
        name = row.torch_does.removeprefix("raises ")
        assert expected is not None and type(expected).__name__ == name, f"torch: {expected!r}"


# ---------------------------------------------------------------------- unknown group keys


def test_unknown_group_keys_are_kept_as_torch_keeps_them():
    """torch keeps keys it does not know in a param group: in param_groups, state_dict and repr, through
    load_state_dict too. funcopt does the same; such keys never reach the algorithm. An unknown
    constructor keyword is a TypeError in both."""
    ours = O.SGD([{"params": P(), "tag": "encoder"}], lr=0.1, momentum=0.9)
    theirs = TO.SGD([{"params": TP(), "tag": "encoder"}], lr=0.1, momentum=0.9)
    for opt in (ours, theirs):
        assert opt.param_groups[0]["tag"] == "encoder"
        assert opt.state_dict()["param_groups"][0]["tag"] == "encoder"
        assert "    tag: encoder\n" in repr(opt)
    # beyond torch's keys: the parameter names and funcopt's state-dtype options (its own constructor's)
    own = set(STATE_DTYPE_ARGS) & set(inspect.signature(O.SGD).parameters)
    assert set(ours.param_groups[0]) == set(theirs.param_groups[0]) | {"param_names"} | own

    # a key added later, then saved and loaded into a fresh optimizer, comes back in both libraries
    for opt, fresh in ((ours, O.SGD(P(), lr=0.1, momentum=0.9)), (theirs, TO.SGD(TP(), lr=0.1, momentum=0.9))):
        opt.param_groups[0]["owner"] = 7
        fresh.load_state_dict(opt.state_dict())
        assert fresh.param_groups[0]["owner"] == 7 and fresh.param_groups[0]["tag"] == "encoder"

    # editing it changes nothing in the step
    before = np.asarray(ours({"w": jnp.ones(2)}).params["w"])
    ours.param_groups[0]["tag"] = "decoder"
    twin = O.SGD(P(), lr=0.1, momentum=0.9)
    twin({"w": jnp.ones(2)})
    np.testing.assert_array_equal(before, np.asarray(twin.params["w"]))
    np.testing.assert_array_equal(np.asarray(ours({"w": jnp.ones(2)}).params["w"]),
                                  np.asarray(twin({"w": jnp.ones(2)}).params["w"]))

    for make in (lambda: O.SGD(P(), lr=0.1, tag="x"), lambda: TO.SGD(TP(), lr=0.1, tag="x")):
        err = _run(make)
        assert type(err) is TypeError and "unexpected keyword argument 'tag'" in str(err)
