"""The dtype each optimizer state buffer is stored in, and how a value is rounded into it.

An optimizer's per-parameter buffers (``exp_avg``, ``exp_avg_sq``...) are by
default stored in their parameter's dtype. :func:`state_precision` resolves the
arguments the optimizers take (optax's ``mu_dtype``, ``nu_dtype``, and
``state_dtype``: one dtype for all buffers or a mapping by torch's state names)
into one :class:`StatePrecision`, which :func:`funcopt._src.hparams.per_leaf_optimizer`
applies: the update's arithmetic runs in float32 (or the parameter's dtype if
wider) and only the store rounds to the buffer's dtype, to nearest or, for
bfloat16 buffers, stochastically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DTypeLike = Any
"""A dtype, a scalar type (``jnp.bfloat16``) or its name (``'bfloat16'``)."""

ROUNDINGS = ("nearest", "stochastic")

STATE_DTYPE_ARGS = ("mu_dtype", "nu_dtype", "state_dtype", "state_rounding", "seed")
"""The keyword-only arguments beyond torch's that the optimizers with configurable state dtypes take."""


class StatePrecision(NamedTuple):
    """Resolved storage of an optimizer's state buffers.

    Attributes:
        dtypes: the dtype of each configured buffer, by torch's state name;
            a buffer not named here keeps its parameter's dtype.
        rounding: ``'nearest'`` or ``'stochastic'`` (every bfloat16 buffer,
            configured or of a bfloat16 parameter; the others round to nearest).
        seed: the seed of the stochastic rounding's key.
    """

    dtypes: tuple[tuple[str, np.dtype], ...]
    rounding: str
    seed: int

    def dtype_for(self, name: str, param_dtype: DTypeLike) -> np.dtype:
        """The dtype buffer ``name`` of a parameter of ``param_dtype`` is stored in.

        Complex parameters keep their own dtype: the configured dtypes are real.
        """
        param_dtype = jnp.dtype(param_dtype)
        configured = dict(self.dtypes).get(name)
        if configured is None or not jnp.issubdtype(param_dtype, jnp.floating):
            return param_dtype
        return configured

    @property
    def names(self) -> frozenset[str]:
        """The buffers whose dtype is configured."""
        return frozenset(k for k, _ in self.dtypes)

    @property
    def stochastic(self) -> bool:
        """Whether bfloat16 buffers round stochastically (the state then carries a key)."""
        return self.rounding == "stochastic"

    def key(self) -> jax.Array:
        """The key the state carries, as raw uint32 key data (``jax.random.key_data``)."""
        return jax.random.key_data(jax.random.key(self.seed))

    @staticmethod
    def update_keys(rng: jax.Array, step: jax.Array, count: int) -> list[jax.Array]:
        """``count`` independent raw keys for the update of ``step``, one per state buffer written.

        They are drawn from the carried key and the step count, so the carried key never
        changes: a state restored at step ``t`` continues with the same random bits.
        """
        base = jax.random.fold_in(jax.random.wrap_key_data(rng), step)
        keys = jax.random.key_data(jax.random.split(base, count))  # one split, not a hash per buffer
        return [keys[i] for i in range(count)]

    def store(self, x: jax.Array, dtype: DTypeLike, key: jax.Array | None) -> jax.Array:
        """``x`` rounded into ``dtype``: stochastically for a bfloat16 buffer when ``key`` is given."""
        if key is None or jnp.dtype(dtype) != jnp.bfloat16 or not jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return stochastic_round_bfloat16(x, key)


def _dtype(value: DTypeLike, what: str) -> np.dtype:
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"{what} must be a dtype (e.g. jnp.bfloat16 or 'float32'), got {value!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{what} must be a floating dtype, got {dtype}")
    return dtype


