"""Checkpoints without pickle: one NumPy ``.npz`` file, written atomically.

:func:`save` writes either a stateful optimizer (its torch-format
``state_dict()`` and, unless ``params=False``, its parameters) or any pytree of arrays,
such as a functional optimizer state. The file is a plain ``.npz`` archive:
every array is one entry, stored as its raw bytes (extended dtypes such as
``bfloat16`` or ``float8_*`` as unsigned-integer views of the same width),
and one more entry holds UTF-8 JSON metadata: the format name and version,
what kind of object was saved, its tree structure with the Python scalars in
it, each leaf's key path and dotted name (what ``load(..., strict=False)``
matches by), and each array's dtype name, shape and SHA-256 digest.

Nothing is pickled in either direction: the archive is written with
``allow_pickle=False`` and read with ``np.load(..., allow_pickle=False)``, and
the tree is rebuilt from the JSON description. Reading checks every array's
header and digest before anything is handed back, so a damaged file raises
:class:`CheckpointError` instead of returning wrong numbers.

A write goes to a temporary file in the destination's directory, is flushed
and ``fsync``-ed, then renamed over the destination with ``os.replace``: a
crash at any point leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import math
import os
import stat
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from funcopt._src.base import FixedHParam, PyTree
from funcopt._src.matching import IncompatibleKeys, duplicate_names, match_names
from funcopt._src.tree import param_names

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "CheckpointError", "load", "save"]

FORMAT_NAME = "funcopt.checkpoint"
"""The ``format`` field of the metadata of every checkpoint written here."""

FORMAT_VERSION = 1
"""The version of the layout written by :func:`save`; :func:`load` reads versions up to this one."""

_META_KEY = "__funcopt_checkpoint__"
_KIND_PYTREE = "pytree"
_KIND_OPTIMIZER = "optimizer"

# Extended dtypes (JAX's ml_dtypes types, reached through jax.numpy so that no undeclared package is
# imported) have no NumPy type code; they are stored as unsigned integers of the same width and viewed
# back by name.
_EXTENDED_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(getattr(jnp, name))
    for name in ("bfloat16", "float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn",
                 "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn",
                 "float6_e2m3fn", "float6_e3m2fn", "int2", "int4", "uint2", "uint4")
    if hasattr(jnp, name)
}


@runtime_checkable
class _Stateful(Protocol):
    """What a checkpoint needs of a stateful optimizer: torch's state_dict pair and the parameters.

    The checkpoint reaches an optimizer only through these public members, so it does not depend on the
    stateful layer (which it must not import: it sits beside it). ``funcopt.optim.Optimizer`` has them;
    a torch optimizer has no ``params`` and a learning-rate scheduler no ``param_groups``, so neither is
    taken for one.
    """

    param_groups: list[dict[str, Any]]
    params: Any

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Any, *args: Any, **kwargs: Any) -> Any: ...


def _is_stateful(obj: Any) -> bool:
    return isinstance(obj, _Stateful) and isinstance(getattr(obj, "param_groups", None), list)


# Modules whose NamedTuple classes may be imported to rebuild a tree without a target.
_TRUSTED_MODULES = ("funcopt", "optax")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit what it is loaded into.

    Raised for a file that is not a funcopt checkpoint, one that is corrupted
    or truncated, one written in a newer format version, and a target whose
    structure, shapes or dtypes differ from what was saved. The message names
    the problem; nothing has been changed when it is raised.

    Example:
        >>> import funcopt as fo
        >>> issubclass(fo.CheckpointError, ValueError)
        True
    """


# ---------------------------------------------------------------------- public API


