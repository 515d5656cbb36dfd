"""fo.linesearch: strong-Wolfe (zoom) and backtracking (Armijo) searches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.flatten_util import ravel_pytree
from torch.optim.lbfgs import _cubic_interpolate, _strong_wolfe

import funcopt as fo
from funcopt import linesearch

# ---------------------------------------------------------------- objectives over a pytree


def _flat(p):
    return jnp.concatenate([leaf.reshape(-1) for leaf in jax.tree.leaves(p)])


def rosenbrock(p):
    x = _flat(p)
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def quadratic(p):
    x = _flat(p)
    scales = jnp.arange(1.0, x.shape[0] + 1.0) ** 2
    return 0.5 * jnp.sum(scales * (x - 0.5) ** 2)


def log_sum_exp(p):
    x = _flat(p)
    a = jnp.linspace(-1.0, 1.0, x.shape[0])
    return jnp.log(jnp.sum(jnp.exp(3 * a * x))) + 0.1 * jnp.sum(x**2)


def quartic_wave(p):
    x = _flat(p)
    return jnp.sum(x**4 - 2 * x**2 + 0.5 * jnp.sin(5 * x) + 0.3 * x)


FUNCTIONS = {"rosenbrock": rosenbrock, "quadratic": quadratic, "log_sum_exp": log_sum_exp,
             "quartic_wave": quartic_wave}


def _params(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {"a": jnp.asarray(rng.standard_normal((2, 2)) * scale), "b": jnp.asarray(rng.standard_normal() * scale),
            "c": jnp.asarray(rng.standard_normal(1) * scale)}


def _directions(f, p, seed):
    """Steepest descent and a scaled descent direction."""
    g = _phi(f, p, p, 0.0)[2]  # the gradient at p (t = 0), by the compiled phi
    rng = np.random.default_rng(seed)
    scaled = jax.tree.map(lambda x: -x * jnp.asarray(rng.uniform(0.1, 3.0, np.shape(x))), g)
    # both directions strongly typed (the 0-d leaf of p is a weakly typed scalar, and so is its gradient):
    # the jitted searches then take both with one compiled program
    return [jax.tree.map(lambda x: -x.astype(x.dtype), g), scaled]


_PHI = {}


def _phi(f, p, d, t):
    """Value and slope of f along d at step t.

    One compiled program per objective (the checks call it hundreds of times: op by op, each call would
    dispatch about a hundred operations and the first would compile each of them).
    """
    if f not in _PHI:
        def phi(p, d, t):
            q = jax.tree.map(lambda x, y: x + t * y, p, d)
            v, g = jax.value_and_grad(f)(q)
            return v, jnp.vdot(_flat(g), _flat(d)), g

        _PHI[f] = jax.jit(phi)
    v, slope, g = _PHI[f](p, d, t)
    return v, float(slope), g


# ---------------------------------------------------------------- strong Wolfe


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_strong_wolfe_conditions_hold(name):
    f = FUNCTIONS[name]
    c1, c2 = 1e-4, 0.9
    search = jax.jit(lambda p, d, t: linesearch.strong_wolfe(jax.value_and_grad(f), p, d, step_size=t))
    checked = 0
    with jax.enable_x64(True):
        for seed in range(4):
            p = _params(seed)
            for d in _directions(f, p, seed):
                f0, slope0, _ = _phi(f, p, d, 0.0)
                assert slope0 < 0
                for t0 in (1e-4, 1e-2, 1.0, 30.0):
                    res = search(p, d, t0)
                    assert bool(res.done), (seed, t0)
                    t = float(res.step_size)
                    ft, slope, gt = _phi(f, p, d, t)
                    assert t > 0
                    assert ft <= f0 + c1 * t * slope0 + 1e-12 * abs(f0)
                    assert abs(slope) <= c2 * abs(slope0)
                    # the value and gradient returned are those at the returned step
                    np.testing.assert_allclose(res.value, ft, rtol=1e-12)
                    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12),
                                 res.grad, gt)
                    checked += 1
    assert checked == 32


def test_strong_wolfe_matches_torch():
    """Step, value, gradient and evaluation count equal torch's _strong_wolfe on random searches."""
    vg = jax.value_and_grad(rosenbrock)

    @jax.jit
    def ours(p, d, t0, max_ls, value, grad):
        return linesearch.strong_wolfe(vg, p, d, step_size=t0, value=value, grad=grad, max_ls=max_ls)

    def torch_rosen(x):
        return torch.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    def obj(x, t, d):
        y = (x + t * d).requires_grad_(True)
        value = torch_rosen(y)
        (g,) = torch.autograd.grad(value, y)
        return float(value.detach()), g

    rng = np.random.default_rng(0)
    outcomes = {"budget": 0, "zoomed": 0, "first": 0}
    with jax.enable_x64(True):
        for _ in range(60):
            p = _params(int(rng.integers(1 << 30)), scale=1.5)
            x = np.asarray(_flat(p))
            value, grad = vg(p)
            g = np.asarray(_flat(grad))
            d = -g * rng.uniform(0.1, 2.0, g.shape)
            t0 = float(10 ** rng.uniform(-4, 1))
            max_ls = int(rng.integers(0, 26))
            tx, tg = torch.tensor(x), torch.tensor(g)
            td = torch.tensor(d)
            f_t, g_t, t_t, evals_t = _strong_wolfe(obj, tx, t0, td, float(value), tg, tg.dot(td), max_ls=max_ls)
            d_tree = ravel_pytree(p)[1](jnp.asarray(d))
            res = ours(p, d_tree, t0, max_ls, value, grad)
            np.testing.assert_allclose(res.step_size, float(t_t), rtol=1e-10)
            np.testing.assert_allclose(res.value, f_t, rtol=1e-10)
            np.testing.assert_allclose(_flat(res.grad), g_t.numpy(), rtol=1e-9, atol=1e-12)
            assert int(res.num_evals) == evals_t
            if evals_t == max_ls + 1:
                outcomes["budget"] += 1
            elif evals_t > 1:
                outcomes["zoomed"] += 1
            else:
                outcomes["first"] += 1
    # the sample covers the budget exit, multi-evaluation searches and acceptance of the first step
    assert all(v > 0 for v in outcomes.values()), outcomes