def state_precision(
    buffers: Mapping[str, str],
    *,
    state_dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    state_rounding: str = "nearest",
    seed: int = 0,
) -> StatePrecision | None:
    """Resolve an optimizer's state-dtype arguments once; None when nothing is configured (today's storage).

    Args:
        buffers: the optimizer's configurable buffers, torch's state name to its
            role: ``'mu'`` (first moment, set by ``mu_dtype``), ``'nu'`` (second
            moment or running maximum, set by ``nu_dtype``), or ``''`` (only by
            ``state_dtype``).
        state_dtype: one dtype for every buffer, or a mapping from torch's state
            names to dtypes (names not given keep their parameter's dtype).
        mu_dtype: dtype of the first-moment buffers (optax's name).
        nu_dtype: dtype of the second-moment buffers.
        state_rounding: ``'nearest'`` or ``'stochastic'`` (bfloat16 buffers).
        seed: seed of the stochastic rounding (an int).

    Raises:
        ValueError: an unknown state name, a non-floating dtype, two different
            dtypes for one buffer, an unknown rounding, or a ``mu_dtype`` /
            ``nu_dtype`` the optimizer has no buffer for.
        TypeError: something that is not a dtype, or a seed that is not an int.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src.state_dtype import state_precision
        >>> p = state_precision({'exp_avg': 'mu', 'exp_avg_sq': 'nu'}, mu_dtype=jnp.bfloat16)
        >>> p.dtype_for('exp_avg', jnp.float32), p.dtype_for('exp_avg_sq', jnp.float32)
        (dtype(bfloat16), dtype('float32'))
    """
    if state_rounding not in ROUNDINGS:
        raise ValueError(f"state_rounding must be one of {ROUNDINGS}, got {state_rounding!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    chosen: dict[str, np.dtype] = {}
    if isinstance(state_dtype, Mapping):
        unknown = sorted(set(state_dtype) - set(buffers))
        if unknown:
            raise ValueError(f"state_dtype names unknown state buffer(s) {unknown}; this optimizer's "
                             f"buffers are {sorted(buffers)}")
        chosen = {k: _dtype(v, f"state_dtype[{k!r}]") for k, v in state_dtype.items() if v is not None}
    elif state_dtype is not None:
        dtype = _dtype(state_dtype, "state_dtype")
        chosen = dict.fromkeys(buffers, dtype)
    for role, value, arg in (("mu", mu_dtype, "mu_dtype"), ("nu", nu_dtype, "nu_dtype")):
        if value is None:
            continue
        dtype = _dtype(value, arg)
        names = [k for k, r in buffers.items() if r == role]
        if not names:
            raise ValueError(f"{arg}: this optimizer has no {role} buffer (its buffers are {sorted(buffers)})")
        for k in names:
            if k in chosen and chosen[k] != dtype:
                raise ValueError(f"{arg}={dtype} and state_dtype={chosen[k]} disagree on {k!r}")
            chosen[k] = dtype
    if not chosen and state_rounding == "nearest":
        return None
    return StatePrecision(tuple(sorted(chosen.items())), state_rounding, int(seed))


def stochastic_round_bfloat16(x: jax.Array, key: jax.Array) -> jax.Array:
    r"""``x`` rounded to bfloat16 up or down at random, with the probability that makes it unbiased.

    A float32 value :math:`x` between the bfloat16 neighbours :math:`a < b` becomes :math:`b` with
    probability :math:`(x - a) / (b - a)`, so :math:`E[\mathrm{round}(x)] = x`: adding uniform
    random bits below bfloat16's last mantissa bit, then truncating, does exactly that (on the
    magnitude; the sign bit is untouched). Values wider than float32 are first rounded to float32.
    Non-finite values round to nearest. ``key`` is raw uint32 key data (``jax.random.key_data``).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from funcopt._src.state_dtype import stochastic_round_bfloat16
        >>> x = jnp.full(10000, 1 + 2.0**-9)  # a quarter of the way from 1 to the next bfloat16, 1 + 2**-7
        >>> y = stochastic_round_bfloat16(x, jax.random.key_data(jax.random.PRNGKey(0)))
        >>> sorted(set(y.tolist()))
        [1.0, 1.0078125]
        >>> bool(abs(y.astype(jnp.float32).mean() - (1 + 2.0**-9)) < 1e-4)
        True
    """
    x32 = x.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(x32, jnp.uint32)
    noise = jax.random.bits(jax.random.wrap_key_data(key), x32.shape, jnp.uint32) >> 16
    rounded = jax.lax.bitcast_convert_type((bits + noise) & jnp.uint32(0xFFFF0000), jnp.float32)
    return jnp.where(jnp.isfinite(x32), rounded.astype(jnp.bfloat16), x32.astype(jnp.bfloat16))