def save(path: str | os.PathLike[str], obj: Any, *, params: bool | PyTree | None = None) -> None:
    """Write ``obj`` to ``path`` as one ``.npz`` file, atomically and without pickle.

    ``obj`` is either

    * a stateful optimizer (:class:`funcopt.optim.Optimizer`, or any object
      with its public ``state_dict()``, ``load_state_dict()``,
      ``param_groups`` and ``params``, the only members used): its
      ``state_dict()`` and, by default, the parameters it owns (its current
      :attr:`~funcopt.optim.Optimizer.params`), so that :func:`load` resumes
      training where it stopped. ``params=False`` saves the state only; a
      pytree given as ``params`` (same structure, shapes and dtypes as the
      optimizer's parameters) is saved in their place. Hyperparameters that
      are schedules (Python callables) are code, not data: they are left out,
      and the optimizer a checkpoint is loaded into keeps its own.
    * any pytree whose leaves are arrays (JAX or NumPy, any dtype including
      ``bfloat16`` and PRNG keys), Python numbers or strings, e.g. a
      functional optimizer state ``tx.init(params)`` or ``(params, state)``.

    The data go to a temporary file next to ``path`` that is flushed,
    ``fsync``-ed and renamed over ``path``: if the write fails or the process
    dies midway, an older file at ``path`` is left untouched.

    Args:
        path: the file to write (no suffix is added).
        obj: a stateful optimizer or a pytree of arrays.
        params: for an optimizer only: ``None`` (the default) or ``True``
            saves its parameters with its state, ``False`` the state alone, a
            pytree of parameters is saved in place of the optimizer's.

    Returns:
        None.

    Raises:
        TypeError: a leaf that cannot be stored without pickle (an object
            array, an arbitrary Python object), or ``params`` given with a
            pytree.

    Example:
        >>> import os, tempfile
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> tx = fo.adam(lr=1e-3)
        >>> state = tx.init({'w': jnp.ones(3, jnp.bfloat16)})
        >>> path = os.path.join(tempfile.mkdtemp(), 'state.npz')
        >>> fo.save(path, state)
        >>> restored = fo.load(path, target=state)
        >>> restored.slots['exp_avg']['w'].dtype
        dtype(bfloat16)
    """
    arrays: list[np.ndarray] = []
    specs: list[dict[str, Any]] = []
    if _is_stateful(obj):
        meta = _optimizer_meta(obj, params, arrays, specs)
    else:
        if params is not None:
            raise TypeError("params= is only for stateful optimizers; to keep parameters with a functional "
                            "state, save them as one pytree, e.g. fo.save(path, (params, state))")
        meta = {"kind": _KIND_PYTREE, "pytree": _tree_part(obj, arrays, specs, "")}
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": meta.pop("kind"), "arrays": specs,
            **meta}
    entries = {f"a{i}": a for i, a in enumerate(arrays)}
    entries[_META_KEY] = np.frombuffer(json.dumps(meta, separators=(",", ":")).encode("utf-8"), np.uint8)
    _atomic_savez(os.fspath(path), entries)


