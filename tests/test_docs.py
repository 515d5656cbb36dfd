"""The documentation site builds with warnings as errors, documents every public name, and its code runs.

The build is the command of docs/conf.py (``sphinx -W --keep-going -b html``), into a temporary folder.
Notebooks are not executed by the build; tests/test_examples.py runs them.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import posixpath
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Modules whose whole ``__all__`` the API reference documents (docs/api/*.rst).
DOCUMENTED_MODULES = [
    "funcopt",
    "funcopt.optim",
    "funcopt.optim.lr_scheduler",
    "funcopt.optim.swa_utils",
    "funcopt.schedules",
    "funcopt.schedules.dynamic_lr",
    "funcopt.linesearch",
    "funcopt.tree_utils",
]
# Documented when they exist (docs/api/sharding.rst, docs/api/compat.rst).
OPTIONAL_MODULES = ["funcopt.sharding", "funcopt.compat.megengine", "funcopt.compat.mindspore"]

BUILD_TIMEOUT = 600

# Pages whose ```python blocks, run in order in one namespace, form a complete program. A fragment that is
# not meant to run is written as a ```{code-block} python directive instead.
RUNNABLE_PAGES = [
    "index.md",
    "installation.md",
    "quickstart.md",
    "guides/optimizer.md",
    "guides/param_groups.md",
    "nnx.md",
    "equinox.md",
    "guides/checkpoints.md",
    "guides/schedules.md",
    "guides/lbfgs.md",
    "guides/clipping_mixed_precision.md",
    "migration_pytorch.md",
]


def _python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_code_runs(page: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DOCS / page
    blocks = _python_blocks(path.read_text(encoding="utf-8"))
    assert blocks, f"{page} has no python code block"
    monkeypatch.chdir(tmp_path)  # pages that write checkpoints write them here
    namespace: dict[str, object] = {"__name__": f"docs_{page}"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page} [block {i + 1}]", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - reported with the page and block that failed
            pytest.fail(f"{page}, python block {i + 1} failed: {type(e).__name__}: {e}\n{block}")


def _build(out: pathlib.Path) -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore::DeprecationWarning")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(out / ".doctrees"), str(DOCS), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the docs build failed (warnings are errors):\n{log[-15000:]}"


def _inventory(html: pathlib.Path) -> set[str]:
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", posixpath.join)
    data = getattr(inv, "data", inv)  # a dict up to Sphinx 9, an _Inventory with .data after
    return {name for role, entries in data.items() if role.startswith("py:") for name in entries}


def test_docs_build_and_document_every_public_name(tmp_path: pathlib.Path) -> None:
    # One test for the build and its checks, so that a parallel run (pytest -n) builds once.
    html = tmp_path / "html"
    _build(html)

    for page in ["index", "quickstart", "migration_pytorch", "api/funcopt", "api/optim", "guides/optimizer"]:
        assert (html / f"{page}.html").is_file(), page
    index = (html / "index.html").read_text(encoding="utf-8")
    for page in ["quickstart", "guides/param_groups", "migration_optax", "api/index"]:
        assert f'href="{page}.html"' in index, f"{page} is not linked from the index"
    for page in ["sharding", "migration_megengine", "migration_mindspore", "benchmarks"]:
        if (DOCS / f"{page}.md").is_file():  # pages written elsewhere in the project are linked when present
            assert f'href="{page}.html"' in index, f"{page} is not linked from the index"

    documented = _inventory(html)
    modules = list(DOCUMENTED_MODULES)
    for name in OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        modules.append(name)
    missing = []
    for modname in modules:
        module = importlib.import_module(modname)
        assert modname in documented, f"module {modname} has no page"
        missing += [f"{modname}.{name}" for name in module.__all__ if f"{modname}.{name}" not in documented]
    assert not missing, f"public names missing from the API reference: {missing}"
