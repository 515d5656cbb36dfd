"""Drawn pytree structures over a fixed sequence of leaves, and ``jax.jit`` through a flat signature.

The property tests draw the nesting of a pytree (dicts, lists, tuples, NamedTuples, their keys and
depth) with hypothesis, and put a fixed sequence of leaves into it in flatten order. Two trees with
the same leaves in the same order then compile to the same program, once the program does not name
the pytree paths: :func:`jit_flat` jits a function whose arguments and results are the flat leaves
(the function itself still sees the trees), so the XLA compilation cache serves every drawn tree
after the first; only the nesting differs, and that is host-side flattening.

(A program that lowers ``shard_alike`` groups, such as an ``init`` under ``jax.jit``, numbers them
anew at each lowering and so never hits the cache: there a drawn nesting costs a compile anyway.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import hypothesis.strategies as st
import jax


class Slot:
    """A placeholder leaf of a drawn structure (not a pytree node)."""


@st.composite
def _arranged(draw: st.DrawFn, n: int, depth: int, keys: Sequence[str], pair: type | None) -> Any:
    if n == 1 and depth > 0 and (depth >= 3 or draw(st.booleans())):
        return Slot()
    kinds = ["dict", "list", "tuple"] + (["pair"] if pair is not None and n >= 2 else [])
    kind = draw(st.sampled_from(kinds))
    # from the fourth level down, a container splits its leaves (the depth stays bounded)
    fewest = 2 if depth >= 3 and n >= 2 else 1
    k = 2 if kind == "pair" else draw(st.integers(fewest, min(3, n, len(keys))))
    cuts = sorted(draw(st.lists(st.integers(1, n - 1), min_size=k - 1, max_size=k - 1, unique=True))) if k > 1 else []
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
    children = [draw(_arranged(s, depth + 1, keys, pair)) for s in sizes]
    if kind == "dict":
        names = draw(st.lists(st.sampled_from(keys), min_size=k, max_size=k, unique=True))
        return dict(zip(names, children))
    if kind == "pair":
        return pair(*children)
    return children if kind == "list" else tuple(children)


def trees_over(leaves: Sequence[Any], keys: Sequence[str] = ("a", "b", "c", "weight", "bias"),
               pair: type | None = None) -> st.SearchStrategy[Any]:
    """Pytrees whose top level is a container and whose leaves, in flatten order, are ``leaves``.

    The nesting is drawn: dicts (keys from ``keys``), lists, tuples and ``pair`` (a NamedTuple of two
    fields, if given), one to three children each (a
    single child only in the first three levels).
    """
    def fill(structure: Any) -> Any:
        treedef = jax.tree.structure(structure)
        return jax.tree.unflatten(treedef, list(leaves))

    return _arranged(len(leaves), 0, tuple(keys), pair).map(fill)


def jit_flat(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``jax.jit(fn)`` whose compiled program takes and returns flat leaves.

    ``fn`` is traced on the same trees as under ``jax.jit(fn)``; only the program's signature is flat,
    so it does not record the pytree paths of its results and a tree of another nesting over the same
    leaves is the same program (a hit in the XLA compilation cache). One jitted function per input
    structure, kept for the later calls.
    """
    jitted: dict[Any, tuple[Callable[..., Any], list[Any]]] = {}

    def call(*args: Any) -> Any:
        flat, treedef = jax.tree.flatten(args)
        if treedef not in jitted:
            out_def: list[Any] = []

            def flat_fn(*xs: Any) -> list[Any]:
                out, out_tree = jax.tree.flatten(fn(*jax.tree.unflatten(treedef, xs)))
                out_def[:] = [out_tree]
                return out

            jitted[treedef] = (jax.jit(flat_fn), out_def)
        f, out_def = jitted[treedef]
        out = f(*flat)
        return jax.tree.unflatten(out_def[0], out)

    return call
