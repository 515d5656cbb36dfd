"""fo.optim.LBFGS against torch.optim.LBFGS: trajectories, closures, state_dict both ways, errors, compiles.

Tolerances (float64 throughout, jax's x64 mode switched on per test):

- free-running runs of 25 ``step(closure)`` calls (up to 4 inner iterations
  each, so about 100 L-BFGS iterations): parameters rtol 1e-8 / atol 1e-11 at
  every step, the returned loss rtol 1e-7 (it is near 0 late in a run), and exact equality of the counters
  (``n_iter``, ``func_evals``, stored pairs) and of the number of closure calls,
  so every branch went the same way. Last-bit differences between torch's and
  XLA's reductions grow over the iterations (up to 7e-10 observed), hence 1e-8.
- one step from the same parameters and state (a torch state_dict loaded into
  ours, or ours into torch): parameters rtol 1e-10, state vectors within 1e-8
  of their max-norm, scalars rtol 1e-8, counters equal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

import funcopt as fo
from tests.optim import internals

SW = "strong_wolfe"
FREE = dict(rtol=1e-8, atol=1e-11)
ONE_STEP = dict(rtol=1e-10, atol=1e-13)

# ---------------------------------------------------------------- objectives, written once for both libraries


def _flat(p, lib):
    leaves = [leaf.reshape(-1) for leaf in jax.tree.leaves(p)]
    return torch.cat(leaves) if lib is torch else jnp.concatenate(leaves)


def rosenbrock(p, lib):
    x = _flat(p, lib)
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


_DATA = load_breast_cancer()
_X = (_DATA.data - _DATA.data.mean(0)) / _DATA.data.std(0)
_Y = _DATA.target.astype(np.float64)


def logistic(p, lib, x=_X, y=_Y):
    if lib is torch:
        x, y = torch.as_tensor(x), torch.as_tensor(y)
    z = x @ p["w"] + p["b"]
    # log(1 + exp(z)) - y z, in a form both libraries compute the same way
    softplus = lib.log1p(lib.exp(-abs(z))) + (z + abs(z)) / 2
    return (softplus - y * z).mean() + 0.5e-3 * (p["w"] ** 2).sum()


def _jax_loss(loss):
    return lambda p: loss(p, jnp)


_JAX_LOSS = {rosenbrock: _jax_loss(rosenbrock), logistic: _jax_loss(logistic)}


def _rosen_params(seed=1):
    x = np.random.default_rng(seed).standard_normal(10)
    # a matrix, a 0-d, a 1-element and a vector leaf
    return {"m": x[:4].reshape(2, 2), "s": np.array(x[4]), "o": x[5:6], "v": x[6:]}


def _logistic_params(seed=0):
    return {"w": np.random.default_rng(seed).standard_normal(_X.shape[1]) * 0.1, "b": np.array(0.3)}


CASES = [
    # (id, loss, params, LBFGS keywords)
    ("rosenbrock", rosenbrock, _rosen_params(), dict(lr=0.3, max_iter=4, history_size=7)),
    ("rosenbrock-sw", rosenbrock, _rosen_params(), dict(line_search_fn=SW, max_iter=3, history_size=7)),
    ("logistic", logistic, _logistic_params(), dict(max_iter=4, history_size=5)),
    ("logistic-sw", logistic, _logistic_params(), dict(line_search_fn=SW, max_iter=3, history_size=5)),
]
IDS = [c[0] for c in CASES]

# ---------------------------------------------------------------- runners


class TorchRun:
    """torch.optim.LBFGS on tensors made from the same NumPy values; records each step."""

    def __init__(self, loss, params, kw, state_dict=None, mode="pure"):
        leaves, self.treedef = jax.tree.flatten(params)
        self.tparams = [torch.tensor(np.array(x), requires_grad=True) for x in leaves]
        self.opt = torch.optim.LBFGS(self.tparams, **kw)
        if state_dict is not None:
            self.opt.load_state_dict(state_dict)
        self.loss, self.mode, self.calls = loss, mode, 0

    def closure(self):
        self.calls += 1
        self.opt.zero_grad()
        if self.mode == "pure":
            value = self.loss(self.treedef.unflatten(self.tparams), torch)
            value.backward()
            return value
        # the same numbers as OursRun's two-call closure
        total = 0
        for _ in range(2):
            half = 0.5 * self.loss(self.treedef.unflatten(self.tparams), torch)
            half.backward()
            total = total + half.detach()
        return total

    def step(self):
        return self.opt.step(self.closure).item()

    @property
    def params(self):
        return [t.detach().numpy().copy() for t in self.tparams]

    @property
    def state(self):
        return self.opt.state[self.tparams[0]]


class OursRun:
    """fo.optim.LBFGS with a closure that makes one backward() call (pure) or two (host callback)."""

    def __init__(self, loss, params, kw, mode="pure"):
        self.opt = fo.optim.LBFGS(jax.tree.map(jnp.asarray, params), **kw)
        self.loss, self.mode, self.calls = _JAX_LOSS[loss], mode, 0
        self.half = lambda p: 0.5 * self.loss(p)

    def closure(self):
        self.calls += 1
        self.opt.zero_grad()
        if self.mode == "pure":
            return self.opt.backward(self.loss)
        # two backward() calls: not one pure loss, so each evaluation calls this closure
        return self.opt.backward(self.half) + self.opt.backward(self.half)

    def step(self):
        return float(self.opt.step(self.closure))

    @property
    def params(self):
        return [np.asarray(x) for x in jax.tree.leaves(self.opt.params)]


def _to_torch(sd):
    """Our NumPy state_dict as torch's: arrays to tensors, list entries one by one."""
    def convert(v):
        if isinstance(v, np.ndarray):
            return torch.as_tensor(v)
        if isinstance(v, list):
            return [convert(x) for x in v]
        return v

    return {"state": {k: {n: convert(v) for n, v in s.items()} for k, s in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def _torch_value(v):
    if isinstance(v, torch.Tensor):
        return v.detach().numpy()
    if isinstance(v, list):
        return [_torch_value(x) for x in v]
    return v


def _close_in_norm(x, y, tol, msg):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert x.shape == y.shape, msg
    err, scale = np.max(np.abs(x - y), initial=0.0), np.max(np.abs(y), initial=0.0)
    assert err <= tol * scale, f"{msg}: max error {err:.3e} vs {tol:g} x max-norm {scale:.3e}"


def assert_state_matches(ours: dict, theirs: dict, tol: float, msg: str = "") -> None:
    """Our state_dict entry against torch's LBFGS state, key by key."""
    assert set(ours) == set(theirs), (msg, sorted(ours), sorted(theirs))
    assert ours["n_iter"] == theirs["n_iter"] and ours["func_evals"] == theirs["func_evals"], msg
    for k in ("t", "H_diag", "prev_loss"):
        if k in theirs:
            np.testing.assert_allclose(ours[k], _torch_value(theirs[k]), rtol=tol, err_msg=f"{msg} {k}")
    for k in ("d", "prev_flat_grad"):
        if k in theirs:
            _close_in_norm(ours[k], _torch_value(theirs[k]), tol, f"{msg} {k}")
    for k in ("old_dirs", "old_stps"):
        if k in theirs:
            assert len(ours[k]) == len(theirs[k]), (msg, k)
            for i, (x, y) in enumerate(zip(ours[k], theirs[k])):
                _close_in_norm(x, _torch_value(y), tol, f"{msg} {k}[{i}]")
    if "ro" in theirs:
        _close_in_norm(ours["ro"], _torch_value(theirs["ro"]), tol, f"{msg} ro")
    if "al" in theirs:
        assert len(ours["al"]) == len(theirs["al"]), msg
        assert [v is None for v in ours["al"]] == [v is None for v in theirs["al"]], msg
        stored = [i for i, v in enumerate(theirs["al"]) if v is not None]
        _close_in_norm([ours["al"][i] for i in stored], [_torch_value(theirs["al"][i]) for i in stored], tol,
                       f"{msg} al")


# ---------------------------------------------------------------- trajectories


@pytest.mark.parametrize("mode", ["pure", "callback"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trajectory_matches_torch_over_25_steps(case, mode):
    _, loss, params, kw = case
    steps = 25
    with jax.enable_x64(True):
        ours, theirs = OursRun(loss, params, kw, mode), TorchRun(loss, params, kw, mode=mode)
        for k in range(steps):
            ours_loss, torch_loss = ours.step(), theirs.step()
            msg = f"after step {k + 1}"
            np.testing.assert_allclose(ours_loss, torch_loss, rtol=1e-7, atol=1e-12, err_msg=msg)
            for (name, _), x, y in zip(fo.named_leaves(params), ours.params, theirs.params):
                assert x.dtype == np.float64 and x.shape == y.shape
                np.testing.assert_allclose(x, y, err_msg=f"{msg}, param {name}", **FREE)
            sd = ours.opt.state_dict()["state"][0]
            assert sd["n_iter"] == theirs.state["n_iter"], msg
            assert sd["func_evals"] == theirs.state["func_evals"], msg
            assert len(sd["old_dirs"]) == len(theirs.state["old_dirs"]), msg
            expected_calls = theirs.calls if mode == "callback" else k + 1
            assert ours.calls == expected_calls, msg
        assert_state_matches(ours.opt.state_dict()["state"][0], theirs.state, 1e-6, "final state")
        # real work: several iterations a step, the history full
        assert theirs.state["n_iter"] > 1.5 * steps
        assert len(theirs.state["old_dirs"]) == kw["history_size"]


def test_torch_and_pure_closure_agree_on_the_loss_decrease_float32():
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), _logistic_params())
    x, y = jnp.asarray(_X, jnp.float32), jnp.asarray(_Y, jnp.float32)
    opt = fo.optim.LBFGS(jax.tree.map(jnp.asarray, params), line_search_fn=SW)

    def loss_fn(p, x, y):
        return logistic(p, jnp, x, y)

    def closure():
        opt.zero_grad()
        return opt.backward(loss_fn, x, y)

    losses = [float(opt.step(closure)) for _ in range(4)]
    params64 = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
    theirs = TorchRun(logistic, params64, dict(line_search_fn=SW))
    optimum = min(theirs.step() for _ in range(6))
    assert losses[0] > losses[-1]
    assert abs(float(loss_fn(opt.params, x, y)) - optimum) < 1e-5
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(opt.params))
    assert opt.state_dict()["state"][0]["d"].dtype == np.float32


# ---------------------------------------------------------------- state_dict, both ways


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_state_dict_loads_and_each_step_matches_torch(case):
    """Each step, ours given torch's parameters and state_dict (tensors as they are) takes torch's step."""
    _, loss, params, kw = case
    with jax.enable_x64(True):
        theirs, ours = TorchRun(loss, params, kw), OursRun(loss, params, kw)
        for k in range(12):
            ours.opt.params = jax.tree.structure(params).unflatten(theirs.params)
            ours.opt.load_state_dict(theirs.opt.state_dict())
            ours_loss, torch_loss = ours.step(), theirs.step()
            msg = f"step {k + 1}"
            np.testing.assert_allclose(ours_loss, torch_loss, rtol=1e-12, err_msg=msg)
            for x, y in zip(ours.params, theirs.params):
                np.testing.assert_allclose(x, y, err_msg=msg, **ONE_STEP)
            assert_state_matches(ours.opt.state_dict()["state"][0], theirs.state, 1e-8, msg)
        # loading a state_dict keeps the compiled update (same static options)
        assert internals.lbfgs_update(ours.opt)._cache_size() == 1


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_our_state_dict_loads_into_torch_and_training_continues_alike(case):
    _, loss, params, kw = case
    with jax.enable_x64(True):
        ours = OursRun(loss, params, kw)
        for _ in range(5):
            ours.step()
        sd = ours.opt.state_dict()
        start = jax.tree.structure(params).unflatten(ours.params)
        theirs = TorchRun(loss, start, kw, state_dict=_to_torch(sd))
        assert theirs.opt.param_groups[0]["max_eval"] == sd["param_groups"][0]["max_eval"]
        for k in range(6):
            ours_loss, torch_loss = ours.step(), theirs.step()
            tol = ONE_STEP if k == 0 else FREE
            np.testing.assert_allclose(ours_loss, torch_loss, rtol=1e-8)
            for x, y in zip(ours.params, theirs.params):
                np.testing.assert_allclose(x, y, err_msg=f"step {k + 1} after loading", **tol)
            assert ours.opt.state_dict()["state"][0]["func_evals"] == theirs.state["func_evals"]
            if k == 0:
                assert_state_matches(ours.opt.state_dict()["state"][0], theirs.state, 1e-8)


def test_state_dict_format_is_torchs():
    with jax.enable_x64(True):
        kw = dict(max_iter=3, history_size=4)
        ours = OursRun(rosenbrock, _rosen_params(), kw)
        theirs = TorchRun(rosenbrock, _rosen_params(), kw)
        # before any step: only the counters (torch has no state until its first step)
        assert ours.opt.state_dict()["state"] == {0: {"func_evals": 0, "n_iter": 0}}
        ours.step(), theirs.step()
        sd, tsd = ours.opt.state_dict(), theirs.opt.state_dict()
        assert list(sd["state"]) == list(tsd["state"]) == [0]
        entry = sd["state"][0]
        assert isinstance(entry["n_iter"], int) and isinstance(entry["func_evals"], int)
        assert isinstance(entry["old_dirs"], list) and entry["d"].shape == (10,)
        assert entry["t"].shape == () and entry["ro"][0].shape == ()
        assert len(entry["al"]) == 4 and entry["al"][-1] is None  # history_size entries, None past the pairs
        assert_state_matches(entry, tsd["state"][0], 1e-8)
        ours_group = {k: v for k, v in sd["param_groups"][0].items() if k != "param_names"}
        assert ours_group == tsd["param_groups"][0]
        assert sd["param_groups"][0]["param_names"] == ["m", "o", "s", "v"]
        # opt.state: the same entry under the first parameter's name
        assert list(ours.opt.state) == ["m"]
        np.testing.assert_array_equal(ours.opt.state["m"]["d"], entry["d"])


def test_fresh_state_loads_into_torch():
    with jax.enable_x64(True):
        kw = dict(max_iter=5)
        ours = OursRun(logistic, _logistic_params(), kw)
        theirs = TorchRun(logistic, _logistic_params(), kw, state_dict=_to_torch(ours.opt.state_dict()))
        reference = TorchRun(logistic, _logistic_params(), kw)
        theirs.step(), reference.step()
        for x, y in zip(theirs.params, reference.params):
            np.testing.assert_array_equal(x, y)


def test_round_trip_of_our_state_dict_continues_the_same_trajectory():
    with jax.enable_x64(True):
        kw = dict(line_search_fn=SW, max_iter=3, history_size=3)
        a = OursRun(rosenbrock, _rosen_params(), kw)
        for _ in range(4):
            a.step()
        b = OursRun(rosenbrock, jax.tree.structure(_rosen_params()).unflatten(a.params), kw)
        b.opt.load_state_dict(a.opt.state_dict())
        for _ in range(4):
            a.step(), b.step()
        for x, y in zip(a.params, b.params):
            np.testing.assert_array_equal(x, y)


def test_load_by_name_reorders_the_flat_state():
    with jax.enable_x64(True):
        kw = dict(max_iter=4, history_size=5)
        a = OursRun(rosenbrock, _rosen_params(), kw)
        a.step()
        p = a.opt.params
        sd = a.opt.state_dict()
        # the same parameters, listed in another order: the flat vectors must be permuted
        names = ["v", "s", "m", "o"]
        b = fo.optim.LBFGS([{"params": [p[n] for n in names], "param_names": names}], **kw)
        assert b.param_names == names
        b.load_state_dict(sd, by_name=True)
        offsets = {"m": slice(0, 4), "o": slice(4, 5), "s": slice(5, 6), "v": slice(6, 10)}
        loaded = b.state_dict()["state"][0]
        for key in ("d", "prev_flat_grad"):
            saved = sd["state"][0][key]
            np.testing.assert_array_equal(loaded[key], np.concatenate([saved[offsets[n]] for n in names]))
        for key in ("old_dirs", "old_stps"):
            for x, saved in zip(loaded[key], sd["state"][0][key]):
                np.testing.assert_array_equal(x, np.concatenate([saved[offsets[n]] for n in names]))
        with pytest.raises(ValueError, match="number of parameter groups"):
            b.load_state_dict({"state": {}, "param_groups": []})

        def loss_b(q):
            return rosenbrock(dict(zip(names, q)), jnp)

        def closure_b():
            b.zero_grad()
            return b.backward(loss_b)

        for _ in range(3):
            a.step(), b.step(closure_b)
        for i, n in enumerate(names):
            np.testing.assert_allclose(b.params[i], a.opt.params[n], rtol=1e-12)


def _snapshot(opt):
    sd = opt.state_dict()
    return jax.tree.map(np.array, jax.tree.leaves(sd["state"])), dict(sd["param_groups"][0])


@pytest.mark.parametrize("mutate, exc, msg", [
    (lambda sd: sd["state"][0].update(d=np.zeros(3)), ValueError, "'d' has shape"),
    (lambda sd: sd["state"][0].pop("prev_flat_grad"), ValueError, "needs all or none"),
    (lambda sd: sd["state"][0].update(ro=sd["state"][0]["ro"][:-1]), ValueError, "the same length"),
    (lambda sd: sd["state"][0].update(n_iter=-1), ValueError, "non-negative integer"),
    (lambda sd: sd["param_groups"][0].update(history_size=1), ValueError, "more than history_size=1"),
    (lambda sd: sd["param_groups"][0].update(line_search_fn="armijo"), RuntimeError, "only 'strong_wolfe'"),
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])), ValueError,
     "number of parameter groups"),
    (lambda sd: sd["param_groups"][0].update(params=[0]), ValueError, "doesn't match the size"),
])
def test_bad_state_dict_raises_and_changes_nothing(mutate, exc, msg):
    with jax.enable_x64(True):
        ours = OursRun(rosenbrock, _rosen_params(), dict(max_iter=4, history_size=5))
        ours.step()
        sd = ours.opt.state_dict()
        before = _snapshot(ours.opt)
        mutate(sd)
        with pytest.raises(exc, match=msg):
            ours.opt.load_state_dict(sd)
        after = _snapshot(ours.opt)
        jax.tree.map(np.testing.assert_array_equal, before[0], after[0])
        assert before[1] == after[1]


