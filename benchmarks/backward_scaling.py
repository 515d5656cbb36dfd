"""Stateful ``backward`` + ``step`` against optax's jitted loss + grad + update, as the number of leaves grows.

    python benchmarks/backward_scaling.py                  # 100/200/400 leaves of 700 floats, 1000 of 200-1200
    python benchmarks/backward_scaling.py --leaves 100 400 # some of them
    python benchmarks/backward_scaling.py --mixed 0        # without the 1000-leaf tree

Prints, per tree, the median over ``--rounds`` rounds of the mean time of ``--steps`` calls
(after a warm-up call that compiles), and the first call's time (compile included). The
loss is ``sum(sin(p * x)**2)`` over the leaves; the optimizer is Adam(lr=1e-3) for both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcopt as fo


def loss(p, x):
    return sum(jnp.sum(jnp.sin(v * x) ** 2) for v in jax.tree.leaves(p))


def tree(sizes):
    rng = np.random.default_rng(0)
    return {f"l{i:04d}": jnp.asarray(rng.standard_normal(s), jnp.float32) for i, s in enumerate(sizes)}


def timed(call, steps, rounds):
    t = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t
    means = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            out = call()
        jax.block_until_ready(out)
        means.append((time.perf_counter() - t) / steps)
    return statistics.median(means), first


def funcopt_case(sizes, steps, rounds):
    opt = fo.optim.Adam(tree(sizes), lr=1e-3)
    x = jnp.float32(0.7)

    def call():
        opt.zero_grad()
        opt.backward(loss, x)
        opt.step()
        return opt._groups[0].params

    return timed(call, steps, rounds)


def optax_case(sizes, steps, rounds):
    tx = optax.adam(1e-3)
    params = tree(sizes)
    state = tx.init(params)
    x = jnp.float32(0.7)

    @jax.jit
    def step(params, state, x):
        g = jax.grad(loss)(params, x)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    box = [params, state]

    def call():
        box[0], box[1] = step(box[0], box[1], x)
        return box[0]

    return timed(call, steps, rounds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaves", type=int, nargs="*", default=[100, 200, 400])
    ap.add_argument("--mixed", type=int, default=1000, help="leaves of 200-1200 floats (0: skip)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-optax", action="store_true")
    a = ap.parse_args()
    cases = [(f"{n} x 700", [700] * n) for n in a.leaves]
    if a.mixed:
        cases.append((f"{a.mixed} x 200-1200", list(np.random.default_rng(1).integers(200, 1201, a.mixed))))
    print(f"funcopt from {fo.__file__}; median of {a.rounds} rounds of {a.steps} calls")
    for name, sizes in cases:
        ms, first = funcopt_case(sizes, a.steps, a.rounds)
        line = f"{name:>16}: funcopt backward+step {ms * 1e3:8.2f} ms (first call {first:6.1f} s)"
        if not a.no_optax:
            ms_o, first_o = optax_case(sizes, a.steps, a.rounds)
            line += f" | optax jit loss+grad+update {ms_o * 1e3:8.2f} ms (first call {first_o:6.1f} s)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
