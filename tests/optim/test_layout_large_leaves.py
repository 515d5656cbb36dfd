"""Large leaves kept as arrays of their own beside the packed small ones, and ``opt(grads)`` as one program.

The layout packs the leaves of at most ``MAX_PACKED_SIZE`` elements into one flat buffer per dtype and keeps
each larger leaf in its own shape. The tests lower that limit to 8 elements so that small arrays exercise
both kinds of buffer, and compare against the per-leaf layout (``elementwise = False``), which computes the
same numbers one leaf at a time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt as fo
from funcopt._src import packing
from tests.optim import internals


@pytest.fixture
def limit8(monkeypatch):
    monkeypatch.setattr(packing, "MAX_PACKED_SIZE", 8)


def _tree():
    rng = np.random.default_rng(0)
    return {"a": jnp.asarray(rng.standard_normal((3, 5)), jnp.float32),  # 15 elements: kept
            "b": jnp.asarray(rng.standard_normal(4), jnp.float32),  # packed
            "c": jnp.asarray(rng.standard_normal((2, 2, 3)), jnp.float32),  # kept
            "d": jnp.float32(0.5),  # packed, 0-d
            "h": jnp.asarray(rng.standard_normal(6), jnp.bfloat16),  # packed, a second flat buffer
            "k": jnp.asarray(rng.standard_normal((3, 3)), jnp.bfloat16)}  # kept


def _grads(seed, missing=()):
    rng = np.random.default_rng(seed)
    return {k: None if k in missing else jnp.asarray(rng.standard_normal(np.shape(v)), v.dtype)
            for k, v in _tree().items()}


def _loss(p, x):
    return sum(jnp.sum(jnp.sin(v.astype(jnp.float32) * x) ** 2) for v in jax.tree.leaves(p))


def _per_leaf(cls):
    return type("PerLeaf" + cls.__name__, (cls,), {"elementwise": False})


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    jax.tree.map(np.testing.assert_array_equal, sa, sb)


def test_small_leaves_are_packed_and_large_ones_keep_their_shape(limit8):
    opt = fo.optim.Adam(_tree())
    storage = internals.storage(opt)
    # in order of first appearance (keys sorted): a, then the float32 buffer (b, d), c, bfloat16 (h), k
    assert [(x.shape, x.dtype) for x in storage] == [((3, 5), jnp.float32), ((5,), jnp.float32),
                                                     ((2, 2, 3), jnp.float32), ((6,), jnp.bfloat16),
                                                     ((3, 3), jnp.bfloat16)]
    state = internals.group_state(opt)
    assert [x.shape for x in state.slots["exp_avg"]] == [x.shape for x in storage]
    jax.tree.map(np.testing.assert_array_equal, opt.params, _tree())
    # fo.pack shares the layout: the same buffers, and max_packed_size=None packs everything
    assert [x.shape for x in fo.pack(_tree(), max_packed_size=8).buffers] == [x.shape for x in storage]
    assert [x.shape for x in fo.pack(_tree(), max_packed_size=None).buffers] == [(32,), (15,)]


@pytest.mark.default_codegen  # bit-for-bit across two layouts' programs
@pytest.mark.parametrize("cls, kw", [(fo.optim.Adam, {"weight_decay": 0.1}), (fo.optim.SGD, {"momentum": 0.9}),
                                     (fo.optim.AdamW, {"mu_dtype": jnp.bfloat16})])
def test_mixed_layout_gives_the_per_leaf_numbers(limit8, cls, kw):
    a, b = cls(_tree(), lr=0.1, **kw), _per_leaf(cls)(_tree(), lr=0.1, **kw)
    for i, missing in enumerate([(), ("a", "b"), ("k",), ()]):  # missing gradients: kept and packed leaves
        a(_grads(i, missing))
        b(_grads(i, missing))
        _assert_same(a, b)
    x = jnp.float32(1.5)
    for opt in (a, b):
        opt.zero_grad()
        opt.backward(_loss, x)
        opt.backward(_loss, x)  # accumulates
        fo.optim.clip_grad_norm_(opt, 0.5)
    jax.tree.map(np.testing.assert_array_equal, a.grad, b.grad)
    a.step()
    b.step()
    _assert_same(a, b)
    # a state_dict moves between the layouts (per parameter, torch's format)
    c = cls(_tree(), lr=0.1, **kw)
    c.load_state_dict(b.state_dict())
    c.params = b.params
    c(_grads(9))
    b(_grads(9))
    _assert_same(c, b)


def test_fused_adam_packs_every_leaf_and_steps_like_xla(limit8):
    tree = {k: v for k, v in _tree().items() if v.dtype == jnp.float32}  # the kernel's dtypes
    fused, plain = fo.optim.Adam(tree, lr=0.1, fused=True), fo.optim.Adam(tree, lr=0.1)
    assert internals.runs_native(fused)
    # a fused group packs every leaf (one kernel call per dtype); the plain one keeps the large leaves
    assert [x.shape for x in internals.storage(fused)] == [(32,)]
    assert [x.shape for x in internals.storage(plain)] == [(3, 5), (5,), (2, 2, 3)]
    for i in range(3):
        grads = {k: v for k, v in _grads(i).items() if k in tree}
        fused(grads)
        plain(grads)
    # the same arithmetic as XLA's loops: equal up to the compilers' rounding choices
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), fused.params, plain.params)
    assert [x.shape for x in internals.storage(fused)] == [(32,)]


def test_call_runs_one_compiled_program(compiles):
    """``opt(grads)`` packs the gradients inside the step: one program at the first call, none after.

    Any work outside the step (packing leaf by leaf, filling a missing gradient) would run eager
    operations, each compiled at its first use for shapes no other test uses.
    """
    shapes = [(7, 13), (11,), (3, 5, 17), (19,), ()]
    params = [jnp.full(s, 0.5, jnp.float32) for s in shapes]
    grads = [jnp.full(s, 0.25, jnp.float32) for s in shapes]
    doubled = [jnp.full(s, 0.5, jnp.float32) for s in shapes]
    opt = fo.optim.Adam(params, lr=0.1, weight_decay=0.01)  # a non-zero decay: one variant of the step
    calls = internals.count_step_calls(opt)  # one entry per run: its from_leaves flag
    before = len(compiles)
    opt(grads)
    assert len(compiles) - before == 1 and calls == [True]
    opt(grads)
    opt(doubled)
    assert len(compiles) - before == 1 and calls == [True] * 3
    # a new pattern of missing gradients: one new program, zeros made inside it
    opt([None, *grads[1:]])
    assert len(compiles) - before == 2 and len(calls) == 4
    # NumPy gradients go in as they are, with no eager conversion
    opt([np.asarray(g) for g in grads])
    assert len(compiles) - before == 2 and len(calls) == 5
    per_leaf = _per_leaf(fo.optim.Adam)(params, lr=0.1, weight_decay=0.01)
    for g in (grads, grads, doubled, [None, *grads[1:]], grads):
        per_leaf(g)
    # the same numbers up to XLA's rounding choices (one fused loop per buffer against one per leaf)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), opt.params,
                 per_leaf.params)


def test_backward_cuts_only_the_packed_buffer(limit8):
    """Kept leaves reach the loss as they are: the compiled backward slices and concatenates the small ones only."""
    opt = fo.optim.Adam(_tree(), lr=0.1)
    x = jnp.float32(1.5)
    text = internals.lowered_backward(opt, _loss, x).as_text()
    assert text.count("stablehlo.pad") == 0
    # the float32 buffer (b, d) is cut and its gradient concatenated back; h is alone in its buffer
    assert text.count("stablehlo.concatenate") == 1
    # b, d and h: one slice per packed leaf (at a traced offset), none of a kept one
    assert text.count("stablehlo.dynamic_slice") == 3 and text.count("stablehlo.slice") == 0
