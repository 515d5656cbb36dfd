"""State dicts between funcopt and torch.optim, bit for bit, bfloat16 and float8 included.

A funcopt ``state_dict()`` holds NumPy arrays. NumPy has no bfloat16 or float8
types of its own: JAX's come from ``ml_dtypes``, and ``torch.as_tensor`` /
``torch.from_numpy`` refuse them. :func:`to_torch` turns a funcopt state_dict
into one with torch tensors of the same dtype and the same bits (through an
integer view of the same width), ready for ``torch_optimizer.load_state_dict``.
The other way needs nothing: ``load_state_dict`` of a funcopt optimizer reads
torch tensors of any of these dtypes bit-exactly (:func:`to_numpy`).

torch is imported inside these functions only, never at ``import funcopt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np

__all__ = ["to_torch"]

# dtypes NumPy knows only through ml_dtypes: moved between NumPy and torch as integers of the same width
_BY_VIEW = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu")
_INT_OF_WIDTH = {1: np.int8, 2: np.int16}


def _torch() -> Any:
    import torch  # lazily: torch is an optional dependency

    return torch


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy") and hasattr(x, "dtype")


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy array with the dtype and bits of ``x``: a torch tensor, a JAX or NumPy array, or a number.

    torch's bfloat16 and float8 tensors become ``ml_dtypes`` arrays (the dtypes
    JAX uses) with the same bits. torch is not imported here.

    Raises:
        TypeError: a torch dtype NumPy and ``ml_dtypes`` cannot hold (e.g. ``complex32``).

    Example:
        >>> import numpy as np
        >>> from funcopt.optim.interop import to_numpy
        >>> to_numpy(np.float32(1.5)).dtype
        dtype('float32')
    """
    if not _is_tensor(x):
        return np.asarray(x)
    t = x.detach().cpu()
    if getattr(t, "is_conj", lambda: False)():
        t = t.resolve_conj()
    name = str(t.dtype).removeprefix("torch.")
    if name in _BY_VIEW and hasattr(ml_dtypes, name):
        target = np.dtype(getattr(ml_dtypes, name))
        torch = _torch()  # imported already: ``x`` is one of its tensors
        ints = t.contiguous().view(getattr(torch, np.dtype(_INT_OF_WIDTH[target.itemsize]).name))
        return ints.numpy().view(target)
    try:
        return t.numpy()
    except TypeError as e:
        raise TypeError(f"a torch tensor of dtype {t.dtype} has no NumPy counterpart: cast it first ({e})") from e


def _tensor(x: Any) -> Any:
    torch = _torch()
    arr = np.asarray(x)
    name = arr.dtype.name
    if name in _BY_VIEW:
        if not hasattr(torch, name):
            raise TypeError(f"this torch ({torch.__version__}) has no {name} dtype")
        ints = np.ascontiguousarray(arr).view(_INT_OF_WIDTH[arr.dtype.itemsize])
        return torch.from_numpy(ints.copy()).view(getattr(torch, name))
    if arr.dtype.kind == "V" or arr.dtype.type.__module__.startswith("ml_dtypes"):
        raise TypeError(f"torch has no dtype for {name} arrays: cast the state to a dtype torch has "
                        "(e.g. float32) before handing it to torch")
    return torch.from_numpy(np.array(arr, copy=True))


def _convert(x: Any) -> Any:
    if isinstance(x, (np.ndarray, jax.Array)):
        return _tensor(x)
    if isinstance(x, Mapping):
        return {k: _convert(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_convert(v) for v in x)
    return x


def to_torch(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A funcopt ``state_dict()`` with every array turned into a torch tensor of the same dtype and bits.

    The result loads into the torch optimizer of the same class and
    hyperparameters (``torch_opt.load_state_dict(fo.optim.to_torch(sd))``),
    which then continues on the same trajectory. Each array becomes a CPU
    tensor that owns a copy of its data: float32 and the other NumPy dtypes
    through ``torch.from_numpy``; ``bfloat16`` and the float8 types torch has
    (``float8_e4m3fn``, ``float8_e5m2``, ``float8_e4m3fnuz``,
    ``float8_e5m2fnuz``, ``float8_e8m0fnu``) through an integer view of the same
    width, so no value is rounded. Hyperparameters and everything else that is
    not an array are kept as they are. The other direction needs no
    conversion: a funcopt optimizer's ``load_state_dict`` takes torch's
    state_dict (these dtypes included) as it is.

    torch is imported when this is called, not before.

    Args:
        state_dict: what :meth:`funcopt.optim.Optimizer.state_dict` returns.

    Returns:
        A new dict of the same structure, with torch tensors in place of arrays.

    Raises:
        TypeError: an array of a dtype torch has no counterpart for (e.g.
            ``float8_e3m4``, ``int4``): cast it first.

    Example:
        >>> import jax.numpy as jnp
        >>> import torch
        >>> import funcopt as fo
        >>> opt = fo.optim.Adam([jnp.ones(3, jnp.bfloat16)], lr=0.1)
        >>> _ = opt([jnp.full(3, 0.5, jnp.bfloat16)])
        >>> sd = fo.optim.to_torch(opt.state_dict())
        >>> sd['state'][0]['exp_avg']
        tensor([0.0500, 0.0500, 0.0500], dtype=torch.bfloat16)
        >>> weights = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
        >>> torch_opt = torch.optim.Adam([weights], lr=0.1)
        >>> torch_opt.load_state_dict(sd)
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    return {k: _convert(v) for k, v in state_dict.items()}