# ---------------------------------------------------------------- hyperparameters between steps


def test_param_group_edits_between_steps_match_torch():
    """lr (no recompile), max_iter and history_size (a rebuild that keeps the state) edited as in torch."""
    with jax.enable_x64(True):
        kw = dict(max_iter=4, history_size=6)
        ours, theirs = OursRun(logistic, _logistic_params(1), kw), TorchRun(logistic, _logistic_params(1), kw)
        edits = {2: dict(lr=0.5), 4: dict(max_iter=6), 6: dict(lr=0.8, max_iter=3)}
        for k in range(9):
            for g in (ours.opt.param_groups[0], theirs.opt.param_groups[0]):
                g.update(edits.get(k, {}))
            ours.step(), theirs.step()
            for x, y in zip(ours.params, theirs.params):
                np.testing.assert_allclose(x, y, err_msg=f"step {k + 1}", **FREE)
            assert ours.opt.state_dict()["state"][0]["n_iter"] == theirs.state["n_iter"]
        # a smaller history keeps the newest pairs
        entry = ours.opt.state_dict()["state"][0]
        ours.opt.param_groups[0]["history_size"] = 2
        ours.opt.step(ours.closure)
        smaller = ours.opt.state_dict()["state"][0]
        assert len(smaller["old_dirs"]) == 2 and len(smaller["al"]) == 2
        assert entry["n_iter"] < smaller["n_iter"]


