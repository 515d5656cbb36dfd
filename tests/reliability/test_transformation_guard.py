"""A stateful optimizer refuses to run under a JAX transformation, before anything changes.

Every entry point that writes host-side state (``backward``, ``step``, ``opt(grads)``,
the ``params`` setter, ``load_state_dict``, ``zero_grad``, ``clear_grad``,
``add_param_group``, ``param_groups[i][k] = v``, a scheduler's ``step``, L-BFGS,
the MegEngine and MindSpore optimizers) is called inside each transformation, with
and without traced arguments. Each call must raise a RuntimeError that points to the
functional API, leave the optimizer bit-identical (compared with a twin that never saw
the call), and leave it usable: the next ordinary step gives the twin's bits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt.compat import megengine as mge
from funcopt.compat import mindspore as ms
from tests.reliability.snapshot import assert_unchanged, snapshot

MESSAGE = r"under a JAX transformation.*functional API.*Nothing was changed"


def _x() -> jax.Array:
    return jnp.array([0.5, -1.5], jnp.float32)


# Each transformation runs ``f(x) -> scalar`` the way a user would write it.
TRANSFORMATIONS: dict[str, Callable[[Callable[[jax.Array], jax.Array]], Any]] = {
    "jit": lambda f: jax.jit(f)(_x()),
    "vmap": lambda f: jax.vmap(f)(jnp.stack([_x(), _x()])),
    "grad": lambda f: jax.grad(f)(_x()),
    "value_and_grad": lambda f: jax.value_and_grad(f)(_x()),
    "jvp": lambda f: jax.jvp(f, (_x(),), (_x(),)),
    "scan": lambda f: jax.lax.scan(lambda c, _: (c, f(c)), _x(), None, length=2),
    "cond": lambda f: jax.lax.cond(jnp.array(True), f, lambda x: jnp.sum(x), _x()),
    "while_loop": lambda f: jax.lax.while_loop(lambda c: c[1] < 1, lambda c: (c[0] + f(c[0]), c[1] + 1),
                                               (_x(), 0)),
    "checkpoint": lambda f: jax.checkpoint(f)(_x()),
    "eval_shape": lambda f: jax.eval_shape(f, _x()),
    "jit_of_grad": lambda f: jax.jit(jax.grad(f))(_x()),
}


def loss_fn(params: Any, x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.sin(params["w"] * x) ** 2) + 0.1 * jnp.sum(params["b"] ** 2)


def loss_no_args(params: Any) -> jax.Array:
    return loss_fn(params, jnp.ones(2))


def _grads() -> dict[str, jax.Array]:
    return {"b": jnp.array([0.25], jnp.float32), "w": jnp.array([0.5, -0.75], jnp.float32)}


def _trained_adam() -> fo.optim.Adam:
    opt = fo.optim.Adam({"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}, lr=1e-2, weight_decay=0.01)
    for k in range(2):
        opt.zero_grad()
        opt.backward(loss_fn, jnp.full(2, 1.0 + k))
        opt.step()
    opt.backward(loss_fn, jnp.full(2, 0.3))  # gradients held for the next step
    return opt


@pytest.fixture(scope="module")
def pair() -> tuple[fo.optim.Adam, fo.optim.Adam]:
    """An optimizer that sees the refused calls and a twin that does not; they must stay bit-identical."""
    return _trained_adam(), _trained_adam()


def _with_state(opt: Any, x: jax.Array) -> dict[str, Any]:
    sd = opt.state_dict()
    sd["state"][1] = {**sd["state"][1], "exp_avg": x}
    return sd


# Entry points: (opt, traced x) -> None. Some use x, some run with no traced argument at all.
ENTRY_POINTS: dict[str, Callable[[Any, jax.Array], Any]] = {
    "backward(traced arg)": lambda opt, x: opt.backward(loss_fn, x),
    "backward(no traced arg)": lambda opt, x: opt.backward(loss_no_args),
    "step()": lambda opt, x: opt.step(),
    "step(closure)": lambda opt, x: opt.step(lambda: opt.backward(loss_no_args)),
    "opt(traced grads)": lambda opt, x: opt({"b": x[:1], "w": x}),
    "opt(concrete grads)": lambda opt, x: opt(_grads()),
    "params = traced": lambda opt, x: setattr(opt, "params", {"b": x[:1], "w": x}),
    "params = concrete": lambda opt, x: setattr(opt, "params", {"b": jnp.zeros(1), "w": jnp.zeros(2)}),
    "load_state_dict(traced)": lambda opt, x: opt.load_state_dict(_with_state(opt, x)),
    "load_state_dict(concrete)": lambda opt, x: opt.load_state_dict(opt.state_dict()),
    "zero_grad(set_to_none=False)": lambda opt, x: opt.zero_grad(set_to_none=False),
    "zero_grad()": lambda opt, x: opt.zero_grad(),
    "clear_grad()": lambda opt, x: opt.clear_grad(),
    "add_param_group": lambda opt, x: opt.add_param_group({"params": {"extra": x}}),
    "param_groups lr = traced": lambda opt, x: opt.param_groups[0].__setitem__("lr", jnp.sum(x) * 1e-3),
    # in-place gradient utilities: refused before their (donating) computation runs
    "clip_grad_norm_": lambda opt, x: fo.optim.clip_grad_norm_(opt, 0.1),
    "clip_grad_value_": lambda opt, x: fo.optim.clip_grad_value_(opt, 0.01),
    "clip_grads_with_norm_": lambda opt, x: fo.optim.clip_grads_with_norm_(opt, 0.1, jnp.sum(x)),
}


def _refused(run: Callable[[Callable[[jax.Array], jax.Array]], Any], call: Callable[[jax.Array], Any]) -> None:
    def f(x):
        call(x)
        return jnp.sum(x)

    with pytest.raises(RuntimeError, match=MESSAGE):
        run(f)


# every entry point under the usual transformations, and every transformation on the main entry points
CASES = sorted({(e, t) for e in ENTRY_POINTS for t in ("jit", "vmap", "grad", "scan")}
               | {(e, t) for e in ("backward(traced arg)", "step()", "opt(traced grads)", "load_state_dict(traced)")
                  for t in TRANSFORMATIONS})


@pytest.mark.parametrize(("entry", "transformation"), CASES)
def test_refused_before_anything_changes(pair, entry, transformation):
    opt, twin = pair
    before = snapshot(opt)
    _refused(TRANSFORMATIONS[transformation], lambda x: ENTRY_POINTS[entry](opt, x))
    assert_unchanged(before, snapshot(opt), f"{entry} under {transformation}")
    assert_unchanged(snapshot(twin), snapshot(opt), "compared with the twin")


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_usable_and_identical_after_a_refused_call(pair, entry):
    opt, twin = pair
    _refused(TRANSFORMATIONS["jit"], lambda x: ENTRY_POINTS[entry](opt, x))
    for o in (opt, twin):  # an ordinary step on both, outside any transformation
        o(_grads())
        o.zero_grad()
        o.backward(loss_fn, jnp.full(2, 0.3))
    assert_unchanged(snapshot(twin), snapshot(opt), f"after a refused {entry} and a step")
    assert not isinstance(opt.params["w"], jax.core.Tracer)


def test_the_reported_case_no_longer_returns_normally():
    opt, twin = _trained_adam(), _trained_adam()

    @jax.jit
    def step(x):
        opt.backward(loss_fn, x)
        opt.step()
        return x

    with pytest.raises(RuntimeError, match=r"Adam\.backward\(\).*tx = fo\.adam\("):
        step(_x())
    opt.step()
    twin.step()
    assert_unchanged(snapshot(twin), snapshot(opt), "after the refused jitted step")


def test_ensure_compile_time_eval_and_host_callbacks_are_not_transformations():
    opt, twin = _trained_adam(), _trained_adam()
    with jax.ensure_compile_time_eval():
        opt.step()
    twin.step()
    assert_unchanged(snapshot(twin), snapshot(opt), "step under ensure_compile_time_eval")

    def on_host(x):
        opt(_grads())
        return np.asarray(x)

    jax.jit(lambda x: jax.pure_callback(on_host, jax.ShapeDtypeStruct((2,), jnp.float32), x))(_x()).block_until_ready()
    twin(_grads())
    assert_unchanged(snapshot(twin), snapshot(opt), "step from a host callback")


def test_a_leaked_tracer_is_refused_outside_any_transformation():
    opt, twin = _trained_adam(), _trained_adam()
    leaked = []
    jax.jit(lambda x: leaked.append(x) or x)(_x())
    for call in (lambda: opt({"b": jnp.zeros(1), "w": leaked[0]}),
                 lambda: setattr(opt, "params", {"b": jnp.zeros(1), "w": leaked[0]}),
                 lambda: opt.backward(loss_fn, leaked[0])):
        with pytest.raises(RuntimeError, match=MESSAGE):
            call()
    assert_unchanged(snapshot(twin), snapshot(opt), "after leaked tracers")


# ---------------------------------------------------------------------- other stateful objects

SMALL_SET = ["jit", "vmap", "grad", "scan"]


def _lbfgs() -> fo.optim.LBFGS:
    opt = fo.optim.LBFGS({"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}, lr=0.5, max_iter=2)

    def closure():
        opt.zero_grad()
        return opt.backward(loss_fn, jnp.ones(2))

    opt.step(closure)
    return opt


def test_lbfgs():
    opt, twin = _lbfgs(), _lbfgs()

    def closure():
        opt.zero_grad()
        return opt.backward(loss_fn, jnp.ones(2))

    for transformation in SMALL_SET:
        _refused(TRANSFORMATIONS[transformation], lambda x: opt.step(closure))
        _refused(TRANSFORMATIONS[transformation], lambda x: opt.backward(loss_fn, x))
        assert_unchanged(snapshot(twin), snapshot(opt), f"LBFGS under {transformation}")

    def twin_closure():
        twin.zero_grad()
        return twin.backward(loss_fn, jnp.ones(2))

    opt.step(closure)
    twin.step(twin_closure)
    assert_unchanged(snapshot(twin), snapshot(opt), "LBFGS after a step")


def _scheduled() -> tuple[Any, dict[str, Any]]:
    opt = _trained_adam()
    scheds = {
        "StepLR": fo.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        "CosineAnnealingWarmRestarts": fo.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3),
        "ReduceLROnPlateau": fo.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
    }
    first = fo.optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=1)
    second = fo.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    scheds["SequentialLR"] = fo.optim.lr_scheduler.SequentialLR(opt, [first, second], milestones=[1])
    scheds["ChainedScheduler"] = fo.optim.lr_scheduler.ChainedScheduler([first, second])
    return opt, scheds


def _sched_state(opt: Any, scheds: dict[str, Any]) -> Any:
    return snapshot(opt), {k: repr(sorted((a, repr(v)) for a, v in s.state_dict().items())) for k, s in scheds.items()}


@pytest.mark.filterwarnings("ignore:Detected call of")
@pytest.mark.parametrize("transformation", SMALL_SET)
def test_lr_schedulers(transformation):
    opt, scheds = _scheduled()
    lr = opt.param_groups[0]["lr"]
    before = _sched_state(opt, scheds)
    for name, sched in scheds.items():
        if name == "ReduceLROnPlateau":
            _refused(TRANSFORMATIONS[transformation], lambda x, s=sched: s.step(jnp.sum(x)))
            _refused(TRANSFORMATIONS[transformation], lambda x, s=sched: s.step(1.0))
        else:
            _refused(TRANSFORMATIONS[transformation], lambda x, s=sched: s.step())
    after = _sched_state(opt, scheds)
    assert before == after
    scheds["StepLR"].step()  # still usable
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * 0.5)


@pytest.mark.parametrize("transformation", SMALL_SET)
def test_mindspore_optimizers(transformation):
    def make():
        return ms.Momentum({"w": jnp.array([1.0, -2.0])}, learning_rate=0.1, momentum=0.9)

    opt, twin = make(), make()
    opt({"w": jnp.ones(2)})
    twin({"w": jnp.ones(2)})
    run = TRANSFORMATIONS[transformation]
    _refused(run, lambda x: opt({"w": x}))
    _refused(run, lambda x: opt({"w": jnp.ones(2)}))
    _refused(run, lambda x: setattr(opt, "parameters", {"w": x}))
    _refused(run, lambda x: opt.load_state_dict(opt.state_dict()))
    assert opt.global_step == twin.global_step == 1
    np.testing.assert_array_equal(np.asarray(opt.parameters["w"]), np.asarray(twin.parameters["w"]))
    opt({"w": jnp.ones(2)})
    twin({"w": jnp.ones(2)})
    np.testing.assert_array_equal(np.asarray(opt.parameters["w"]), np.asarray(twin.parameters["w"]))
    assert opt.global_step == 2


class _PlainSGD(ms.Optimizer):
    def construct(self, gradients):
        lr = self.get_lr()
        self.parameters = jax.tree.map(lambda p, g: p - lr * g, self.parameters, gradients)
        return True


def test_mindspore_custom_construct_is_refused_before_it_runs():
    opt = _PlainSGD(0.5, {"w": jnp.array([1.0, 2.0])})
    _refused(TRANSFORMATIONS["jit"], lambda x: opt({"w": x}))
    assert opt.global_step == 0 and not isinstance(opt.parameters["w"], jax.core.Tracer)
    opt({"w": jnp.ones(2)})
    np.testing.assert_array_equal(np.asarray(opt.parameters["w"]), np.array([0.5, 1.5], np.float32))


@pytest.mark.parametrize("transformation", SMALL_SET)
def test_megengine_optimizer_and_scheduler(transformation):
    def make():
        opt = mge.SGD({"w": jnp.array([1.0, -2.0])}, lr=0.1, momentum=0.9)
        return opt, mge.MultiStepLR(opt, milestones=[1, 2])

    (opt, sched), (twin, _) = make(), make()
    for o in (opt, twin):  # gradients held for clipping
        o.backward(lambda p, x: jnp.sum(p["w"] * x), jnp.array([3.0, -4.0]))
    run = TRANSFORMATIONS[transformation]
    _refused(run, lambda x: opt({"w": x}))
    _refused(run, lambda x: opt.backward(lambda p, x: jnp.sum(p["w"] * x), x))
    _refused(run, lambda x: sched.step())
    _refused(run, lambda x: mge.clip_grad_value(opt, -0.01, 0.01))
    _refused(run, lambda x: mge.clip_grad_norm(opt, 0.01))
    scaler = mge.GradScaler()
    _refused(run, lambda x: scaler.unscale(opt))
    assert scaler.state_dict() == mge.GradScaler().state_dict()
    assert sched.current_epoch == 0
    assert_unchanged(snapshot(twin), snapshot(opt), f"MegEngine SGD under {transformation}")


def test_the_message_names_the_functional_counterpart():
    for opt, name in [(fo.optim.SGD({"w": jnp.ones(1)}), "fo.sgd"), (fo.optim.AdamW({"w": jnp.ones(1)}), "fo.adamw"),
                      (ms.Momentum({"w": jnp.ones(1)}, 0.1, 0.9), "fo.momentum")]:
        with pytest.raises(RuntimeError, match=rf"tx = {name}\("):
            jax.jit(lambda x, o=opt: o({"w": x}) and x)(jnp.ones(1))


@pytest.mark.parametrize("transformation", ["jit", "scan", "eval_shape"])
def test_reading_params_inside_a_transformation_caches_no_tracer(transformation):
    opt, twin = _trained_adam(), _trained_adam()
    opt(_grads())  # the parameters' view is rebuilt at the next read
    twin(_grads())
    out = TRANSFORMATIONS[transformation](lambda x: jnp.sum(opt.params["w"] * x))
    assert out is not None
    assert not isinstance(opt.params["w"], jax.core.Tracer)
    assert_unchanged(snapshot(twin), snapshot(opt), f"after reading params under {transformation}")
