"""torch.optim's own test database (``optim_db``) as funcopt's parity and error suite.

torch ships one ``OptimizerInfo`` per optimizer in
``torch.testing._internal.common_optimizers.optim_db``: ``optim_inputs_func`` gives the
configurations torch tests, and ``optim_error_inputs_func`` the invalid inputs with the exception
type and message regex torch raises. This module drives that database itself, for every optimizer
funcopt has (all but ``SparseAdam``):

* every CPU configuration, with the ``fused`` variants torch adds on the CPU
  (``_get_optim_inputs_including_global_cliquey_kwargs``, as torch's own tests call it), in float32 and
  float64, and in complex64 where torch runs complex parameters (its ``test_complex``: the optimizers
  with ``supports_complex``, without ``differentiable`` and ``fused``), runs 25 steps in torch and in
  ``fo.optim`` on the same parameters and gradients, and must agree at every step;
* at step 13 the state_dict goes both ways: funcopt's into a fresh torch optimizer, which then follows
  funcopt's own continuation, and torch's into the funcopt optimizer, which then follows torch's;
* every CPU error input raises, through ``fo.optim``, torch's exception type with a message that
  ``re.search`` matches with torch's regex.

What funcopt deliberately does differently is in ONE table, :data:`DELIBERATE` (the same table is in
docs/migration_pytorch.md): a configuration or error input a row covers must do what the row says,
and every row is checked.

Configurations are built as torch's ``OptimizerInput`` gives them: ``params=None`` means the model's
parameters (a list, as ``model.parameters()``), a tensor in the keyword arguments becomes the array a
user would write (``torch.tensor(0.001)`` -> a 0-d ``jnp`` array of the same dtype).

Tolerances (torch and funcopt run the same formulas; XLA orders float arithmetic differently):

* float32 / complex64: ``rtol=1e-5, atol=1e-6``; float64: ``rtol=1e-10, atol=1e-12``.
* ASGD's ``eta`` / ``mu`` and NAdam's ``mu_product``: torch keeps these per-parameter scalars in its
  default dtype, float32, also for float64 parameters. funcopt keeps them in the parameters' precision
  (float64 here: it does NOT copy torch's float32 rounding), so the float64 runs of these two agree to
  ``rtol=1e-6, atol=1e-9``: the float32 rounding of those scalars, carried over 25 steps.
* Muon orthogonalizes in bfloat16 (torch's rule, which funcopt follows rounding for rounding); a float
  ordering difference can flip one bfloat16 rounding of the orthogonalized update, which moves that
  element by one bfloat16 ulp of the update: ``atol = lr * 2**-6`` on top of the dtype's tolerance.
* L-BFGS in float32: the inner loop stops on ``tolerance_change`` tests that float32 rounding decides
  near the minimum, so the two may take a different number of inner iterations there:
  ``rtol=1e-4, atol=2e-4`` (float64 runs agree to ``rtol=1e-10``).
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.testing._internal.common_optimizers import (
    OptimizerErrorEnum,
    _get_optim_inputs_including_global_cliquey_kwargs,
    optim_db,
)

import funcopt as fo

STEPS = 25
RESUME = 13  # the state_dicts are exchanged after this many steps
DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "migration_pytorch.md"

INFOS = [info for info in optim_db if hasattr(fo.optim, info.name)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """torch's small ops on a busy machine: one thread is ~100x faster than several waiting on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- the deliberate differences


@dataclasses.dataclass(frozen=True)
class Deliberate:
    """One thing funcopt deliberately does differently from torch, and why."""

    what: str
    torch: str
    funcopt: str
    reason: str
    # which configurations (optimizer name, kwargs, dtype) and error inputs (optimizer name, error input) it covers
    config: Callable[[str, dict, Any], bool] = lambda name, kwargs, dtype: False
    error: Callable[[str, Any], bool] = lambda name, error_input: False
    # what funcopt raises for them: (type, regex), or None when it does torch's thing at another time
    raises: tuple[type[BaseException], str] | None = None


