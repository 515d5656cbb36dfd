"""Parameter shapes of the benchmark workloads (no data: an optimizer step only needs the shapes)."""

from __future__ import annotations


def resnet50_like() -> list[tuple[int, ...]]:
    """The 161 parameter tensors of ResNet-50 (conv weights, batch-norm scales and shifts, fc): 25.6M floats."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for mid, out, blocks in [(64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3)]:
        for b in range(blocks):
            shapes += [(mid, cin, 1, 1), (mid,), (mid,), (mid, mid, 3, 3), (mid,), (mid,),
                       (out, mid, 1, 1), (out,), (out,)]
            if b == 0:
                shapes += [(out, cin, 1, 1), (out,), (out,)]
            cin = out
    return shapes + [(1000, 2048), (1000,)]


def transformer_like(layers: int = 24, d: int = 256, vocab: int = 8000) -> list[tuple[int, ...]]:
    """A GPT-style stack: per layer q/k/v/o and two MLP matrices with biases and two layer norms (16 leaves)."""
    shapes: list[tuple[int, ...]] = [(vocab, d), (512, d)]
    for _ in range(layers):
        shapes += [(d, d), (d,)] * 4 + [(4 * d, d), (4 * d,), (d, 4 * d), (d,)] + [(d,), (d,)] * 2
    return shapes + [(d,), (d,)]


def tiny_leaves(count: int = 3000, total: int = 2_000_000) -> list[tuple[int, ...]]:
    """``count`` small leaves of varied sizes adding up to about ``total`` floats."""
    base = total // count
    return [(base + (i % 7) - 3,) for i in range(count)]


def one_buffer(size: int = 25_557_032) -> list[tuple[int, ...]]:
    """One flat buffer the size of the ResNet-50-like tree."""
    return [(size,)]


def one_buffer_like_3000_leaves() -> list[tuple[int, ...]]:
    """One flat buffer holding as many floats as the 3000-leaf tree: what those leaves cost at best."""
    return [(sum(s[0] for s in tiny_leaves()),)]


def tiny_model() -> list[tuple[int, ...]]:
    """A two-leaf model: measures the per-step dispatch overhead, not bandwidth."""
    return [(4, 4), (4,)]


WORKLOADS = {
    "resnet50": resnet50_like,
    "transformer": transformer_like,
    "3000-leaves": tiny_leaves,
    "one-buffer": one_buffer,
    "one-buffer-2M": one_buffer_like_3000_leaves,
    "tiny": tiny_model,
}


# --- train-step workloads: a loss with matmuls over the parameters -------------------------------------


def many_matrices(count: int = 1000, width: int = 24) -> list[tuple[int, ...]]:
    """``count`` small weight matrices of 9 to 41 rows and ``width`` columns (216 to 984 floats each)."""
    return [(9 + (i * 7) % 33, width) for i in range(count)]


class _TrainWorkloads(dict):
    """The train-step workloads by name; ``"N-leaves"`` is :func:`many_matrices` with ``N`` leaves (a smaller run)."""

    def __missing__(self, name: str):
        count, _, rest = name.partition("-")
        if rest != "leaves" or not count.isdigit():
            raise KeyError(name)
        return lambda: many_matrices(int(count))


TRAIN_WORKLOADS = _TrainWorkloads({
    "resnet50": resnet50_like,
    "transformer": transformer_like,
    "1000-leaves": many_matrices,
    "tiny": tiny_model,
})


def matmul_loss(shapes: list[tuple[int, ...]], batch: int = 32, seed: int = 0):
    """A loss doing a model's work on parameters of ``shapes``, and its inputs: ``(loss, inputs)``.

    Each parameter with two or more dimensions is a weight matrix (its trailing dimensions
    flattened) that multiplies a batch of ``batch`` inputs; a vector scales a batch of inputs
    elementwise. ``loss(params, inputs)`` takes the parameters as a list in the order of
    ``shapes`` and sums the mean of ``tanh(y) ** 2`` over each product ``y``; the inputs are one
    array of shape ``(batch, width)`` per width, shared by the parameters of that width.
    """
    import jax.numpy as jnp
    import numpy as np

    def width(s):
        return int(np.prod(s[1:])) if len(s) > 1 else int(s[0])

    rng = np.random.default_rng(seed)
    inputs = {w: jnp.asarray(rng.standard_normal((batch, w), dtype=np.float32) / np.sqrt(w))
              for w in sorted({width(s) for s in shapes})}

    def loss(params, inputs):
        total = 0.0
        for p in params:
            if p.ndim > 1:
                w = p.reshape(p.shape[0], -1)
                y = inputs[w.shape[1]] @ w.T
            else:
                y = inputs[p.shape[0]] * p
            total = total + jnp.mean(jnp.tanh(y) ** 2)
        return total

    return loss, inputs
