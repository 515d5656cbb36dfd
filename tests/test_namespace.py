"""The public namespace: what ``import funcopt`` offers, where the version comes from, what it imports.

Sorting of every ``__all__`` is ruff's RUF022 (pyproject.toml); these tests check the rest.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import os
import pathlib
import pkgutil
import re
import subprocess
import sys

import funcopt as fo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli below Python 3.11
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "funcopt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Optional frameworks funcopt may import inside a function, never at import time.
OPTIONAL = {"torch", "flax", "equinox", "optax"}


def _public_modules() -> list[str]:
    names = ["funcopt"]
    for info in pkgutil.walk_packages(fo.__path__, "funcopt."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("-", "_")


def test_version_is_declared_once_and_read_from_the_metadata() -> None:
    assert "version" not in PYPROJECT["project"].get("dynamic", [])
    assert fo.__version__ == PYPROJECT["project"]["version"] == importlib.metadata.version("funcopt")
    # the number is written in pyproject.toml only
    written = [p for p in PACKAGE.rglob("*.py") if PYPROJECT["project"]["version"] in p.read_text(encoding="utf-8")]
    assert not written, written


def _imports(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """Top-level names of the absolute imports of a file: (at module level, inside functions)."""
    module_level: set[str] = set()
    nested: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = {id(n) for f in functions for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = {node.module.split(".")[0]}
        else:
            continue
        (nested if id(node) in inside else module_level).update(names)
    return module_level, nested


def test_every_runtime_import_is_declared() -> None:
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    stdlib = set(sys.stdlib_module_names) | {"funcopt"}
    undeclared, eager_optional = {}, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module_level, nested = _imports(path)
        name = str(path.relative_to(ROOT))
        if module_level & OPTIONAL:
            eager_optional[name] = sorted(module_level & OPTIONAL)
        missing = (module_level | nested) - stdlib - declared - OPTIONAL
        if missing:
            undeclared[name] = sorted(missing)
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"
    assert not eager_optional, f"optional frameworks imported at import time: {eager_optional}"
    assert {"jax", "jaxlib", "numpy", "ml_dtypes"} <= declared


def test_import_loads_no_optional_framework() -> None:
    code = f"import sys, funcopt; print(sorted(m for m in {sorted(OPTIONAL)!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=dict(os.environ, JAX_PLATFORMS="cpu")).stdout
    assert out.strip() == "[]", out


def test_every_public_name_exists_once() -> None:
    for modname in _public_modules():
        module = importlib.import_module(modname)
        public = getattr(module, "__all__", None)
        if public is None:
            continue
        assert len(public) == len(set(public)), f"{modname}.__all__ repeats a name"
        missing = [n for n in public if not hasattr(module, n)]
        assert not missing, f"{modname}.__all__ names what it does not have: {missing}"


def test_top_level_has_no_framework_specific_names() -> None:
    framed = [n for n in fo.__all__ if n.split("_")[0] in ("mindspore", "megengine", "torch", "optax")]
    assert not framed, framed
    # kept importable for existing code
    from funcopt.transforms.weight_decay import mindspore_decay_filter, mindspore_decay_mask

    assert fo.mindspore_decay_filter is mindspore_decay_filter
    assert fo.mindspore_decay_mask is mindspore_decay_mask


def test_schedule_families_partition_the_flat_namespace() -> None:
    S = fo.schedules
    families = {"torch": S.torch, "optax": S.optax, "mindspore": S.mindspore}
    assert {name: module.__name__ for name, module in families.items()} == {
        name: f"funcopt.schedules.{name}" for name in families}
    seen: dict[str, str] = {}
    for family, module in families.items():
        for name in module.__all__:
            if name == "dynamic_lr":  # MindSpore's list-returning functions, a submodule of its own
                assert module.dynamic_lr is S.dynamic_lr
                continue
            assert name not in seen, f"{name} is in both {seen[name]} and {family}"
            seen[name] = family
            assert getattr(S, name) is getattr(module, name), name
    assert set(S.__all__) == set(seen) | set(families) | {"dynamic_lr"}


# The layers of docs/design.md, in order: each imports only from the layers before it.
LAYERS = ["_src", "transforms", "schedules", "linesearch", "tree_utils", "sharding", "optimizers", "optim",
          "compat", "checkpoint"]


def test_layers_import_only_from_the_layers_below() -> None:
    found = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name != "__init__.py"
             and (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert found == set(LAYERS)
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if parts == ("__init__.py",):
            continue
        layer = parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] if node.module != "funcopt" else [f"funcopt.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("funcopt."):
                    other = target.split(".")[1]
                    if other != layer and LAYERS.index(other) > LAYERS.index(layer):
                        wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, wrong
