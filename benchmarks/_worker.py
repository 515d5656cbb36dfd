"""One benchmark measurement in its own process; prints one JSON line.

Usage: python benchmarks/_worker.py CONTENDER WORKLOAD OPTIMIZER STEPS [cpu|gpu]

The train-step contenders (``TRAIN_CONTENDERS``) time a whole training step, loss + gradient +
update, on a loss with matmuls (``workloads.matmul_loss``) over the shapes of ``TRAIN_WORKLOADS``;
the others time an optimizer step on given gradients.

On the GPU, JAX runs on its default device (run.py sets ``JAX_PLATFORMS=cuda``) and torch on
``cuda``; the memory columns come from the allocators' counters instead of the resident set.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the funcopt of this checkout, not whichever one the environment has installed
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from workloads import TRAIN_WORKLOADS, WORKLOADS, matmul_loss  # noqa: E402

HP = {"adam": dict(lr=1e-3), "adamw": dict(lr=1e-3, weight_decay=1e-2), "sgd": dict(lr=1e-3, momentum=0.9)}
TRAIN_CONTENDERS = ["optax-train", "funcopt-train", "funcopt-packed", "funcopt-backward", "funcopt-call"]
# bytes moved per parameter per step (fp32): reads and writes of param, grad and state
BYTES_PER_PARAM = {"adam": 28, "adamw": 28, "sgd": 20}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def rss_mb() -> float:
    """Resident memory now."""
    return _status_mb("VmRSS")


def reset_peak() -> None:
    """Reset the process's resident high-water mark (Linux), so compile-time memory does not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mb() -> float:
    return _status_mb("VmHWM")


