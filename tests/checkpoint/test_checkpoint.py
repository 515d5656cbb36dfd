"""fo.save / fo.load: pickle-free .npz checkpoints, atomic writes, damaged files, bit-exact resume."""

import importlib
import io
import json
import os
import pickle
from collections import OrderedDict
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import funcopt as fo
from funcopt import checkpoint as ckpt

DTYPES = ["bfloat16", "float16", "float32", "float64", "complex64", "complex128", "int8", "int32", "int64",
          "uint8", "bool", "float8_e4m3fn", "float8_e5m2", "int4"]
JAX_X32_DTYPES = ["bfloat16", "float16", "float32", "complex64", "int8", "int32", "uint8", "bool"]


def _dtype(name):
    return np.dtype(getattr(ml_dtypes, name)) if name in ckpt._EXTENDED_DTYPES else np.dtype(name)


def _random_bits(name, shape, seed):
    """Arrays of every bit pattern kind (NaNs with payloads, -0.0, infinities, subnormals)."""
    dt = _dtype(name)
    rng = np.random.default_rng(seed)
    if dt == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if name == "int4":
        return rng.integers(-8, 8, shape).astype(dt)
    bits = rng.integers(0, 256, size=int(np.prod(shape, dtype=int)) * dt.itemsize, dtype=np.uint8)
    return bits.view(dt).reshape(shape)


def _bits(x):
    return np.asarray(x).reshape(-1).view(np.uint8)


def _assert_bit_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_array_equal(_bits(a), _bits(b))


def _assert_trees_bit_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        _assert_bit_equal(x, y)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ckpt.npz")


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", DTYPES)
def test_numpy_round_trip_every_dtype_bit_exact(path, name):
    tree = {"x": _random_bits(name, (5, 3), 0), "scalar": _random_bits(name, (), 1),
            "empty": _random_bits(name, (0, 2), 2), "one": _random_bits(name, (1,), 3)}
    fo.save(path, tree)
    out = fo.load(path)
    _assert_trees_bit_equal(out, tree)
    for k in tree:
        assert type(out[k]) is np.ndarray and out[k].dtype == tree[k].dtype
    _assert_trees_bit_equal(fo.load(path, target=tree), tree)


@pytest.mark.parametrize("name", JAX_X32_DTYPES)
def test_jax_round_trip_every_dtype_bit_exact(path, name):
    tree = {"x": jnp.asarray(_random_bits(name, (4, 2), 5)), "s": jnp.asarray(_random_bits(name, (), 6))}
    assert tree["x"].dtype == _dtype(name)
    fo.save(path, tree)
    like = jax.tree.map(jnp.zeros_like, tree)
    out = fo.load(path, target=like)
    for k in tree:
        assert isinstance(out[k], jax.Array)
        assert out[k].sharding == like[k].sharding
    _assert_trees_bit_equal(out, tree)
    _assert_trees_bit_equal(fo.load(path), tree)


@pytest.mark.parametrize("name", ["float64", "complex128", "int64"])
def test_jax_x64_round_trip_bit_exact(path, name):
    with jax.enable_x64(True):
        tree = [jnp.asarray(_random_bits(name, (3, 3), 7)), jnp.asarray(_random_bits(name, (), 8))]
        assert tree[0].dtype == np.dtype(name)
        fo.save(path, tree)
        out = fo.load(path, target=jax.eval_shape(lambda: tree))
        assert all(isinstance(x, jax.Array) for x in out)
        _assert_trees_bit_equal(out, tree)


def test_special_float_values_survive(path):
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, np.finfo(np.float32).max], np.float32)
    payload = np.array([0x7FC01234, 0xFFA00001], np.uint32).view(np.float32)  # NaNs with payloads
    tree = {"x": x, "payload": payload, "bf16": jnp.asarray(x, jnp.bfloat16)}
    fo.save(path, tree)
    _assert_trees_bit_equal(fo.load(path), tree)


class _Pair(NamedTuple):
    first: object
    second: object


