r"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled").

Schedule-free methods replace the learning-rate schedule by an averaging of
iterates. Three sequences are involved: :math:`z` takes the (AdamW-normalized)
gradient steps, :math:`x` is a running weighted average of :math:`z` (the
point to evaluate and to ship), and :math:`y = (1 - \beta_1) z + \beta_1 x`
is where gradients are taken. The algorithm follows the reference
implementation ``AdamWScheduleFree`` of facebookresearch/schedule_free (the
memory-efficient form that stores :math:`y` and :math:`z` only).

Functional formulation
----------------------
The parameters given to ``update`` (and returned by ``apply_updates``) are the
**y** sequence: train with them, as torch's ``AdamWScheduleFree`` does after
``optimizer.train()``. The state keeps :math:`z` (per-parameter slot ``z``)
and Adam's second moment (slot ``exp_avg_sq``). Since
:math:`x = y + (1 - 1/\beta_1)(z - y)`, the evaluation parameters are a pure
function of ``(state, params)``: :func:`schedule_free_eval_params`. It takes
the place of torch's ``optimizer.eval()`` / ``optimizer.train()`` switch:
nothing is modified in place, so there is no mode to switch back from.

Global scalars
--------------
The averaging weight :math:`c_{t+1}` depends on two scalars shared by all
parameters, the running ``weight_sum`` and the largest learning rate seen,
``lr_max`` (group-level entries in the reference implementation, not
per-parameter state). They live beside the usual :class:`OptimizerState`
in a small :class:`ScheduleFreeState`, computed once per step, rather than as
0-d per-leaf slots: a per-leaf copy would repeat the same number for every
leaf, show up as per-parameter state in a state dict, and drift between leaves
of different dtypes. The :class:`OptimizerState` inside still holds ``step``,
the hyperparameters (so :func:`funcopt.get_hparams` /
:func:`funcopt.set_hparams` work as for every optimizer) and the per-parameter
slots.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt._src.base import GradientTransformation, Params, PyTree, floating_only
from funcopt._src.hparams import (
    HParam,
    OptimizerState,
    cast_hparams,
    check_hparam,
    complex_view,
    compute_dtype,
    evaluate_hparams,
    float_dtype,
    has_schedule,
    real_view,
)
from funcopt._src.tree import is_floating, tree_zeros_like
from funcopt.optimizers._common import check_betas, check_eps, check_lr, check_weight_decay, ema_of_square


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free_adamw`.

    Attributes:
        optimizer: the step count, the hyperparameters and the per-parameter
            slots ``z`` and ``exp_avg_sq``.
        weight_sum: 0-d sum of the averaging weights so far.
        lr_max: 0-d largest (warmed-up) learning rate seen so far; -1 at first.
    """

    optimizer: OptimizerState
    weight_sum: jax.Array
    lr_max: jax.Array


def schedule_free_adamw(
    lr: HParam = 0.0025,
    betas: tuple[HParam, HParam] = (0.9, 0.999),
    eps: HParam = 1e-8,
    weight_decay: HParam = 0.0,
    warmup_steps: HParam = 0,
    r: HParam = 0.0,
    weight_lr_power: HParam = 2.0,
) -> GradientTransformation:
    r"""Schedule-Free AdamW, with the reference implementation's defaults.

    With :math:`y_t` the parameters (the gradient point), :math:`g_t` the
    gradient at :math:`y_{t-1}`, :math:`t` the step (from 1), :math:`W` the
    warmup steps and :math:`\lambda` the weight decay:

    .. math::

        \gamma_t &= \gamma \cdot \min(1, t / W) \quad (\gamma_t = \gamma \text{ when } W = 0) \\
        \gamma^{\max}_t &= \max(\gamma^{\max}_{t-1}, \gamma_t), \qquad \gamma^{\max}_0 = -1 \\
        w_t &= t^r (\gamma^{\max}_t)^{q}, \qquad S_t = S_{t-1} + w_t, \qquad
            c_t = w_t / S_t \;(0 \text{ if } S_t = 0) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat g_t &= \frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon} + \lambda y_{t-1} \\
        y_t &= (1 - c_t) y_{t-1} + c_t z_{t-1} + \gamma_t (\beta_1 (1 - c_t) - 1) \hat g_t \\
        z_t &= z_{t-1} - \gamma_t \hat g_t

    with :math:`q` = ``weight_lr_power``, :math:`z_0 = y_0` the initial
    parameters and :math:`v_0 = 0`. This is the order of operations of
    ``AdamWScheduleFree.step`` in facebookresearch/schedule_free (the current
    version, which bias-corrects :math:`v_t` inside the square root; the
    paper's variant, ``AdamWScheduleFreePaper``, instead scales
    :math:`\gamma_t` by :math:`\sqrt{1 - \beta_2^t}`). It is equivalent to

    .. math::

        z_t = z_{t-1} - \gamma_t \hat g_t, \qquad
        x_t = (1 - c_t) x_{t-1} + c_t z_t, \qquad
        y_t = (1 - \beta_1) z_t + \beta_1 x_t,

    and :func:`schedule_free_eval_params` returns :math:`x_t`, the point to
    evaluate. Do not add a learning-rate schedule on top: warmup is built in.

    State: a :class:`ScheduleFreeState` with per-parameter slots ``z`` and
    ``exp_avg_sq`` and the scalars ``weight_sum`` and ``lr_max``.

    Args:
        lr: learning rate :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`; :math:`\beta_1` is the interpolation
            between :math:`z` and :math:`x` and must be in (0, 1),
            :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon`, added outside the square root.
        weight_decay: :math:`\lambda`, decoupled, evaluated at :math:`y`.
        warmup_steps: :math:`W`, steps of linear learning-rate warmup.
        r: power of :math:`t` in the averaging weights (0: uniform).
        weight_lr_power: power :math:`q` of the learning rate in the averaging
            weights (so warmup steps count less).

    Returns:
        A :class:`funcopt.GradientTransformation`; its ``update`` needs
        ``params`` (the :math:`y` sequence).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import funcopt as fo
        >>> loss = lambda p: jnp.sum((p['w'] - 3.0) ** 2)
        >>> tx = fo.schedule_free_adamw(lr=0.5, warmup_steps=5)
        >>> params = {'w': jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> for _ in range(200):
        ...     updates, state = tx.update(jax.grad(loss)(params), state, params)
        ...     params = fo.apply_updates(params, updates)
        >>> eval_params = fo.schedule_free_eval_params(state, params)
        >>> bool(loss(eval_params) < 1e-2)
        True
    """
    check_lr(lr)
    check_betas(betas)
    check_hparam(betas[0], "betas[0]",
                 "Invalid beta parameter at index 0: {} (schedule-free needs beta1 > 0 to recover the "
                 "evaluation point from y and z)", lambda v: v > 0)
    check_eps(eps)
    check_weight_decay(weight_decay)
    check_hparam(warmup_steps, "warmup_steps", "Invalid warmup_steps value: {}", lambda v: v >= 0)
    check_hparam(r, "r", "Invalid r value: {}", lambda v: True)
    check_hparam(weight_lr_power, "weight_lr_power", "Invalid weight_lr_power value: {}", lambda v: True)

    hparams = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
               "warmup_steps": warmup_steps, "r": r, "weight_lr_power": weight_lr_power}
    scheduled = has_schedule(hparams)

    def init(params):
        hp = evaluate_hparams(hparams, jnp.zeros([], jnp.int32))
        slots = {
            # A copy, so that params and state never share a buffer (donation).
            "z": jax.tree.map(lambda p: jnp.copy(jnp.asarray(p)), params),
            "exp_avg_sq": tree_zeros_like(params),
        }
        dtype = float_dtype()
        return ScheduleFreeState(
            optimizer=OptimizerState(step=jnp.zeros([], jnp.int32), hparams=hp, slots=slots),
            weight_sum=jnp.zeros([], dtype),
            lr_max=jnp.full([], -1.0, dtype),
        )

    def update(grads, state, params=None, **extra):
        del extra
        if not isinstance(state, ScheduleFreeState):
            raise TypeError(f"schedule_free_adamw: expected a ScheduleFreeState, got {type(state).__name__}")
        if params is None:
            raise ValueError("schedule_free_adamw: params (the y sequence) must be given to update()")
        inner = state.optimizer
        hp = inner.hparams
        if scheduled:
            fresh = evaluate_hparams(hparams, inner.step)
            hp = {k: (fresh[k] if has_schedule(hparams[k]) else hp[k]) for k in hparams}

        # The scalars shared by all leaves, in the dtype of the global state.
        k = inner.step
        gdtype = state.weight_sum.dtype
        ghp = cast_hparams(hp, gdtype)
        k_f = k.astype(gdtype)
        t_f = k_f + 1
        warmup = ghp["warmup_steps"]
        warming = k_f < warmup
        sched = jnp.where(warming, t_f / jnp.where(warming, warmup, 1), 1)
        lr_t = ghp["lr"] * sched
        lr_max = jnp.maximum(lr_t, state.lr_max)
        weight = t_f ** ghp["r"] * lr_max ** ghp["weight_lr_power"]
        weight_sum = state.weight_sum + weight
        empty = weight_sum == 0
        ckp1 = jnp.where(empty, 0, weight / jnp.where(empty, 1, weight_sum))

        g_leaves, treedef = jax.tree.flatten(grads)
        y_leaves = treedef.flatten_up_to(params)
        z_leaves = treedef.flatten_up_to(inner.slots["z"])
        v_leaves = treedef.flatten_up_to(inner.slots["exp_avg_sq"])
        out_u, out_z, out_v = [], [], []
        for g, y, z, v in zip(g_leaves, y_leaves, z_leaves, v_leaves):
            g, y, z, v = (jnp.asarray(a) for a in (g, y, z, v))
            cdtype = compute_dtype(y.dtype)
            is_complex = jnp.issubdtype(cdtype, jnp.complexfloating)
            rdtype = jnp.finfo(cdtype).dtype if is_complex else cdtype
            lhp = cast_hparams(hp, rdtype)
            beta1, beta2 = lhp["betas"]
            c = ckp1.astype(rdtype)
            gamma = lr_t.astype(rdtype)
            g_c, y_c, z_c, v_c = (real_view(a.astype(compute_dtype(a.dtype))) for a in (g, y, z, v))
            bias_correction2 = 1 - beta2 ** t_f.astype(rdtype)
            v_new = ema_of_square(v_c, g_c, beta2)
            g_hat = g_c / (jnp.sqrt(v_new / bias_correction2) + lhp["eps"]) + lhp["weight_decay"] * y_c
            delta = c * (z_c - y_c) + gamma * (beta1 * (1 - c) - 1) * g_hat
            z_new = z_c - gamma * g_hat
            if is_complex:
                delta, z_new = complex_view(delta), complex_view(z_new)
                if jnp.iscomplexobj(v):
                    v_new = complex_view(v_new)
            out_u.append(delta.astype(y.dtype))
            out_z.append(z_new.astype(z.dtype))
            out_v.append(v_new.astype(v.dtype))

        new_inner = OptimizerState(
            step=k + 1, hparams=hp,
            slots={"z": treedef.unflatten(out_z), "exp_avg_sq": treedef.unflatten(out_v)},
        )
        return treedef.unflatten(out_u), ScheduleFreeState(new_inner, weight_sum, lr_max)

    return floating_only(GradientTransformation(init, update))


def _find_state(state: PyTree) -> ScheduleFreeState:
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ScheduleFreeState))
             if isinstance(s, ScheduleFreeState)]
    if len(found) != 1:
        raise ValueError("schedule_free_eval_params: expected a state holding exactly one "
                         f"ScheduleFreeState (from schedule_free_adamw), found {len(found)}")
    return found[0]


def schedule_free_eval_params(state: Any, params: Params) -> Params:
    r"""The evaluation parameters :math:`x` from the training parameters :math:`y`.

    .. math::

        x = y + \left(1 - \frac{1}{\beta_1}\right)(z - y)

    the inverse of :math:`y = (1 - \beta_1) z + \beta_1 x`, with :math:`z`
    and :math:`\beta_1` read from the state. Evaluate, checkpoint for
    inference or export with the result; keep training with ``params``
    (torch's ``optimizer.eval()`` moves the parameters to :math:`x` in place
    and ``optimizer.train()`` moves them back; here both stay available and
    nothing changes). Batch-norm running statistics, if any, should be
    recomputed at :math:`x`, as with the reference implementation.

    Args:
        state: the state of :func:`schedule_free_adamw`, alone or inside a
            larger state (e.g. of :func:`funcopt.chain`) that holds exactly one.
        params: the current parameters (the :math:`y` sequence), the ones
            the state was updated with.

    Returns:
        A pytree like ``params`` with the :math:`x` sequence, in the same dtypes.

    Example:
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.schedule_free_adamw(lr=0.1)
        >>> params = {'w': jnp.array([1.0])}
        >>> state = tx.init(params)
        >>> fo.schedule_free_eval_params(state, params)['w']   # x = y = z before any step
        Array([1.], dtype=float32)
        >>> updates, state = tx.update({'w': jnp.array([2.0])}, state, params)
        >>> params = fo.apply_updates(params, updates)
        >>> fo.schedule_free_eval_params(state, params)['w']   # x_1 = z_1 = 1 - 0.1
        Array([0.9], dtype=float32)
    """
    sf = _find_state(state)
    beta1 = sf.optimizer.hparams["betas"][0]

    def leaf(y, z):
        if not is_floating(y):
            return y  # not trained (see funcopt.floating_only): no z is held for it
        y = jnp.asarray(y)
        cdtype = compute_dtype(y.dtype)
        w = (1 - 1 / beta1).astype(jnp.finfo(cdtype).dtype)
        y_c, z_c = y.astype(cdtype), jnp.asarray(z).astype(cdtype)
        return (y_c + w * (z_c - y_c)).astype(y.dtype)

    return jax.tree.map(leaf, params, sf.optimizer.slots["z"])
