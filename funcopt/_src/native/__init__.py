"""Native CPU kernels called through XLA's FFI, built on first use with the system's C++ compiler.

XLA:CPU compiles an elementwise optimizer step into one loop per output array, so an Adam step
reads the moments back after writing them. :func:`fused_adam` makes the whole step one pass over
the buffers, as torch's fused CPU kernel does. The shared library is compiled once per machine
(``c++``, or the compiler named by ``CXX``) into ``$FUNCOPT_CACHE_DIR`` (default
``~/.cache/funcopt``) and loaded from there afterwards; :func:`native_error` says why it cannot be
when it cannot (no compiler, a failed build).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = Path(__file__).with_name("fused_adam.cc")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC", "-w"]
_TARGETS = {np.dtype(np.float32): "funcopt_fused_adam_f32", np.dtype(np.float64): "funcopt_fused_adam_f64"}
_SYMBOLS = {"funcopt_fused_adam_f32": "FuncoptAdamF32", "funcopt_fused_adam_f64": "FuncoptAdamF64"}

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib" once loaded and registered, or "error"


def cache_dir() -> Path:
    """Where built kernels are kept: ``$FUNCOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/funcopt``, else ``~/.cache``."""
    if os.environ.get("FUNCOPT_CACHE_DIR"):
        return Path(os.environ["FUNCOPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "funcopt"


def _fallback_dir() -> Path:
    """Where kernels are built when :func:`cache_dir` cannot be written: a per-user temporary folder."""
    return Path(tempfile.gettempdir()) / f"funcopt-{getattr(os, 'getuid', lambda: 'user')()}"


def _compiler() -> str | None:
    name = os.environ.get("CXX") or "c++"
    return shutil.which(name) or (shutil.which("g++") if not os.environ.get("CXX") else None)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("model name", "flags"))), "")
    except OSError:
        return platform.processor()


def _build(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), cxx, version, jaxlib.__version__,
                                    platform.machine(), _cpu_model()]).encode()).hexdigest()[:16]
    name = f"fused_adam-{key}.so"
    for folder in (cache_dir(), _fallback_dir()):
        if (folder / name).is_file():
            return folder / name
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError:  # a read-only home: build into the temporary folder instead
        folder = _fallback_dir()
        folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / target.name
        cmd = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed ({' '.join(cmd)}):\n{done.stderr.strip()[-2000:]}")
        os.replace(out, target)  # atomic: a concurrent process sees the whole file or none
    return target


def _load() -> None:
    with _lock:
        if _state:
            return
        cxx = _compiler()
        if cxx is None:
            _state["error"] = "no C++ compiler found (install one, or name it in CXX)"
            return
        try:
            lib = ctypes.cdll.LoadLibrary(str(_build(cxx)))
            for target, symbol in _SYMBOLS.items():
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
            _state["error"] = str(e)
            return
        _state["lib"] = lib


def native_error() -> str | None:
    """None when the native kernels are ready (building them if needed), else why they cannot be used."""
    _load()
    return _state.get("error")  # type: ignore[return-value]


def supports(dtype: object) -> bool:
    """Whether :func:`fused_adam` has a kernel for buffers of ``dtype``."""
    return np.dtype(dtype) in _TARGETS


def fused_adam(p: jax.Array, g: jax.Array, exp_avg: jax.Array, exp_avg_sq: jax.Array, lr: jax.Array,
               beta1: jax.Array, beta2: jax.Array, eps: jax.Array, weight_decay: jax.Array, step: jax.Array,
               *, maximize: bool = False, decoupled: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""One Adam / AdamW step over 1-D CPU buffers in one pass: new ``(p, exp_avg, exp_avg_sq)``.

    The update is :func:`funcopt.adam`'s, with :math:`t` = ``step`` (this step's count):

    .. math::

        g &\leftarrow -g \text{ if maximize}; \quad g \leftarrow g + \lambda p \text{ unless decoupled} \\
        m &\leftarrow m + (1 - \beta_1)(g - m), \quad v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        p &\leftarrow p - \gamma\lambda p [\text{decoupled}]
            - \frac{\gamma}{1 - \beta_1^t} \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}

    Call it inside ``jax.jit`` with ``p`` and the moments donated: the results then overwrite them.
    The scalars are traced values (changing them compiles nothing). Requires :func:`native_error`
    to be None.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt._src import native
        >>> native.supports(jnp.float32), native.supports(jnp.bfloat16)
        (True, False)
    """
    dtype = np.dtype(p.dtype)
    sd = jax.ShapeDtypeStruct(p.shape, p.dtype)
    t = jnp.asarray(step, dtype)
    beta1, beta2 = jnp.asarray(beta1, dtype), jnp.asarray(beta2, dtype)
    hp = jnp.stack([jnp.asarray(lr, dtype), beta1, beta2, jnp.asarray(eps, dtype), jnp.asarray(weight_decay, dtype),
                    1 - beta1**t, jnp.sqrt(1 - beta2**t), jnp.asarray(float(maximize), dtype),
                    jnp.asarray(float(decoupled), dtype)])
    call = jax.ffi.ffi_call(_TARGETS[dtype], (sd, sd, sd), input_output_aliases={0: 0, 2: 1, 3: 2})
    return call(p, g, exp_avg, exp_avg_sq, hp)