DELIBERATE = [
    Deliberate(
        "`differentiable=True`",
        "differentiates through `step()` with autograd",
        "`ValueError` at construction",
        "a funcopt step is a pure function: differentiate through the functional optimizer "
        "(`jax.grad` over `fo.adam(...).update`) instead",
        config=lambda name, kwargs, dtype: bool(kwargs.get("differentiable")),
        raises=(ValueError, r"^differentiable=True is not supported"),
    ),
    Deliberate(
        "the same parameter twice in one group",
        "`UserWarning` (a future error), then steps the one tensor twice",
        "`ValueError` with torch's words",
        "funcopt copies the arrays it is given: the two entries would become two independent parameters",
        error=lambda name, e: e.optimizer_error_input.desc == "a param group cannot have duplicate parameters",
        raises=(ValueError, r"optimizer contains a parameter group with duplicate parameters"),
    ),
    Deliberate(
        "complex parameters in `Adafactor` and `Muon`",
        "`RuntimeError` at the first `step()`",
        "the same `RuntimeError` at construction",
        "the state is built at construction (it exists before the first step, as MegEngine shows it), and "
        "the functional optimizer checks its parameters there",
        error=lambda name, e: e.error_on == OptimizerErrorEnum.STEP_ERROR,
    ),
    Deliberate(
        "complex parameters in `LBFGS`",
        "views each complex parameter as a pair of reals",
        "`ValueError` at construction",
        "`fo.lbfgs` works on real parameters: give the real and imaginary parts as two real parameters",
        config=lambda name, kwargs, dtype: name == "LBFGS" and np.issubdtype(dtype, np.complexfloating),
        raises=(ValueError, r"^lbfgs: parameters must be real"),
    ),
    Deliberate(
        "`SparseAdam`, sparse gradients",
        "`SparseAdam` for sparse gradient tensors",
        "no counterpart",
        "JAX gradients of dense arrays are dense: `Adam` replaces it",
    ),
    Deliberate(
        "`capturable=True`, `foreach=True`, and `fused=True` except on `Adam` / `AdamW` / `SGD`",
        "CUDA-graph capture, multi-tensor and fused kernels",
        "accepted, same numbers, no other effect (and torch's errors for invalid combinations)",
        "every step is already one compiled XLA call with hyperparameters as device arrays",
    ),
    Deliberate(
        "one step count per parameter group",
        "one `step` per parameter: a parameter without a gradient does not advance",
        "a group without gradients does not advance (as torch); in a group where only some parameters have "
        "gradients the count advances for all, and the others keep their values and state",
        "the functional state holds one step count per group; an optimizer whose update reads the count "
        "(Adam's bias corrections) then differs from torch for a parameter that missed steps",
    ),
    Deliberate(
        "ASGD's `eta` / `mu`, NAdam's `mu_product` with float64 parameters",
        "float32 scalars (its default dtype)",
        "float64, the parameters' precision",
        "no float32 rounding in a float64 run; the two differ by about 1e-7 relative after 25 steps",
    ),
]


def _deliberate_config(name: str, kwargs: dict, dtype: Any) -> Deliberate | None:
    rows = [row for row in DELIBERATE if row.config(name, kwargs, dtype)]
    assert len(rows) <= 1, [row.what for row in rows]
    return rows[0] if rows else None


def _deliberate_error(name: str, error_input: Any) -> Deliberate | None:
    rows = [row for row in DELIBERATE if row.error(name, error_input)]
    assert len(rows) <= 1, [row.what for row in rows]
    return rows[0] if rows else None


# ---------------------------------------------------------------------- conversion, as a user would write it


def _shapes(name: str) -> list[tuple[int, ...]]:
    return [(3, 2), (2, 3)] if name == "Muon" else [(3, 2), (3,)]  # Muon takes matrices only


def _jax_value(x: Any, memo: dict[int, Any]) -> Any:
    """A torch object of an OptimizerInput as a funcopt user writes it (the same tensor -> the same array)."""
    if isinstance(x, torch.Tensor):
        if id(x) not in memo:
            memo[id(x)] = jnp.asarray(x.detach().numpy())
        return memo[id(x)]
    if isinstance(x, tuple):
        return tuple(_jax_value(v, memo) for v in x)
    if isinstance(x, list):
        return [_jax_value(v, memo) for v in x]
    if isinstance(x, dict):
        return {k: _jax_value(v, memo) for k, v in x.items()}
    return x


