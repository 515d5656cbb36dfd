"""Optimizer state in float32 against bfloat16 (round-to-nearest and stochastic): memory, time, training.

    python benchmarks/state_dtype.py                      # both models, writes docs/benchmarks_state_dtype.md
    python benchmarks/state_dtype.py --steps-scale 0.1    # a quick look (fewer steps), nothing written
    python benchmarks/state_dtype.py --out ''             # print only

Two real training runs, each with AdamW and the same seeds, batches and initial weights for every setting:

- ``cnn``: a small convolutional network (conv 3x3x16, conv 3x3x32 stride 2, linear) on scikit-learn's
  8x8 handwritten digits (the model of ``examples/nnx_cnn.ipynb``, without batch norm and dropout, in
  plain JAX), test accuracy on a held-out quarter;
- ``transformer``: a two-layer pre-norm transformer (width 64, 4 heads) that learns to sort sequences
  of 12 tokens drawn from 16, generated with a fixed seed; token accuracy on fresh sequences.

For each setting it records the bytes of optimizer state per parameter, the time of the jitted optimizer
update alone and of the whole training step (the fastest of many calls), the loss curve, and the final accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import funcopt as fo

SETTINGS = {
    "float32 state": dict(),
    "bfloat16, nearest": dict(state_dtype=jnp.bfloat16),
    "bfloat16, stochastic": dict(state_dtype=jnp.bfloat16, state_rounding="stochastic", seed=0),
}


# ----------------------------------------------------------------------------- models


def _dense(key, n_in, n_out):
    return {"w": jax.random.normal(key, (n_in, n_out)) * np.sqrt(2.0 / n_in), "b": jnp.zeros(n_out)}


def cnn_init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"conv1": {"w": jax.random.normal(k1, (3, 3, 1, 16)) * np.sqrt(2.0 / 9), "b": jnp.zeros(16)},
            "conv2": {"w": jax.random.normal(k2, (3, 3, 16, 32)) * np.sqrt(2.0 / 144), "b": jnp.zeros(32)},
            "head": _dense(k3, 4 * 4 * 32, 10)}


def _conv(x, p, stride):
    y = jax.lax.conv_general_dilated(x, p["w"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + p["b"])


def cnn_apply(params, x):
    x = _conv(_conv(x, params["conv1"], 1), params["conv2"], 2)
    x = x.reshape(x.shape[0], -1)
    return x @ params["head"]["w"] + params["head"]["b"]


VOCAB, LENGTH, WIDTH, HEADS, LAYERS = 16, 12, 64, 4, 2


def transformer_init(key):
    keys = jax.random.split(key, 2 + 4 * LAYERS)
    params = {"embed": jax.random.normal(keys[0], (VOCAB, WIDTH)) * 0.1,
              "pos": jax.random.normal(keys[1], (LENGTH, WIDTH)) * 0.1, "layers": []}
    for i in range(LAYERS):
        k = keys[2 + 4 * i: 6 + 4 * i]
        params["layers"].append({
            "ln1": {"g": jnp.ones(WIDTH), "b": jnp.zeros(WIDTH)}, "ln2": {"g": jnp.ones(WIDTH), "b": jnp.zeros(WIDTH)},
            "qkv": _dense(k[0], WIDTH, 3 * WIDTH), "out": _dense(k[1], WIDTH, WIDTH),
            "mlp1": _dense(k[2], WIDTH, 4 * WIDTH), "mlp2": _dense(k[3], 4 * WIDTH, WIDTH)})
    params["ln_f"] = {"g": jnp.ones(WIDTH), "b": jnp.zeros(WIDTH)}
    return params


def _norm(x, p):
    mean, var = jnp.mean(x, -1, keepdims=True), jnp.var(x, -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["g"] + p["b"]


def transformer_apply(params, tokens):
    x = params["embed"][tokens] + params["pos"]
    batch = x.shape[0]
    for layer in params["layers"]:
        h = _norm(x, layer["ln1"]) @ layer["qkv"]["w"] + layer["qkv"]["b"]
        q, k, v = (t.reshape(batch, LENGTH, HEADS, WIDTH // HEADS) for t in jnp.split(h, 3, axis=-1))
        att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(WIDTH // HEADS), axis=-1)
        h = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(batch, LENGTH, WIDTH)
        x = x + h @ layer["out"]["w"] + layer["out"]["b"]
        h = jax.nn.gelu(_norm(x, layer["ln2"]) @ layer["mlp1"]["w"] + layer["mlp1"]["b"])
        x = x + h @ layer["mlp2"]["w"] + layer["mlp2"]["b"]
    return _norm(x, params["ln_f"]) @ params["embed"].T  # tied output embedding


def _cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1))


# ----------------------------------------------------------------------------- data


def digits_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        (images / 16.0).astype(np.float32).reshape(-1, 8, 8, 1), labels.astype(np.int32),
        test_size=0.25, random_state=0, stratify=labels)
    return x_train, y_train, x_test, y_test


def sort_data(n, seed):
    tokens = np.random.default_rng(seed).integers(0, VOCAB, size=(n, LENGTH)).astype(np.int32)
    return tokens, np.sort(tokens, axis=1)


# ----------------------------------------------------------------------------- one run


def _best_ms(call, repeats):
    # the fastest of many calls: on a machine shared with other work the median measures the neighbours
    jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def run(task, setting, steps, lr, batch=64):
    """Train ``task`` with AdamW under one state setting; return its figures."""
    if task == "cnn":
        x_train, y_train, x_test, y_test = digits_data()
        params, apply = cnn_init(jax.random.key(0)), cnn_apply
    else:
        x_train, y_train = sort_data(20000, seed=0)
        x_test, y_test = sort_data(2000, seed=1)
        params, apply = transformer_init(jax.random.key(0)), transformer_apply
    tx = fo.adamw(lr=lr, weight_decay=1e-2, **SETTINGS[setting])
    state = tx.init(params)

    def loss_fn(p, x, y):
        return _cross_entropy(apply(p, x), y)

    @jax.jit
    def train_step(p, s, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, s = tx.update(g, s, p)
        return fo.apply_updates(p, u), s, loss

    update = jax.jit(tx.update)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    state_bytes = sum(x.nbytes for tree in state.slots.values() for x in jax.tree.leaves(tree))

    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(x_train)) for _ in range(steps * batch // len(x_train) + 1)])
    losses = []
    start = time.perf_counter()
    for i in range(steps):
        idx = order[i * batch:(i + 1) * batch]
        params, state, loss = train_step(params, state, x_train[idx], y_train[idx])
        losses.append(loss)
    losses = np.asarray(jax.device_get(losses), np.float64)
    total_s = time.perf_counter() - start

    idx = order[:batch]
    grads = jax.grad(loss_fn)(params, x_train[idx], y_train[idx])
    update_ms = _best_ms(lambda: update(grads, state, params), 50)
    step_ms = _best_ms(lambda: train_step(params, state, x_train[idx], y_train[idx]), 30)
    predictions = jnp.argmax(apply(params, x_test), axis=-1)
    accuracy = float(jnp.mean(predictions == y_test))
    return {"bytes_per_param": state_bytes / n_params, "params": n_params, "update_ms": update_ms,
            "step_ms": step_ms, "losses": losses, "accuracy": accuracy, "total_s": total_s}


# ----------------------------------------------------------------------------- report


def _curve(losses, points=6):
    # the loss at evenly spaced steps, each the mean of a window of steps (single batches are noisy)
    n, window = len(losses), max(1, len(losses) // 20)
    marks = np.linspace(0, n - 1, points).astype(int)
    return marks, [float(np.mean(losses[max(0, m - window + 1):m + 1])) for m in marks]


def markdown(results, tasks, steps):
    lines = [
        "# Benchmarks: bfloat16 optimizer state",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} ({jax.devices()[0].platform.upper()}, "
        "2 cores shared with other work: times are rough), "
        f"jax {jax.__version__}. Reproduce with `python benchmarks/state_dtype.py`.",
        "",
        "AdamW (weight decay 0.01) with its two moments stored in float32 (the default), in bfloat16 rounded to "
        "nearest, and in bfloat16 with stochastic rounding (`state_dtype=jnp.bfloat16`, "
        "`state_rounding=\"stochastic\"`); the arithmetic is float32 in all three. Each setting trains the same "
        "model from the same initial weights on the same batches. *update* is the fastest of 50 calls of the "
        "jitted optimizer update alone, *step* of 30 whole training steps (forward, backward, update); the loss "
        "columns are the training loss (mean over a short window of steps) at evenly spaced steps.",
        "",
    ]
    titles = {"cnn": "CNN on scikit-learn's digits (test accuracy on 450 held-out images)",
              "transformer": "Two-layer transformer sorting generated sequences (token accuracy on 2000 fresh "
                             "sequences)"}
    for task in tasks:
        rows = results[task]
        first = next(iter(rows.values()))
        marks, _ = _curve(first["losses"])
        lines += [f"## {titles[task]}", "",
                  f"{first['params']:,} parameters, {steps[task]} steps of batch 64.", "",
                  "| state | bytes / param | update (ms) | step (ms) | "
                  + " | ".join(f"loss @{m + 1}" for m in marks) + " | accuracy |",
                  "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in marks) + " | ---: |"]
        for setting, r in rows.items():
            _, curve = _curve(r["losses"])
            lines.append(f"| {setting} | {r['bytes_per_param']:.0f} | {r['update_ms']:.2f} | {r['step_ms']:.2f} | "
                         + " | ".join(f"{v:.4f}" for v in curve) + f" | {r['accuracy']:.3f} |")
        lines.append("")
    lines += [
        "Bytes per parameter count the moments only (the step count and hyperparameters are a few bytes per "
        "optimizer). On a CPU, bfloat16 state saves memory, not time: XLA:CPU converts each bfloat16 buffer to "
        "float32 and back around the update, and stochastic rounding also draws 16 random bits per stored "
        "element (threefry), which makes its update the slowest of the three. Timings on this shared machine "
        "vary by up to 2x between runs; the bytes, losses and accuracies do not (same seeds). The saving "
        "matters where the state competes with the model for memory. See the guide's section on state dtypes "
        "({ref}`state-dtypes`) for the API.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["cnn", "transformer"], choices=["cnn", "transformer"])
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply the number of steps")
    parser.add_argument("--out", default="docs/benchmarks_state_dtype.md", help="markdown page ('' for none)")
    parser.add_argument("--json", default="", help="also write the figures, loss curves included, as JSON")
    args = parser.parse_args()
    steps = {"cnn": max(10, int(200 * args.steps_scale)), "transformer": max(10, int(250 * args.steps_scale))}
    lrs = {"cnn": 3e-3, "transformer": 2e-3}
    results = {}
    for task in args.tasks:
        results[task] = {}
        for setting in SETTINGS:
            r = run(task, setting, steps[task], lrs[task])
            results[task][setting] = r
            print(f"{task:12} {setting:22} {r['bytes_per_param']:.0f} B/param  update {r['update_ms']:.2f} ms  "
                  f"step {r['step_ms']:.2f} ms  final loss {r['losses'][-20:].mean():.4f}  "
                  f"accuracy {r['accuracy']:.3f}  ({r['total_s']:.0f} s)", flush=True)
    if args.out and args.steps_scale == 1.0:
        with open(args.out, "w") as f:
            f.write(markdown(results, args.tasks, steps))
        print("wrote", args.out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({t: {k: {**r, "losses": r["losses"].tolist()} for k, r in rows.items()}
                       for t, rows in results.items()}, f)


if __name__ == "__main__":
    main()