def test_strong_wolfe_out_of_budget_returns_best_point():
    f = quadratic
    with jax.enable_x64(True):
        p = _params(1)
        d = jax.tree.map(jnp.negative, jax.grad(f)(p))
        f0, _, _ = _phi(f, p, d, 0.0)
        # max_ls=0: only the first trial is evaluated; a much too long step is worse than t=0
        res = linesearch.strong_wolfe(jax.value_and_grad(f), p, d, step_size=100.0, max_ls=0)
        assert int(res.num_evals) == 2  # the value at params was not given, plus one trial
        assert not bool(res.done)
        assert float(res.step_size) == 0.0
        np.testing.assert_allclose(res.value, f0)
        # a budget too small to satisfy the curvature test: the best point seen, not done
        res = linesearch.strong_wolfe(jax.value_and_grad(f), p, d, step_size=1e-6, max_ls=1, c2=0.1)
        assert not bool(res.done)
        assert float(res.step_size) > 1e-6
        assert float(res.value) < float(f0)


def test_strong_wolfe_vmaps_over_directions():
    f = log_sum_exp
    vg = jax.value_and_grad(f)
    with jax.enable_x64(True):
        p = _params(2)
        ds = _directions(f, p, 2)
        stacked = jax.tree.map(lambda *x: jnp.stack(x), *ds)
        batched = jax.jit(jax.vmap(lambda d: linesearch.strong_wolfe(vg, p, d, step_size=5.0)))(stacked)
        for i, d in enumerate(ds):
            single = linesearch.strong_wolfe(vg, p, d, step_size=5.0)
            jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-12), batched, single)


def test_strong_wolfe_float32_and_one_trace():
    traces = []

    def f(p):
        traces.append(1)
        return quadratic(p)

    p = jax.tree.map(lambda x: x.astype(jnp.float32), _params(3))
    d = jax.tree.map(jnp.negative, jax.grad(quadratic)(p))
    res = jax.jit(lambda p, d: linesearch.strong_wolfe(jax.value_and_grad(f), p, d, step_size=1e-3))(p, d)
    # one trace for the initial evaluation, one for every trial evaluation of the loop
    assert len(traces) == 2
    assert res.value.dtype == jnp.float32 and res.grad["a"].dtype == jnp.float32
    assert bool(res.done) and int(res.num_evals) > 2


# ---------------------------------------------------------------- cubic interpolation


def test_cubic_interpolate_matches_torch():
    rng = np.random.default_rng(5)
    kinds = {"bounded": 0, "midpoint": 0}
    with jax.enable_x64(True):
        fn = jax.jit(linesearch.cubic_interpolate)
        fn_b = jax.jit(lambda *a: linesearch.cubic_interpolate(*a[:6], bounds=a[6:]))
        for i in range(200):
            x1, x2 = rng.uniform(-2, 2, 2)
            f1, f2, g1, g2 = rng.standard_normal(4) * 3
            args = [torch.tensor(v, dtype=torch.float64) for v in (x1, f1, g1, x2, f2, g2)]
            d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
            kinds["midpoint" if d1**2 - g1 * g2 < 0 else "bounded"] += 1
            if i % 2:
                lo, hi = sorted(rng.uniform(-3, 3, 2))
                theirs = _cubic_interpolate(*args, bounds=(lo, hi))
                ours = fn_b(x1, f1, g1, x2, f2, g2, lo, hi)
            else:
                theirs = _cubic_interpolate(*args)
                ours = fn(x1, f1, g1, x2, f2, g2)
            np.testing.assert_allclose(ours, float(theirs), rtol=1e-13, atol=1e-15)
    assert min(kinds.values()) >= 5