def test_structure_and_python_scalars_rebuilt_without_target(path):
    tree = {
        "z_last": [1, 2.5, True, "text", None, 3 + 4j, float("nan"), -0.0, 10**30],
        "a_first": (np.float32(1.5), np.int64(7), jnp.arange(3)),
        "nt": _Pair(first=jnp.ones(2), second={"x": None}),
        "od": OrderedDict([("b", 1.0), ("a", 2.0)]),
        "int_keys": {3: "c", 1: "a", 2: "b"},
        "masked": fo.MaskedNode(),
    }
    fo.save(path, tree)
    out = fo.load(path)
    assert jax.tree.structure(out) == jax.tree.structure(tree)
    assert list(out) == list(tree)  # insertion order kept
    assert list(out["od"]) == ["b", "a"] and type(out["od"]) is OrderedDict
    assert list(out["int_keys"]) == [3, 1, 2]
    assert type(out["nt"]) is _Pair and type(out["masked"]) is fo.MaskedNode
    py = out["z_last"]
    assert py[:6] == [1, 2.5, True, "text", None, 3 + 4j]
    assert [type(v) for v in py] == [type(v) for v in tree["z_last"]]
    assert np.isnan(py[6]) and str(py[7]) == "-0.0" and py[8] == 10**30
    assert type(out["a_first"][0]) is np.float32 and type(out["a_first"][1]) is np.int64
    _assert_bit_equal(out["a_first"][2], tree["a_first"][2])


def test_functional_state_rebuilt_without_target(path):
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(())}
    tx = fo.chain(fo.clip_by_global_norm(1.0),
                  fo.partition({"a": fo.adam(lr=1e-2, amsgrad=True), "s": fo.sgd(lr=0.1, momentum=0.9)},
                               {"w": "a", "b": "s"}))
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    fo.save(path, state)
    out = fo.load(path)
    assert jax.tree.structure(out) == jax.tree.structure(state)
    _assert_trees_bit_equal(out, state)
    # the rebuilt (NumPy) state drives the next update like the original
    g = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    _assert_trees_bit_equal(tx.update(g, out, params), tx.update(g, state, params))


def test_optax_state_rebuilt_without_target(path):
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(())}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    fo.save(path, state)
    out = fo.load(path)
    assert jax.tree.structure(out) == jax.tree.structure(state)
    assert type(out[1][0]) is type(state[1][0])
    _assert_trees_bit_equal(out, state)


def test_prng_keys_round_trip(path):
    tree = {"key": jax.random.key(42), "keys": jax.random.split(jax.random.key(1), 3),
            "raw": jax.random.PRNGKey(0)}
    fo.save(path, tree)
    for out in (fo.load(path), fo.load(path, target=tree)):
        assert jax.dtypes.issubdtype(out["key"].dtype, jax.dtypes.prng_key)
        _assert_bit_equal(jax.random.key_data(out["keys"]), jax.random.key_data(tree["keys"]))
        _assert_bit_equal(jax.random.normal(out["key"], (3,)), jax.random.normal(tree["key"], (3,)))
        _assert_bit_equal(out["raw"], tree["raw"])


def test_custom_nodes_and_local_namedtuples_need_a_target(path):
    class Local(NamedTuple):
        a: object

    class Node:
        def __init__(self, a, b):
            self.a, self.b = a, b

    jax.tree_util.register_pytree_node(Node, lambda n: ((n.a, n.b), None), lambda _, ch: Node(*ch))
    tree = {"node": Node(jnp.ones(2), jnp.zeros(3)), "local": Local(a=jnp.arange(2.0))}
    fo.save(path, tree)
    with pytest.raises(fo.CheckpointError, match="target"):
        fo.load(path)
    like = {"node": Node(jnp.zeros(2), jnp.zeros(3)), "local": Local(a=jnp.zeros(2))}
    out = fo.load(path, target=like)
    assert isinstance(out["node"], Node) and isinstance(out["local"], Local)
    _assert_bit_equal(out["node"].a, tree["node"].a)
    _assert_bit_equal(out["local"].a, tree["local"].a)


