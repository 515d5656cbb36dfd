"""Matching saved entries to a target by name: what a structure-tolerant load loads and what it reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple


class IncompatibleKeys(NamedTuple):
    """What a ``strict=False`` load could not match, as three sorted lists of names.

    Returned by :func:`funcopt.load` with ``strict=False`` (names are the
    dotted paths of the leaves, :func:`funcopt.path_name`; for a stateful
    optimizer, its parameter names) and by
    ``funcopt.optim.Optimizer.load_state_dict(sd, strict=False)``, after
    torch's ``nn.Module.load_state_dict`` result.

    * ``missing_keys``: in the target, not in what was loaded; they keep the
      target's (fresh) values.
    * ``unexpected_keys``: in what was loaded, not in the target; ignored.
    * ``mismatched_keys``: in both, but the shape, dtype or kind of value
      differ; they keep the target's values.

    Example:
        >>> import funcopt as fo
        >>> keys = fo.IncompatibleKeys(['head.kernel'], ['layer2.kernel'], [])
        >>> keys.missing_keys, keys.unexpected_keys, keys.mismatched_keys
        (['head.kernel'], ['layer2.kernel'], [])
        >>> not any(fo.IncompatibleKeys([], [], []))  # everything matched
        True
        >>> import jax.numpy as jnp
        >>> old = fo.optim.Adam([('w', jnp.ones(2)), ('old', jnp.ones(1))])
        >>> new = fo.optim.Adam([('w', jnp.ones(2)), ('head', jnp.ones(3))])
        >>> new.load_state_dict(old.state_dict(), strict=False)
        IncompatibleKeys(missing_keys=['head'], unexpected_keys=['old'], mismatched_keys=[])
    """

    missing_keys: list[str]
    unexpected_keys: list[str]
    mismatched_keys: list[str]


def duplicate_names(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted (a match by name needs each name once).

    Example:
        >>> from funcopt._src.matching import duplicate_names
        >>> duplicate_names(['a', 'b', 'a'])
        ['a']
    """
    return sorted(n for n, count in Counter(names).items() if count > 1)


def match_names(target: Iterable[str], saved: Iterable[str],
                fits: Callable[[str], bool]) -> tuple[list[str], IncompatibleKeys]:
    """Split names into those to load and the :class:`IncompatibleKeys`.

    A name of ``target`` also in ``saved`` is loaded when ``fits(name)`` (same
    shape and dtype, for arrays), else it is mismatched; the rest of
    ``target`` is missing, the rest of ``saved`` unexpected. Each side must
    hold each name once (see :func:`duplicate_names`).

    Args:
        target: the names of what is loaded into.
        saved: the names of what was saved.
        fits: whether the saved entry of a name in both can be loaded into the target's.

    Returns:
        The names to load, in ``target``'s order, and the incompatible keys.

    Example:
        >>> from funcopt._src.matching import match_names
        >>> match_names(['a', 'b', 'head'], ['a', 'b', 'old'], fits=lambda name: name != 'b')
        (['a'], IncompatibleKeys(missing_keys=['head'], unexpected_keys=['old'], mismatched_keys=['b']))
    """
    target, saved_set = list(target), set(saved)
    loaded, missing, mismatched = [], [], []
    for name in target:
        if name not in saved_set:
            missing.append(name)
        elif fits(name):
            loaded.append(name)
        else:
            mismatched.append(name)
    unexpected = saved_set.difference(target)
    return loaded, IncompatibleKeys(sorted(missing), sorted(unexpected), sorted(mismatched))