def test_cubic_interpolate_exact_on_a_cubic():
    # phi(t) = t^3 - 3t has its local minimum at t = 1
    phi = lambda t: t**3 - 3 * t  # noqa: E731
    dphi = lambda t: 3 * t**2 - 3  # noqa: E731
    with jax.enable_x64(True):
        t = linesearch.cubic_interpolate(jnp.asarray(0.2), phi(0.2), dphi(0.2), jnp.asarray(2.5), phi(2.5), dphi(2.5))
        np.testing.assert_allclose(t, 1.0, rtol=1e-12)
        # clipped to the bounds given
        t = linesearch.cubic_interpolate(jnp.asarray(0.2), phi(0.2), dphi(0.2), jnp.asarray(2.5), phi(2.5),
                                         dphi(2.5), bounds=(1.5, 2.0))
        assert float(t) == 1.5


# ---------------------------------------------------------------- backtracking


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_backtracking_armijo_and_maximal(name):
    f = FUNCTIONS[name]
    c1, rho = 1e-4, 0.5
    search = jax.jit(lambda p, d, t: linesearch.backtracking(f, p, d, step_size=t, c1=c1, decrease_factor=rho))
    shrunk = 0
    with jax.enable_x64(True):
        for seed in range(4):
            p = _params(seed)
            for d in _directions(f, p, seed):
                f0, slope0, _ = _phi(f, p, d, 0.0)
                for t0 in (1e-3, 1.0, 30.0):
                    res = search(p, d, t0)
                    assert bool(res.done)
                    t = float(res.step_size)
                    k = int(res.num_evals) - 1  # the first evaluation gives f(x) and the slope
                    np.testing.assert_allclose(t, t0 * rho ** (k - 1), rtol=1e-14)
                    ft, _, _ = _phi(f, p, d, t)
                    np.testing.assert_allclose(res.value, ft, rtol=1e-13)
                    assert ft <= f0 + c1 * t * slope0
                    if k > 1:
                        # the previous, longer trial failed the test
                        fprev, _, _ = _phi(f, p, d, t / rho)
                        assert not fprev <= f0 + c1 * (t / rho) * slope0
                        shrunk += 1
                    assert res.grad is None
    assert shrunk >= 8


def test_backtracking_with_gradient_and_given_slope():
    f = rosenbrock
    vg = jax.value_and_grad(f)
    with jax.enable_x64(True):
        p = _params(4)
        value, grad = vg(p)
        d = jax.tree.map(jnp.negative, grad)
        by_jvp = linesearch.backtracking(f, p, d, step_size=1.0)
        given = jax.jit(lambda p, d: linesearch.backtracking(vg, p, d, step_size=1.0, value=value, grad=grad,
                                                             has_grad=True))(p, d)
        assert float(by_jvp.step_size) == float(given.step_size) < 1.0
        assert int(by_jvp.num_evals) == int(given.num_evals) + 1
        q = jax.tree.map(lambda x, y: x + given.step_size * y, p, d)
        v_q, g_q = vg(q)
        np.testing.assert_allclose(given.value, v_q, rtol=1e-14)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), given.grad, g_q)


def test_backtracking_backs_off_nan_and_reports_failure():
    def f(x):
        # undefined (NaN) beyond |x| > 2
        return jnp.where(jnp.abs(x) > 2, jnp.nan, (x - 1.5) ** 2).sum()

    x = jnp.array([0.0])
    d = -jax.grad(f)(x)  # = 3
    res = linesearch.backtracking(f, x, d, step_size=4.0)
    assert bool(res.done)
    assert np.isfinite(float(res.value))
    assert float(res.step_size) * 3 <= 2
    # not enough trials: done is False and the last trial is reported
    res = linesearch.backtracking(f, x, d, step_size=4.0, max_ls=2)
    assert not bool(res.done)
    assert float(res.step_size) == 2.0
    with pytest.raises(ValueError, match="max_ls"):
        linesearch.backtracking(f, x, d, max_ls=0)


def test_result_type():
    assert linesearch.LineSearchResult._fields == ("step_size", "value", "grad", "num_evals", "done")
    assert fo.linesearch is linesearch
