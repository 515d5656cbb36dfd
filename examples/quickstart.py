"""Quickstart: train an MLP on scikit-learn's handwritten digits with funcopt.

Part 1 uses the functional API inside a jitted train step (optax style).
Part 2 uses the stateful torch.optim-style API, when it is available.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import funcopt as fo


def load_data(seed: int = 0):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int32), test_size=0.25, random_state=seed, stratify=y)


def init_mlp(key: jax.Array, sizes=(64, 128, 10)) -> dict:
    params = {"layers": []}
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        bound = 1.0 / np.sqrt(fan_in)
        params["layers"].append({
            "weight": jax.random.uniform(sub, (fan_out, fan_in), minval=-bound, maxval=bound),
            "bias": jnp.zeros(fan_out),
        })
    return params


def forward(params: dict, x: jax.Array) -> jax.Array:
    *hidden, last = params["layers"]
    for layer in hidden:
        x = jax.nn.relu(x @ layer["weight"].T + layer["bias"])
    return x @ last["weight"].T + last["bias"]


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = forward(params, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def accuracy(params: dict, x, y) -> float:
    return float(jnp.mean(jnp.argmax(forward(params, x), axis=1) == y))


def batches(x, y, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(len(x))
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def train_functional(epochs: int = 15) -> float:
    x_tr, x_te, y_tr, y_te = load_data()
    params = init_mlp(jax.random.key(0))
    # AdamW on the weights, plain Adam (no decay) on the biases: parameter groups by name.
    labels = fo.label_fn_from_names({"*.bias": "no_decay"}, default="decay")
    tx = fo.chain(
        fo.clip_by_global_norm(1.0),
        fo.partition({"decay": fo.adamw(lr=3e-3, weight_decay=1e-2), "no_decay": fo.adam(lr=3e-3)}, labels),
    )
    state = tx.init(params)

    @jax.jit
    def train_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return fo.apply_updates(params, updates), state, loss

    rng = np.random.default_rng(0)
    print("functional API: fo.chain(clip, partition(adamw, adam)) in a jitted step")
    for epoch in range(epochs):
        if epoch == epochs // 2:  # halve the learning rate: a new value, no recompile
            state = fo.set_hparams(state, lr=1.5e-3)
        losses = []
        for xb, yb in batches(x_tr, y_tr, 64, rng):
            params, state, loss = train_step(params, state, xb, yb)
            losses.append(float(loss))
        if epoch % 5 == 4 or epoch == epochs - 1:
            acc = accuracy(params, x_te, y_te)
            print(f"  epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}")
    return accuracy(params, x_te, y_te)


def train_stateful(epochs: int = 15) -> float:
    x_tr, x_te, y_tr, y_te = load_data()
    params = init_mlp(jax.random.key(0))
    opt = fo.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    print("stateful API: fo.optim.SGD, opt.backward(...); opt.step().clear_grad()")
    for epoch in range(epochs):
        losses = []
        for xb, yb in batches(x_tr, y_tr, 64, rng):
            loss = opt.backward(loss_fn, xb, yb)
            opt.step().clear_grad()
            losses.append(float(loss))
        if epoch % 5 == 4 or epoch == epochs - 1:
            acc = accuracy(opt.params, x_te, y_te)
            print(f"  epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}")
    return accuracy(opt.params, x_te, y_te)


if __name__ == "__main__":
    acc = train_functional()
    assert acc > 0.9, f"functional training reached only {acc:.3f}"
    acc2 = train_stateful()
    assert acc2 > 0.9, f"stateful training reached only {acc2:.3f}"