def load(path: str | os.PathLike[str], target: Any = None, *, strict: bool = True) -> Any:
    """Read a checkpoint written by :func:`save`; with ``target``, restore into it.

    * ``target`` a stateful optimizer: the checkpoint must hold the state of
      an optimizer of the same class. Its ``load_state_dict`` is called, and
      the parameters are restored too when they were saved (the default of
      :func:`save`); a checkpoint saved with ``params=False`` restores the
      state only and the optimizer keeps its current weights. On any error
      the optimizer is left exactly as it was. Returns the optimizer.
    * ``target`` a pytree (e.g. ``tx.init(params)``, or
      ``jax.eval_shape(tx.init, params)``): the saved leaves are put into
      ``target``'s structure after checking that the number of leaves, their
      key paths, shapes and dtypes match. JAX leaves come back as JAX arrays
      with the sharding of the corresponding target leaf, NumPy leaves as
      NumPy arrays. Returns the new pytree (``target`` is not modified).
    * no ``target``: a pytree is rebuilt from its JSON description
      (dicts, lists, tuples, ``None`` and the NamedTuples of funcopt and
      optax; other node types need a target). Array leaves come back as
      NumPy arrays, bit for bit as saved. For an optimizer checkpoint the
      ``state_dict`` is returned.

    ``strict=False`` loads into a target whose structure changed since the
    save (a model that gained a head and lost a layer), matching by name
    and returning ``(result, keys)``, ``keys`` an :class:`~funcopt.IncompatibleKeys`:

    * a pytree target: each leaf is matched by its dotted path name
      (:func:`~funcopt.path_name`, e.g. ``'1.slots.exp_avg.head.kernel'``
      for ``(params, opt_state)``), shape and dtype. A functional state's
      per-parameter entries mirror the parameters, so they are matched by
      the parameter's name; global entries (step count, hyperparameters)
      keep their names and are loaded. Leaves of the target with no fitting
      saved leaf keep the target's values (so the target must hold values,
      not ``jax.ShapeDtypeStruct`` leaves, where it may differ); the keys list the
      leaves that were missing, unexpected or mismatched.
    * a stateful optimizer: ``load_state_dict(state_dict, strict=False)``
      loads the state of every parameter whose name, shape and dtype match
      and starts the others fresh; the saved parameter values are matched by
      name the same way (the others keep their current values). The keys
      name parameters.

    Matching by name assumes a name means the same thing before and after:
    a layer that takes over the name (and shape) of a removed one receives
    its state, as with torch's ``load_state_dict(strict=False)``.

    The file is read with ``np.load(..., allow_pickle=False)`` and fully
    checked (archive integrity, array headers, SHA-256 digests) before
    anything is returned or changed.

    Args:
        path: a file written by :func:`save`.
        target: an optimizer or a pytree to restore into, or None.
        strict: ``True`` (the default): the target must fit the checkpoint
            exactly, all or nothing. ``False``: load what matches by name
            (needs a ``target``).

    Returns:
        The optimizer, the restored pytree, or (without target) the saved
        pytree or optimizer ``state_dict``; with ``strict=False``, the pair
        ``(optimizer or pytree, IncompatibleKeys)``.

    Raises:
        CheckpointError: the file is not a funcopt checkpoint, is corrupted or
            truncated, has a newer format version, or does not fit ``target``
            (with ``strict=False``: holds another kind of object, or a name
            twice).
        ValueError: ``strict=False`` without a target.

    Example:
        >>> import os, tempfile
        >>> import jax.numpy as jnp
        >>> import funcopt as fo
        >>> opt = fo.optim.Adam({'w': jnp.ones(2)}, lr=0.1)
        >>> _ = opt({'w': jnp.ones(2)})
        >>> path = os.path.join(tempfile.mkdtemp(), 'opt.npz')
        >>> fo.save(path, opt)  # the state and the parameters
        >>> fresh = fo.load(path, fo.optim.Adam({'w': jnp.zeros(2)}, lr=0.1))
        >>> fresh.params['w'], int(fresh.state['w']['step'])
        (Array([0.9, 0.9], dtype=float32), 1)

        A functional state, into a model that gained ``'head'``:

        >>> tx = fo.adam(lr=0.1)
        >>> params = {'w': jnp.ones(2)}
        >>> state = tx.update(params, tx.init(params), params)[1]
        >>> fo.save(path, (params, state))
        >>> grown = {'w': jnp.zeros(2), 'head': jnp.zeros(3)}
        >>> (params2, state2), keys = fo.load(path, (grown, tx.init(grown)), strict=False)
        >>> int(state2.step), state2.slots['exp_avg']['w'], state2.slots['exp_avg']['head']
        (1, Array([0.1, 0.1], dtype=float32), Array([0., 0., 0.], dtype=float32))
        >>> keys.missing_keys
        ['0.head', '1.slots.exp_avg.head', '1.slots.exp_avg_sq.head']
    """
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    if not strict and target is None:
        raise ValueError("strict=False matches the checkpoint against a target by name: pass target=")
    meta, arrays = _read(os.fspath(path))
    kind = meta["kind"]
    if _is_stateful(target):
        if kind != _KIND_OPTIMIZER:
            raise CheckpointError(f"the checkpoint holds a {kind}, not an optimizer's state: load it with a "
                                  "pytree target (or none) instead of an optimizer")
        keys = _load_into_optimizer(meta, arrays, target, strict)
        return target if strict else (target, keys)
    if kind == _KIND_OPTIMIZER:
        if target is not None:
            raise CheckpointError("the checkpoint holds the state of a stateful optimizer "
                                  f"({meta['optimizer']['class']}); pass that optimizer as the target")
        return _decode_part(meta["optimizer"]["state_dict"], arrays)
    if target is None:
        return _decode_part(meta["pytree"], arrays)
    if not strict:
        return _restore_by_name(meta["pytree"], meta["arrays"], arrays, target)
    return _restore_into(meta["pytree"], meta["arrays"], arrays, target)


# ---------------------------------------------------------------------- encoding


def _optimizer_meta(opt: _Stateful, params: Any, arrays: list[np.ndarray],
                    specs: list[dict[str, Any]]) -> dict[str, Any]:
    sd = opt.state_dict()
    unsaved = []
    groups = []
    for gi, group in enumerate(sd.get("param_groups", [])):
        kept = {}
        for k, v in group.items():
            if callable(v) and not isinstance(v, (jax.Array, np.ndarray)):
                unsaved.append([gi, k])  # a schedule is code: the loading optimizer keeps its own
            else:
                kept[k] = v
        groups.append(kept)
    sd = {**sd, "param_groups": groups}
    saved_params = None
    if params is not False:  # None (the default) or True: the optimizer's own parameters
        current = opt.params
        tree = current if params is None or params is True else params
        _check_params_like(tree, current)
        saved_params = _tree_part(tree, arrays, specs, "params")
    return {"kind": _KIND_OPTIMIZER,
            "optimizer": {"class": type(opt).__name__, "state_dict": _tree_part(sd, arrays, specs, "state_dict"),
                          "unsaved_hparams": unsaved, "params": saved_params}}


