"""fo.pack / fo.Packed: round trips, gradients through unpack(), train steps, refusals, design checks."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import funcopt as fo


def _mixed_tree():
    k = jax.random.split(jax.random.key(0), 4)
    return {
        "w": jax.random.normal(k[0], (3, 4)),
        "h": jax.random.normal(k[1], (5,), jnp.bfloat16),
        "c": jax.random.normal(k[2], (2,), jnp.complex64),
        "s": jnp.float32(2.5),
        "b": [jax.random.normal(k[3], (4,)), jnp.ones((0, 3))],
        "n": jnp.arange(3),
        "mask": jnp.array([True, False]),
        "key": jax.random.key(7),
        "none": None,
        "py": 1.5,
    }


def _assert_same_tree(a, b, same_types=True):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if same_types:
            assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(jax.random.key_data(x), jax.random.key_data(y))
            continue
        assert np.shape(x) == np.shape(y) and (jnp.result_type(x) == jnp.result_type(y) or not same_types)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit-exact


def test_round_trip_is_exact_for_mixed_dtypes_and_non_floating_leaves():
    tree = _mixed_tree()
    packed = fo.pack(tree)
    # one buffer per floating dtype, in order of first appearance (dict keys sorted: b, c, h, ..., s, w)
    assert [b.dtype for b in packed.buffers] == [jnp.float32, jnp.complex64, jnp.bfloat16]
    assert all(b.ndim == 1 for b in packed.buffers)
    assert packed.buffers[0].size == 4 + 0 + 1 + 12
    # non-floating leaves and Python numbers are kept aside as they are
    assert any(x is tree["py"] for x in packed.others) and any(x is tree["n"] for x in packed.others)
    _assert_same_tree(packed.unpack(), tree)
    # under jit a Python number comes back as a 0-d array (jit's rule, not the layout's)
    _assert_same_tree(jax.jit(lambda p: p.unpack())(packed), tree, same_types=False)
    # the Packed itself crosses jit as a pytree with the same layout
    again = jax.jit(lambda p: p)(packed)
    assert jax.tree.structure(again) == jax.tree.structure(packed)
    _assert_same_tree(again.unpack(), tree, same_types=False)


def test_pack_inside_jit_and_refuses_a_packed():
    tree = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(2)}
    packed = jax.jit(fo.pack)(tree)
    np.testing.assert_array_equal(packed.buffers[0], [0, 1, 2, 3, 4, 5, 1, 1])
    _assert_same_tree(packed.unpack(), tree)
    with pytest.raises(TypeError, match="already a Packed"):
        fo.pack(packed)


def _leaf_tree(n, size=3):
    return {f"p{i:04d}": jnp.full((size,), 0.01 * (i + 1), jnp.float32) for i in range(n)}


def _loss(tree):
    return sum(jnp.sum(jnp.sin(x) * x) for x in jax.tree.leaves(tree))


def test_grad_through_unpack_is_a_packed_with_one_concatenate_per_buffer_and_no_pad():
    tree = _leaf_tree(4)
    tree["h"] = jnp.ones(3, jnp.bfloat16)
    packed = fo.pack(tree)
    g = jax.grad(lambda p: _loss(p.unpack()))(packed)
    assert isinstance(g, fo.Packed) and jax.tree.structure(g) == jax.tree.structure(packed)
    ref = jax.grad(_loss)(tree)
    _assert_same_tree(g.unpack(), ref)

    def eqns(n):
        p = fo.pack(_leaf_tree(n))
        jaxpr = jax.make_jaxpr(jax.grad(lambda q: _loss(q.unpack())))(p).jaxpr
        prims = [e.primitive.name for e in jaxpr.eqns]
        return prims.count("pad"), prims.count("concatenate"), prims.count("split")

    # a per-leaf lax.slice would transpose to one pad of the whole buffer per leaf
    assert eqns(10) == eqns(200) == (0, 1, 1)


class _MLP(nnx.Module):
    def __init__(self, rngs, width=8, depth=6):
        self.layers = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.tanh(layer(x))
        return self.norm(x)


def test_jitted_train_step_packed_matches_per_leaf_for_an_nnx_model():
    model = _MLP(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    x = jax.random.normal(jax.random.key(1), (16, 8))
    y = jax.random.normal(jax.random.key(2), (16, 8))

    def loss(p):
        return jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

    tx = fo.adam(lr=1e-2, weight_decay=1e-3)

    @jax.jit
    def step_leaf(p, s):
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p)
        return fo.apply_updates(p, u), s, value

    @jax.jit
    def step_packed(p, s):
        value, g = jax.value_and_grad(lambda q: loss(q.unpack()))(p)
        u, s = tx.update(g, s, p)
        return fo.apply_updates(p, u), s, value

    p_leaf, s_leaf = params, tx.init(params)
    packed = fo.pack(params)
    assert len(packed.buffers) == 1 and len(jax.tree.leaves(params)) == 14
    s_packed = tx.init(packed)
    for _ in range(20):
        p_leaf, s_leaf, v_leaf = step_leaf(p_leaf, s_leaf)
        packed, s_packed, v_packed = step_packed(packed, s_packed)
        # the same elementwise math; only XLA's fusion/rounding order may differ
        np.testing.assert_allclose(v_packed, v_leaf, rtol=1e-5, atol=1e-6)
    assert float(v_leaf) < float(step_leaf(params, tx.init(params))[2])  # it trained
    for a, b in zip(jax.tree.leaves(packed.unpack()), jax.tree.leaves(p_leaf)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_optax_adam_runs_on_a_packed():
    tree = {"a": jnp.linspace(-1, 1, 6).reshape(2, 3), "b": jnp.array([0.5, -0.25])}
    grads = jax.tree.map(lambda x: jnp.cos(3 * x), tree)
    tx = optax.adam(0.1)
    p_leaf, s_leaf = tree, tx.init(tree)
    p_packed = fo.pack(tree)
    s_packed = tx.init(p_packed)
    g_packed = fo.pack(grads)
    for _ in range(3):
        u, s_leaf = tx.update(grads, s_leaf, p_leaf)
        p_leaf = optax.apply_updates(p_leaf, u)
        u, s_packed = jax.jit(tx.update)(g_packed, s_packed, p_packed)
        assert isinstance(u, fo.Packed)
        p_packed = optax.apply_updates(p_packed, u)
    for a, b in zip(jax.tree.leaves(p_packed.unpack()), jax.tree.leaves(p_leaf)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_elementwise_chain_and_apply_updates_keep_other_leaves():
    tree = {"w": jnp.ones(3), "count": jnp.array(4), "key": jax.random.key(0)}
    packed = fo.pack(tree)
    tx = fo.chain(fo.clip_by_global_norm(1.0), fo.sgd(lr=0.5, momentum=0.9))
    grads = fo.pack({"w": jnp.full(3, 10.0), "count": jnp.array(0), "key": jax.random.key(1)})
    u, _ = tx.update(grads, tx.init(packed), packed)
    new = fo.apply_updates(packed, u).unpack()
    np.testing.assert_allclose(new["w"], 1 - 0.5 / np.sqrt(3), rtol=1e-6)
    assert int(new["count"]) == 4
    np.testing.assert_array_equal(jax.random.key_data(new["key"]), jax.random.key_data(tree["key"]))


_PER_LEAF = {
    "lamb": lambda p, g: fo.lamb(lr=0.1, weight_decay=0.1).init(p),
    "lars": lambda p, g: fo.lars(lr=0.1).init(p),
    "adafactor": lambda p, g: fo.adafactor().init(p),
    "muon": lambda p, g: fo.muon().init(p),
    "lamb.update": lambda p, g: fo.lamb(lr=0.1).update(g, fo.lamb(lr=0.1).init(p.unpack()), p),
    "masked": lambda p, g: fo.masked(fo.sgd(lr=0.1), ["w"]).init(p),
    "partition": lambda p, g: fo.partition({"a": fo.sgd(lr=0.1)}, lambda t: jax.tree.map(lambda _: "a", t)).init(p),
    "label_fn_from_names": lambda p, g: fo.label_fn_from_names({"w": "a"}, default="b")(p),
    "name_mask": lambda p, g: fo.name_mask(p, "*.w"),
    "name_labels": lambda p, g: fo.name_labels(p, lambda n, _: n),
    "clip_by_leaf_norm": lambda p, g: fo.clip_by_leaf_norm(1.0).update(g, fo.clip_by_leaf_norm(1.0).init(p)),
    "clip_by_block_norm": lambda p, g: fo.clip_by_block_norm(1.0).update(g, fo.clip_by_block_norm(1.0).init(p)),
    "centralize": lambda p, g: fo.centralize().update(g, fo.centralize().init(p)),
    "add_decayed_weights(mask)": lambda p, g: fo.add_decayed_weights(0.1, mask=["w"]).update(
        g, fo.add_decayed_weights(0.1, mask=["w"]).init(p), p),
    "mindspore_decay_mask": lambda p, g: fo.mindspore_decay_mask(p),
}


@pytest.mark.parametrize("who", sorted(_PER_LEAF))
def test_per_leaf_rules_refuse_a_packed_with_a_clear_type_error(who):
    tree = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    packed, grads = fo.pack(tree), fo.pack(jax.tree.map(jnp.ones_like, tree))
    with pytest.raises(TypeError, match=r"per-leaf rule and cannot run on a fo\.Packed.*unpack\(\).*fo\.optim"):
        _PER_LEAF[who](packed, grads)


def test_checkpoint_round_trips_a_packed(tmp_path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "h": jnp.ones(2, jnp.bfloat16), "n": jnp.arange(2)}
    packed = fo.pack(tree)
    tx = fo.adam(lr=0.1)
    state = tx.init(packed)
    fo.save(tmp_path / "p.npz", {"params": packed, "state": state})
    like = {"params": fo.pack(jax.tree.map(jnp.zeros_like, tree)), "state": tx.init(packed)}
    loaded = fo.load(tmp_path / "p.npz", target=like)
    assert isinstance(loaded["params"], fo.Packed)
    _assert_same_tree(loaded["params"].unpack(), tree)
    _assert_same_tree(loaded["state"], state)


def _update_size(n):
    packed = fo.pack(_leaf_tree(n))
    tx = fo.adam(lr=1e-3)
    state = tx.init(packed)
    jaxpr = jax.make_jaxpr(tx.update)(packed, state, packed)
    hlo = jax.jit(tx.update).lower(packed, state, packed).compile().as_text()
    return len(jaxpr.jaxpr.eqns), hlo.count(" fusion(") + hlo.count("fusion.")


def test_a_packed_adam_update_does_not_grow_with_the_number_of_leaves():
    small, large = _update_size(10), _update_size(200)
    assert small == large, (small, large)  # jaxpr equations and XLA fusions
    assert small[1] > 0


_SHARDING_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import funcopt as fo
    assert jax.device_count() == 8
    tree = {"a": jnp.arange(24.0).reshape(4, 6), "b": jnp.linspace(0, 1, 8)}
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((8,), ("x",), axis_types=(axis_type,))
        jax.set_mesh(mesh)  # explicit sharding asks for the mesh in context
        packed = jax.device_put(fo.pack(tree), NamedSharding(mesh, P("x")))
        assert packed.buffers[0].sharding.spec == P("x"), packed.buffers[0].sharding
        tx = fo.adam(lr=0.1)
        state = tx.init(packed)
        grads = jax.jit(jax.grad(lambda p: jnp.sum(p.unpack()["a"]) + jnp.sum(p.unpack()["b"])))(packed)
        u, state = jax.jit(tx.update)(grads, state, packed)
        new = fo.apply_updates(packed, u)
        assert len(new.buffers[0].sharding.device_set) == 8, new.buffers[0].sharding
        np.testing.assert_allclose(new.unpack()["a"], tree["a"] - 0.1, rtol=1e-6)
        np.testing.assert_allclose(new.unpack()["b"], tree["b"] - 0.1, rtol=1e-6)
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))
    split = jax.device_put(jnp.ones((8, 2)), NamedSharding(mesh, P("x")))
    try:
        fo.pack({"a": split, "b": tree["b"]})
    except ValueError as e:
        assert "split across devices" in str(e), e
    else:
        raise AssertionError("a sharded leaf was packed")
    d = jax.devices()
    try:
        fo.pack({"a": jax.device_put(tree["a"], d[0]), "b": jax.device_put(tree["b"], d[1])})
    except ValueError as e:
        assert "different sets of devices" in str(e), e
    else:
        raise AssertionError("leaves on different devices were packed")
    print("OK")
""")


def test_device_put_of_a_packed_with_a_sharding_on_eight_cpu_devices():
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=8"])
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", _SHARDING_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize("bad, error", [("16", TypeError), (2.5, TypeError), (True, TypeError), (-1, ValueError)])
def test_pack_refuses_a_bad_max_packed_size(bad, error):
    with pytest.raises(error, match="max_packed_size"):
        fo.pack({"w": jnp.ones(3)}, max_packed_size=bad)
