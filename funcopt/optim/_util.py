"""Small helpers shared by the modules of :mod:`funcopt.optim`.

Array tests, hyperparameter values as plain Python values, the split of a call's
arguments into traced arrays and compile-time constants, and the LRU of compiled
functions that ``backward`` and L-BFGS's step keep.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.optim.interop import to_numpy


def is_array(x: Any) -> bool:
    """Whether ``x`` is a JAX or NumPy array (or NumPy scalar).

    Array arguments of ``backward`` are traced; anything else (a Python number, which may be
    a size such as ``num_classes``) stays a compile-time constant.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optim._util import is_array
        >>> is_array(jnp.ones(2)), is_array(2.0)
        (True, False)
    """
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def plain(value: Any) -> Any:
    """A hyperparameter value as a plain Python value for ``param_groups`` / ``state_dict``.

    A one-element array or torch tensor (torch accepts them as ``lr`` and ``betas``) becomes
    its Python number; lists and tuples are converted element by element.

    Example:
        >>> import numpy as np
        >>> from funcopt.optim._util import plain
        >>> plain((np.float32(0.5), np.array([0.25])))
        (0.5, 0.25)
    """
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):  # a state_dtype mapping
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.dtype) or (isinstance(value, type) and hasattr(value, "dtype")):
        return jnp.dtype(value).name  # a state dtype (jnp.bfloat16) by name, as JSON and torch keep it
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor in a torch state_dict
        value = to_numpy(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.size(value) == 1:
        return np.asarray(value).reshape(()).item()
    return value


class StaticArg:
    """A non-array argument of a compiled call: compared by equality, or by identity when unhashable.

    Example:
        >>> from funcopt.optim._util import StaticArg
        >>> StaticArg(3) == StaticArg(3), StaticArg([1]) == StaticArg([1])
        (True, False)
    """

    __slots__ = ("value", "_key")

    def __init__(self, value: Any) -> None:
        self.value = value
        try:
            hash(value)
            self._key = ("eq", value)
        except TypeError:
            self._key = ("id", id(value))

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, StaticArg) and self._key == other._key


def split_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], tuple[Any, ...], Any]:
    """``(dynamic, static, treedef)`` of a call's arguments: array leaves are traced, others are constants.

    ``dynamic`` holds the arrays (None elsewhere), ``static`` a :class:`StaticArg` for every other
    leaf (None where ``dynamic`` has an array); ``static`` and ``treedef`` key the compiled function.
    :func:`join_args` puts them back together.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.optim._util import join_args, split_args
        >>> dynamic, static, treedef = split_args((jnp.ones(2), 3), {})
        >>> join_args(treedef, dynamic, static)
        ((Array([1., 1.], dtype=float32), 3), {})
    """
    leaves, treedef = jax.tree.flatten((args, kwargs))
    dynamic = [x if is_array(x) else None for x in leaves]
    static = tuple(None if is_array(x) else StaticArg(x) for x in leaves)
    return dynamic, static, treedef


def join_args(treedef: Any, dynamic: list[Any], static: tuple[Any, ...]) -> Any:
    """The ``(args, kwargs)`` that :func:`split_args` split (``dynamic`` may hold tracers)."""
    return treedef.unflatten([d if s is None else s.value for d, s in zip(dynamic, static)])


class CompileCache:
    """A least-recently-used cache of compiled functions by key.

    ``get(key, build)`` returns the cached function or builds, stores and returns a new one;
    beyond ``size`` entries the oldest is dropped, with ``warning`` (a UserWarning) when one
    is given. An unhashable key raises ``TypeError``.

    Example:
        >>> from funcopt.optim._util import CompileCache
        >>> cache = CompileCache(2)
        >>> cache.get('a', lambda: 'fa'), cache.get('a', lambda: 'other'), len(cache)
        ('fa', 'fa', 1)
    """

    def __init__(self, size: int, warning: str | None = None) -> None:
        self.size = size
        self.warning = warning
        self._entries: OrderedDict[Hashable, Callable[..., Any]] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], Callable[..., Any]], stacklevel: int = 2) -> Callable[..., Any]:
        fn = self._entries.get(key)
        if fn is not None:
            self._entries.move_to_end(key)
            return fn
        fn = build()
        self._entries[key] = fn
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
            if self.warning is not None:
                warnings.warn(self.warning, stacklevel=stacklevel + 1)
        return fn

    def values(self) -> list[Callable[..., Any]]:
        """The cached functions, oldest first."""
        return list(self._entries.values())

    def clear(self) -> None:
        """Drop every cached function."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
