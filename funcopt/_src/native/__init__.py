"""Native CPU kernels called through XLA's FFI, built on first use with the system's C++ compiler.

XLA:CPU compiles an elementwise optimizer step into one loop per output array, so an Adam step
reads the moments back after writing them, and an SGD step its momentum buffer. :func:`fused_adam`
and :func:`fused_sgd` make the whole step one pass over the buffers, as torch's fused CPU kernels
do. Both live in one source file, ``fused.cc``, built into one shared library, compiled once per machine
(``c++``, or the compiler named by ``CXX``) into a private cache folder, ``$FUNCOPT_CACHE_DIR``
(default ``$XDG_CACHE_HOME/funcopt`` or ``~/.cache/funcopt``), and loaded from there afterwards;
:func:`native_error` says why it cannot be when it cannot (no compiler, a failed build, with the
compiler's messages).

A shared library runs with the user's rights once loaded, so nothing is loaded from a place
another user could write: the cache folder is created with mode 0700 and must be owned by the
user and writable by no one else, every folder above it must be owned by the user or root and
writable by no one else unless it is sticky (``/tmp``), and the library file must be a regular
file owned by the user and writable by no one else. A library that fails these checks is never
loaded (a file in the user's own private folder is removed and rebuilt). A build writes a private
temporary file in the folder and renames it into place, so a concurrent process sees the whole
library or none. When the cache folder cannot be created or fails the checks, the kernel is built
into a fresh private folder from ``tempfile.mkdtemp`` (mode 0700) for this process only, with a
``RuntimeWarning`` naming the folder that was refused.

The flags are fixed for reproducibility: ``-O3 -ffp-contract=off`` (no fused multiply-add
contraction, so the kernel rounds as the C++ source reads), built for the machine's baseline
instruction set. ``FUNCOPT_NATIVE_MARCH=native`` adds ``-march=native``: faster on some CPUs,
but the results may then differ in the last bits between machines.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = Path(__file__).with_name("fused.cc")
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC"]
MARCH_ENV = "FUNCOPT_NATIVE_MARCH"
# the FFI target of each kernel and dtype, and the handler symbol the library exports for it
_TARGETS = {(kernel, np.dtype(dtype)): f"funcopt_fused_{kernel}_{suffix}"
            for kernel in ("adam", "sgd") for dtype, suffix in ((np.float32, "f32"), (np.float64, "f64"))}
_SYMBOLS = {"funcopt_fused_adam_f32": "FuncoptAdamF32", "funcopt_fused_adam_f64": "FuncoptAdamF64",
            "funcopt_fused_sgd_f32": "FuncoptSgdF32", "funcopt_fused_sgd_f64": "FuncoptSgdF64"}

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib" once loaded and registered, or "error"
_private_tmp: list[Path] = []  # this process's fallback folder, once made


class UntrustedPathError(OSError):
    """A folder or library file that another user could have written: never loaded from."""


def cache_dir() -> Path:
    """Where built kernels are kept: ``$FUNCOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/funcopt``, else ``~/.cache``."""
    if os.environ.get("FUNCOPT_CACHE_DIR"):
        return Path(os.environ["FUNCOPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "funcopt"


def flags() -> list[str]:
    """The compiler flags: :data:`FLAGS`, plus ``-march=<value>`` when ``$FUNCOPT_NATIVE_MARCH`` is set."""
    march = os.environ.get(MARCH_ENV, "").strip()
    return [*FLAGS, f"-march={march}"] if march else list(FLAGS)


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def check_private_dir(folder: Path) -> None:
    """Raise :class:`UntrustedPathError` unless ``folder`` is a real folder only this user can write.

    ``folder`` itself must be owned by the user and not group- or other-writable; each folder
    above it must be owned by the user or root and, unless sticky, not group- or other-writable
    (anyone who can write a parent can swap the folder for another).
    """
    uid = _uid()
    if uid is None:  # no POSIX ownership to check (Windows): the user's profile folder is private
        return
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedPathError(f"{folder} is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{folder} is not a folder")
    if st.st_uid != uid:
        raise UntrustedPathError(f"{folder} is owned by uid {st.st_uid}, not by this user ({uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedPathError(f"{folder} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                                 f"make it private: chmod 700 {folder}")
    for parent in Path(os.path.realpath(folder)).parents:
        st = os.stat(parent)
        if st.st_uid not in (uid, 0):
            raise UntrustedPathError(f"{parent}, above {folder}, is owned by uid {st.st_uid}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise UntrustedPathError(f"{parent}, above {folder}, is writable by other users "
                                     f"(mode {stat.S_IMODE(st.st_mode):o})")


def check_private_file(path: Path) -> None:
    """Raise :class:`UntrustedPathError` unless ``path`` is a regular file of this user that no one else can write."""
    uid = _uid()
    if uid is None:
        return
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedPathError(f"{path} is not a regular file")
    if st.st_uid != uid:
        raise UntrustedPathError(f"{path} is owned by uid {st.st_uid}, not by this user ({uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedPathError(f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})")


def _make_private_dir(folder: Path) -> None:
    """Create ``folder`` and its missing parents with mode 0700 (the umask cannot widen it)."""
    missing = []
    for p in [folder, *folder.parents]:
        if os.path.lexists(p):
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass


def _fallback_dir() -> Path:
    """This process's private temporary folder (``tempfile.mkdtemp``: mode 0700), removed at exit."""
    if not _private_tmp:
        folder = Path(tempfile.mkdtemp(prefix="funcopt-native-"))
        _private_tmp.append(folder)
        atexit.register(shutil.rmtree, folder, True)
    return _private_tmp[0]