# ---------------------------------------------------------------- compiles


def test_one_step_is_one_compiled_update_and_later_steps_do_not_recompile(compiles):
    x, y = jnp.asarray(_X, jnp.float32), jnp.asarray(_Y, jnp.float32)
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), _logistic_params())
    opt = fo.optim.LBFGS(params, line_search_fn=SW, max_iter=5)
    traces = []

    def loss_fn(p, x, y):
        traces.append(1)
        return logistic(p, jnp, x, y)

    def closure():
        opt.zero_grad()
        return opt.backward(loss_fn, x, y)

    x2, y2 = jnp.asarray(_X[::-1], jnp.float32), jnp.asarray(_Y[::-1], jnp.float32)
    start = len(compiles)  # what building the optimizer and the data compiled does not count
    opt.step(closure)
    first = len(compiles) - start
    first_traces = len(traces)
    for i in range(4):
        opt.param_groups[0]["lr"] = 1.0 / (i + 2)  # a new lr is data, not a new program
        opt.step(closure)
    # a new batch of the same shapes: no new program either
    opt.zero_grad()
    opt.backward(loss_fn, x2, y2)
    opt.step(lambda: (opt.zero_grad(), opt.backward(loss_fn, x2, y2))[1])
    # the first step compiles backward() and the whole L-BFGS update: two programs
    assert first == 2
    assert len(compiles) == start + first
    assert len(traces) == first_traces
    assert internals.lbfgs_update(opt)._cache_size() == 1


