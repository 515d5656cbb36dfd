"""MindSpore's loss-scale managers (``amp.LossScaleManager`` and its subclasses).

The managers keep MindSpore's constructors, getters and errors; the scale
itself and its update rule are funcopt's :class:`funcopt.StaticLossScale` and
:class:`funcopt.DynamicLossScale`, which ``get_update_cell()`` returns for
:func:`funcopt.loss_scaled`.
"""

from __future__ import annotations

import numbers
from typing import Any

from funcopt.transforms.loss_scale import (
    DynamicLossScale,
    StaticLossScale,
    dynamic_loss_scale,
    static_loss_scale,
)

__all__ = ["DynamicLossScaleManager", "FixedLossScaleManager", "LossScaleManager"]

class LossScaleManager:
    """MindSpore's ``amp.LossScaleManager`` interface: ``get_loss_scale``, ``update_loss_scale``, ``get_update_cell``.

    Example:
        >>> from funcopt.compat import mindspore as ms
        >>> isinstance(ms.FixedLossScaleManager(), ms.LossScaleManager)
        True
    """

    def get_loss_scale(self) -> float:
        raise NotImplementedError

    def update_loss_scale(self, overflow: bool) -> None:
        raise NotImplementedError

    def get_update_cell(self) -> Any:
        raise NotImplementedError


class FixedLossScaleManager(LossScaleManager):
    """``amp.FixedLossScaleManager(loss_scale=128.0, drop_overflow_update=True)``.

    ``get_update_cell()`` returns the :class:`funcopt.StaticLossScale` to give
    :func:`funcopt.loss_scaled` (which unscales, skips overflowed steps and
    holds the scale), or ``None`` when ``drop_overflow_update`` is False: then,
    as in MindSpore, give the optimizer the same ``loss_scale`` and it divides
    the gradients itself.

    Raises:
        ValueError: ``loss_scale`` < 1.

    Example:
        >>> from funcopt.compat import mindspore as ms
        >>> manager = ms.FixedLossScaleManager(1024.0, False)
        >>> manager.get_loss_scale(), manager.get_drop_overflow_update(), manager.get_update_cell()
        (1024.0, False, None)
    """

    def __init__(self, loss_scale: float = 128.0, drop_overflow_update: bool = True) -> None:
        if loss_scale < 1:
            raise ValueError(f"The argument 'loss_scale' must be >= 1, but got {loss_scale}")
        self._loss_scale = loss_scale
        self._drop_overflow_update = drop_overflow_update

    def get_loss_scale(self) -> float:
        """The loss scale."""
        return self._loss_scale

    def get_drop_overflow_update(self) -> bool:
        """Whether an overflowed step is skipped."""
        return self._drop_overflow_update

    def update_loss_scale(self, overflow: bool) -> None:
        """Nothing to update: the scale is fixed."""
        del overflow

    def get_update_cell(self) -> StaticLossScale | None:
        """The funcopt loss scale for :func:`funcopt.loss_scaled`, or None without ``drop_overflow_update``."""
        if not self._drop_overflow_update:
            return None
        return static_loss_scale(float(self._loss_scale))


class DynamicLossScaleManager(LossScaleManager):
    r"""``amp.DynamicLossScaleManager(init_loss_scale=2**24, scale_factor=2, scale_window=2000)``.

    ``update_loss_scale(overflow)`` follows MindSpore's rule (held in a
    :class:`funcopt.DynamicLossScale`, see :meth:`funcopt.DynamicLossScale.adjust`):
    on overflow :math:`s \leftarrow \max(s / f, 1)`; after ``scale_window``
    steps without overflow :math:`s \leftarrow s f`. As in MindSpore, more than
    1000 overflows in a row raise ``RuntimeError``. ``get_update_cell()``
    returns the current :class:`funcopt.DynamicLossScale` for
    :func:`funcopt.loss_scaled`.

    Raises:
        ValueError: ``init_loss_scale`` < 1, ``scale_factor`` <= 0 or ``scale_window`` <= 0.
        TypeError: ``scale_window`` not an int.

    Example:
        >>> from funcopt.compat import mindspore as ms
        >>> manager = ms.DynamicLossScaleManager(init_loss_scale=8, scale_window=2)
        >>> for overflow in [False, False, True]:
        ...     manager.update_loss_scale(overflow)
        ...     print(manager.get_loss_scale())
        8.0
        16.0
        8.0
    """

    _bad_step_max = 1000

    def __init__(self, init_loss_scale: float = 2**24, scale_factor: float = 2, scale_window: int = 2000) -> None:
        if init_loss_scale < 1.0:
            raise ValueError(f"The argument 'init_loss_scale' must be > 1, but got {init_loss_scale}")
        if isinstance(scale_window, bool) or not isinstance(scale_window, numbers.Integral):
            raise TypeError(f"For 'DynamicLossScaleManager', the 'scale_window' must be int, "
                            f"but got {type(scale_window).__name__}.")
        if scale_window <= 0:
            raise ValueError(f"For 'DynamicLossScaleManager', the 'scale_window' must be positive, "
                             f"but got {scale_window}.")
        if scale_factor <= 0:
            raise ValueError(f"The argument 'scale_factor' must be > 0, but got {scale_factor}")
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self._scale: DynamicLossScale = dynamic_loss_scale(float(init_loss_scale), scale_factor, scale_window)
        self.bad_step = 0

    @property
    def loss_scale(self) -> float:
        """The current loss scale."""
        return float(self._scale.loss_scale)

    def get_loss_scale(self) -> float:
        """The current loss scale."""
        return self.loss_scale

    def get_drop_overflow_update(self) -> bool:
        """Always True: an overflowed step is skipped."""
        return True

    def update_loss_scale(self, overflow: bool) -> None:
        """Adjust the scale after a step that did (``overflow``) or did not overflow."""
        self._scale = self._scale.adjust(not overflow)
        self.bad_step = self.bad_step + 1 if overflow else 0
        if self.bad_step > self._bad_step_max:
            raise RuntimeError(f"Dynamic loss scale Continuous overflow {self.bad_step} times, has exceeded "
                               "maximum threshold.")

    def get_update_cell(self) -> DynamicLossScale:
        """The current funcopt loss scale, for :func:`funcopt.loss_scaled`."""
        return self._scale