def _compiler() -> str | None:
    name = os.environ.get("CXX") or "c++"
    return shutil.which(name) or (shutil.which("g++") if not os.environ.get("CXX") else None)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("model name", "flags"))), "")
    except OSError:
        return platform.processor()


def _library_name(cxx: str, cflags: list[str]) -> str:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    parts = [SOURCE.read_text(), " ".join(cflags), cxx, version, jaxlib.__version__, platform.machine()]
    if any(f.startswith("-march=") for f in cflags):
        parts.append(_cpu_model())  # a library built for this CPU is not shared with another one
    return f"fused-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:16]}.so"


def _trusted_library(folder: Path, name: str) -> Path | None:
    """``folder / name`` when it exists and passes the checks; an untrusted one is removed (the folder is ours)."""
    path = folder / name
    if not os.path.lexists(path):
        return None
    try:
        check_private_file(path)
        return path
    except UntrustedPathError as e:
        try:
            os.unlink(path)  # possible only because the folder is this user's: rebuild it below
        except OSError:
            raise UntrustedPathError(f"refusing {e}, and it cannot be removed") from e
        return None


def _compile(cxx: str, cflags: list[str], folder: Path, name: str) -> Path:
    """Build into a private temporary file of ``folder``, then rename it to ``name`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)  # mode 0600, a fresh name
    os.close(fd)
    try:
        cmd = [cxx, *cflags, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            messages = (done.stderr + done.stdout).strip()
            raise RuntimeError(f"building {SOURCE.name} failed (exit status {done.returncode}) with "
                               f"{' '.join(cmd)}\ncompiler output:\n{messages[-4000:]}")
        os.chmod(tmp, 0o700)  # the linker may have recreated it with the umask's mode
        check_private_file(Path(tmp))
        target = folder / name
        os.replace(tmp, target)  # atomic: a concurrent process sees the whole file or none
        return target
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _build(cxx: str) -> Path:
    """A trusted library file: from the cache folder, else built there, else built in a private temporary one."""
    cflags = flags()
    name = _library_name(cxx, cflags)
    folder = cache_dir()
    try:
        _make_private_dir(folder)
        check_private_dir(folder)
        found = _trusted_library(folder, name)
        return found if found is not None else _compile(cxx, cflags, folder, name)
    except UntrustedPathError as e:
        warnings.warn(f"funcopt's native kernel cache {folder} is not private ({e}); the kernel is built in a "
                      "temporary folder of this process instead (fix the folder to keep the build across runs)",
                      RuntimeWarning, stacklevel=4)
    except OSError:  # a read-only home, or a file where the folder should be: a private temporary folder
        pass
    folder = _fallback_dir()
    check_private_dir(folder)
    return _trusted_library(folder, name) or _compile(cxx, cflags, folder, name)


def _load() -> None:
    with _lock:
        if _state:
            return
        cxx = _compiler()
        if cxx is None:
            _state["error"] = "no C++ compiler found (install one, or name it in CXX)"
            return
        try:
            path = _build(cxx)
            check_private_file(path)  # checked again right before loading
            lib = ctypes.cdll.LoadLibrary(str(path))
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
    """Whether :func:`fused_adam` and :func:`fused_sgd` have a kernel for buffers of ``dtype``."""
    return ("adam", np.dtype(dtype)) in _TARGETS


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
    call = jax.ffi.ffi_call(_TARGETS["adam", dtype], (sd, sd, sd), input_output_aliases={0: 0, 2: 1, 3: 2})
    return call(p, g, exp_avg, exp_avg_sq, hp)


def fused_sgd(p: jax.Array, g: jax.Array, momentum_buffer: jax.Array, lr: jax.Array, momentum: jax.Array,
              dampening: jax.Array, weight_decay: jax.Array, step: jax.Array, *, nesterov: bool = False,
              maximize: bool = False) -> tuple[jax.Array, jax.Array]:
    r"""One SGD step with momentum over 1-D CPU buffers in one pass: new ``(p, momentum_buffer)``.

    The update is :func:`funcopt.sgd`'s, in the same order, with :math:`t` = ``step`` (this step's
    count; the buffer starts as the gradient at :math:`t = 1`, as torch's does):

    .. math::

        g &\leftarrow -g \text{ if maximize}; \quad g \leftarrow g + \lambda p \text{ if } \lambda \ne 0 \\
        b &\leftarrow g \text{ at } t = 1, \text{ else } \mu b + (1 - \tau) g \\
        p &\leftarrow p + (-\gamma)(g + \mu b \text{ if nesterov, else } b)

    5 memory accesses per parameter (read parameter, gradient, buffer; write parameter, buffer)
    where XLA's two loops make 6. Call it inside ``jax.jit`` with ``p`` and the buffer donated:
    the results then overwrite them. The scalars are traced values (changing them compiles
    nothing); they are cast to the buffers' dtype first, as :func:`funcopt.sgd` casts them.
    Requires :func:`native_error` to be None.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from funcopt._src import native
        >>> if native.native_error() is None:
        ...     p, b = jax.jit(native.fused_sgd)(jnp.ones(2), jnp.ones(2), jnp.zeros(2), 0.5, 0.9, 0.0, 0.0, 1)
        ...     print(p, b)
        [0.5 0.5] [1. 1.]
    """
    dtype = np.dtype(p.dtype)
    sd = jax.ShapeDtypeStruct(p.shape, p.dtype)
    first = jnp.asarray(step) == 1
    hp = jnp.stack([-jnp.asarray(lr, dtype), jnp.asarray(momentum, dtype), 1 - jnp.asarray(dampening, dtype),
                    jnp.asarray(weight_decay, dtype), jnp.asarray(-1.0 if maximize else 1.0, dtype),
                    first.astype(dtype), jnp.asarray(float(nesterov), dtype)])
    call = jax.ffi.ffi_call(_TARGETS["sgd", dtype], (sd, sd), input_output_aliases={0: 0, 2: 1})
    return call(p, g, momentum_buffer, hp)