# ---------------------------------------------------------------- closures and errors


def test_callback_closure_sees_torchs_points_and_leaves_torchs_gradient():
    """A closure that is not one pure backward(): called at every evaluation, on the point torch uses."""
    with jax.enable_x64(True):
        kw = dict(line_search_fn=SW, max_iter=4)
        ours = OursRun(rosenbrock, _rosen_params(), kw, "callback")
        theirs = TorchRun(rosenbrock, _rosen_params(), kw, mode="callback")
        seen_ours, seen_torch = [], []
        ours_closure, torch_closure = ours.closure, theirs.closure
        ours.closure = lambda: (seen_ours.append(np.asarray(ours.opt.params["v"])), ours_closure())[1]
        theirs.closure = lambda: (seen_torch.append(theirs.tparams[3].detach().numpy().copy()),
                                  torch_closure())[1]
        ours.step(), theirs.step()
        assert len(seen_ours) == len(seen_torch) > 4
        for a, b in zip(seen_ours, seen_torch):
            np.testing.assert_allclose(a, b, **ONE_STEP)
        # as in torch, the gradient left is that of the last evaluation
        np.testing.assert_allclose(ours.opt.grad["v"], theirs.tparams[3].grad.numpy(), **ONE_STEP)


@pytest.mark.parametrize("closure_kind", ["accumulating", "clipped", "other_value"])
def test_closures_that_are_not_one_pure_loss_fall_back_and_match_torch(closure_kind):
    with jax.enable_x64(True):
        kw = dict(max_iter=4)
        params = _logistic_params(2)
        f = _JAX_LOSS[logistic]
        opt = fo.optim.LBFGS(jax.tree.map(jnp.asarray, params), **kw)
        leaves, treedef = jax.tree.flatten(params)
        tparams = [torch.tensor(np.array(v), requires_grad=True) for v in leaves]
        topt = torch.optim.LBFGS(tparams, **kw)
        calls = [0, 0]

        def ours():
            calls[0] += 1
            if closure_kind != "accumulating":
                opt.zero_grad()
            loss = opt.backward(f)
            if closure_kind == "clipped":
                fo.optim.clip_grad_norm_(opt, 0.05)
            return loss * 2 if closure_kind == "other_value" else loss

        def theirs():
            calls[1] += 1
            if closure_kind != "accumulating":
                topt.zero_grad()
            loss = logistic(treedef.unflatten(tparams), torch)
            loss.backward()
            if closure_kind == "clipped":
                torch.nn.utils.clip_grad_norm_(tparams, 0.05)
            return loss * 2 if closure_kind == "other_value" else loss

        for _ in range(3):
            np.testing.assert_allclose(float(opt.step(ours)), topt.step(theirs).item(), rtol=1e-8)
            for x, t in zip(jax.tree.leaves(opt.params), tparams):
                np.testing.assert_allclose(x, t.detach().numpy(), **FREE)
        assert calls[0] == calls[1] > 3


