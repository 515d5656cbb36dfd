import os
import shutil
import tempfile

# Tests run on the CPU, with deterministic float math; x64 is switched on per test where needed.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402

_CACHE_KEY = pytest.StashKey[str]()
_CACHE_ROOT = "FUNCOPT_TESTS_XLA_CACHE_ROOT"


def pytest_configure(config):
    """An XLA compilation cache for the run, in a temporary folder removed at its end.

    Most tests build fresh optimizers whose compiled programs are identical to ones an earlier test
    compiled, in this process or in the other xdist worker; the cache hands XLA's result back instead of
    compiling again. A hit still traces and lowers, and still reports a compile event and a
    ``log_compiles`` line, so the tests that count compiles see the same counts. The workers share one
    folder (a program compiled by one is a hit for the other: about a quarter fewer compiles than a
    folder each); jax writes an entry in place, so that a reader could see half of it, and this run
    makes each write atomic (:func:`_atomic_cache_writes`; where that cannot be done, each worker keeps
    a folder of its own). The processes a test starts (notebook kernels, the sharding checks) write
    without that guard: they use a folder of their worker's, which nothing else reads while the worker
    waits for them. A run never reuses another run's programs.
    """
    _fast_cpu_codegen()
    if "JAX_COMPILATION_CACHE_DIR" in os.environ and _CACHE_ROOT not in os.environ:
        return  # a cache the user chose
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # the controller, or a run without xdist
        root = tempfile.mkdtemp(prefix="funcopt-tests-xla-cache-")
        config.stash[_CACHE_KEY] = root
        os.environ[_CACHE_ROOT] = root
        worker = "main"
    else:
        root, worker = os.environ[_CACHE_ROOT], workerinput["workerid"]
    own = os.path.join(root, worker)
    # read by jax when it starts: the folder of this worker's child processes, of their own (they compile
    # with XLA's default code generator, and the cache key does not tell the two apart: see _fast_cpu_codegen)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = f"{own}-children"
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # every program, however quick to compile
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    import jax

    folder = os.path.join(root, "shared") if _atomic_cache_writes() else own
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


_FAST_CODEGEN = "--xla_cpu_use_fusion_emitters=false"


def _fast_cpu_codegen() -> None:
    """Start this process's XLA:CPU backend with its elemental emitters instead of the fusion emitters.

    The suite compiles about ten thousand small programs and spends half its time in XLA's compiler;
    the elemental emitters (XLA:CPU's code generator before the fusion emitters became the default)
    compile such programs two to three times faster (a tests/compat run: 63 -> 45 s of CPU). The HLO
    (fusions, aliasing, donation) and the funcopt code under test are the same; the machine code of an
    elementwise op may differ in the last bit of a transcendental function, inside every tolerance here.
    The processes that tests start (the 8-device sharding checks, which compare sharded and one-device
    programs bit for bit in places, the notebooks, the benchmark and example scripts) run XLA's default
    code generator: the flag is in the environment only while this process's backend starts; so do the
    few tests marked ``default_codegen`` (see ``pytest_pyfunc_call``).
    ``FUNCOPT_TESTS_XLA_DEFAULTS=1``, or an ``XLA_FLAGS`` that sets the option, keeps the default here too.
    """
    flags = os.environ.get("XLA_FLAGS")
    if os.environ.get("FUNCOPT_TESTS_XLA_DEFAULTS") == "1" or "xla_cpu_use_fusion_emitters" in (flags or ""):
        return
    os.environ["XLA_FLAGS"] = f"{flags} {_FAST_CODEGEN}" if flags else _FAST_CODEGEN
    try:
        import jax

        jax.devices()  # XLA reads XLA_FLAGS once, when the backend starts
        _FAST_CODEGEN_ON[0] = True
    finally:
        if flags is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = flags


def _codegen_is_fast() -> bool:
    return _FAST_CODEGEN_ON[0]


_FAST_CODEGEN_ON = [False]


# nodeid -> (passed, output) of the tests marked default_codegen, run together in one child pytest
_DEFAULT_CODEGEN_RUNS: dict[str, tuple[bool, str]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A test marked ``default_codegen`` runs in a child pytest process on XLA's default code generator.

    Such a test asserts that two different programs agree to the last bit (a packed and a per-leaf
    layout, a vmapped and a single update): a property of the code XLA generates, which users get with
    the default generator and which the elemental emitters of this process do not keep. The first of
    them to run starts one child for all of them (they are ordered first, see
    ``pytest_collection_modifyitems``, so one worker gets them all); each reports its own outcome.
    """
    if pyfuncitem.get_closest_marker("default_codegen") is None or not _codegen_is_fast():
        return None
    import subprocess
    import sys

    nodeid = pyfuncitem.nodeid
    if nodeid not in _DEFAULT_CODEGEN_RUNS:
        marked = [item.nodeid for item in pyfuncitem.session.items if item.get_closest_marker("default_codegen")]
        env = dict(os.environ, FUNCOPT_TESTS_XLA_DEFAULTS="1")
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p",
                               "no:xdist", *marked], cwd=str(pyfuncitem.config.rootpath), env=env,
                              capture_output=True, text=True, timeout=900)
        lines = set(done.stdout.splitlines())
        for other in marked:
            _DEFAULT_CODEGEN_RUNS[other] = (f"PASSED {other}" in lines, (done.stdout + done.stderr)[-6000:])
    passed, output = _DEFAULT_CODEGEN_RUNS[nodeid]
    if not passed:
        pytest.fail(f"{nodeid} on XLA's default code generator:\n{output}", pytrace=False)
    return True


def _atomic_cache_writes() -> bool:
    """Make jax's file cache write each entry under a temporary name and rename it into place.

    ``jax._src.lru_cache.LRUCache.put`` (without a size limit) writes the entry file in place, so a
    process reading the same key meanwhile would get a truncated entry and warn. A rename is atomic: a
    reader finds no entry or a whole one. The patch is a test-run detail on a private jax class: when
    that class is not as expected this returns False and the workers keep separate folders.
    """
    try:
        from jax._src import lru_cache
    except ImportError:
        return False
    cls = getattr(lru_cache, "LRUCache", None)
    suffix = getattr(lru_cache, "_CACHE_SUFFIX", None)
    if cls is None or not isinstance(suffix, str) or not callable(getattr(cls, "put", None)):
        return False
    original = cls.put

    def put(self, key: str, value: bytes) -> None:
        if getattr(self, "eviction_enabled", True) or not key:
            return original(self, key, value)  # a size limit: jax locks the folder itself
        path = os.path.join(str(self.path), f"{key}{suffix}")
        if os.path.exists(path):
            return
        fd, tmp = tempfile.mkstemp(dir=str(self.path), prefix=".writing-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    cls.put = put
    return True


def pytest_unconfigure(config):
    root = config.stash.get(_CACHE_KEY, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def compiles():
    """The XLA compilations made while the test runs, as a list that grows (one entry per program)."""
    import jax

    events = []

    def listener(name, *args, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


def pytest_collection_modifyitems(config, items):
    """The long tests (marked ``slow``) run first, then those marked ``default_codegen`` (one child process).

    pytest-xdist's ``load`` scheduler gives each worker a consecutive chunk of the items first (a quarter
    of its share: the long tests all land in the first chunk) and then refills whichever worker runs
    short, a few items at a time; so the many short tests that come last even the workers out. Started
    last, one long test could keep a worker busy after the other has finished everything else.
    """
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                 item.get_closest_marker("default_codegen") is None))