def map_large_blocks() -> None:
    """glibc: from now on, serve blocks over 64 KB by fresh mappings and give them back when freed.

    Then a temporary made by a step shows in the resident high-water mark instead of reusing memory the
    set-up left behind. Only the memory steps run so: each new array then costs page faults, which would
    slow the timed steps in a way no user's allocator does.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


MEMORY_STEPS = 3


def time_steps(step, steps: int, sync) -> list[float]:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return times


def functional(funcopt: bool, opt: str):
    """``(transform, apply_updates)`` of funcopt's functional optimizer ``opt``, or optax's."""
    if funcopt:
        import funcopt as fo

        return {"adam": fo.adam, "adamw": fo.adamw, "sgd": fo.sgd}[opt](**HP[opt]), fo.apply_updates
    import optax

    hp = dict(HP[opt])
    lr = hp.pop("lr")
    tx = {"adam": lambda: optax.adam(lr), "adamw": lambda: optax.adamw(lr, weight_decay=hp["weight_decay"]),
          "sgd": lambda: optax.sgd(lr, momentum=hp["momentum"])}[opt]()
    return tx, optax.apply_updates


def run_jax(contender: str, shapes, opt: str, steps: int, device: str) -> dict:
    import jax
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # start the runtime before anything is measured
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.01) for s in shapes]
    if contender in ("funcopt-step", "funcopt-fused"):
        import funcopt as fo

        cls = {"adam": fo.optim.Adam, "adamw": fo.optim.AdamW, "sgd": fo.optim.SGD}[opt]
        o = cls(params, **HP[opt], **({"fused": True} if contender == "funcopt-fused" else {}))
        del params
        o.zero_grad(set_to_none=False)  # gradients present, as after a backward; their values do not matter

        def step():
            o.step()

        def sync():
            jax.block_until_ready(o._groups[0].params)
    else:
        grads = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 1e-3) for s in shapes]
        tx, apply = functional(contender == "funcopt-jit", opt)

        def update(p, s, g):
            u, s = tx.update(g, s, p)
            return apply(p, u), s

        fn = jax.jit(update, donate_argnums=(0, 1))
        carry = [params, tx.init(params)]
        del params

        def step():
            carry[0], carry[1] = fn(carry[0], carry[1], grads)

        def sync():
            jax.block_until_ready(carry[0])

    return time_jax(step, sync, steps, device)


def time_jax(step, sync, steps: int, device: str) -> dict:
    """Time ``steps`` calls of a JAX ``step`` after a first one (compile), with the memory columns."""
    import jax

    t = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t
    import gc

    gc.collect()
    live = sum(x.nbytes for x in jax.live_arrays()) / 2**20
    if device == "gpu":
        # XLA's allocator counts no peak per interval: the process's peak is an upper bound of the steps'
        stats = jax.devices()[0].memory_stats() or {}
        before = stats.get("bytes_in_use", 0) / 2**20
        times = time_steps(step, steps, sync)
        stats = jax.devices()[0].memory_stats() or {}
        extra = stats.get("peak_bytes_in_use", 0) / 2**20 - before
    else:
        times = time_steps(step, steps, sync)
        extra = memory_steps(step, sync)
    med = statistics.median(times)
    return dict(step_ms=med * 1e3, compile_s=max(first - med, 0.0), live_mb=live, step_extra_mb=max(extra, 0.0))


def memory_steps(step, sync) -> float:
    """How far the resident memory rises during a few more steps, large blocks freshly mapped (CPU)."""
    map_large_blocks()
    import gc

    gc.collect()
    reset_peak()
    before = rss_mb()
    time_steps(step, MEMORY_STEPS, sync)
    return peak_mb() - before


def run_train(contender: str, shapes, opt: str, steps: int, device: str) -> dict:
    """One training step (loss + grad + update) per call, on ``matmul_loss`` over ``shapes``."""
    import jax
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.1) for s in shapes]
    loss, inputs = matmul_loss(shapes)
    if contender in ("optax-train", "funcopt-train"):
        tx, apply = functional(contender == "funcopt-train", opt)

        def train_step(p, s, x):
            g = jax.grad(loss)(p, x)
            u, s = tx.update(g, s, p)
            return apply(p, u), s

        fn = jax.jit(train_step, donate_argnums=(0, 1))
        carry = [params, tx.init(params)]
        del params

        def step():
            carry[0], carry[1] = fn(carry[0], carry[1], inputs)

        def sync():
            jax.block_until_ready(carry[0])
    elif contender == "funcopt-packed":  # fo.pack: small leaves in one buffer, unpacked inside the loss
        import funcopt as fo

        tx, apply = functional(True, opt)

        def packed_step(p, s, x):
            g = jax.grad(lambda q: loss(q.unpack(), x))(p)
            u, s = tx.update(g, s, p)
            return apply(p, u), s

        fn = jax.jit(packed_step, donate_argnums=(0, 1))
        packed = fo.pack(params)
        carry = [packed, tx.init(packed)]
        del params, packed

        def step():
            carry[0], carry[1] = fn(carry[0], carry[1], inputs)

        def sync():
            jax.block_until_ready(carry[0])
    else:
        import funcopt as fo

        cls = {"adam": fo.optim.Adam, "adamw": fo.optim.AdamW, "sgd": fo.optim.SGD}[opt]
        o = cls(params, **HP[opt])
        del params
        if contender == "funcopt-backward":
            def step():
                o.zero_grad()
                o.backward(loss, inputs)
                o.step()
        else:  # funcopt-call: gradients from a jitted grad of the current parameters, applied by opt(grads)
            grad = jax.jit(jax.grad(loss))

            def step():
                o(grad(o.params, inputs))

        def sync():
            jax.block_until_ready(o._groups[0].params)

    return time_jax(step, sync, steps, device)


def run_torch(contender: str, shapes, opt: str, steps: int, device: str) -> dict:
    import torch

    dev = torch.device("cuda" if device == "gpu" else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, device=dev) * 0.01) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device=dev) * 1e-3
    flags = {"torch-fused": dict(fused=True), "torch-foreach": dict(foreach=True)}[contender]
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[opt]
    o = cls(params, **HP[opt], **flags)
    t = time.perf_counter()
    o.step()
    sync()
    first = time.perf_counter() - t
    tensors = [p for p in params] + [p.grad for p in params]
    tensors += [v for st in o.state.values() for v in st.values() if torch.is_tensor(v) and v.device == dev]
    live = sum(x.numel() * x.element_size() for x in tensors) / 2**20
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
        times = time_steps(o.step, steps, sync)
        extra = torch.cuda.max_memory_allocated() / 2**20 - before
    else:
        times = time_steps(o.step, steps, sync)
        extra = memory_steps(o.step, sync)
    med = statistics.median(times)
    return dict(step_ms=med * 1e3, compile_s=max(first - med, 0.0), live_mb=live, step_extra_mb=max(extra, 0.0))


def main() -> None:
    contender, workload, opt, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    train = contender in TRAIN_CONTENDERS
    shapes = (TRAIN_WORKLOADS if train else WORKLOADS)[workload]()
    n = int(sum(np.prod(s) for s in shapes))
    runner = run_train if train else run_torch if contender.startswith("torch") else run_jax
    out = runner(contender, shapes, opt, steps, device)
    out.update(contender=contender, workload=workload, optimizer=opt, device=device, leaves=len(shapes), params=n,
               state_mb=n * 4 * {"adam": 4, "adamw": 4, "sgd": 3}[opt] / 2**20,  # params + grads + state
               gbytes_per_s=n * BYTES_PER_PARAM[opt] / (out["step_ms"] * 1e-3) / 1e9)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
