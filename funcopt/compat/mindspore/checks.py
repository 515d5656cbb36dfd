"""Argument checks with MindSpore's exception types and messages.

MindSpore's optimizers validate their arguments with its ``Validator``: a
``TypeError`` that names the expected type, a ``ValueError`` that names the
range. These functions raise the same, worded as MindSpore words them, so that
code catching MindSpore's errors keeps working. ``owner`` is the class name
that the messages start with (``"For 'Adam', ..."``).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = [
    "check_betas_eps",
    "check_bool",
    "check_float",
    "check_non_negative",
    "check_non_negative_float",
    "check_open_unit",
    "check_positive",
    "check_positive_float",
    "check_type",
    "is_array",
    "type_name",
]


def type_name(value: Any) -> str:
    """The name of ``value``'s type, as MindSpore's messages print it.

    Example:
        >>> from funcopt.compat.mindspore.checks import type_name
        >>> type_name(0.5)
        'float'
    """
    return type(value).__name__


def check_type(value: Any, types: tuple[type, ...], name: str, owner: str) -> None:
    """``TypeError`` unless ``value`` is one of ``types`` (a bool passes only when ``bool`` is listed).

    Example:
        >>> from funcopt.compat.mindspore.checks import check_type
        >>> check_type(True, (int,), 'momentum', 'Momentum')
        Traceback (most recent call last):
        ...
        TypeError: For 'Momentum', the type of 'momentum' must be 'int', but got 'bool'.
    """
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = ", ".join(t.__name__ for t in types)
        raise TypeError(f"For '{owner}', the type of '{name}' must be '{names}', but got '{type_name(value)}'.")


def check_float(value: Any, name: str, owner: str) -> None:
    """``TypeError`` unless ``value`` is a Python float.

    Example:
        >>> from funcopt.compat.mindspore.checks import check_float
        >>> check_float(1, 'eps', 'Adam')
        Traceback (most recent call last):
        ...
        TypeError: For 'Adam', the type of 'eps' must be 'float', but got 'int'.
    """
    check_type(value, (float,), name, owner)


def check_bool(value: Any, name: str, owner: str) -> None:
    """``TypeError`` unless ``value`` is a bool.

    Example:
        >>> from funcopt.compat.mindspore.checks import check_bool
        >>> check_bool(1, 'use_nesterov', 'Momentum')
        Traceback (most recent call last):
        ...
        TypeError: For 'Momentum', the type of 'use_nesterov' must be 'bool', but got 'int'.
    """
    check_type(value, (bool,), name, owner)


def check_non_negative(value: float, name: str, owner: str) -> None:
    """``ValueError`` unless ``value`` >= 0 (NaN fails).

    Example:
        >>> from funcopt.compat.mindspore.checks import check_non_negative
        >>> check_non_negative(-0.1, 'weight_decay', 'Optimizer')
        Traceback (most recent call last):
        ...
        ValueError: For 'Optimizer', the 'weight_decay' must be non-negative, but got -0.1.
    """
    if not value >= 0:
        raise ValueError(f"For '{owner}', the '{name}' must be non-negative, but got {value}.")


def check_positive(value: float, name: str, owner: str) -> None:
    """``ValueError`` unless ``value`` > 0 (NaN fails).

    Example:
        >>> from funcopt.compat.mindspore.checks import check_positive
        >>> check_positive(0.0, 'eps', 'Adam')
        Traceback (most recent call last):
        ...
        ValueError: For 'Adam', the 'eps' must be positive, but got 0.0.
    """
    if not value > 0:
        raise ValueError(f"For '{owner}', the '{name}' must be positive, but got {value}.")


def check_open_unit(value: float, name: str, owner: str) -> None:
    """``ValueError`` unless 0 < ``value`` < 1.

    Example:
        >>> from funcopt.compat.mindspore.checks import check_open_unit
        >>> check_open_unit(1.0, 'beta1', 'Adam')
        Traceback (most recent call last):
        ...
        ValueError: For 'Adam', the 'beta1' must be in range of (0.0, 1.0), but got 1.0.
    """
    if not 0.0 < value < 1.0:
        raise ValueError(f"For '{owner}', the '{name}' must be in range of (0.0, 1.0), but got {value}.")


def check_betas_eps(beta1: Any, beta2: Any, eps: Any, owner: str) -> None:
    """MindSpore's ``_check_param_value`` of the Adam family: float betas in (0, 1), a float ``eps`` > 0.

    The types are checked first, then the ranges, in MindSpore's order.

    Example:
        >>> from funcopt.compat.mindspore.checks import check_betas_eps
        >>> check_betas_eps(0.9, 0.999, 0.0, 'Lamb')
        Traceback (most recent call last):
        ...
        ValueError: For 'Lamb', the 'eps' must be positive, but got 0.0.
    """
    check_float(beta1, "beta1", owner)
    check_float(beta2, "beta2", owner)
    check_float(eps, "eps", owner)
    check_open_unit(beta1, "beta1", owner)
    check_open_unit(beta2, "beta2", owner)
    check_positive(eps, "eps", owner)


def check_non_negative_float(value: Any, name: str, owner: str) -> None:
    """:func:`check_float` then :func:`check_non_negative`: the pair MindSpore runs on most float arguments.

    Example:
        >>> from funcopt.compat.mindspore.checks import check_non_negative_float
        >>> check_non_negative_float(-1.0, 'l1', 'FTRL')
        Traceback (most recent call last):
        ...
        ValueError: For 'FTRL', the 'l1' must be non-negative, but got -1.0.
    """
    check_float(value, name, owner)
    check_non_negative(value, name, owner)


def check_positive_float(value: Any, name: str, owner: str) -> None:
    """:func:`check_float` then :func:`check_positive`, in one call for the arguments that must be > 0.

    Example:
        >>> from funcopt.compat.mindspore.checks import check_positive_float
        >>> check_positive_float(1, 'epsilon', 'RMSProp')
        Traceback (most recent call last):
        ...
        TypeError: For 'RMSProp', the type of 'epsilon' must be 'float', but got 'int'.
    """
    check_float(value, name, owner)
    check_positive(value, name, owner)


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array (JAX or NumPy, 0-d included), MindSpore's ``Tensor`` here.

    Example:
        >>> import numpy as np
        >>> from funcopt.compat.mindspore.checks import is_array
        >>> is_array(np.float32(1.0)), is_array(1.0)
        (True, False)
    """
    return isinstance(x, (jax.Array, np.ndarray, np.generic))