def _numbers(name: str, dtype: Any, seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial parameters and one gradient list per step."""
    rng = np.random.default_rng(seed)

    def draw(shape):
        x = rng.standard_normal(shape)
        if np.issubdtype(dtype, np.complexfloating):
            x = x + 1j * rng.standard_normal(shape)
        return x.astype(dtype)

    params = [draw(s) for s in _shapes(name)]
    return params, [[draw(s) for s in _shapes(name)] for _ in range(STEPS)]


def _to_torch_state_dict(sd: dict) -> dict:
    """funcopt's state_dict (NumPy arrays) for torch: tensors, lists entry by entry, the rest as it is."""
    def convert(v):
        if isinstance(v, np.ndarray):
            return torch.as_tensor(v)
        if isinstance(v, list):
            return [convert(x) for x in v]
        return v

    return {"state": {k: {n: convert(v) for n, v in s.items()} for k, s in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


# ---------------------------------------------------------------------- the two runners


class _Torch:
    def __init__(self, cls, kwargs, params):
        self.params = [torch.nn.Parameter(torch.tensor(p)) for p in params]
        self.opt = cls(self.params, **kwargs)

    def step(self, grads, loss):
        if loss is None:
            for p, g in zip(self.params, grads):
                p.grad = torch.tensor(g)
            self.opt.step()
        else:
            def closure():
                self.opt.zero_grad()
                value = loss(torch, self.params)
                value.backward()
                return value
            self.opt.step(closure)

    def values(self):
        return [p.detach().numpy().copy() for p in self.params]


class _Funcopt:
    def __init__(self, cls, kwargs, params):
        self.opt = cls([jnp.asarray(p) for p in params], **kwargs)

    def step(self, grads, loss):
        if loss is None:
            self.opt([jnp.asarray(g) for g in grads])
        else:
            fn = _jax_loss(loss)

            def closure():
                self.opt.zero_grad()
                return self.opt.backward(fn)
            self.opt.step(closure)

    def values(self):
        return [np.asarray(p) for p in self.opt.params]


_JAX_LOSSES: dict[Any, Callable] = {}


def _jax_loss(loss):
    # one function object per loss, so that the compiled L-BFGS update is reused
    if loss not in _JAX_LOSSES:
        _JAX_LOSSES[loss] = lambda params: loss(jnp, params)
    return _JAX_LOSSES[loss]


class _LeastSquares:
    """A smooth loss written once for both libraries (``xp`` is torch or jax.numpy)."""

    def __init__(self, dtype):
        rng = np.random.default_rng(5)
        self.x = rng.standard_normal((4, 2)).astype(dtype)
        self.y = rng.standard_normal((4, 3)).astype(dtype)

    def __call__(self, xp, params):
        w, b = params
        x, y = (torch.tensor(self.x), torch.tensor(self.y)) if xp is torch else (self.x, self.y)
        return ((x @ w.T + b - y) ** 2).sum() + (w ** 4).sum()


def _tolerance(name: str, kwargs: dict, dtype: Any) -> dict[str, float]:
    double = np.finfo(dtype).bits >= 64
    tol = dict(rtol=1e-10, atol=1e-12) if double else dict(rtol=1e-5, atol=1e-6)
    if double and name in ("ASGD", "NAdam"):
        tol = dict(rtol=1e-6, atol=1e-9)
    if name == "Muon":
        tol["atol"] += float(kwargs.get("lr", 1e-3)) * 2.0**-6
    if name == "LBFGS" and not double:
        tol = dict(rtol=1e-4, atol=2e-4)
    return tol


def _assert_close(ours, theirs, tol, what):
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.dtype == b.dtype, (what, i, a.dtype, b.dtype)
        np.testing.assert_allclose(a, b, err_msg=f"{what}, parameter {i}", **tol)


# ---------------------------------------------------------------------- configurations


def _configurations() -> list[tuple[Any, Any, Any]]:
    out = []
    for info in INFOS:
        for dtype in (np.float32, np.float64):
            for oi in _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float32, info):
                out.append((info, oi, dtype))
        if info.supports_complex:  # torch's test_complex
            for oi in _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.complex64, info,
                                                                          skip=("differentiable", "fused")):
                out.append((info, oi, np.complex64))
    return out


CONFIGURATIONS = _configurations()


def _config_id(case) -> str:
    info, oi, dtype = case
    return f"{info.name}-{oi.desc}-{np.dtype(dtype).name}".replace(" ", "_")


@pytest.mark.parametrize("case", CONFIGURATIONS, ids=[_config_id(c) for c in CONFIGURATIONS])
def test_configuration_matches_torch(case) -> None:
    info, oi, dtype = case
    name = info.name
    assert oi.params is None  # the model's parameters
    kwargs = _jax_value(oi.kwargs, {})
    params, grads = _numbers(name, dtype, seed=CONFIGURATIONS.index(case))
    x64 = np.dtype(dtype) in (np.float64, np.complex128)
    row = _deliberate_config(name, oi.kwargs, dtype)
    with jax.enable_x64(x64):
        if row is not None:
            with pytest.raises(row.raises[0], match=row.raises[1]):
                _Funcopt(getattr(fo.optim, name), kwargs, params)
            return
        ours = _Funcopt(getattr(fo.optim, name), kwargs, params)
        theirs = _Torch(info.optim_cls, oi.kwargs, params)
        loss = _LeastSquares(dtype) if info.step_requires_closure else None
        tol = _tolerance(name, oi.kwargs, dtype)
        for s in range(RESUME):
            ours.step(grads[s], loss)
            theirs.step(grads[s], loss)
            _assert_close(ours.values(), theirs.values(), tol, f"step {s + 1}")

        our_sd, our_values = copy.deepcopy(ours.opt.state_dict()), ours.values()
        torch_sd, torch_values = copy.deepcopy(theirs.opt.state_dict()), theirs.values()
        our_rest, torch_rest = [], []
        for s in range(RESUME, STEPS):
            ours.step(grads[s], loss)
            theirs.step(grads[s], loss)
            our_rest.append(ours.values())
            torch_rest.append(theirs.values())
            _assert_close(our_rest[-1], torch_rest[-1], tol, f"step {s + 1}")

        # funcopt's state_dict -> torch, which continues as funcopt did
        resumed = _Torch(info.optim_cls, oi.kwargs, our_values)
        resumed.opt.load_state_dict(_to_torch_state_dict(our_sd))
        for s in range(RESUME, STEPS):
            resumed.step(grads[s], loss)
            _assert_close(resumed.values(), our_rest[s - RESUME], tol, f"torch resumed from funcopt, step {s + 1}")

        # torch's state_dict -> funcopt (the same optimizer: loading keeps its compiled step), which continues
        # as torch did
        ours.opt.params = [jnp.asarray(v) for v in torch_values]
        ours.opt.load_state_dict(torch_sd)
        for s in range(RESUME, STEPS):
            ours.step(grads[s], loss)
            _assert_close(ours.values(), torch_rest[s - RESUME], tol, f"funcopt resumed from torch, step {s + 1}")


# ---------------------------------------------------------------------- error inputs


ERROR_CASES = [(info, e) for info in INFOS for e in info.optim_error_inputs_func(device="cpu", dtype=torch.float32)]


def _error_id(case) -> str:
    info, e = case
    return f"{info.name}-{e.optimizer_error_input.desc}".replace(" ", "_")


def _error_call(info, error_input) -> Callable[[], Any]:
    """The funcopt call of an error input: construction, then (for step errors) a step with its gradients."""
    oi = error_input.optimizer_error_input
    memo: dict[int, Any] = {}
    torch_params = oi.params if oi.params is not None else [torch.randn(*s) for s in _shapes(info.name)]
    params = _jax_value(torch_params, memo)
    kwargs = _jax_value(oi.kwargs, memo)

    def call():
        opt = getattr(fo.optim, info.name)(params, **kwargs)
        if error_input.error_on == OptimizerErrorEnum.STEP_ERROR:
            opt([jnp.asarray(p.grad.numpy()) for p in torch_params])

    return call


@pytest.mark.parametrize("case", ERROR_CASES, ids=[_error_id(c) for c in ERROR_CASES])
def test_error_input_raises_torchs_error(case) -> None:
    info, error_input = case
    call = _error_call(info, error_input)
    row = _deliberate_error(info.name, error_input)
    if row is not None and row.raises is not None:
        with pytest.raises(row.raises[0], match=row.raises[1]):
            call()
        return
    if row is not None:  # torch's error, raised at construction already
        error_input = copy.copy(error_input)
        error_input.error_on = OptimizerErrorEnum.CONSTRUCTION_ERROR
        call = _error_call(info, error_input)
    if issubclass(error_input.error_type, Warning):
        with pytest.warns(error_input.error_type, match=error_input.error_regex):
            call()
        return
    with pytest.raises(error_input.error_type) as err:
        call()
    assert type(err.value) is error_input.error_type or error_input.error_type is Exception
    assert re.search(error_input.error_regex, str(err.value)), (str(err.value), error_input.error_regex)


# ---------------------------------------------------------------------- the table itself


def test_every_optimizer_of_optim_db_but_sparse_adam_is_covered() -> None:
    assert [info.name for info in optim_db if info not in INFOS] == ["SparseAdam"]
    assert not hasattr(fo.optim, "SparseAdam") and not hasattr(fo, "sparse_adam")


def test_every_config_and_error_row_covers_something() -> None:
    for row in DELIBERATE:
        configs = [c for c in CONFIGURATIONS if row.config(c[0].name, c[1].kwargs, c[2])]
        errors = [c for c in ERROR_CASES if row.error(c[0].name, c[1])]
        if row.raises is not None or "construction" in row.funcopt:
            assert configs or errors, row.what


def test_accepted_torch_options_change_nothing() -> None:
    w = np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(3, 2)
    plain = fo.optim.Adam([jnp.asarray(w)], lr=0.1)
    flagged = fo.optim.Adam([jnp.asarray(w)], lr=0.1, capturable=True, foreach=True)
    sgd_plain = fo.optim.SGD([jnp.asarray(w)], lr=0.1, momentum=0.9)
    sgd_flagged = fo.optim.SGD([jnp.asarray(w)], lr=0.1, momentum=0.9, foreach=True)  # fused=True: a kernel
    for s in range(3):
        g = [jnp.full((3, 2), 0.5 - s, jnp.float32)]
        for opt in (plain, flagged, sgd_plain, sgd_flagged):
            opt(g)
    np.testing.assert_array_equal(plain.params[0], flagged.params[0])
    np.testing.assert_array_equal(sgd_plain.params[0], sgd_flagged.params[0])


def test_one_step_count_per_group() -> None:
    opt = fo.optim.Adam([{"params": [jnp.ones(2), jnp.ones(3)]}, {"params": [jnp.ones(1)]}], lr=0.1)
    opt([[jnp.ones(2), None], None])
    steps = [int(opt.state_dict()["state"][i]["step"]) for i in range(3)]
    assert steps == [1, 1, 0]  # the second parameter advanced with its group, unchanged otherwise
    np.testing.assert_array_equal(opt.params[0][1], 1.0)
    np.testing.assert_array_equal(opt.state_dict()["state"][1]["exp_avg"], 0.0)


def test_scalar_state_is_kept_in_the_parameters_precision() -> None:
    with jax.enable_x64(True):
        for cls, key in ((fo.optim.ASGD, "eta"), (fo.optim.NAdam, "mu_product")):
            opt = cls([jnp.ones(2, jnp.float64)])
            opt([jnp.ones(2, jnp.float64)])
            assert opt.state_dict()["state"][0][key].dtype == np.float64
    tp = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    topt = torch.optim.ASGD([tp])
    tp.grad = torch.ones(2, dtype=torch.float64)
    topt.step()
    assert topt.state[tp]["eta"].dtype == torch.float32  # torch's, as the table says


def test_the_migration_guide_has_the_same_table() -> None:
    text = DOCS.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for row in DELIBERATE:
        expected = f"| {row.what} | {row.torch} | {row.funcopt} | {row.reason} |"
        assert expected in rows, expected
    assert sum(1 for line in rows if line.startswith("| ") and any(
        line.startswith(f"| {row.what} |") for row in DELIBERATE)) == len(DELIBERATE)

