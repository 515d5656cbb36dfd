"""L-BFGS, torch.optim.LBFGS's algorithm: one ``update`` is one ``step(closure)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from funcopt._src.base import GradientTransformation, Params, PyTree, Updates, floating_only
from funcopt._src.hparams import HParam, OptimizerState, check_hparam, evaluate_hparams, has_schedule
from funcopt.linesearch._zoom import strong_wolfe_flat
from funcopt.optimizers._common import check_lr

# torch stores a curvature pair only when y.s exceeds this.
_CURVATURE_EPS = 1e-10


class _Loop(NamedTuple):
    """The inner-iteration carry: the flat point, its loss and gradient, and torch's state."""

    x: jax.Array
    loss: jax.Array
    flat_grad: jax.Array
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    al: jax.Array
    H_diag: jax.Array
    num_old: jax.Array
    history_start: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array
    n_iter: jax.Array  # iterations in this update
    state_n_iter: jax.Array  # iterations since init (torch's state['n_iter'])
    func_evals: jax.Array
    current_evals: jax.Array
    opt_cond: jax.Array
    stop: jax.Array


def _check_count(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"Invalid {name} value: {value}")


def lbfgs(
    lr: HParam = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: HParam = 1e-7,
    tolerance_change: HParam = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformation:
    r"""L-BFGS (torch.optim.LBFGS): each ``update`` makes the iterations of one ``step(closure)``.

    The parameters are flattened into one vector :math:`x` (as torch
    concatenates its parameters). Each inner iteration :math:`k`, with
    gradient :math:`g_k`, stores the pair :math:`s = t_{k-1} d_{k-1}`,
    :math:`y = g_k - g_{k-1}` when :math:`y^\top s > 10^{-10}` (dropping the
    oldest beyond ``history_size``; :math:`\rho_i = 1 / y_i^\top s_i`) and sets
    :math:`\gamma = y^\top s / y^\top y` (state ``H_diag``). The direction
    comes from the two-loop recursion over the stored pairs, newest first:

    .. math::

        q &\leftarrow -g_k, \qquad
            \alpha_i = \rho_i s_i^\top q, \quad q \leftarrow q - \alpha_i y_i
            \quad (i = m-1, \dots, 0) \\
        d_k &\leftarrow \gamma q, \qquad
            \beta_i = \rho_i y_i^\top d_k, \quad d_k \leftarrow d_k + (\alpha_i - \beta_i) s_i
            \quad (i = 0, \dots, m-1)

    with :math:`d_k = -g_k` at the very first iteration. The step is
    :math:`t_k = \min(1, 1 / \|g_k\|_1)\,\gamma_{lr}` at the very first
    iteration and :math:`\gamma_{lr}` after, then
    :math:`x \leftarrow x + t_k d_k`; with ``line_search_fn='strong_wolfe'``,
    :math:`t_k` is only the first step tried by
    :func:`funcopt.linesearch.strong_wolfe`.

    Iterations stop, as torch's do, after ``max_iter`` of them, after
    ``max_eval`` evaluations (counting the one at the given ``params``), when
    :math:`\max|g| \le` ``tolerance_grad`` (also checked before the first one),
    when :math:`g^\top d > -` ``tolerance_change``, when
    :math:`\max|t d| \le` ``tolerance_change`` or when the loss changed by less
    than ``tolerance_change``. Without a line search the loss is not
    re-evaluated after the last iteration's move.

    ``update(grads, state, params, value=..., value_fn=...)``: ``grads`` (or
    the extra ``grad=``) is :math:`\nabla f` at ``params``, ``value`` is
    :math:`f(\text{params})` (computed from ``value_fn`` when omitted; without
    either, ``prev_loss`` holds NaN),
    ``value_fn`` is the pure loss ``params -> scalar``, which ``update``
    differentiates itself; it is needed unless ``max_iter == 1`` and there is
    no line search. The whole update (all inner iterations and line searches)
    is one jittable function of fixed shapes.

    The state is an :class:`funcopt.OptimizerState` whose ``slots`` are the
    global, flat L-BFGS state under torch's names (torch keeps it on its first
    parameter): ``func_evals``, ``n_iter``, ``d``, ``t``, ``old_dirs`` (the
    :math:`y` vectors), ``old_stps`` (the :math:`s`), ``ro``, ``al``,
    ``H_diag``, ``prev_flat_grad``, ``prev_loss``. The history is a circular
    buffer of ``history_size`` rows: torch's list entry ``i`` (oldest first) of
    ``old_dirs``, ``old_stps``, ``ro`` and ``al`` is row
    ``(history_start + i) % history_size`` for ``i < num_old``. The buffers are
    allocated at ``init``: ``2 * history_size`` vectors of the parameters' size.

    ``lr``, ``tolerance_grad`` and ``tolerance_change`` are held in the state
    (``fo.set_hparams`` changes them without recompiling; ``lr`` may be a
    schedule of the update count); ``max_iter``, ``max_eval``, ``history_size``
    and ``line_search_fn`` fix the compiled loop and the state's shapes.

    Args:
        lr: learning rate :math:`\gamma_{lr}` (the first step tried).
        max_iter: most inner iterations per update.
        max_eval: most function evaluations per update (default
            ``max_iter * 5 // 4``).
        tolerance_grad: first-order optimality tolerance on :math:`\max|g|`.
        tolerance_change: tolerance on changes of the loss and parameters.
        history_size: number of curvature pairs kept.
        line_search_fn: ``None`` (fixed steps) or ``'strong_wolfe'``.

    Returns:
        A :class:`funcopt.GradientTransformation`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import funcopt as fo
        >>> def loss(p):
        ...     return (1 - p['x']) ** 2 + 100 * (p['y'] - p['x'] ** 2) ** 2
        >>> params = {'x': jnp.array(-1.0), 'y': jnp.array(2.0)}
        >>> tx = fo.lbfgs(line_search_fn='strong_wolfe')
        >>> state = tx.init(params)
        >>> @jax.jit
        ... def step(params, state):
        ...     value, grads = jax.value_and_grad(loss)(params)
        ...     updates, state = tx.update(grads, state, params, value=value, value_fn=loss)
        ...     return fo.apply_updates(params, updates), state
        >>> for _ in range(5):
        ...     params, state = step(params, state)
        >>> round(float(params['x']), 4), round(float(params['y']), 4)
        (1.0, 1.0)
    """
    check_lr(lr)
    check_hparam(tolerance_grad, "tolerance_grad", "Invalid tolerance_grad value: {}", lambda v: True)
    check_hparam(tolerance_change, "tolerance_change", "Invalid tolerance_change value: {}", lambda v: True)
    _check_count(max_iter, "max_iter", 0)
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    _check_count(max_eval, "max_eval", 0)
    _check_count(history_size, "history_size", 1)
    if line_search_fn is not None and line_search_fn != "strong_wolfe":
        raise RuntimeError("only 'strong_wolfe' is supported")
    line_search = line_search_fn == "strong_wolfe"
    needs_value_fn = line_search or max_iter > 1
    hparams = {"lr": lr, "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change}
    scheduled = has_schedule(hparams)

    def init(params: Params) -> OptimizerState:
        flat, _ = ravel_pytree(params)
        if jnp.issubdtype(flat.dtype, jnp.complexfloating):
            raise ValueError("lbfgs: parameters must be real")
        dtype = jnp.promote_types(flat.dtype, jnp.float32)
        n = flat.shape[0]
        zeros = lambda *shape: jnp.zeros(shape, dtype)  # noqa: E731
        count = lambda: jnp.zeros([], jnp.int32)  # noqa: E731
        slots = {
            "func_evals": count(),
            "n_iter": count(),
            "d": zeros(n),
            "t": zeros(),
            "old_dirs": zeros(history_size, n),
            "old_stps": zeros(history_size, n),
            "ro": zeros(history_size),
            "al": zeros(history_size),
            "H_diag": jnp.ones([], dtype),
            "prev_flat_grad": zeros(n),
            "prev_loss": zeros(),
            "num_old": count(),
            "history_start": count(),
        }
        hp = evaluate_hparams(hparams, jnp.zeros([], jnp.int32))
        return OptimizerState(step=jnp.zeros([], jnp.int32), hparams=hp, slots=slots)

    def update(
        grads: Updates,
        state: OptimizerState,
        params: Params | None = None,
        *,
        value: Any = None,
        grad: PyTree | None = None,
        value_fn: Callable[[Params], Any] | None = None,
        **extra: Any,
    ) -> tuple[Updates, OptimizerState]:
        del extra
        if not isinstance(state, OptimizerState):
            raise TypeError(f"lbfgs: expected an OptimizerState, got {type(state).__name__}")
        if value_fn is None and needs_value_fn:
            raise ValueError("lbfgs: update() needs value_fn= (the loss as a pure function of the "
                             "parameters) for a line search or for max_iter > 1")
        if value_fn is not None and params is None:
            raise ValueError("lbfgs: update() needs params when value_fn is given")
        if grad is None:
            grad = grads
        if grad is None:
            raise ValueError("lbfgs: update() needs the gradient at params (grads or grad=)")

        structure = params if params is not None else grad
        flat_params, unravel = ravel_pytree(structure)
        flat_dtype = flat_params.dtype
        dtype = jnp.promote_types(flat_dtype, jnp.float32)
        if params is None:
            x0 = jnp.zeros(flat_params.shape, dtype)
        else:
            x0 = flat_params.astype(dtype)
        flat_grad = ravel_pytree(grad)[0].astype(dtype)
        if flat_grad.shape != x0.shape:
            raise ValueError(f"lbfgs: gradient of size {flat_grad.shape[0]} for parameters of size "
                             f"{x0.shape[0]}")
        if value is None:
            value = value_fn(params) if value_fn is not None else jnp.nan
        loss = jnp.asarray(value, dtype)

        hp = state.hparams
        if scheduled:
            fresh = evaluate_hparams(hparams, state.step)
            hp = {k: (fresh[k] if has_schedule(hparams[k]) else hp[k]) for k in hparams}
        lr_ = jnp.asarray(hp["lr"], dtype)
        tol_grad = jnp.asarray(hp["tolerance_grad"], dtype)
        tol_change = jnp.asarray(hp["tolerance_change"], dtype)

        if value_fn is not None:
            def flat_value(x):
                return jnp.asarray(value_fn(unravel(x.astype(flat_dtype))), dtype)

            value_and_grad = jax.value_and_grad(flat_value)

        s = state.slots
        opt_cond = jnp.max(jnp.abs(flat_grad), initial=0.0) <= tol_grad
        carry = _Loop(
            x=x0, loss=loss, flat_grad=flat_grad,
            d=s["d"].astype(dtype), t=s["t"].astype(dtype),
            old_dirs=s["old_dirs"].astype(dtype), old_stps=s["old_stps"].astype(dtype),
            ro=s["ro"].astype(dtype), al=s["al"].astype(dtype), H_diag=s["H_diag"].astype(dtype),
            num_old=s["num_old"], history_start=s["history_start"],
            prev_flat_grad=s["prev_flat_grad"].astype(dtype), prev_loss=s["prev_loss"].astype(dtype),
            n_iter=jnp.zeros([], jnp.int32), state_n_iter=s["n_iter"],
            func_evals=s["func_evals"] + 1, current_evals=jnp.ones([], jnp.int32),
            opt_cond=opt_cond, stop=opt_cond,
        )

        def restart(c: _Loop) -> _Loop:
            return c._replace(d=-c.flat_grad, H_diag=jnp.ones([], dtype),
                              num_old=jnp.zeros([], jnp.int32), history_start=jnp.zeros([], jnp.int32))

        def quasi_newton(c: _Loop) -> _Loop:
            # Store the newest curvature pair if y.s > 1e-10, dropping the oldest when full.
            y = c.flat_grad - c.prev_flat_grad
            s_ = c.d * c.t
            ys = jnp.dot(y, s_)
            store = ys > _CURVATURE_EPS
            full = c.num_old == history_size
            start = jnp.where(full, (c.history_start + 1) % history_size, c.history_start)
            kept = jnp.where(full, c.num_old - 1, c.num_old)
            row = (start + kept) % history_size
            old_dirs = c.old_dirs.at[row].set(jnp.where(store, y, c.old_dirs[row]))
            old_stps = c.old_stps.at[row].set(jnp.where(store, s_, c.old_stps[row]))
            ro = c.ro.at[row].set(jnp.where(store, 1.0 / ys, c.ro[row]))
            H_diag = jnp.where(store, ys / jnp.dot(y, y), c.H_diag)
            start = jnp.where(store, start, c.history_start)
            num_old = jnp.where(store, kept + 1, c.num_old)

            def newest_first(k, qa):
                q, al = qa
                i = (start + num_old - 1 - k) % history_size
                a = jnp.dot(old_stps[i], q) * ro[i]
                return q + (-a) * old_dirs[i], al.at[i].set(a)

            q, al = lax.fori_loop(0, num_old, newest_first, (-c.flat_grad, c.al))

            def oldest_first(k, r):
                i = (start + k) % history_size
                be_i = jnp.dot(old_dirs[i], r) * ro[i]
                return r + (al[i] - be_i) * old_stps[i]

            d = lax.fori_loop(0, num_old, oldest_first, q * H_diag)
            return c._replace(d=d, old_dirs=old_dirs, old_stps=old_stps, ro=ro, al=al, H_diag=H_diag,
                              num_old=num_old, history_start=start)

        def body(c: _Loop) -> _Loop:
            n_iter = c.n_iter + 1
            state_n_iter = c.state_n_iter + 1
            first = state_n_iter == 1
            c = lax.cond(first, restart, quasi_newton, c)
            c = c._replace(n_iter=n_iter, state_n_iter=state_n_iter,
                           prev_flat_grad=c.flat_grad, prev_loss=c.loss)
            inv_l1 = 1.0 / jnp.sum(jnp.abs(c.flat_grad))
            t = jnp.where(first, jnp.where(inv_l1 < 1.0, inv_l1, 1.0) * lr_, lr_)
            gtd = jnp.dot(c.flat_grad, c.d)
            no_descent = gtd > -tol_change

            if line_search:
                def search(c: _Loop):
                    def obj(step):
                        return value_and_grad(c.x + step * c.d)

                    res = strong_wolfe_flat(obj, t, c.d, c.loss, c.flat_grad, gtd,
                                            max_ls=max_eval - c.current_evals)
                    return res.t, res.f, res.g, res.evals

                def skip(c: _Loop):
                    return t, c.loss, c.flat_grad, jnp.zeros([], jnp.int32)

                t, loss, flat_grad, ls_evals = lax.cond(no_descent, skip, search, c)
                x = jnp.where(no_descent, c.x, c.x + t * c.d)
                opt_cond = jnp.where(no_descent, c.opt_cond, jnp.max(jnp.abs(flat_grad), initial=0.0) <= tol_grad)
            else:
                x = jnp.where(no_descent, c.x, c.x + t * c.d)
                if value_fn is None:
                    loss, flat_grad, opt_cond = c.loss, c.flat_grad, c.opt_cond
                    ls_evals = jnp.zeros([], jnp.int32)
                else:
                    # Not re-evaluated after the last iteration's move, as in torch.
                    def evaluate(c: _Loop):
                        loss, flat_grad = value_and_grad(x)
                        small = jnp.max(jnp.abs(flat_grad), initial=0.0) <= tol_grad
                        return loss, flat_grad, small, jnp.ones([], jnp.int32)

                    def keep(c: _Loop):
                        return c.loss, c.flat_grad, c.opt_cond, jnp.zeros([], jnp.int32)

                    reevaluate = ~no_descent & (n_iter != max_iter)
                    loss, flat_grad, opt_cond, ls_evals = lax.cond(reevaluate, evaluate, keep, c)

            current_evals = c.current_evals + ls_evals
            stop = (
                no_descent
                | (n_iter == max_iter)
                | (current_evals >= max_eval)
                | opt_cond
                | (jnp.max(jnp.abs(c.d * t), initial=0.0) <= tol_change)
                | (jnp.abs(loss - c.prev_loss) < tol_change)
            )
            return c._replace(x=x, loss=loss, flat_grad=flat_grad, t=t, func_evals=c.func_evals + ls_evals,
                              current_evals=current_evals, opt_cond=opt_cond, stop=stop)

        c = lax.while_loop(lambda c: ~c.stop & (c.n_iter < max_iter), body, carry)

        updates = unravel((c.x - x0).astype(flat_dtype))
        slots = {
            "func_evals": c.func_evals,
            "n_iter": c.state_n_iter,
            "d": c.d,
            "t": c.t,
            "old_dirs": c.old_dirs,
            "old_stps": c.old_stps,
            "ro": c.ro,
            "al": c.al,
            "H_diag": c.H_diag,
            "prev_flat_grad": c.prev_flat_grad,
            "prev_loss": c.prev_loss,
            "num_old": c.num_old,
            "history_start": c.history_start,
        }
        slots = {k: v.astype(s[k].dtype) for k, v in slots.items()}
        return updates, OptimizerState(step=state.step + 1, hparams=hp, slots=slots)

    return floating_only(GradientTransformation(init, update))