def test_closure_error_leaves_parameters_and_state_as_they_were():
    with jax.enable_x64(True):
        ours = OursRun(rosenbrock, _rosen_params(), dict(max_iter=5), "callback")
        ours.step()
        before = _snapshot(ours.opt), [np.array(x) for x in ours.params]
        inner = ours.closure

        def failing():
            if ours.calls >= 3:
                raise KeyError("data loader ran dry")
            return inner()

        ours.calls = 0
        with pytest.raises(KeyError, match="data loader ran dry"):
            ours.opt.step(failing)
        jax.tree.map(np.testing.assert_array_equal, before[0][0], _snapshot(ours.opt)[0])
        for x, y in zip(before[1], ours.params):
            np.testing.assert_array_equal(x, y)
        ours.step()  # and it still works


def test_errors_like_torch():
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"LBFGS doesn't support per-parameter options \(parameter groups\)"):
        fo.optim.LBFGS([{"params": {"a": jnp.ones(2)}}, {"params": {"b": jnp.ones(2)}, "lr": 0.1}])
    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        fo.optim.LBFGS(params, line_search_fn="backtracking")
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        fo.optim.LBFGS(params, lr=-1)
    # the same errors from torch
    with pytest.raises(ValueError, match=r"LBFGS doesn't support per-parameter options \(parameter groups\)"):
        torch.optim.LBFGS([{"params": [torch.ones(2)]}, {"params": [torch.ones(2)], "lr": 0.1}])
    opt = fo.optim.LBFGS(params)
    with pytest.raises(ValueError, match="per-parameter options"):
        opt.add_param_group({"params": {"b": jnp.ones(2)}})
    assert len(opt.param_groups) == 1
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="left no gradients"):
        opt.step(lambda: jnp.sum(opt.params["w"]))
    with pytest.raises(RuntimeError, match=r"use opt.step\(closure\)"):
        opt({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="must be real"):
        fo.optim.LBFGS({"z": jnp.ones(2, jnp.complex64)})


def test_signature_defaults_hooks_and_mindspore_call():
    import inspect

    sig = inspect.signature(fo.optim.LBFGS)
    torch_sig = inspect.signature(torch.optim.LBFGS)
    assert list(sig.parameters) == list(torch_sig.parameters)
    defaults = {k: p.default for k, p in sig.parameters.items()}
    assert defaults == {k: p.default for k, p in torch_sig.parameters.items()}
    opt = fo.optim.LBFGS({"w": jnp.array([2.0])}, lr=0.5, max_iter=1)
    assert opt.defaults["max_eval"] == 1 and opt.param_groups[0]["max_eval"] == 1
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    loss = opt.step(lambda: (opt.zero_grad(), opt.backward(lambda p: jnp.sum(p["w"] ** 2)))[1])
    assert float(loss) == 4.0 and calls == ["pre", "post"]
    # max_iter=1 without a line search needs no re-evaluation: given gradients apply (MindSpore style)
    opt({"w": jnp.array([1.0])})
    assert opt.state_dict()["state"][0]["n_iter"] == 2
