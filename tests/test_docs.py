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

# Every ```python block of the README and of every page runs as written: a page's blocks run in order, in one
# namespace, as one program. A block that is deliberately an excerpt (a multi-host launch) has the line
# ``<!-- not-run: why -->`` right before its fence; EXCERPTS counts them, so that none slips in unnoticed.
EXCERPTS = {"docs/sharding.md": 1}
# Pages that need a fresh interpreter: sharding.md simulates 8 devices, a flag read when jax starts.
FRESH_PROCESS = {"docs/sharding.md": {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}}

_BLOCK = re.compile(r"^(?:<!-- not-run: (?P<reason>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```", re.S | re.M)


def _pages() -> list[str]:
    docs = sorted(p for p in DOCS.rglob("*.md") if not {"_build", "_ext"} & set(p.relative_to(DOCS).parts))
    return ["README.md"] + [str(p.relative_to(ROOT)) for p in docs]


def _blocks(page: str) -> list[tuple[str, str | None]]:
    """(code, reason) for each ```python block of the page; reason is None for a block that runs."""
    text = (ROOT / page).read_text(encoding="utf-8")
    return [(m.group("code"), m.group("reason")) for m in _BLOCK.finditer(text)]


def _run_page(page: str) -> None:
    """Execute the page's blocks in order in one namespace; raise with the page and block that failed."""
    namespace: dict[str, object] = {"__name__": f"docs_{page}"}
    for i, (code, reason) in enumerate(_blocks(page)):
        if reason is not None:
            continue
        try:
            exec(compile(code, f"{page} [block {i + 1}]", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - reported with the page and block that failed
            raise AssertionError(f"{page}, python block {i + 1} failed: {type(e).__name__}: {e}\n{code}") from e


RUNNABLE_PAGES = [page for page in _pages() if any(reason is None for _, reason in _blocks(page))]


def test_every_python_block_is_run_or_marked_as_an_excerpt() -> None:
    assert "README.md" in RUNNABLE_PAGES and "docs/index.md" in RUNNABLE_PAGES
    excerpts = {}
    for page in _pages():
        text = (ROOT / page).read_text(encoding="utf-8")
        blocks = _blocks(page)
        # a python block in another spelling (```py, ```{code-block} python) would be skipped silently
        fences = re.findall(r"^```[ \t]*(\S*)(.*)$", text, flags=re.M)
        other = [info + rest for info, rest in fences if "py" in (info + rest).lower() and info != "python"]
        assert not other, f"{page}: python code must be fenced as ```python, found {other}"
        assert text.count("```python\n") == len(blocks), f"{page}: a ```python block is not closed"
        marked = [reason for _, reason in blocks if reason is not None]
        marks = re.findall(r"^<!-- not-run:", text, flags=re.M)
        assert len(marks) == len(marked), f"{page}: a not-run mark is not right before a block"
        assert all(reason.strip() for reason in marked), f"{page}: a not-run mark without a reason"
        if marked:
            excerpts[page] = len(marked)
    assert excerpts == EXCERPTS


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_code_runs(page: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if page in FRESH_PROCESS:
        env = dict(os.environ, JAX_PLATFORMS="cpu", **FRESH_PROCESS[page])
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        proc = subprocess.run([sys.executable, __file__, page], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-5000:]
        return
    monkeypatch.chdir(tmp_path)  # pages that write checkpoints write them here
    _run_page(page)


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
    for page in ["quickstart", "guides/param_groups", "migration_optax", "api/index", "design"]:
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


if __name__ == "__main__":  # one page in this interpreter: test_page_code_runs's fresh process
    _run_page(sys.argv[1])
