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