def test_namedtuple_from_untrusted_unloaded_module_is_not_imported(path, monkeypatch):
    fo.save(path, _Pair(first=jnp.ones(1), second=jnp.zeros(1)))
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    meta = json.loads(entries[ckpt._META_KEY].tobytes())
    assert meta["pytree"]["tree"]["type"].endswith(":_Pair")
    meta["pytree"]["tree"]["type"] = "some_module_that_is_not_loaded:_Pair"
    _write_raw(path, entries, meta)
    imported = []
    real_import = importlib.import_module

    def spy(name, *args):
        imported.append(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", spy)
    with pytest.raises(fo.CheckpointError, match="target"):
        fo.load(path)
    assert "some_module_that_is_not_loaded" not in imported


# ---------------------------------------------------------------------- target checks


def test_target_mismatches_raise_clear_errors_and_leave_target_alone(path):
    tree = {"a": jnp.ones((2, 3)), "b": [jnp.zeros(2, jnp.bfloat16), 1.5]}
    fo.save(path, tree)
    cases = [
        ({"a": jnp.ones((2, 3)), "b": [jnp.zeros(2, jnp.bfloat16)]}, "3 leaves, the target 2"),
        ({"a": jnp.ones((2, 3)), "c": [jnp.zeros(2, jnp.bfloat16), 1.5]}, r"\['c'\]"),
        ({"a": jnp.ones((3, 2)), "b": [jnp.zeros(2, jnp.bfloat16), 1.5]}, r"shape \(2, 3\)"),
        ({"a": jnp.ones((2, 3)), "b": [jnp.zeros(2, jnp.float32), 1.5]}, "dtype bfloat16"),
        ({"a": jnp.ones((2, 3)), "b": [jnp.zeros(2, jnp.bfloat16), jnp.ones(())]}, "Python float"),
        ({"a": jnp.ones((2, 3)), "b": [jnp.zeros(2, jnp.bfloat16), 2]}, "Python float"),
        ({"a": 1.0, "b": [jnp.zeros(2, jnp.bfloat16), 1.5]}, "array"),
    ]
    for target, message in cases:
        before = jax.tree.map(np.asarray, target)
        with pytest.raises(fo.CheckpointError, match=message):
            fo.load(path, target=target)
        _assert_trees_bit_equal(jax.tree.map(np.asarray, target), before)


def test_optimizer_and_pytree_checkpoints_do_not_mix(path, tmp_path):
    opt = fo.optim.SGD({"w": jnp.ones(2)}, lr=0.1, momentum=0.9)
    fo.save(path, opt)
    with pytest.raises(fo.CheckpointError, match="pass that optimizer"):
        fo.load(path, target={"w": jnp.ones(2)})
    other = str(tmp_path / "tree.npz")
    fo.save(other, {"w": jnp.ones(2)})
    with pytest.raises(fo.CheckpointError, match="not an optimizer"):
        fo.load(other, opt)


def test_save_rejects_what_needs_pickle(path):
    with pytest.raises(TypeError, match="object"):
        fo.save(path, {"x": np.array([object()], dtype=object)})
    with pytest.raises(TypeError, match=r"\['f'\]"):
        fo.save(path, {"f": lambda s: s})
    with pytest.raises(TypeError, match="params="):
        fo.save(path, {"w": jnp.ones(2)}, params={"w": jnp.ones(2)})
    assert not os.path.exists(path)


# ---------------------------------------------------------------------- stateful optimizers


def _model(seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return {"fc": {"weight": jnp.asarray(rng.standard_normal((3, 4)), dtype),
                   "bias": jnp.asarray(rng.standard_normal(3), dtype)},
            "scale": jnp.asarray(rng.standard_normal(()), dtype),
            "one": jnp.asarray(rng.standard_normal(1), dtype)}


def _grads_at(step, params):
    """Gradients that change every step, a pure function of the step number."""
    rng = np.random.default_rng(1000 + step)
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)


def _snapshot(opt):
    return (jax.tree.map(np.array, opt.params), _plain_state_dict(opt.state_dict()))


def _plain_state_dict(sd):
    return jax.tree.map(lambda x: np.array(x) if isinstance(x, (np.ndarray, jax.Array)) else x, sd)


def _assert_same_snapshot(a, b):
    _assert_trees_bit_equal(a[0], b[0])
    assert a[1]["param_groups"] == b[1]["param_groups"]
    assert sorted(a[1]["state"]) == sorted(b[1]["state"])
    for k in a[1]["state"]:
        assert sorted(a[1]["state"][k]) == sorted(b[1]["state"][k])
        for name in a[1]["state"][k]:
            _assert_bit_equal(a[1]["state"][k][name], b[1]["state"][k][name])


def test_optimizer_state_dict_round_trip(path):
    opt = fo.optim.Adam(_model(), lr=1e-2, betas=(0.8, 0.95), amsgrad=True, weight_decay=1e-3)
    for t in range(3):
        opt(_grads_at(t, opt.params))
    fo.save(path, opt, params=False)
    sd = fo.load(path)
    expected = opt.state_dict()
    assert sd["param_groups"] == expected["param_groups"]
    assert isinstance(sd["param_groups"][0]["betas"], tuple)
    assert sorted(sd["state"]) == sorted(expected["state"])
    for k, entry in expected["state"].items():
        for name, value in entry.items():
            _assert_bit_equal(sd["state"][k][name], value)
    fresh = fo.optim.Adam(_model(seed=5), lr=0.5)
    params_before = jax.tree.map(np.array, fresh.params)
    assert fo.load(path, fresh) is fresh
    _assert_trees_bit_equal(fresh.params, params_before)  # no params in this checkpoint
    assert fresh.param_groups[0]["lr"] == 1e-2 and fresh.param_groups[0]["amsgrad"] is True
    _assert_same_snapshot((params_before, _plain_state_dict(fresh.state_dict())),
                          (params_before, _plain_state_dict(expected)))


def test_optimizer_params_saved_when_asked(path):
    opt = fo.optim.SGD(_model(), lr=0.1, momentum=0.9)
    opt(_grads_at(0, opt.params))
    fo.save(path, opt, params=True)
    fresh = fo.optim.SGD(_model(seed=3), lr=0.1, momentum=0.9)
    fo.load(path, fresh)
    _assert_same_snapshot(_snapshot(fresh), _snapshot(opt))

    other = jax.tree.map(lambda p: p * 2, opt.params)
    fo.save(path, opt, params=other)
    fo.load(path, fresh)
    _assert_trees_bit_equal(fresh.params, other)
    with pytest.raises(ValueError, match="structure"):
        fo.save(path, opt, params={"fc": opt.params["fc"]})
    with pytest.raises(ValueError, match="float16"):
        fo.save(path, opt, params=jax.tree.map(lambda p: p.astype(jnp.float16), opt.params))


def test_optimizer_with_scheduled_lr_keeps_its_schedule(path):
    def schedule(step):
        return 0.1 * 0.5 ** step

    opt = fo.optim.Adam(_model(), lr=schedule)
    opt(_grads_at(0, opt.params))
    fo.save(path, opt, params=True)
    assert "lr" not in fo.load(path)["param_groups"][0]
    fresh = fo.optim.Adam(_model(seed=2), lr=schedule)
    fo.load(path, fresh)
    assert fresh.param_groups[0]["lr"] is schedule
    for t in range(1, 4):
        opt(_grads_at(t, opt.params))
        fresh(_grads_at(t, fresh.params))
    _assert_trees_bit_equal(fresh.params, opt.params)


def test_optimizer_mismatch_leaves_it_exactly_as_it_was(path, tmp_path):
    opt = fo.optim.Adam(_model(), lr=1e-2)
    opt(_grads_at(0, opt.params))
    fo.save(path, opt, params=True)

    def check_untouched(target, message, file=path):
        opt_state = _snapshot(target)
        with pytest.raises(fo.CheckpointError, match=message):
            fo.load(file, target)
        _assert_same_snapshot(_snapshot(target), opt_state)

    check_untouched(fo.optim.AdamW(_model(), lr=1e-2), "AdamW")
    bigger = _model()
    bigger["fc"]["bias"] = jnp.zeros(4)
    check_untouched(fo.optim.Adam(bigger), r"shape \(3,\)")
    renamed = _model()
    renamed["head"] = renamed.pop("scale")
    check_untouched(fo.optim.Adam(renamed), "structures differ")
    check_untouched(fo.optim.Adam(_model(dtype=jnp.bfloat16)), "dtype float32")
    check_untouched(fo.optim.Adam([{"params": _model()}, {"params": {"extra": jnp.ones(2)}}]),
                    "holds 4 leaves, the target 5")

    # the parameters validate but the state_dict does not: the parameters already put in are taken back
    bad = fo.optim.Adam(_model(), lr=1e-2)
    bad.register_state_dict_post_hook(lambda o, sd: {**sd, "param_groups": [{**sd["param_groups"][0], "lr": -1.0}]})
    bad(_grads_at(0, bad.params))
    bad_file = str(tmp_path / "bad.npz")
    fo.save(bad_file, bad, params=True)
    target = fo.optim.Adam(_model(seed=9), lr=1e-2)
    check_untouched(target, "learning rate", file=bad_file)

    # damaged files never touch the optimizer
    data = open(path, "rb").read()
    for cut in (10, len(data) // 2, len(data) - 5):
        with open(tmp_path / "cut.npz", "wb") as f:
            f.write(data[:cut])
        check_untouched(target, "corrupted or truncated", file=str(tmp_path / "cut.npz"))


# ---------------------------------------------------------------------- resume


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_resume_stateful_adam_identical_trajectory(path, dtype):
    total, cut = 30, 12
    kwargs = dict(lr=3e-2, betas=(0.8, 0.95), weight_decay=1e-2, amsgrad=True)
    straight = fo.optim.Adam(_model(dtype=dtype), **kwargs)
    for t in range(total):
        straight(_grads_at(t, straight.params))

    first = fo.optim.Adam(_model(dtype=dtype), **kwargs)
    for t in range(cut):
        first(_grads_at(t, first.params))
    fo.save(path, first, params=True)
    del first

    resumed = fo.optim.Adam(_model(seed=7, dtype=dtype), lr=1.0)
    fo.load(path, resumed)
    for t in range(cut, total):
        resumed(_grads_at(t, resumed.params))
    _assert_same_snapshot(_snapshot(resumed), _snapshot(straight))
    assert not np.array_equal(np.asarray(straight.params["scale"]), np.asarray(_model(dtype=dtype)["scale"]))


def test_resume_groups_cut_from_one_model(path):
    def make(seed):
        groups = fo.optim.param_groups(_model(seed), {"*.bias": {"lr": 0.1, "weight_decay": 0.0}})
        return fo.optim.AdamW(groups, lr=1e-2, weight_decay=0.05)

    straight = make(0)
    for t in range(8):
        straight(_grads_at(t, straight.params))
    first = make(0)
    for t in range(3):
        first(_grads_at(t, first.params))
    fo.save(path, first, params=True)
    resumed = make(6)
    fo.load(path, resumed)
    assert [g["lr"] for g in resumed.param_groups] == [0.1, 1e-2]
    for t in range(3, 8):
        resumed(_grads_at(t, resumed.params))
    _assert_same_snapshot(_snapshot(resumed), _snapshot(straight))


def _functional_run(tx, params, state, start, stop):
    update = jax.jit(tx.update)
    for t in range(start, stop):
        updates, state = update(_grads_at(t, params), state, params)
        params = fo.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_resume_functional_adam_chain_identical_trajectory(path, x64):
    total, cut = 30, 12
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        tx = fo.chain(fo.clip_by_global_norm(2.0), fo.adam(lr=3e-2, betas=(0.85, 0.99), amsgrad=True))
        params0 = _model(dtype=dtype)
        final_params, final_state = _functional_run(tx, params0, tx.init(params0), 0, total)

        params, state = _functional_run(tx, params0, tx.init(params0), 0, cut)
        fo.save(path, (params, state))

        like_params = _model(seed=4, dtype=dtype)
        like = (like_params, tx.init(like_params))
        restored = fo.load(path, target=like)
        for leaf in jax.tree.leaves(restored):
            assert isinstance(leaf, jax.Array)
        resumed = _functional_run(tx, *restored, cut, total)
        _assert_trees_bit_equal(resumed, (final_params, final_state))

        # without a target: NumPy leaves in the rebuilt structure, same trajectory
        rebuilt = fo.load(path)
        assert jax.tree.structure(rebuilt) == jax.tree.structure(like)
        resumed = _functional_run(tx, *jax.tree.map(jnp.asarray, rebuilt), cut, total)
        _assert_trees_bit_equal(resumed, (final_params, final_state))


# ---------------------------------------------------------------------- atomic writes


def _tree():
    return {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3, jnp.bfloat16), "n": 3}


def _dir_entries(path):
    return sorted(os.listdir(os.path.dirname(path)))


@pytest.mark.parametrize("failure", ["partial_write", "interrupt", "fsync", "replace"])
def test_crash_mid_write_keeps_old_checkpoint(path, monkeypatch, failure):
    old = _tree()
    fo.save(path, old)
    old_bytes = open(path, "rb").read()
    entries = _dir_entries(path)
    new = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3, jnp.bfloat16), "n": 4}

    real_savez = np.savez

    def partial_savez(f, *args, **kwargs):
        buf = io.BytesIO()
        real_savez(buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half the archive reaches the file
        if failure == "interrupt":
            raise KeyboardInterrupt
        raise OSError(28, "No space left on device")

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    if failure in ("partial_write", "interrupt"):
        monkeypatch.setattr(np, "savez", partial_savez)
    elif failure == "fsync":
        monkeypatch.setattr(os, "fsync", failing)
    else:
        monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(KeyboardInterrupt if failure == "interrupt" else OSError):
        fo.save(path, new)
    monkeypatch.undo()
    assert open(path, "rb").read() == old_bytes
    assert _dir_entries(path) == entries  # no temporary file left behind
    _assert_trees_bit_equal(fo.load(path), old)
    fo.save(path, new)
    _assert_trees_bit_equal(fo.load(path), new)


def test_write_goes_through_a_temporary_file_in_the_same_directory(path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(os.path.abspath(src)), os.path.abspath(dst), open(src, "rb").read(4)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    fo.save(path, _tree())
    assert seen == [(os.path.dirname(path), os.path.abspath(path), b"PK\x03\x04")]


def test_overwrite_keeps_file_mode(path):
    fo.save(path, _tree())
    os.chmod(path, 0o640)
    fo.save(path, _tree())
    assert os.stat(path).st_mode & 0o777 == 0o640


# ---------------------------------------------------------------------- damaged files


def _write_raw(path, entries, meta):
    entries = dict(entries)
    entries[ckpt._META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **entries)


def _raw(path):
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    return entries, json.loads(entries[ckpt._META_KEY].tobytes())


def _small_state():
    params = {"w": jnp.arange(4.0).reshape(2, 2), "b": jnp.ones((), jnp.bfloat16)}
    tx = fo.adam(lr=0.1)
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    return state


def test_flipped_bytes_are_detected_or_harmless(path):
    state = _small_state()
    fo.save(path, state)
    data = open(path, "rb").read()
    rng = np.random.default_rng(0)
    offsets = sorted(set(range(0, 64)) | set(range(len(data) - 64, len(data)))
                     | set(rng.integers(0, len(data), 150).tolist()))
    detected = 0
    for off in offsets:
        damaged = bytearray(data)
        damaged[off] ^= 0x5A
        with open(path, "wb") as f:
            f.write(damaged)
        try:
            out = fo.load(path, target=state)
        except fo.CheckpointError:
            detected += 1
            continue
        # bytes nobody reads (zip timestamps and the like): the content must be intact
        _assert_trees_bit_equal(out, state)
    assert detected > len(offsets) // 2


def test_truncated_files_are_detected(path):
    state = _small_state()
    fo.save(path, state)
    data = open(path, "rb").read()
    for cut in [0, 1, 3, 4, 30, 100, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 22,
                len(data) - 1]:
        with open(path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(fo.CheckpointError, match="corrupted or truncated"):
            fo.load(path, target=state)
        with pytest.raises(fo.CheckpointError):
            fo.load(path)


def test_other_files_are_rejected(path):
    with open(path, "wb") as f:
        f.write(b"not a checkpoint at all")
    with pytest.raises(fo.CheckpointError, match="not a funcopt checkpoint"):
        fo.load(path)
    np.savez(path, x=np.ones(3))
    os.replace(path + ".npz" if os.path.exists(path + ".npz") else path, path)
    with pytest.raises(fo.CheckpointError, match="no metadata"):
        fo.load(path)


def test_wrong_format_version_name_and_entries(path):
    fo.save(path, _small_state())
    entries, meta = _raw(path)
    for change, message in [
        ({"version": 2}, "format version 2, newer"),
        ({"version": 0}, "invalid format version"),
        ({"version": "1"}, "invalid format version"),
        ({"format": "something.else"}, "not a funcopt checkpoint"),
        ({"kind": "model"}, "unknown kind"),
    ]:
        _write_raw(path, entries, {**meta, **change})
        with pytest.raises(fo.CheckpointError, match=message):
            fo.load(path)
    extra = {**entries, "intruder": np.zeros(1)}
    _write_raw(path, extra, meta)
    with pytest.raises(fo.CheckpointError, match="intruder"):
        fo.load(path)
    missing = {k: v for k, v in entries.items() if k != "a1"}
    _write_raw(path, missing, meta)
    with pytest.raises(fo.CheckpointError, match="a1"):
        fo.load(path)


def test_checksum_and_metadata_mismatches(path):
    fo.save(path, _small_state())
    entries, meta = _raw(path)
    tampered = dict(entries)
    tampered["a3"] = entries["a3"] + 1  # a valid archive whose data no longer match the digests
    _write_raw(path, tampered, meta)
    with pytest.raises(fo.CheckpointError, match="checksum"):
        fo.load(path)
    reshaped = dict(entries)
    reshaped["a3"] = np.concatenate([entries["a3"].reshape(-1)] * 2)
    _write_raw(path, reshaped, meta)
    with pytest.raises(fo.CheckpointError, match="metadata says"):
        fo.load(path)
    broken = json.loads(json.dumps(meta))
    broken["pytree"]["leaves"][0] = {"array": 999}
    _write_raw(path, entries, broken)
    with pytest.raises(fo.CheckpointError, match="missing array"):
        fo.load(path)
    broken = json.loads(json.dumps(meta))
    broken["arrays"][0]["dtype"] = "bfloat16"
    _write_raw(path, entries, broken)
    with pytest.raises(fo.CheckpointError):
        fo.load(path)


def test_object_arrays_in_the_archive_are_refused_without_unpickling(path, monkeypatch):
    fo.save(path, {"w": jnp.ones(2)})
    entries, meta = _raw(path)
    entries["a0"] = np.array([{"evil": 1}, None], dtype=object)
    meta["arrays"][0]["stored"] = "|O"
    meta["arrays"][0]["dtype"] = "object"
    entries[ckpt._META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=True, **entries)
    _forbid_pickle(monkeypatch)
    with pytest.raises(fo.CheckpointError):
        fo.load(path)


# ---------------------------------------------------------------------- no pickle


def _forbid_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle must not be used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


def test_nothing_uses_pickle(path, tmp_path, monkeypatch):
    calls = []
    real_load, real_savez = np.load, np.savez

    def load_spy(*args, **kwargs):
        calls.append(("load", kwargs.get("allow_pickle")))
        return real_load(*args, **kwargs)

    def savez_spy(*args, **kwargs):
        calls.append(("savez", kwargs.get("allow_pickle")))
        return real_savez(*args, **kwargs)

    monkeypatch.setattr(np, "load", load_spy)
    monkeypatch.setattr(np, "savez", savez_spy)
    _forbid_pickle(monkeypatch)
    monkeypatch.setattr(pickle, "dumps", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pickle")))
    monkeypatch.setattr(pickle, "dump", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pickle")))

    state = _small_state()
    fo.save(path, state)
    _assert_trees_bit_equal(fo.load(path), state)
    _assert_trees_bit_equal(fo.load(path, target=state), state)
    opt = fo.optim.Adam(_model(), lr=0.1)
    opt(_grads_at(0, opt.params))
    opt_path = str(tmp_path / "opt.npz")
    fo.save(opt_path, opt, params=True)
    fo.load(opt_path)
    fo.load(opt_path, fo.optim.Adam(_model(seed=1), lr=0.1))
    assert calls and all(flag is False for _, flag in calls), calls


def test_optimizers_refuse_pickle():
    with pytest.raises(TypeError, match="fo.save"):
        pickle.dumps(fo.optim.SGD({"w": jnp.ones(1)}))
