"""Streaming bandwidth of the machine, measured on arrays far larger than the caches; prints JSON.

Usage: python benchmarks/_triad.py [cpu|gpu] [FLOATS]

Two kernels, each reported in GB/s of the bytes it must move (12 per float):

- ``triad``: ``a = b + s * c`` into a third array (STREAM's triad). On a CPU the store to ``a`` first
  reads the line it writes (write-allocate), so this reports less than the memory moves.
- ``inplace``: ``a += s * c``, the access pattern of an optimizer step, where every array written is
  also read. This is the reference the benchmark tables compare optimizers with.

On the CPU both are multi-threaded torch kernels; on a GPU both are jitted JAX programs (the update
donates ``a``, so XLA writes it in place).
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import time_steps  # noqa: E402

N = int(sys.argv[2]) if len(sys.argv) > 2 else 32 * 2**20  # floats per array
REPEATS = 30


def _median_seconds(run, sync) -> float:
    run()
    sync()
    return statistics.median(time_steps(run, REPEATS, sync))


def cpu() -> dict:
    import torch

    b, c, a = torch.rand(N), torch.rand(N), torch.empty(N)
    triad = _median_seconds(lambda: torch.add(b, c, alpha=3.0, out=a), lambda: None)
    inplace = _median_seconds(lambda: a.add_(c, alpha=3.0), lambda: None)
    return {"threads": torch.get_num_threads(), "triad_s": triad, "inplace_s": inplace}


def gpu() -> dict:
    import jax
    import jax.numpy as jnp

    b, c = jnp.ones(N), jnp.full(N, 0.5)
    held = [jnp.zeros(N)]
    triad_fn = jax.jit(lambda b, c: b + 3.0 * c)
    update = jax.jit(lambda a, c: a + 3.0 * c, donate_argnums=0)
    out = [None]

    def run_triad():
        out[0] = triad_fn(b, c)

    def run_update():
        held[0] = update(held[0], c)

    triad = _median_seconds(run_triad, lambda: out[0].block_until_ready())
    inplace = _median_seconds(run_update, lambda: held[0].block_until_ready())
    return {"device_kind": jax.devices()[0].device_kind, "triad_s": triad, "inplace_s": inplace}


def main() -> None:
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    out = gpu() if device == "gpu" else cpu()
    out["triad_gbs"] = 3 * N * 4 / out.pop("triad_s") / 1e9
    out["inplace_gbs"] = 3 * N * 4 / out.pop("inplace_s") / 1e9
    print(json.dumps(out))


if __name__ == "__main__":
    main()