def _check_params_like(tree: Any, current: Any) -> None:
    if jax.tree.structure(tree) != jax.tree.structure(current):
        raise ValueError(f"params structure {jax.tree.structure(tree)} does not match the optimizer's "
                         f"{jax.tree.structure(current)}")
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(current)):
        dtype = np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
        if tuple(np.shape(x)) != tuple(y.shape) or dtype != np.dtype(y.dtype):
            raise ValueError(f"params{jax.tree_util.keystr(path)}: {dtype}{tuple(np.shape(x))} "
                             f"given, the optimizer's parameter is {np.dtype(y.dtype)}{tuple(y.shape)}")


def _tree_part(tree: Any, arrays: list[np.ndarray], specs: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The JSON description of a pytree: skeleton, leaves in jax's order, and their key paths."""
    try:
        with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    except Exception as e:  # noqa: BLE001 - report any flattening failure as what it is
        raise TypeError(f"cannot save this object: it is not a pytree jax can flatten ({e})") from e
    leaves: list[dict[str, Any]] = []
    skeleton = _encode(tree, leaves, arrays, specs, where)
    paths = [jax.tree_util.keystr(p) for p, _ in with_path]
    if len(paths) != len(leaves):  # a node type the description does not follow as jax does
        raise TypeError(f"cannot describe the structure of this pytree ({len(leaves)} leaves described, "
                        f"jax finds {len(paths)})")
    part = {"tree": skeleton, "leaves": leaves, "paths": paths}
    names = _leaf_names(tree)
    if names is not None and len(names) == len(paths):
        part["names"] = names  # what load(..., strict=False) matches by
    return part


def _leaf_names(tree: Any) -> list[str] | None:
    """The dotted name of each leaf (an nnx Variable's value is named as the Variable), None if unnamable."""
    try:
        return param_names(tree)
    except Exception:  # noqa: BLE001 - a node type the naming does not follow: matching by name is unavailable
        return None


def _type_name(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


def _sorted_keys(keys: list[Any]) -> list[Any]:
    try:
        return sorted(keys)  # jax flattens dicts in sorted key order
    except TypeError:
        return keys


def _encode_key(k: Any, where: str) -> Any:
    if isinstance(k, bool) or k is None or not isinstance(k, (str, int, float)):
        raise TypeError(f"cannot save {where or 'the tree'}: dict key {k!r} of type {type(k).__name__} is not a "
                        "string or a number")
    if isinstance(k, float):
        return {"float": repr(k)}
    return k


def _decode_key(k: Any) -> Any:
    if isinstance(k, dict):
        return float(k["float"])
    return k


def _encode(x: Any, leaves: list[dict[str, Any]], arrays: list[np.ndarray], specs: list[dict[str, Any]],
            where: str) -> dict[str, Any]:
    """A JSON description of ``x``; its leaves are appended to ``leaves`` in jax's flattening order."""
    t = type(x)
    if x is None:
        return {"t": "none"}
    if t is dict or t is OrderedDict:
        keys = list(x)
        order = keys if t is OrderedDict else _sorted_keys(keys)
        node: dict[str, Any] = {
            "t": "dict" if t is dict else "odict",
            "k": [_encode_key(k, where) for k in order],
            "c": [_encode(x[k], leaves, arrays, specs, f"{where}[{k!r}]") for k in order],
        }
        if order != keys:
            node["order"] = [order.index(k) for k in keys]
        return node
    if t is list or t is tuple:
        return {"t": t.__name__, "c": [_encode(v, leaves, arrays, specs, f"{where}[{i}]") for i, v in enumerate(x)]}
    if t is FixedHParam:  # a weight decay built as the number 0: part of the structure, no array
        return {"t": "fixed", "v": repr(float(x.value))}
    if isinstance(x, tuple) and hasattr(t, "_fields"):
        return {"t": "namedtuple", "type": _type_name(t), "fields": list(t._fields),
                "c": [_encode(v, leaves, arrays, specs, f"{where}.{f}") for f, v in zip(t._fields, x)]}
    leaf = _leaf_entry(x, arrays, specs, where)
    if leaf is not None:
        leaves.append(leaf)
        return {"t": "leaf", "i": len(leaves) - 1}
    children, treedef = jax.tree_util.tree_flatten_with_path(x)
    if treedef.num_nodes == 1 and len(children) == 1 and children[0][1] is x:
        raise TypeError(f"cannot save {where or 'the tree'}: a leaf of type {t.__module__}.{t.__qualname__} is "
                        "not an array, a Python number or a string (funcopt checkpoints do not pickle)")
    # A custom pytree node (a dataclass, a flax or equinox container...): its leaves are kept
    # in order; rebuilding it needs a target with the same structure.
    return {"t": "node", "type": _type_name(t),
            "c": [_encode(v, leaves, arrays, specs, where + jax.tree_util.keystr(p)) for p, v in children]}


def _leaf_entry(x: Any, arrays: list[np.ndarray], specs: list[dict[str, Any]],
                where: str) -> dict[str, Any] | None:
    if isinstance(x, bool):
        return {"py": "bool", "v": x}
    if isinstance(x, int) and not isinstance(x, np.generic):
        return {"py": "int", "v": int(x)}
    if isinstance(x, float) and not isinstance(x, np.generic):
        return {"py": "float", "v": repr(float(x))}
    if isinstance(x, complex) and not isinstance(x, np.generic):
        return {"py": "complex", "v": [repr(x.real), repr(x.imag)]}
    if isinstance(x, str):
        return {"py": "str", "v": x}
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return _array_leaf(x, arrays, specs, where)
    return None


def _array_leaf(x: Any, arrays: list[np.ndarray], specs: list[dict[str, Any]], where: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"array": len(arrays)}
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        entry["prng_impl"] = str(jax.random.key_impl(x))
        x = jax.random.key_data(x)
    elif isinstance(x, np.generic):
        entry["numpy_scalar"] = True
    try:
        arr = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - e.g. a tracer: say which leaf and why
        raise TypeError(f"cannot save {where or 'the tree'}: {type(e).__name__}: {e}") from e
    stored, name = _storage(arr, where)
    specs.append({"dtype": name, "stored": stored.dtype.str, "shape": list(arr.shape),
                  "sha256": _digest(stored)})
    arrays.append(stored)
    return entry


def _digest(arr: np.ndarray) -> str:
    flat = arr.reshape(-1) if arr.flags.c_contiguous else arr.copy(order="C").reshape(-1)
    return hashlib.sha256(flat.view(np.uint8)).hexdigest()


def _storage(arr: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    """The array as stored (C-contiguous, extended dtypes as unsigned views) and its dtype's name."""
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    dt = arr.dtype
    if dt.name in _EXTENDED_DTYPES and _EXTENDED_DTYPES[dt.name] == dt:
        return arr.view(np.dtype(f"<u{dt.itemsize}")), dt.name
    if dt.hasobject or dt.kind == "V":
        raise TypeError(f"cannot save {where or 'the tree'}: dtype {dt} cannot be stored without pickle")
    return arr, dt.name


# ---------------------------------------------------------------------- writing


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_savez(path: str, entries: dict[str, np.ndarray]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"cannot save {path!r}: no such directory", directory)
    mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.isfile(path) else _default_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # make the rename itself durable
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ---------------------------------------------------------------------- reading


def _read(path: str) -> tuple[dict[str, Any], list[np.ndarray]]:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path!r} is not a funcopt checkpoint: it is not a NumPy .npz archive "
                              "(the file is corrupted or truncated, or was written by something else)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = _read_meta(npz, path)
            arrays = [_read_array(npz, i, spec) for i, spec in enumerate(meta["arrays"])]
            _check_meta(meta, len(arrays))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged archive fails in zipfile, numpy or json in many ways
        raise CheckpointError(f"cannot read the checkpoint {path!r}: the file is corrupted or truncated "
                              f"({type(e).__name__}: {e})") from e
    return meta, arrays


def _read_header(npz: Any, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data size of an entry, from its .npy header, checked against the archive."""
    info = npz.zip.getinfo(key + ".npy")
    with npz.zip.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise CheckpointError(f"entry {key!r} has an unsupported .npy version {version}")
        header_size = fp.tell()
    if fortran:
        raise CheckpointError(f"entry {key!r} is not stored in C order")
    nbytes = math.prod(shape) * dtype.itemsize
    if header_size + nbytes != info.file_size:
        raise CheckpointError(f"entry {key!r}: its header announces {nbytes} bytes of data but the archive holds "
                              f"{info.file_size - header_size}")
    return tuple(shape), dtype, nbytes


def _read_meta(npz: Any, path: str) -> dict[str, Any]:
    if _META_KEY not in npz.files:
        raise CheckpointError(f"{path!r} is a .npz archive but not a funcopt checkpoint (no metadata entry)")
    shape, dtype, _ = _read_header(npz, _META_KEY)
    if dtype != np.uint8 or len(shape) != 1:
        raise CheckpointError("the checkpoint's metadata entry is malformed")
    meta = json.loads(npz[_META_KEY].tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path!r} is not a funcopt checkpoint (metadata format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"the checkpoint has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"the checkpoint has format version {version}, newer than this funcopt reads "
                              f"(up to {FORMAT_VERSION}); upgrade funcopt to load it")
    if meta.get("kind") not in (_KIND_PYTREE, _KIND_OPTIMIZER):
        raise CheckpointError(f"the checkpoint holds an unknown kind of object {meta.get('kind')!r}")
    if not isinstance(meta.get("arrays"), list):
        raise CheckpointError("the checkpoint's metadata has no array list")
    expected = {f"a{i}" for i in range(len(meta["arrays"]))} | {_META_KEY}
    present = set(npz.files)
    if present != expected:
        missing, extra = sorted(expected - present), sorted(present - expected)
        raise CheckpointError(f"the checkpoint's entries do not match its metadata (missing {missing}, "
                              f"unexpected {extra})")
    return meta


def _logical_dtype(name: str, stored: np.dtype) -> np.dtype:
    if name in _EXTENDED_DTYPES:
        dt = _EXTENDED_DTYPES[name]
        if stored != np.dtype(f"<u{dt.itemsize}"):
            raise CheckpointError(f"{name} data stored as {stored}")
        return dt
    if stored.name != name:
        raise CheckpointError(f"dtype {name!r} stored as {stored}")
    return stored


def _read_array(npz: Any, i: int, spec: dict[str, Any]) -> np.ndarray:
    key = f"a{i}"
    shape, stored, _ = _read_header(npz, key)
    if stored != np.dtype(spec["stored"]) or list(shape) != list(spec["shape"]):
        raise CheckpointError(f"entry {key!r} holds {stored}{list(shape)}, the metadata says "
                              f"{spec['stored']}{spec['shape']}")
    logical = _logical_dtype(spec["dtype"], stored)
    arr = npz[key]
    if _digest(arr) != spec["sha256"]:
        raise CheckpointError(f"entry {key!r} does not match its checksum: the file is corrupted")
    return arr.view(logical) if logical != stored else arr


def _check_part(part: Any, n_arrays: int, what: str) -> None:
    if not (isinstance(part, dict) and isinstance(part.get("tree"), dict) and isinstance(part.get("leaves"), list)
            and isinstance(part.get("paths"), list) and len(part["paths"]) == len(part["leaves"])):
        raise CheckpointError(f"the checkpoint's description of {what} is malformed")
    names = part.get("names")
    if names is not None and not (isinstance(names, list) and len(names) == len(part["leaves"])
                                  and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"the checkpoint's description of {what} has malformed leaf names")
    for leaf in part["leaves"]:
        if "array" in leaf:
            if not (isinstance(leaf["array"], int) and 0 <= leaf["array"] < n_arrays):
                raise CheckpointError(f"the checkpoint's description of {what} refers to a missing array")
        elif leaf.get("py") not in ("bool", "int", "float", "complex", "str"):
            raise CheckpointError(f"the checkpoint's description of {what} has a malformed leaf")


def _check_meta(meta: dict[str, Any], n_arrays: int) -> None:
    """Check the metadata's references so that decoding cannot fail half-way."""
    if meta["kind"] == _KIND_PYTREE:
        _check_part(meta.get("pytree"), n_arrays, "the pytree")
        return
    info = meta.get("optimizer")
    if not isinstance(info, dict) or not isinstance(info.get("class"), str):
        raise CheckpointError("the checkpoint's description of the optimizer is malformed")
    _check_part(info.get("state_dict"), n_arrays, "the state_dict")
    if info.get("params") is not None:
        _check_part(info["params"], n_arrays, "the parameters")


# ---------------------------------------------------------------------- decoding


def _leaf_value(entry: dict[str, Any], arrays: list[np.ndarray]) -> Any:
    if "array" in entry:
        arr = arrays[entry["array"]]
        if "prng_impl" in entry:
            return jax.random.wrap_key_data(arr, impl=entry["prng_impl"])
        if entry.get("numpy_scalar"):
            return arr[()]
        return arr
    kind, v = entry["py"], entry["v"]
    if kind == "float":
        return float(v)
    if kind == "complex":
        return complex(float(v[0]), float(v[1]))
    if kind == "int":
        return int(v)
    if kind == "bool":
        return bool(v)
    return str(v)


def _decode_part(part: dict[str, Any], arrays: list[np.ndarray]) -> Any:
    return _decode(part["tree"], [_leaf_value(e, arrays) for e in part["leaves"]])


def _namedtuple_class(type_name: str, fields: list[str]) -> type:
    module_name, _, qualname = type_name.partition(":")
    trusted = any(module_name == m or module_name.startswith(m + ".") for m in _TRUSTED_MODULES)
    module = sys.modules.get(module_name)
    if module is None and trusted:
        with contextlib.suppress(ImportError):
            module = importlib.import_module(module_name)
    cls: Any = module
    for part in qualname.split("."):
        cls = getattr(cls, part, None) if cls is not None and part != "<locals>" else None
    if not (isinstance(cls, type) and issubclass(cls, tuple) and list(getattr(cls, "_fields", ())) == fields):
        raise CheckpointError(f"cannot rebuild the NamedTuple {type_name.replace(':', '.')} without a target; "
                              "call fo.load(path, target=...) with a pytree of the saved structure")
    return cls


def _decode(node: dict[str, Any], values: list[Any]) -> Any:
    t = node["t"]
    if t == "none":
        return None
    if t == "leaf":
        return values[node["i"]]
    if t == "list":
        return [_decode(c, values) for c in node["c"]]
    if t == "tuple":
        return tuple(_decode(c, values) for c in node["c"])
    if t in ("dict", "odict"):
        pairs = [(_decode_key(k), _decode(c, values)) for k, c in zip(node["k"], node["c"])]
        if "order" in node:
            pairs = [pairs[i] for i in node["order"]]
        return dict(pairs) if t == "dict" else OrderedDict(pairs)
    if t == "namedtuple":
        cls = _namedtuple_class(node["type"], node["fields"])
        return cls(*[_decode(c, values) for c in node["c"]])
    if t == "fixed":
        return FixedHParam(float(node["v"]))
    if t == "node":
        raise CheckpointError(f"the checkpoint holds a pytree node of type {node['type'].replace(':', '.')}, "
                              "which is rebuilt only into a target: call fo.load(path, target=...) with a "
                              "pytree of the saved structure")
    raise CheckpointError(f"the checkpoint's metadata has an unknown node type {t!r}")


def _describe(entry: dict[str, Any], spec: dict[str, Any] | None) -> str:
    if "array" in entry:
        what = f"{spec['dtype']}{tuple(spec['shape'])}"
        return f"a PRNG key array ({entry['prng_impl']}) {what}" if "prng_impl" in entry else f"an array {what}"
    return f"a Python {entry['py']}"


def _restore_leaf(entry: dict[str, Any], value: Any, spec: dict[str, Any] | None, like: Any, where: str) -> Any:
    saved = _describe(entry, spec)
    if isinstance(like, (bool, int, float, complex, str)) and not isinstance(like, np.generic):
        if entry.get("py") != type(like).__name__:
            raise CheckpointError(f"leaf {where}: the checkpoint has {saved}, the target a Python "
                                  f"{type(like).__name__}")
        return value
    shape, dtype = getattr(like, "shape", None), getattr(like, "dtype", None)
    if shape is None or dtype is None:
        raise CheckpointError(f"leaf {where}: cannot restore into a target leaf of type {type(like).__name__}")
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(like)) if isinstance(like, jax.Array) else None
        if "prng_impl" not in entry or (impl is not None and impl != entry["prng_impl"]) \
                or tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"leaf {where}: the checkpoint has {saved}, the target a PRNG key array "
                                  f"{tuple(shape)}")
    else:
        if "array" not in entry or "prng_impl" in entry:
            raise CheckpointError(f"leaf {where}: the checkpoint has {saved}, the target an array "
                                  f"{np.dtype(dtype).name}{tuple(shape)}")
        if tuple(np.shape(value)) != tuple(shape):
            raise CheckpointError(f"leaf {where}: shape {tuple(np.shape(value))} in the checkpoint, "
                                  f"{tuple(shape)} in the target")
        if np.dtype(value.dtype) != np.dtype(dtype):
            raise CheckpointError(f"leaf {where}: dtype {np.dtype(value.dtype).name} in the checkpoint, "
                                  f"{np.dtype(dtype).name} in the target")
    if isinstance(like, np.generic):
        return np.asarray(value)[()]
    if isinstance(like, np.ndarray):
        return np.asarray(value)
    sharding = getattr(like, "sharding", None)
    return jax.device_put(value, sharding) if sharding is not None else jax.device_put(value)


def _restore_into(part: dict[str, Any], specs: list[dict[str, Any]], arrays: list[np.ndarray],
                  target: Any) -> Any:
    try:
        with_path, treedef = jax.tree_util.tree_flatten_with_path(target)
    except Exception as e:  # noqa: BLE001 - report any flattening failure as a target problem
        raise CheckpointError(f"the target is not a pytree jax can flatten ({e})") from e
    entries, saved_paths = part["leaves"], part["paths"]
    if len(with_path) != len(entries):
        raise CheckpointError(f"the checkpoint holds {len(entries)} leaves, the target {len(with_path)}")
    paths = [jax.tree_util.keystr(p) for p, _ in with_path]
    for i, (saved, have) in enumerate(zip(saved_paths, paths)):
        if saved != have:
            raise CheckpointError(f"leaf {i} is {saved or '<root>'} in the checkpoint but {have or '<root>'} "
                                  "in the target: the structures differ")
    new_leaves = [_restore_leaf(entry, _leaf_value(entry, arrays),
                                specs[entry["array"]] if "array" in entry else None, like, where or "<root>")
                  for (_, like), entry, where in zip(with_path, entries, paths)]
    return treedef.unflatten(new_leaves)


def _restore_by_name(part: dict[str, Any], specs: list[dict[str, Any]], arrays: list[np.ndarray],
                     target: Any) -> tuple[Any, IncompatibleKeys]:
    """``target`` with each leaf whose name, shape and dtype match a saved leaf replaced by it."""
    saved_names = part.get("names")
    if saved_names is None:
        raise CheckpointError("the checkpoint does not name its leaves (it was written by an older funcopt), "
                              "so it cannot be matched by name: load it with strict=True")
    try:
        with_path, treedef = jax.tree_util.tree_flatten_with_path(target)
        names = param_names(target)
    except Exception as e:  # noqa: BLE001 - report any flattening failure as a target problem
        raise CheckpointError(f"the target is not a pytree jax can flatten ({e})") from e
    if len(names) != len(with_path):
        raise CheckpointError("the target's leaves cannot be named one by one, so they cannot be matched by name")
    for side, side_names in (("checkpoint", saved_names), ("target", names)):
        twice = duplicate_names(side_names)
        if twice:
            raise CheckpointError(f"the {side} has several leaves named {twice}, so they cannot be matched by name")
    saved = dict(zip(saved_names, part["leaves"]))
    like = {name: leaf for name, (_, leaf) in zip(names, with_path)}
    restored: dict[str, Any] = {}

    def fits(name: str) -> bool:
        entry = saved[name]
        try:
            restored[name] = _restore_leaf(entry, _leaf_value(entry, arrays),
                                           specs[entry["array"]] if "array" in entry else None, like[name], name)
        except CheckpointError:
            return False
        return True

    _, keys = match_names(names, saved_names, fits)
    return treedef.unflatten([restored.get(name, leaf) for name, (_, leaf) in zip(names, with_path)]), keys


def _check_named_by_tree(tree_names: list[str], groups: Any, what: str) -> None:
    """Matching parameter values by their names in the params tree needs those to be the optimizer's names."""
    group_names = [n for g in groups if isinstance(g, Mapping) for n in (g.get("param_names") or ())]
    if sorted(tree_names) != sorted(group_names) or duplicate_names(group_names):
        raise CheckpointError(f"{what} are not named by their place in the parameters (e.g. several groups "
                              "given as a list), so strict=False cannot match their values by name: load with "
                              "strict=True, or save with params=False")


def _load_into_optimizer(meta: dict[str, Any], arrays: list[np.ndarray], opt: _Stateful,
                         strict: bool) -> IncompatibleKeys | None:
    info = meta["optimizer"]
    if info["class"] != type(opt).__name__:
        raise CheckpointError(f"the checkpoint holds the state of a {info['class']} optimizer; it cannot be "
                              f"loaded into a {type(opt).__name__}")
    sd = _decode_part(info["state_dict"], arrays)
    new_params = None
    param_keys = IncompatibleKeys([], [], [])
    if info["params"] is not None:
        try:
            if strict:
                new_params = _restore_into(info["params"], meta["arrays"], arrays, opt.params)
            else:
                current = opt.params
                _check_named_by_tree(param_names(current), opt.param_groups, "this optimizer's parameters")
                if info["params"].get("names") is not None:
                    _check_named_by_tree(info["params"]["names"], sd.get("param_groups", ()),
                                         "the checkpoint's parameters")
                new_params, param_keys = _restore_by_name(info["params"], meta["arrays"], arrays, current)
        except CheckpointError as e:
            raise CheckpointError(f"the checkpoint's parameters do not fit this optimizer: {e}") from e
    restore = _set_params(opt, new_params) if new_params is not None else None
    try:
        result = opt.load_state_dict(sd) if strict else opt.load_state_dict(sd, strict=False)
    except BaseException as e:
        if restore is not None:
            restore()
        if isinstance(e, (ValueError, KeyError, TypeError)):
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise CheckpointError(f"the checkpoint does not fit this optimizer: {msg}") from e
        raise
    if strict:
        return None
    # the state's report and the parameter values' (the same names, unless only one side fits)
    return IncompatibleKeys(*(sorted(set(a) | set(b)) for a, b in zip(result, param_keys)))


def _set_params(opt: _Stateful, tree: Any) -> Callable[[], None]:
    """Put ``tree`` (validated: the structure, shapes and dtypes of ``opt.params``) into the optimizer.

    Returns a function that puts the previous parameters back.
    """
    previous = jax.tree.map(jnp.array, opt.params)  # a copy: the next step donates the current arrays
    opt.params = tree

    def restore() -> None:
        opt.params = previous

    return restore
